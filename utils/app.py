"""The web app's logic without the UI (scripts/app.py is the gradio layer): encode cache, thresholding, JSON.

SAM 3 runs once per (image, prompts, object noun, references): `EncodeCache.results` keeps the detector's raw
result (the anomaly map and every detection down to BOX_FLOOR, each with its instance mask), so moving the
mask or box slider only calls `rethreshold`, which recomputes the binary mask and filters the detections; no
SAM 3 forward. Filtering the NMS-kept detections by score equals running NMS on the detections above the
threshold (greedy NMS only lets a higher-scored box suppress a lower one).

Several images per Run: each is cached on its own (a result depends only on its image, the prompts and the
references), and the last Run's images live in the browser session (`Session.runs`) for the sliders, the image
selector and the downloads (`write_downloads`: results.json and one mask PNG per image).

Few-shot: reference good images are encoded once per session (`load_references`, a `ReferenceBank` keyed by
their pixels); `session_detector` then scores with a per-session view of the shared detector (same engine,
settings with visual="fewshot"), so sessions never see each other's references. Without references the shared
detector is called exactly as before (visual "none": results unchanged).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from dataset import DatasetError, benchmark_categories
from dataset.images import read_image
from dataset.records import IMAGE_EXTENSIONS
from model.detector import AnomalyDetector, AnomalyResult, Detection
from model.engine import DEFAULT_BATCH_SIZE
from model.visual import ReferenceBank
from utils.config.schema import Config
from utils.evaluation.exports import detections_json
from utils.evaluation.visualization import draw_boxes, heatmap_overlay, save_mask
from utils.pipeline import prompts_for

BOX_FLOOR = 0.05  # the detector keeps detections down to this score; the box slider starts here
CACHE_SIZE = 16  # images whose raw results a session keeps
IMAGE_THRESHOLD = "image_f1_threshold"  # the thresholds.json entry the verdict compares the image score with
EXAMPLES: tuple[Path, ...] = tuple(
    Path(__file__).resolve().parents[1] / "assets" / name
    for name in ("demo_scratch.png", "demo_hole.png", "demo_good.png")
)  # clickable examples (assets/README.md rebuilds them)


def category_choices() -> list[str]:
    """The category dropdown's names: every published category of every benchmark in the dataset registry
    (`dataset.benchmark_categories`), in dataset order, each once."""
    return list(benchmark_categories())


@dataclass
class Thresholded:
    """A cached result cut at the slider values. mask: (H, W) bool; detections: score >= box_threshold."""

    mask: np.ndarray
    detections: list[Detection]
    mask_threshold: float
    box_threshold: float


@dataclass
class References:
    """A session's few-shot reference images: `key` (their pixels' hash), display names and encoded bank."""

    key: str
    names: list[str]
    bank: ReferenceBank


@dataclass
class ImageRun:
    """One image of the last Run: display name, (H, W, 3) uint8 pixels, raw result and the prompts scored."""

    name: str
    image: np.ndarray
    result: AnomalyResult
    prompts: list[str]


def rethreshold(result: AnomalyResult, mask_threshold: float, box_threshold: float) -> Thresholded:
    """Binary mask = anomaly_map >= mask_threshold; detections with score >= box_threshold (order kept)."""
    kept = [d for d in result.detections if d.score >= box_threshold]
    return Thresholded(result.anomaly_map >= mask_threshold, kept, mask_threshold, box_threshold)


def image_key(image: np.ndarray) -> str:
    """SHA-1 of an (H, W, 3) uint8 image's shape and pixels: the same picture uploaded twice is cached."""
    digest = hashlib.sha1(str(image.shape).encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def session_detector(detector: AnomalyDetector, references: References | None) -> AnomalyDetector:
    """The detector that scores a session's images: the shared one without references, else a few-shot view.

    The view shares the engine (no second model) and carries the session's bank, so one session's
    references never reach another's results.

    Raises:
        DatasetError: the app runs with visual="fewshot" and the session has no references yet.
    """
    if references is None:
        if detector.settings.visual == "fewshot":
            raise DatasetError(
                "few-shot scoring (--visual fewshot) needs reference good images: upload a few under "
                "'reference good images', or start the app with --visual none"
            )
        return detector
    view = fewshot_view(detector)
    view.references = references.bank
    return view


def fewshot_view(detector: AnomalyDetector) -> AnomalyDetector:
    """A detector on the same engine and hook with visual="fewshot" (no references yet)."""
    return detector.with_settings(visual="fewshot")


class EncodeCache:
    """Raw detector results per (image, prompts, object noun, references), least recently used dropped."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self._results: OrderedDict[tuple[Any, ...], AnomalyResult] = OrderedDict()

    def __len__(self) -> int:
        return len(self._results)

    def results(
        self,
        detector: AnomalyDetector,
        images: Sequence[np.ndarray],
        prompts: Sequence[str],
        object_noun: str | None,
        references: References | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> list[AnomalyResult]:
        """The detector's results for N (H, W, 3) uint8 images, in order; SAM 3 runs only for images not
        cached, `batch_size` per encoder pass (an image repeated in `images` is scored once).

        `references`: the session's few-shot references (part of the key: new references, new pass).
        """
        ref_key = references.key if references is not None else None
        keys = [(image_key(im), tuple(prompts), object_noun, ref_key) for im in images]
        todo = {k: im for k, im in zip(keys, images, strict=True) if k not in self._results}
        found = {k: self._results[k] for k in keys if k in self._results}
        if todo:
            scoring = session_detector(detector, references)
            pending = list(todo)
            for start in range(0, len(pending), batch_size):
                part = pending[start : start + batch_size]
                arrays = [todo[k] for k in part]
                out = scoring.detect_arrays(arrays, prompts, object_noun, instance_masks=True)
                found.update(zip(part, out, strict=True))
        for key in keys:
            self._results[key] = found[key]
            self._results.move_to_end(key)
        while len(self._results) > self.size:
            self._results.popitem(last=False)
        return [found[k] for k in keys]


@dataclass
class Session:
    """What one browser session keeps: the encode cache, its references and the last Run's images."""

    cache: EncodeCache = field(default_factory=EncodeCache)
    references: References | None = None
    runs: list[ImageRun] = field(default_factory=list)
    image_threshold: float | None = None  # the verdict's threshold for the last Run's category
    run_count: int = 0  # Runs pressed in this session (the status names the Run it reports on)

    def run(self, name: str | None) -> ImageRun | None:
        """The last Run's image called `name` (the first one when `name` is not among them)."""
        for run in self.runs:
            if run.name == name:
                return run
        return self.runs[0] if self.runs else None


def read_upload(path: str | Path | None, name: str | None = None) -> np.ndarray:
    """An uploaded file as (H, W, 3) uint8 RGB; `name`: what the user called it (default: the file's name).

    Raises:
        DatasetError: no file, a file without an image extension (what to upload instead), or an image file
            that cannot be decoded; the message names the file by `name` once (never gradio's temp path).
    """
    if not path:
        raise DatasetError("no image: upload an image file first")
    path = Path(path)
    name = name or path.name
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        kind = f"a {path.suffix} file" if path.suffix else "a file without extension"
        raise DatasetError(f"{name} is {kind}, not an image: upload {', '.join(IMAGE_EXTENSIONS)} files")
    try:
        return read_image(path)
    except DatasetError as err:
        if "cannot decode" not in str(err):  # read, but its samples are unusable: read_image says why
            raise DatasetError(str(err).replace(str(path), name)) from None
        raise DatasetError(
            f"{name} cannot be decoded as a {path.suffix.lstrip('.').upper()} image (damaged, truncated, or "
            "another kind of file renamed): open it in an image viewer and save it again as PNG or JPEG"
        ) from None


def upload_paths(files: Sequence[str] | str | None, folder: Sequence[str] | str | None) -> list[Path]:
    """The image files of one Run: every uploaded file (so an unreadable one gets its message), then the
    folder's files with an image extension (other files in a dropped folder are ignored), each once.

    Raises:
        DatasetError: nothing to score (no upload, or a folder without images).
    """
    chosen = [Path(p) for p in as_list(files)]
    chosen += sorted(Path(p) for p in as_list(folder) if Path(p).suffix.lower() in IMAGE_EXTENSIONS)
    chosen = list(dict.fromkeys(chosen))
    if not chosen:
        extra = " (the folder has no image files)" if as_list(folder) else ""
        raise DatasetError(f"no image: upload one or more image files or a folder first{extra}")
    return chosen


def as_list(upload: Sequence[str] | str | None) -> list[str]:
    """A gradio File value (None, one path or a list of paths) as a list of paths."""
    if upload is None:
        return []
    return [str(upload)] if isinstance(upload, (str, Path)) else [str(p) for p in upload]


def unique_names(paths: Sequence[Path]) -> list[str]:
    """File names to show and to key the selector: the name, with " (2)", " (3)" ... for repeats."""
    names: list[str] = []
    for path in paths:
        name, n = path.name, 1
        while name in names:
            n += 1
            name = f"{path.name} ({n})"
        names.append(name)
    return names


def read_uploads(paths: Sequence[Path]) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """(name, (H, W, 3) uint8) of each readable image, and one message per unreadable file.

    Raises:
        DatasetError: no file is a readable image (the messages of all of them).
    """
    images, errors = [], []
    for name, path in zip(unique_names(paths), paths, strict=True):
        try:
            images.append((name, read_upload(path, name)))
        except DatasetError as err:
            errors.append(str(err))
    if not images:
        raise DatasetError("; ".join(errors))
    return images, errors


def load_references(
    detector: AnomalyDetector, paths: Sequence[str] | None, current: References | None
) -> References | None:
    """The session's references after the upload `paths` (None: no references, zero-shot scoring).

    The same pictures as `current` are not encoded again; others are encoded once with SAM 3's vision
    encoder into a few-shot `ReferenceBank`.

    Raises:
        DatasetError: a reference file is not a readable image (the message names it).
    """
    if not paths:
        return None
    images = [read_upload(p) for p in paths]
    digest = hashlib.sha1()
    for image in images:
        digest.update(image_key(image).encode())
    key = digest.hexdigest()
    if current is not None and current.key == key:
        return current
    view = fewshot_view(detector)
    view.set_references(images)
    assert view.references is not None
    return References(key, unique_names([Path(p) for p in paths]), view.references)


def parse_prompts(text: str) -> list[str] | None:
    """Comma-separated prompts -> list (blank entries dropped); None when empty (the category's prompts)."""
    prompts = [p.strip() for p in (text or "").split(",") if p.strip()]
    return prompts or None


def resolve_prompts(
    cfg: Config,
    category: str | None,
    strategy: str,
    typed: str,
    concepts: Sequence[str] = (),
) -> tuple[list[str], str | None]:
    """(defect prompts, object noun) of one Run: the typed prompts if any, else the category's prompts built
    with `strategy` (config extra_prompts / prompt_overrides / learned concepts applied, as in demo.py)."""
    built, noun = prompts_for(cfg.replace(prompt_strategy=strategy), category, concepts)
    return parse_prompts(typed) or built, noun


def result_json(
    result: AnomalyResult,
    cut: Thresholded,
    prompts: Sequence[str] | None,
    engine_calls: dict[str, int] | None = None,
    image: str | None = None,
    references: Sequence[str] = (),
) -> dict[str, Any]:
    """The app's JSON for one image: score, thresholds, scoring mode ("fewshot" with the reference names, or
    "none"), presence, boxes (with COCO RLE masks), mask pixel count and the engine's call counters (what
    shows that re-thresholding ran no SAM 3 forward)."""
    doc: dict[str, Any] = {
        "image": image,
        "image_score": result.image_score,
        "visual": "fewshot" if references else "none",
        "references": list(references),
        "mask_threshold": cut.mask_threshold,
        "box_threshold": cut.box_threshold,
        "mask_pixels": int(cut.mask.sum()),
        "prompts": list(prompts) if prompts else list(result.prompt_presence),
        "object_prompt": result.object_prompt,
        "object_found": result.object_found,
        "prompt_presence": result.prompt_presence,
        "prompt_best_score": result.prompt_best_score,
        "boxes": detections_json(cut.detections),
    }
    if engine_calls is not None:
        doc["engine_calls"] = engine_calls
    return doc


def engine_calls(detector: AnomalyDetector) -> dict[str, int]:
    """{"vision_calls", "text_calls"} of the detector's engine (0 where the engine has no counter)."""
    return {name: int(getattr(detector.engine, name, 0)) for name in ("vision_calls", "text_calls")}


class SessionFolders:
    """The download folders of the browser sessions, each made by the server inside one root folder.

    A session id comes from the client (any string, `../victim` included): it is only a key of a server-side
    map, never part of a path. A session's folder is a fresh random name under `root` made on first use, and
    `forget` removes only a folder this map made (an id it never served removes nothing).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._folders: dict[str, Path] = {}
        self._lock = threading.Lock()  # gradio calls handlers from several threads

    def folder(self, session_id: str | None) -> Path:
        """The session's own folder (made at the first call), inside `root`."""
        with self._lock:
            key = str(session_id)
            if key not in self._folders:
                self._folders[key] = Path(tempfile.mkdtemp(prefix="session_", dir=self.root))
            return self._folders[key]

    def forget(self, session_id: str | None) -> None:
        """Delete the folder made for `session_id`, if any (the browser tab closed)."""
        with self._lock:
            folder = self._folders.pop(str(session_id), None)
        if folder is not None and folder.parent == self.root:
            shutil.rmtree(folder, ignore_errors=True)


def safe_stem(name: str | None) -> str:
    """A file stem made only of letters, digits, '-', '_' and inner dots from an uploaded file's name
    (which the client chose): `../../x.png` -> `x`, `a b?.png` -> `a_b_`, "" or ".." -> `image`."""
    stem = re.sub(r"[^\w.-]", "_", Path(name or "").stem).strip(".")
    return stem[:100] or "image"


def write_downloads(folder: Path, docs: Sequence[dict[str, Any]], masks: Sequence[np.ndarray]) -> list[Path]:
    """Write results.json ({"images": docs}) and one black/white `<stem>_mask.png` per image into `folder`
    (the session's own; its earlier files are removed first) and return their paths, JSON first.

    `masks`: (H, W) bool per doc, in order. File names come from `safe_stem` (never leave `folder`).
    """
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        if old.is_file():
            old.unlink()
    paths = [folder / "results.json"]
    paths[0].write_text(json.dumps({"images": list(docs)}, indent=1))
    for doc, mask in zip(docs, masks, strict=True):
        stem, n = safe_stem(doc["image"]), 1
        path = folder / f"{stem}_mask.png"
        while path in paths:
            n += 1
            path = folder / f"{stem}_{n}_mask.png"
        save_mask(path, mask)
        paths.append(path)
    return paths


def heatmap_picture(image: np.ndarray, result: AnomalyResult) -> np.ndarray:
    """The heatmap over the (H, W, 3) uint8 image with a colour bar on its right: (H, W + bar, 3) uint8."""
    return with_colour_bar(heatmap_overlay(image, result.anomaly_map))


def with_colour_bar(picture: np.ndarray) -> np.ndarray:
    """`picture` (H, W, 3) uint8 with the jet scale of `heatmap_overlay` appended on the right: score 1 at the
    top, 0 at the bottom, labelled 1 / 0.5 / 0 on white. Returns (H, W + max(H // 4, 40), 3) uint8."""
    h = picture.shape[0]
    width = max(h // 4, 40)
    bar = np.full((h, width, 3), 255, np.uint8)
    ramp = np.linspace(255, 0, h).round().astype(np.uint8)[:, None]  # top row: score 1
    strip = cv2.cvtColor(cv2.applyColorMap(ramp, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    bar[:, 4 : width // 2] = strip
    scale = max(h / 450, 0.3)
    for label, y in (("1", 0.0), ("0.5", 0.5), ("0", 1.0)):
        org = (width // 2 + 3, int(np.clip(y * h + 5 * scale, 24 * scale, h - 4)))
        cv2.putText(
            bar, label, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), max(1, round(scale)), cv2.LINE_AA
        )
    return np.concatenate([picture, bar], axis=1)


def cut_pictures(image: np.ndarray, cut: Thresholded) -> tuple[np.ndarray, np.ndarray]:
    """(binary mask, boxes drawn on the image) as (H, W, 3) uint8 RGB pictures of one slider position."""
    mask = np.repeat((cut.mask.astype(np.uint8) * 255)[..., None], 3, axis=2)
    boxes = draw_boxes(image, [(d.prompt, d.score, d.box) for d in cut.detections])
    return mask, boxes


def score_line(score: float, threshold: float | None) -> str:
    """The image score and its verdict for the page: anomalous when score >= threshold (the category's
    image_f1_threshold from --thresholds), no verdict without a threshold."""
    if threshold is None:
        return (
            f"**image score {score:.3f}** (verdict: start the app with --thresholds FILE and pick a category)"
        )
    verdict = "ANOMALOUS" if score >= threshold else "normal"
    return f"**image score {score:.3f} → {verdict}** (threshold {threshold:.3f})"


def image_threshold_from(path: str | Path, category: str) -> float | None:
    """The category's image_f1_threshold in a thresholds.json written by test.py; None when it has none
    (no defect image). The file and category are checked by `mask_threshold_from` first."""
    value = json.loads(Path(path).expanduser().read_text())["categories"][category].get(IMAGE_THRESHOLD)
    return None if value is None else float(value)


def presence_rows(result: AnomalyResult) -> list[list[Any]]:
    """[prompt, presence, best instance score] per prompt, rounded for the table."""
    return [
        [p, round(result.prompt_presence[p], 4), round(result.prompt_best_score.get(p, 0.0), 4)]
        for p in result.prompt_presence
    ]


def summary_rows(docs: Sequence[dict[str, Any]]) -> list[list[Any]]:
    """[image, image score, mask pixels, boxes] per image of a Run, for the overview table."""
    return [[d["image"], round(d["image_score"], 4), d["mask_pixels"], len(d["boxes"])] for d in docs]


def visual_problem(visual: str) -> str | None:
    """Why the app cannot score with the visual mode `visual` (the setting), or None (none, fewshot work)."""
    if visual != "mutual":
        return None
    return (
        "--visual mutual scores a whole category at once, the app scores images one by one: start the app "
        "with --visual none (upload reference good images in the page for few-shot scoring)"
    )


def missing_model_message(model_path: str | Path) -> str | None:
    """Why the app cannot load SAM 3 from `model_path` and what to download; None when it looks usable."""
    folder = Path(model_path).expanduser()
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        return None
    return (
        f"No SAM 3 model in {folder} (config.json + model.safetensors needed): download facebook/sam3 with "
        f"`python scripts/download_weights.py` (or pass --model_path to a folder holding it), then restart."
    )


def lower_box_threshold_to_floor(detector: AnomalyDetector) -> AnomalyDetector:
    """`detector` keeping detections down to BOX_FLOOR (its box_threshold, when higher, is lowered), so the
    box slider can go that low from the cached results."""
    return detector.with_settings(box_threshold=min(BOX_FLOOR, detector.settings.box_threshold))


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def exposure_warning(host: str, share: bool, auth: object) -> str | None:
    """One loud line when the app is reachable from other machines without a password, else None.

    Exposed: `--share` (a public gradio.live link) or `--host` other than the loopback address (0.0.0.0: every
    network interface). Anyone who reaches it can then run SAM 3 on this machine and upload files to it.
    """
    if auth or (host in LOCAL_HOSTS and not share):
        return None
    where = "a public gradio.live link (--share)" if share else f"--host {host}"
    return (
        f"WARNING: the app is open to anyone who can reach {where}, without a password: they can upload "
        "files and run SAM 3 on this machine; add --auth USER:PASSWORD (docs/app.md)"
    )
