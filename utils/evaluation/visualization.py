"""Pictures of results: heatmap overlays, binary masks, detection boxes and ROC/PR curves."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")  # files only, no screen on GPU boxes
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from dataset import Sample  # noqa: E402
from model.map_ops import resize_map  # noqa: E402
from utils.evaluation.store import CategoryResult  # noqa: E402
from utils.files import NAME_MAX_BYTES, atomic_write, fit_name  # noqa: E402


def heatmap_overlay(image: np.ndarray, anomaly_map: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a jet-coloured anomaly map over an image.

    Args:
        image: (H, W, 3) uint8 RGB.
        anomaly_map: (h, w) float in [0, 1]; resized bilinearly to (H, W) when needed.
        alpha: weight of the heatmap.
    Returns:
        (H, W, 3) uint8 RGB.
    """
    anomaly_map = resize_map(anomaly_map, image.shape[:2])
    heat = (np.clip(anomaly_map, 0.0, 1.0) * 255).astype(np.uint8)
    colored = cv2.cvtColor(cv2.applyColorMap(heat, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(image, 1.0 - alpha, colored, alpha, 0.0)


def save_overlay(
    path: Path, image: np.ndarray, anomaly_map: np.ndarray, title: str = "", gt_mask: np.ndarray | None = None
) -> None:
    """Save a figure: the image, the heatmap over it (same size, side by side) and a colour bar beside it.

    Shapes as in `heatmap_overlay`; gt_mask (H, W) bool is drawn as a white contour when given. The colour
    scale is fixed to [0, 1], the range of every anomaly map, so figures can be compared.
    """
    anomaly_map = resize_map(anomaly_map, image.shape[:2])
    fig, (left, right, bar) = panel_figure(image.shape[:2])
    left.imshow(image)
    left.set_title("image")
    right.imshow(image)
    shown = right.imshow(np.clip(anomaly_map, 0, 1), cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
    if gt_mask is not None and gt_mask.any():
        right.contour(gt_mask.astype(np.uint8), levels=[0.5], colors="white", linewidths=1)
    right.set_title(title or "anomaly map")
    fig.colorbar(shown, cax=bar)
    for ax in (left, right):
        ax.axis("off")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def panel_figure(shape: tuple[int, int], side: float = 4.0) -> tuple[plt.Figure, list[plt.Axes]]:
    """A figure of two equal image panels and a colour-bar axis beside the second, exactly as tall.

    The panels take the image's aspect (`shape` = (H, W); clamped to 1:4 .. 4:1) with the long side
    `side` inches, so an image fills each panel and both show it at one size; the axes are placed in
    inches (no tight_layout, which shrinks one panel to fit the colour bar inside it).
    Returns the figure and [left panel, right panel, colour-bar axis].
    """
    aspect = min(max(shape[1] / shape[0], 0.25), 4.0)  # width / height
    width, height = (side, side / aspect) if aspect >= 1 else (side * aspect, side)
    top, bottom, margin, gap, pad, bar, ticks = 0.45, 0.1, 0.1, 0.2, 0.1, 0.18, 0.5
    fig_w = margin + 2 * width + gap + pad + bar + ticks
    fig_h = top + height + bottom
    fig = plt.figure(figsize=(fig_w, fig_h))

    def axes_at(x: float, w: float) -> plt.Axes:
        return fig.add_axes((x / fig_w, bottom / fig_h, w / fig_w, height / fig_h))

    x_right = margin + width + gap
    return fig, [axes_at(margin, width), axes_at(x_right, width), axes_at(x_right + width + pad, bar)]


def _write_png(path: Path, pixels: np.ndarray) -> None:
    """Encode (H, W) or (H, W, 3) BGR uint8 as PNG and write it atomically; a failure raises, never silent.

    Raises:
        OSError: the image cannot be encoded or written (OutputDirError for a full disk).
    """
    ok, encoded = cv2.imencode(".png", pixels)
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    atomic_write(path, lambda handle: handle.write(encoded.tobytes()))


def save_mask(path: Path, mask: np.ndarray) -> None:
    """Save a (H, W) bool mask as a black/white PNG (0 / 255)."""
    _write_png(path, mask.astype(np.uint8) * 255)


def draw_boxes(image: np.ndarray, boxes: Sequence[tuple[str, float, Sequence[float]]]) -> np.ndarray:
    """Draw labelled boxes on a copy of an image.

    Args:
        image: (H, W, 3) uint8 RGB.
        boxes: (label, confidence, (x0, y0, x1, y1) in pixels) per box.
    Returns:
        (H, W, 3) uint8 RGB with each box and "label 0.87" drawn.
    """
    canvas = image.copy()
    thickness = max(1, round(max(image.shape[:2]) / 400))
    scale = max(0.4, max(image.shape[:2]) / 1200)
    for label, confidence, (x0, y0, x1, y1) in boxes:
        p0, p1 = (int(round(x0)), int(round(y0))), (int(round(x1)), int(round(y1)))
        cv2.rectangle(canvas, p0, p1, (255, 40, 40), thickness)
        text = f"{label} {confidence:.2f}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = max(p0[1] - th - 4, 0)
        cv2.rectangle(canvas, (p0[0], top), (p0[0] + tw + 2, top + th + 4), (255, 40, 40), -1)
        cv2.putText(
            canvas,
            text,
            (p0[0] + 1, top + th + 1),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (255, 255, 255),
            thickness,
            cv2.LINE_AA,
        )
    return canvas


def save_rgb(path: Path, image: np.ndarray) -> None:
    """Save an (H, W, 3) uint8 RGB image as PNG."""
    _write_png(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def save_curves(
    path_prefix: Path,
    curves: Mapping[str, Mapping[str, np.ndarray]],
    title: str,
    metrics: Mapping[str, float] | None = None,
) -> list[Path]:
    """Plot ROC and PR curves, one line per level, to `<prefix>_roc.png` and `<prefix>_pr.png`.

    Each legend entry gives the level's area: AUROC on the ROC plot, AP on the PR plot, from `metrics`
    (`<level>_auroc`, `<level>_ap`: the values of results.md) or, without them, from the drawn points.
    The PR curve is drawn as a step curve: AP = sum_n (R_n - R_(n-1)) P_n is the area under those steps.

    Args:
        curves: {level: {"fpr", "tpr", "precision", "recall": 1-D arrays}}, level e.g. "image"/"pixel".
        metrics: the category's metrics (`utils.evaluation.metrics.METRIC_KEYS`), or None.
    """
    written = []
    for kind, (x_key, y_key, x_label, y_label) in {
        "roc": ("fpr", "tpr", "false positive rate", "true positive rate"),
        "pr": ("recall", "precision", "recall", "precision"),
    }.items():
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        for level, curve in curves.items():
            x, y = np.asarray(curve.get(x_key, [])), np.asarray(curve.get(y_key, []))
            if not len(x):
                continue
            name, value = curve_area(kind, level, x, y, metrics)
            label = f"{level} ({name} {value:.3f})" if np.isfinite(value) else level
            if kind == "roc":
                ax.plot(x, y, label=label)
            else:  # precision P_n holds on (R_(n-1), R_n]: the step at each recall reaches back
                ax.step(x, y, where="pre" if x[0] <= x[-1] else "post", label=label)
        if kind == "roc":
            ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set(xlabel=x_label, ylabel=y_label, xlim=(0, 1), ylim=(0, 1.02), title=f"{title} {kind.upper()}")
        if ax.get_legend_handles_labels()[0]:  # no curve (e.g. no defective image): no empty legend
            ax.legend(loc="lower right" if kind == "roc" else "lower left")
        fig.tight_layout()
        path = Path(f"{path_prefix}_{kind}.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def curve_area(
    kind: str, level: str, x: np.ndarray, y: np.ndarray, metrics: Mapping[str, float] | None
) -> tuple[str, float]:
    """("AUROC", value) for a ROC curve or ("AP", value) for a PR curve of `level`.

    The value is `metrics["<level>_auroc"|"<level>_ap"]` when given, else the trapezoid area under the
    ROC points or the step sum of the PR points (sum of recall steps times the precision reached).
    """
    name, key = ("AUROC", f"{level}_auroc") if kind == "roc" else ("AP", f"{level}_ap")
    if metrics is not None and key in metrics:
        return name, float(metrics[key])
    if kind == "roc":
        return name, float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))
    order = np.argsort(x, kind="stable")
    recall, precision = x[order], y[order]
    return name, float(np.sum(np.diff(recall) * precision[1:]))


def ranked_picks(
    labels: np.ndarray, scores: np.ndarray, count: int, threshold: float | None = None
) -> list[tuple[int, str]]:
    """`pick_for_visualization` with each pick named by what it shows and its rank among its kind.

    Anomalous images, lowest score first, are `lowest_defect01`, `lowest_defect02`, ... (the defects the
    map hides best); good images, highest score first, are `highest_good01`, ... Only at a decided image
    `threshold` (anomalous = score >= threshold) do the misclassified ones become `fn<rank>` (a defect
    scored below it) and `fp<rank>` (a good image at or above it); None or NaN: no threshold.
    """
    decided = threshold is not None and not math.isnan(threshold)
    ranks = {0: 0, 1: 0}
    picked = []
    for index in pick_for_visualization(labels, scores, count):
        label = int(labels[index])
        ranks[label] += 1
        wrong = decided and (scores[index] < threshold if label else scores[index] >= threshold)
        kind = ("fn" if label else "fp") if wrong else ("lowest_defect" if label else "highest_good")
        picked.append((index, f"{kind}{ranks[label]:02d}"))
    return picked


def vis_name(rank: str, defect_type: str, image_path: str) -> str:
    """The file name of a vis/ picture: `<rank>_<defect type>_<image stem>.png`
    (e.g. lowest_defect01_crack_003.png, fp01_good_007.png), its end cut so that it fits in NAME_MAX_BYTES
    (the rank in front keeps it distinct)."""
    return fit_name(f"{rank}_{defect_type}_{Path(image_path).stem}", NAME_MAX_BYTES - len(".png")) + ".png"


def vis_title(defect_type: str, label: int, score: float, threshold: float | None) -> str:
    """The heatmap panel's title: the defect type and score and, at a decided image threshold, the score
    against it and the outcome (detected / missed for a defect, passed / false alarm for a good image)."""
    title = f"{defect_type}  score {score:.3f}"
    if threshold is None or math.isnan(threshold):
        return title
    flagged = score >= threshold
    outcome = ("detected" if flagged else "missed") if label else ("false alarm" if flagged else "passed")
    return f"{title} {'≥' if flagged else '<'} {threshold:.3f}: {outcome}"


def visualize_category(
    samples: Sequence[Sample], result: CategoryResult, vis_dir: Path, count: int, threshold: float | None
) -> list[Path]:
    """`save_overlay` pictures of one category's most instructive images (`ranked_picks`) into `vis_dir`.

    `samples`: the category's test samples in evaluation order (indexable, decoded on access);
    `threshold`: the decided image threshold (e.g. the image F1-max threshold of thresholds.json) or None.
    Returns the files written.
    """
    vis_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for index, rank in ranked_picks(result.labels, result.scores, count, threshold):
        sample = samples[index]
        path = vis_dir / vis_name(rank, sample.defect_type, str(sample.image_path))
        score = float(result.scores[index])
        title = vis_title(sample.defect_type, int(result.labels[index]), score, threshold)
        save_overlay(path, sample.image, result.maps[index].astype("float32"), title, sample.mask)
        written.append(path)
    return written


def pick_for_visualization(labels: np.ndarray, scores: np.ndarray, count: int) -> list[int]:
    """Indices of the most instructive images, worst errors first.

    Alternates the anomalous images with the lowest scores (worst false negatives) and the good images with
    the highest scores (worst false positives), until `count` indices are chosen.
    Args:
        labels: (N,) 0/1; scores: (N,) image scores.
    """
    order = np.argsort(scores, kind="stable")
    false_negatives = [int(i) for i in order if labels[i] == 1]
    false_positives = [int(i) for i in order[::-1] if labels[i] == 0]
    picked: list[int] = []
    while len(picked) < min(count, len(labels)):
        for queue in (false_negatives, false_positives):
            if queue and len(picked) < count:
                picked.append(queue.pop(0))
    return picked
