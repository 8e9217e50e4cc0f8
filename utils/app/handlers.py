"""The page's event handlers (scripts/app.py lays out the page and wires them): Run, show, recut, overview
and forget, around one loaded detector.

A browser session is found by its session hash in a bounded `SessionStore` (oldest dropped first, with its
downloads); its downloads folder belongs to the user who made it. Errors go to the status line, never to a
pop-up that could cover the verdict.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import gradio as gr

from dataset import DatasetError
from model.detector import AnomalyDetector
from model.prompts import STRATEGIES
from utils.app import render
from utils.app.cache import (
    BOX_FLOOR,
    ImageRun,
    Session,
    SessionStore,
    load_references,
    lower_box_threshold_to_floor,
)
from utils.app.files import SessionFolders, full_size_mask, write_downloads
from utils.app.results import engine_calls, presence_rows, result_json, rethreshold, summary_rows
from utils.app.texts import missing_model_message, visual_problem
from utils.app.uploads import as_list, upload_paths
from utils.config.cli import user_message
from utils.config.schema import Config
from utils.evaluation.thresholds import Thresholds, read_thresholds
from utils.pipeline import build_detector, prompts_for

PROGRESS = gr.Progress()  # gradio passes a live tracker to a handler whose default is one


def parse_names(text: str | None) -> list[str]:
    """The folder's file names the page's script sent (a JSON list of strings); [] for anything else."""
    try:
        names = json.loads(text or "[]")
    except (ValueError, RecursionError):  # not JSON, or nested deeper than Python's parser goes
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def slider(value: Any, default: float, low: float = 0.0) -> float:
    """A slider's value as a number in [low, 1]: `default` for what is not a finite number (None, text, NaN
    from a client calling the API), clipped into the range otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return default
    return min(max(float(value), low), 1.0)


@dataclass(frozen=True)
class RunInputs:
    """What Run reads from the page (the components of the same names in `layout`, in this order)."""

    files: list[str] | None
    folder: list[str] | None
    folder_names: str  # the folder's files as the browser names them (a JSON list, from FOLDER_NAMES_JS)
    category: str | None
    strategy: str
    prompts: str  # typed prompts, comma-separated
    refs: list[str] | None  # reference good images
    selected: str | None  # the image shown before
    mask_t: float
    box_t: float
    scale: str  # a key of render.SCALES


RUN_INPUTS = tuple(f.name for f in fields(RunInputs))


class AppHandlers:
    """The page's event handlers around one loaded detector (None with `problem` when it cannot load).

    A browser session is found by its session hash in `sessions` (bounded, oldest dropped first, their
    downloads with them); its downloads folder in `folders` belongs to the user who made it.
    """

    def __init__(
        self,
        detector: AnomalyDetector | None,
        cfg: Config,
        root: Path,
        concepts: Sequence[str] = (),
        problem: str | None = None,
    ) -> None:
        self.detector, self.cfg, self.root = detector, cfg, root
        self.concepts, self.problem = list(concepts), problem
        self.thresholds: Thresholds | None = None
        self.folders = SessionFolders(root)
        self.sessions = SessionStore(on_drop=self.folders.remove)

    @classmethod
    def load(cls, cfg: Config, root: Path) -> AppHandlers:
        """Load SAM 3 as `cfg` says; a missing model, a refused mode or a user error becomes `problem`."""
        problem = missing_model_message(cfg.model.model_path) or visual_problem(cfg.scoring.visual)
        if problem is not None:
            return cls(None, cfg, root, problem=problem)
        try:
            thresholds = read_thresholds(cfg.demo.thresholds) if cfg.demo.thresholds else None
            if thresholds is not None:
                thresholds.check_map_size(cfg.evaluation.eval_size)
            detector, concepts = build_detector(cfg)
        except Exception as err:  # a user error (bad weights, device, thresholds file) is shown in the page
            problem = user_message(err)
            if problem is None:
                raise
            return cls(None, cfg, root, problem=problem)
        handlers = cls(lower_box_threshold_to_floor(detector), cfg, root, concepts)
        handlers.thresholds = thresholds
        return handlers

    def session(self, request: gr.Request | None) -> Session:
        return self.sessions.get(
            str(getattr(request, "session_hash", None)), getattr(request, "username", None)
        )

    def references(self, session: Session) -> list[str]:
        return session.references.names if session.references is not None else []

    def verdict(self, session: Session, item: ImageRun) -> str:
        if session.image_threshold is not None:
            return render.verdict_html(
                item.result.image_score, session.image_threshold, session.threshold_source
            )
        why = session.threshold_source or "the app has no thresholds file from test.py (docs/app.md)"
        return render.verdict_html(item.result.image_score, None, why)

    def recut(
        self, selected: str | None, mask_t: float, box_t: float, request: gr.Request
    ) -> tuple[Any, ...]:
        """The shown image's mask, boxes, verdict, mask note and JSON at the slider values (a slider step)."""
        session = self.session(request)
        item = session.run(selected)
        if self.detector is None or item is None:
            return (gr.skip(),) * 5
        mask_t, box_t = self.sliders(mask_t, box_t)
        cut = rethreshold(item.result, mask_t, box_t)
        picture = item.picture
        doc = result_json(
            item.result,
            cut,
            item.prompts,
            engine_calls(self.detector),
            item.name,
            self.references(session),
            picture.size,
        )
        return (
            render.mask_picture(picture.display, cut.mask),
            render.boxes_picture(picture.display, cut.detections, item.result.anomaly_map.shape),
            self.verdict(session, item),
            self.mask_words(session, cut.mask, mask_t),
            json.dumps(doc, indent=1),
        )

    def sliders(self, mask_t: Any, box_t: Any) -> tuple[float, float]:
        """The mask and box slider values as numbers in their ranges (the configured values for others)."""
        box_default = max(self.cfg.scoring.box_threshold, BOX_FLOOR)
        return slider(mask_t, self.cfg.demo.mask_threshold), slider(box_t, box_default, BOX_FLOOR)

    def mask_words(self, session: Session, mask: Any, mask_t: float) -> str:
        """The mask note, and where the mask threshold comes from when a thresholds file set it."""
        note = render.mask_note(mask, mask_t)
        if session.file_mask_threshold is None:
            return note
        value, source = session.file_mask_threshold
        where = (
            "from " + source if abs(mask_t - value) < 1e-9 else f"set by the slider ({source}: {value:.3g})"
        )
        return f"{note}. Mask threshold {mask_t:.3g} {where}"

    def show(
        self, selected: str | None, mask_t: float, box_t: float, scale: str, request: gr.Request
    ) -> tuple[Any, ...]:
        """All about the image picked in the selector: input, heatmap, colour bar, prompt table, `recut`."""
        item = self.session(request).run(selected)
        if self.detector is None or item is None:
            return (gr.skip(),) * 9
        low, high = render.colour_range(item.result.anomaly_map, scale)
        return (
            item.picture.display,
            render.heatmap_picture(item.picture.display, item.result.anomaly_map, scale),
            render.colour_bar_html(low, high),
            presence_rows(item.result),
            *self.recut(selected, mask_t, box_t, request),
        )

    def overview(self, mask_t: float, box_t: float, request: gr.Request) -> tuple[Any, ...]:
        """Every image's row and the downloads (results.json, full-size masks) at the slider values."""
        session = self.session(request)
        if self.detector is None or not session.runs:
            return None, None  # no images (a failed Run): no rows, no downloads
        calls, docs, masks = engine_calls(self.detector), [], []
        mask_t, box_t = self.sliders(mask_t, box_t)
        for item in session.runs:
            cut = rethreshold(item.result, mask_t, box_t)
            refs = self.references(session)
            docs.append(
                result_json(item.result, cut, item.prompts, calls, item.name, refs, item.picture.size)
            )
            masks.append(full_size_mask(cut.mask, item.picture.size))
        folder = self.folders.folder(
            getattr(request, "session_hash", None), getattr(request, "username", None)
        )
        with session.lock:  # one rewrite of the session's downloads at a time
            written = write_downloads(folder, docs, masks)
        return summary_rows(docs), [str(p) for p in written]

    def choose_thresholds(self, session: Session, category: str | None, mask_t: float) -> float:
        """The verdict's threshold and the mask threshold of `category` from the thresholds file, if any."""
        session.image_threshold, session.file_mask_threshold = None, None
        session.threshold_source = ""
        if self.thresholds is None:
            return mask_t
        if not category:
            session.threshold_source = "pick a category of the thresholds file for a verdict"
            return mask_t
        name = self.thresholds.category(category, "choose the category")
        mask_t = self.thresholds.mask_threshold(name, "move the mask slider instead")
        session.file_mask_threshold = (mask_t, self.thresholds.source(name))
        session.image_threshold = self.thresholds.image_threshold(name)
        session.threshold_source = self.thresholds.source(name, "image_f1_threshold")
        if session.image_threshold is None:
            session.threshold_source = f"no image_f1_threshold for {name} in {self.thresholds.path}"
        return mask_t

    def score(self, session: Session, inputs: RunInputs, progress: gr.Progress) -> list[str]:
        """Decode and score the Run's images into `session.runs`; the messages of the files not read."""
        paths = upload_paths(inputs.files, inputs.folder, parse_names(inputs.folder_names))
        category = (inputs.category or "").strip() or None
        strategy = inputs.strategy or self.cfg.prompts.prompt_strategy
        if strategy not in STRATEGIES:
            raise DatasetError(f"unknown prompt strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
        assert self.detector is not None
        session.references = load_references(self.detector, as_list(inputs.refs), session.references)
        prompts, noun = prompts_for(self.cfg.replace(prompt_strategy=strategy), category, self.concepts)
        prompts = [p.strip() for p in (inputs.prompts or "").split(",") if p.strip()] or prompts
        pictures, errors = session.pictures.read(
            paths,
            self.detector.engine.image_size,
            progress=lambda done, total: progress((done, total), desc="images read", unit="images"),
        )
        results = session.cache.results(
            self.detector,
            [p.scored for p in pictures],
            prompts,
            noun,
            session.references,
            self.cfg.model.batch_size,
            progress=lambda done, total: progress(
                (done, total), desc="images scored by SAM 3", unit="images"
            ),
            map_side=self.cfg.evaluation.eval_size,
        )
        session.runs = [ImageRun(p, r, prompts) for p, r in zip(pictures, results, strict=True)]
        return errors

    def run(
        self,
        files: list[str] | None,
        folder: list[str] | None,
        folder_names: str,
        category: str | None,
        strategy: str,
        prompts: str,
        refs: list[str] | None,
        selected: str | None,
        mask_t: float,
        box_t: float,
        scale: str,
        request: gr.Request,
        progress: gr.Progress = PROGRESS,
    ) -> tuple[Any, ...]:
        """Run SAM 3 on the images not cached yet; show the image shown before when it is still there.

        Errors and skipped files go to the status line (never a pop-up that could cover the verdict).
        """
        texts = [str(t) if t is not None else "" for t in (folder_names, category, prompts)]  # typed boxes
        inputs = RunInputs(
            files, folder, texts[0], texts[1], strategy, texts[2], refs, selected, mask_t, box_t, scale
        )
        session = self.session(request)
        session.run_count += 1
        mask_t, box_t = self.sliders(inputs.mask_t, inputs.box_t)
        try:
            if self.detector is None:
                raise RuntimeError(self.problem)
            mask_t = self.choose_thresholds(session, (inputs.category or "").strip(), mask_t)
            errors = self.score(session, inputs, progress)
        except Exception as err:
            message = self.problem if self.detector is None else user_message(err)
            if message is None:
                raise
            session.runs = []  # the sliders must not bring back an earlier Run's pictures
            blank = (None, None, "", None, None, None, "", "", "")
            status = f"**Error (Run {session.run_count}):** {message}"
            return (*blank, gr.update(choices=[], value=None), status, mask_t)
        self.sessions.trim()
        names = [r.name for r in session.runs]
        selected = inputs.selected if inputs.selected in names else names[0]
        status = f"Done (Run {session.run_count}): {len(names)} image(s)."
        if errors:
            status += " **Not read:** " + "; ".join(errors)
        shown = self.show(selected, mask_t, box_t, inputs.scale, request)
        return (*shown, gr.update(choices=names, value=selected), status, mask_t)

    def forget(self, request: gr.Request) -> None:
        """The browser tab closed: its session and downloads go, only for the user who owns them (gradio's
        heartbeat, which asks no login, cannot delete a logged-in user's files)."""
        session_id, user = str(getattr(request, "session_hash", None)), getattr(request, "username", None)
        if self.sessions.owner(session_id) != user or self.folders.owner(session_id) not in (None, user):
            return
        self.folders.forget(session_id, user)
        self.sessions.drop(session_id)
