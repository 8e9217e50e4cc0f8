"""Pictures of results: heatmap overlays, binary masks, detection boxes and ROC/PR curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")  # files only, no screen on GPU boxes
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from model.map_ops import resize_map  # noqa: E402
from utils.files import atomic_write  # noqa: E402


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
    """Save a figure: the image, and the heatmap over it with a colour bar (and the ground-truth outline).

    Shapes as in `heatmap_overlay`; gt_mask (H, W) bool is drawn as a white contour when given.
    """
    anomaly_map = resize_map(anomaly_map, image.shape[:2])
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5))
    axes[0].imshow(image)
    axes[0].set_title("image")
    axes[1].imshow(image)
    shown = axes[1].imshow(np.clip(anomaly_map, 0, 1), cmap="jet", alpha=0.5, vmin=0.0, vmax=1.0)
    if gt_mask is not None and gt_mask.any():
        axes[1].contour(gt_mask.astype(np.uint8), levels=[0.5], colors="white", linewidths=1)
    axes[1].set_title(title or "anomaly map")
    fig.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.04)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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


def save_curves(path_prefix: Path, curves: Mapping[str, Mapping[str, np.ndarray]], title: str) -> list[Path]:
    """Plot ROC and PR curves, one line per level, to `<prefix>_roc.png` and `<prefix>_pr.png`.

    Args:
        curves: {level: {"fpr", "tpr", "precision", "recall": 1-D arrays}}, level e.g. "image"/"pixel".
    """
    written = []
    for kind, (x_key, y_key, x_label, y_label) in {
        "roc": ("fpr", "tpr", "false positive rate", "true positive rate"),
        "pr": ("recall", "precision", "recall", "precision"),
    }.items():
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        for level, curve in curves.items():
            if len(curve.get(x_key, [])):
                ax.plot(curve[x_key], curve[y_key], label=level)
        if kind == "roc":
            ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set(xlabel=x_label, ylabel=y_label, xlim=(0, 1), ylim=(0, 1.02), title=f"{title} {kind.upper()}")
        ax.legend(loc="lower right" if kind == "roc" else "lower left")
        fig.tight_layout()
        path = Path(f"{path_prefix}_{kind}.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
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
