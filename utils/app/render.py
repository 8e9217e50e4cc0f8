"""What the page shows, at display size (utils/app/uploads.py `Picture.display`): the heatmap, the mask over
the image, the boxes, the colour bar beside the heatmap and the verdict badge.

Every picture of one image has the display copy's (h, w), so the four panels line up; the colour bar is its
own element beside them (HTML), never drawn into a picture.
"""

from __future__ import annotations

import html

import cv2
import numpy as np

from model.detector import Detection
from utils.evaluation.visualization import draw_boxes

SCALES: dict[str, str] = {"fixed": "fixed 0-1", "image": "this image's range"}  # colour-scale choice
JET_STOPS = (
    "#00007f",
    "#0000ff",
    "#007fff",
    "#00ffff",
    "#7fff7f",
    "#ffff00",
    "#ff7f00",
    "#ff0000",
    "#7f0000",
)
MASK_TINT = np.array([255, 0, 255], np.float32)  # magenta: apart from the jet colours and most parts


def colour_range(anomaly_map: np.ndarray, scale: str) -> tuple[float, float]:
    """(low, high) of the colour scale: (0, 1), or the map's own min and max ("image"; 0-1 if flat)."""
    if scale != "image":
        return 0.0, 1.0
    low, high = float(anomaly_map.min()), float(anomaly_map.max())
    return (low, high) if high > low else (0.0, 1.0)


def heatmap_picture(display: np.ndarray, anomaly_map: np.ndarray, scale: str = "fixed") -> np.ndarray:
    """The jet-coloured map blended half and half over the (h, w, 3) uint8 display copy: (h, w, 3) uint8.

    `anomaly_map`: (H', W') float (any size: resized bilinearly); `scale`: a key of SCALES.
    """
    low, high = colour_range(anomaly_map, scale)
    h, w = display.shape[:2]
    resized = cv2.resize(anomaly_map.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    heat = (np.clip((resized - low) / (high - low), 0.0, 1.0) * 255).astype(np.uint8)
    coloured = cv2.cvtColor(cv2.applyColorMap(heat, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(display, 0.5, coloured, 0.5, 0.0)


def colour_bar_html(low: float, high: float) -> str:
    """A vertical jet bar (high at the top) labelled with `high`, the middle and `low`."""
    stops = ", ".join(reversed(JET_STOPS))
    labels = "".join(f"<span>{v:.3g}</span>" for v in (high, (low + high) / 2, low))
    return (
        "<div class='colour-bar'>"
        f"<div class='colour-bar-ramp' style='background: linear-gradient({stops})'></div>"
        f"<div class='colour-bar-labels'>{labels}</div></div>"
    )


def display_mask(mask: np.ndarray, display: np.ndarray) -> np.ndarray:
    """A (h', w') bool mask resized (nearest) to the display copy's (h, w)."""
    h, w = display.shape[:2]
    if mask.shape == (h, w):
        return mask
    return cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)


def mask_picture(display: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The mask over the (h, w, 3) uint8 display copy: pixels inside tinted magenta, its outline drawn."""
    inside = display_mask(mask, display)
    out = display.astype(np.float32)
    out[inside] = 0.55 * out[inside] + 0.45 * MASK_TINT
    out = out.astype(np.uint8)
    contours, _ = cv2.findContours(inside.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    thickness = max(1, round(max(display.shape[:2]) / 300))
    cv2.drawContours(out, contours, -1, (255, 0, 255), thickness)
    return out


def mask_note(mask: np.ndarray, threshold: float) -> str:
    """The mask in words: no pixel, every pixel, or the share of pixels at or above `threshold`."""
    share = float(mask.mean()) if mask.size else 0.0
    if share == 0.0:
        return f"no anomalous pixel (every score below {threshold:.3g})"
    if share == 1.0:
        return f"whole image above threshold (every score at least {threshold:.3g})"
    return f"{100 * share:.2f} % of the pixels at or above {threshold:.3g}"


def boxes_picture(
    display: np.ndarray, detections: list[Detection], scored_size: tuple[int, int]
) -> np.ndarray:
    """The detections drawn on the display copy; boxes are in pixels of the scored copy (`scored_size`)."""
    factor = display.shape[1] / scored_size[1], display.shape[0] / scored_size[0]
    boxes = [
        (
            d.prompt,
            d.score,
            (d.box[0] * factor[0], d.box[1] * factor[1], d.box[2] * factor[0], d.box[3] * factor[1]),
        )
        for d in detections
    ]
    return draw_boxes(display, boxes)


def verdict_html(score: float, threshold: float | None, source: str) -> str:
    """The verdict badge: OK (green) / ANOMALOUS (red) with score, threshold and where it comes from; the
    score alone (grey) without a threshold."""
    if threshold is None:
        return (
            "<div class='verdict verdict-none'><b>score "
            f"{score:.3f}</b> <span>no verdict: {html.escape(source)}</span></div>"
        )
    word, kind = ("ANOMALOUS", "bad") if score >= threshold else ("OK", "ok")
    return (
        f"<div class='verdict verdict-{kind}'><b>{word}</b> score {score:.3f} "
        f"{'≥' if kind == 'bad' else '<'} threshold {threshold:.3f} "
        f"<span>({html.escape(source)})</span></div>"
    )


PAGE_CSS = """
.verdict { padding: 6px 10px; border-radius: 6px; font-size: 15px; color: #fff; }
.verdict span { font-size: 12px; opacity: 0.9; }
.verdict-ok { background: #1b7f3b; }
.verdict-bad { background: #c0262d; }
.verdict-none { background: #5b6270; }
.hidden-box { display: none !important; }
.colour-bar { display: flex; height: 230px; margin-top: 20px; }
.colour-bar-ramp { width: 14px; border: 1px solid #888; }
.colour-bar-labels { display: flex; flex-direction: column; justify-content: space-between;
                     font-size: 11px; padding-left: 3px; }
"""
