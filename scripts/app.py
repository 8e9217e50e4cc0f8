"""A web app: upload images, see heatmaps, masks, boxes and JSON; sliders re-threshold without SAM 3.

    python scripts/app.py --model_path ~/autodl-tmp/download/sam3 [--port 7860] [--auth_file FILE]

Takes demo.py's flags (prompts, scoring, --mask_threshold, --box_threshold, --thresholds FILE) and
--max_upload_mb. The model loads once per process; each uploaded image is decoded once, scored by SAM 3 once
per (prompts, category, references) and kept in the browser session (utils/app/). A slider step re-cuts only
the image shown; the overview table and the downloads follow when the slider is released. Everything the app
writes lies in one private folder, removed when it stops (Ctrl-C, SIGTERM). See docs/app.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import gradio as gr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.versions import require_torch  # noqa: E402

require_torch()  # one line naming both versions when torch is too old, before torch is imported

from model.detector import AnomalyDetector  # noqa: E402
from model.prompts import STRATEGIES  # noqa: E402
from utils.app import render  # noqa: E402
from utils.app.access import LoginGuard, exposure_warning, read_auth  # noqa: E402
from utils.app.cache import (  # noqa: E402
    BOX_FLOOR,
    ImageRun,
    Session,
    SessionStore,
    load_references,
    lower_box_threshold_to_floor,
)
from utils.app.files import UMASK, SessionFolders, full_size_mask, private_root, write_downloads  # noqa: E402
from utils.app.results import (  # noqa: E402
    engine_calls,
    presence_rows,
    result_json,
    rethreshold,
    summary_rows,
)
from utils.app.texts import EXAMPLES, category_choices, missing_model_message, visual_problem  # noqa: E402
from utils.app.uploads import upload_paths  # noqa: E402
from utils.config.cli import config_from_args, run, script_parser, user_message  # noqa: E402
from utils.config.schema import Config  # noqa: E402
from utils.evaluation.thresholds import Thresholds, read_thresholds  # noqa: E402
from utils.pipeline import build_detector, prompts_for  # noqa: E402
from utils.run_log import get_logger  # noqa: E402

log = get_logger(__name__)
NOT_CONFIG = ("port", "host", "share", "auth", "auth_file")  # this script's own flags, not settings
IMAGE_HEIGHT = 250  # px: the four pictures side by side fit one 1366x768 screen with the controls
DELETE_CACHE = (3600, 12 * 3600)  # gradio's copies: checked hourly, removed after 12 h (and at exit)
# slider / selector events: no spinners, the last value wins, and no queue (a direct request: less latency)
PROGRESS = gr.Progress()  # gradio passes a live tracker to a handler whose default is one
QUIET = {"show_progress": "hidden", "trigger_mode": "always_last", "queue": False}
FOLDER_NAMES_JS = """
() => document.addEventListener('change', (event) => {
  const input = event.target;
  if (!input.closest || !input.closest('#folder') || !input.files) return;
  const box = document.querySelector('#folder_names textarea');
  if (!box) return;
  box.value = JSON.stringify(Array.from(input.files).map(f => f.webkitRelativePath || f.name));
  box.dispatchEvent(new Event('input', {bubbles: true}));
}, true)
"""  # the browser knows a dropped folder's sub-folders, the server only file names


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """demo.py's config flags, --max_upload_mb, and --port, --host, --share, --auth, --auth_file."""
    parser = script_parser("demo", __doc__.splitlines()[0], "app")
    parser.add_argument(
        "--port", type=int, default=7860, help="local port (AutoDL: 6006, its custom service)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument(
        "--auth_file",
        metavar="FILE",
        help="ask for a login first: one USER:PASSWORD a line (or set SAM3_APP_AUTH=USER:PASSWORD)",
    )
    parser.add_argument(
        "--auth",
        metavar="USER:PASSWORD",
        help="a login on the command line (visible in ps: prefer --auth_file)",
    )
    return parser.parse_args(argv)


def parse_names(text: str | None) -> list[str]:
    """The folder's file names the page's script sent (a JSON list of strings); [] for anything else."""
    try:
        names = json.loads(text or "[]")
    except ValueError:
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


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
            return gr.skip(), gr.skip()
        calls, docs, masks = engine_calls(self.detector), [], []
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
        return summary_rows(docs), [str(p) for p in write_downloads(folder, docs, masks)]

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
        assert self.detector is not None
        session.references = load_references(self.detector, inputs.refs, session.references)
        prompts, noun = prompts_for(
            self.cfg.replace(prompt_strategy=inputs.strategy), category, self.concepts
        )
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
        inputs = RunInputs(
            files, folder, folder_names, category, strategy, prompts, refs, selected, mask_t, box_t, scale
        )
        session = self.session(request)
        session.run_count += 1
        mask_t = inputs.mask_t
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
        shown = self.show(selected, mask_t, inputs.box_t, inputs.scale, request)
        return (*shown, gr.update(choices=names, value=selected), status, mask_t)

    def forget(self, request: gr.Request) -> None:
        """The browser tab closed: its session and downloads go, only for the user who owns them (gradio's
        heartbeat, which asks no login, cannot delete a logged-in user's files)."""
        session_id, user = str(getattr(request, "session_hash", None)), getattr(request, "username", None)
        if self.sessions.owner(session_id) != user or self.folders.owner(session_id) not in (None, user):
            return
        self.folders.forget(session_id, user)
        self.sessions.drop(session_id)


def layout(handlers: AppHandlers) -> gr.Blocks:
    """The page: controls on the left, the image shown with its verdict and pictures on the right."""
    with gr.Blocks(title="SAM 3 anomaly detection", delete_cache=DELETE_CACHE) as app:
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=330):
                c = controls(handlers.cfg, handlers.problem)
            with gr.Column(scale=3):
                v = views()
        c["selected"] = v["selected"]
        with gr.Row():
            v["table"] = gr.Dataframe(
                headers=["prompt", "presence", "best score"], label="per prompt", elem_id="presence"
            )
            v["downloads"] = gr.File(
                label="downloads", file_count="multiple", interactive=False, elem_id="downloads"
            )
        v["result"] = gr.Textbox(
            label="result (JSON)", lines=10, max_lines=30, elem_id="result_json", interactive=False
        )
        shown = [
            v[k] for k in ("input", "overlay", "bar", "table", "mask", "boxes", "verdict", "note", "result")
        ]
        inputs = [c[k] for k in RUN_INPUTS]
        ran = c["run"].click(
            handlers.run, inputs, [*shown, c["selected"], c["status"], c["mask_t"]], api_name="run"
        )
        listed = [v["summary"], v["downloads"]]
        ran.then(
            handlers.overview, [c["mask_t"], c["box_t"]], listed, api_name="overview", show_progress="hidden"
        )
        look = [c["selected"], c["mask_t"], c["box_t"]]
        c["selected"].input(handlers.show, [*look, c["scale"]], shown, api_name="show", **QUIET)
        c["scale"].input(handlers.show, [*look, c["scale"]], shown, api_name=False, **QUIET)
        cut = [v[k] for k in ("mask", "boxes", "verdict", "note", "result")]
        for slider in (c["mask_t"], c["box_t"]):
            slider.input(handlers.recut, look, cut, api_name=False, **QUIET)
            slider.release(handlers.overview, [c["mask_t"], c["box_t"]], listed, api_name=False, **QUIET)
        app.unload(handlers.forget)
    return app


def controls(cfg: Config, problem: str | None) -> dict[str, Any]:
    """The left column: uploads, examples, category, Run, status, sliders, colour scale, more (folded)."""
    c: dict[str, Any] = {}
    gr.Markdown("### SAM 3 zero-shot anomaly detection")
    c["files"] = gr.File(label="images", file_count="multiple", type="filepath", elem_id="upload", height=110)
    gr.Examples([[[str(p)]] for p in EXAMPLES], [c["files"]], label="examples: click one, then Run")
    c["category"] = gr.Dropdown(
        ["", *category_choices()],
        value="",
        allow_custom_value=True,
        label="category (or type your own; empty: generic)",
        elem_id="category",
    )
    c["run"] = gr.Button("Run", variant="primary", elem_id="run")
    c["status"] = gr.Markdown(
        problem or "Upload images (or click an example) and press Run.", elem_id="status"
    )
    c["mask_t"] = gr.Slider(
        0.0, 1.0, value=cfg.demo.mask_threshold, step=0.01, label="mask threshold", elem_id="mask_slider"
    )
    low = max(cfg.scoring.box_threshold, BOX_FLOOR)
    c["box_t"] = gr.Slider(BOX_FLOOR, 1.0, value=low, step=0.01, label="box threshold", elem_id="box_slider")
    scales = [(words, key) for key, words in render.SCALES.items()]
    c["scale"] = gr.Radio(scales, value="fixed", label="heatmap colours", elem_id="scale")
    with gr.Accordion("more: prompts, references, folder", open=False):
        c["strategy"] = gr.Radio(
            list(STRATEGIES),
            value=cfg.prompts.prompt_strategy,
            label="prompt strategy (base: strictly zero-shot; others: category vocabularies)",
            elem_id="strategy",
        )
        c["prompts"] = gr.Textbox(
            label="prompts, comma-separated (empty: built from category and strategy)", elem_id="prompts"
        )
        c["refs"] = gr.File(
            label="reference good images (optional: few-shot scoring against them)",
            file_count="multiple",
            type="filepath",
            elem_id="references",
        )
        c["folder"] = gr.File(
            label="or a folder of images", file_count="directory", type="filepath", elem_id="folder"
        )
        c["folder_names"] = gr.Textbox(elem_id="folder_names", container=False, elem_classes="hidden-box")
    return c


def views() -> dict[str, Any]:
    """The right column: image selector, verdict badge and mask note, the four pictures, the overview."""
    v: dict[str, Any] = {}
    with gr.Row(equal_height=True):
        v["selected"] = gr.Dropdown(
            [], label="image shown", elem_id="image_select", interactive=True, scale=1
        )
        with gr.Column(scale=2):
            v["verdict"] = gr.HTML("", elem_id="verdict")
            v["note"] = gr.Markdown("", elem_id="mask_note")
    with gr.Row(equal_height=True):
        v["input"] = picture("input", "input")
        v["overlay"] = picture("overlay", "heatmap")
        v["bar"] = gr.HTML("", elem_id="colour_bar", min_width=40, scale=0)
        v["mask"] = picture("mask", "mask (magenta)")
        v["boxes"] = picture("boxes", "boxes")
    v["summary"] = gr.Dataframe(
        headers=["image", "score", "mask pixels", "boxes"],
        label="all images",
        elem_id="summary",
        max_height=180,
    )
    return v


def picture(key: str, label: str) -> gr.Image:
    """One of the four same-sized picture panels (display-sized JPEGs)."""
    return gr.Image(label=label, elem_id=key, format="jpeg", height=IMAGE_HEIGHT, interactive=False)


def stop_on_sigterm() -> None:
    """SIGTERM ends the app like Ctrl-C (gradio closes the server, then the private folder is removed)."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def launch_options(cfg: Config, users: list[tuple[str, str]] | None) -> dict[str, Any]:
    """gradio's launch() options of the app: login guard, upload limit, page style and script."""
    return {
        "auth": LoginGuard(users) if users else None,
        "max_file_size": f"{cfg.demo.max_upload_mb}mb",
        "css": render.PAGE_CSS,
        "js": FOLDER_NAMES_JS,
    }


def main(args: argparse.Namespace) -> int:
    cfg = Config.from_dict(config_from_args(args, not_config=NOT_CONFIG))
    users = read_auth(args.auth, args.auth_file)
    warning = exposure_warning(args.host, args.share, users)
    if warning:
        log.warning(warning)
    os.umask(UMASK)
    root = private_root()
    os.environ["GRADIO_TEMP_DIR"] = str(root / "gradio")  # uploads and shown pictures: inside the root
    stop_on_sigterm()
    try:
        handlers = AppHandlers.load(cfg, root)
        if handlers.problem:
            console = missing_model_message(cfg.model.model_path, for_console=True)
            log.error(console or visual_problem(cfg.scoring.visual, for_console=True) or handlers.problem)
        layout(handlers).launch(
            server_name=args.host,
            server_port=args.port,
            share=args.share,
            **launch_options(cfg, users),
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
        log.info(f"removed {root} (uploads, pictures and downloads of this run)")
    return 0


if __name__ == "__main__":
    sys.exit(run(main, parse_args, sys.argv[1:]))
