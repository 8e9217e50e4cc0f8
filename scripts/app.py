"""A web app: upload images, see heatmaps, masks, boxes and JSON; sliders re-threshold without SAM 3.

    python scripts/app.py --model_path ~/autodl-tmp/download/sam3 [--port 7860] [--share]

Takes demo.py's flags (prompts, scoring, --mask_threshold, --box_threshold, --thresholds FILE). The model
loads once per process; each uploaded image is run through SAM 3 once per (prompts, category, references) and
cached in the browser session (utils/app.py), so moving a slider or picking another image only recomputes the
mask and the boxes. Downloads (results.json and the mask PNGs) are written to a per-session temporary folder.
Without a model folder the app still starts and says what to download.
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.prompts import STRATEGIES  # noqa: E402
from utils.app import (  # noqa: E402
    BOX_FLOOR,
    CATEGORIES,
    ImageRun,
    Session,
    SessionFolders,
    engine_calls,
    exposure_warning,
    load_references,
    lower_box_threshold_to_floor,
    missing_model_message,
    pictures,
    presence_rows,
    read_uploads,
    resolve_prompts,
    result_json,
    rethreshold,
    summary_rows,
    upload_paths,
    visual_problem,
    write_downloads,
)
from utils.config.cli import config_from_args, run, script_parser, user_message  # noqa: E402
from utils.evaluation.thresholds import mask_threshold_from  # noqa: E402
from utils.pipeline import build_detector  # noqa: E402
from utils.run_log import get_logger  # noqa: E402

log = get_logger(__name__)
NOT_CONFIG = ("port", "host", "share", "auth")  # this script's own flags, not settings

NOTHING = 7  # the pictures, JSON, tables and downloads that `draw` fills


def user_password(text: str) -> tuple[str, str]:
    """`--auth USER:PASSWORD` as (user, password); both must be non-empty."""
    user, _, password = text.partition(":")
    if not user or not password:
        raise argparse.ArgumentTypeError(f"expected USER:PASSWORD, got {text!r}")
    return user, password


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """demo.py's config flags plus --port, --host, --share and --auth."""
    parser = script_parser("demo", __doc__.splitlines()[0])
    parser.add_argument(
        "--port", type=int, default=7860, help="local port (AutoDL: 6006, its custom service)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument(
        "--auth",
        type=user_password,
        default=None,
        metavar="USER:PASSWORD",
        help="ask for this user name and password first (use it with --host 0.0.0.0 / --share)",
    )
    return parser.parse_args(argv)


def build_app(cfg: dict[str, Any], temp_root: Path | None = None) -> gr.Blocks:
    """The gradio page; the detector is loaded here, once (None with a message when it cannot be).

    Downloads go to session folders the app makes inside a new folder under `temp_root` (default: the
    system's temporary folder), removed when the process ends.
    """
    problem = missing_model_message(cfg["model_path"]) or visual_problem(cfg)
    detector, concepts = None, []
    if problem is None:
        try:
            detector, concepts = build_detector(cfg)
            lower_box_threshold_to_floor(detector)
        except Exception as err:  # a user error (bad weights, device) is shown in the page
            problem = user_message(err)
            if problem is None:
                raise
    downloads_root = Path(tempfile.mkdtemp(prefix="sam3_app_", dir=temp_root))
    atexit.register(shutil.rmtree, downloads_root, ignore_errors=True)
    folders = SessionFolders(downloads_root)

    def session_folder(request: gr.Request | None) -> Path:
        return folders.folder(getattr(request, "session_hash", None))

    def draw(session: Session, selected: str | None, mask_t: float, box_t: float, request: gr.Request | None):
        """Everything shown for the last Run at the slider values: the selected image's pictures, JSON and
        presence table, the overview of all images and the downloads (rewritten: masks follow the slider)."""
        refs = session.references.names if session.references is not None else []
        calls = engine_calls(detector)
        docs, masks, shown = [], [], None
        for run in session.runs:
            cut = rethreshold(run.result, mask_t, box_t)
            docs.append(result_json(run.result, cut, run.prompts, calls, run.name, refs))
            masks.append(cut.mask)
            if run is session.run(selected):
                shown = (run, cut, docs[-1])
        run, cut, doc = shown
        files = [str(p) for p in write_downloads(session_folder(request), docs, masks)]
        overlay, mask, boxes = pictures(run.image, run.result, cut)
        table = presence_rows(run.result)
        return overlay, mask, boxes, json.dumps(doc, indent=1), table, summary_rows(docs), files

    def analyse(
        files, folder, category, strategy, prompts_text, refs, mask_t, box_t, session, request: gr.Request
    ):
        """Run SAM 3 on the images not cached yet and draw the first one at the slider values."""
        blank = (*[None] * NOTHING, gr.skip())  # and the image selector as it was
        if detector is None:
            return (*blank, problem, session, mask_t)
        try:
            paths = upload_paths(files, folder)
            category = (category or "").strip() or None
            if cfg["thresholds"] and category:
                mask_t = mask_threshold_from(cfg["thresholds"], category)
            session.references = load_references(detector, refs, session.references)
            prompts, noun = resolve_prompts(cfg, category, strategy, prompts_text, concepts)
            images, errors = read_uploads(paths)
            results = session.cache.results(
                detector, [im for _, im in images], prompts, noun, session.references, cfg["batch_size"]
            )
        except Exception as err:
            message = user_message(err)
            if message is None:
                raise
            session.runs = []  # the sliders must not bring back an earlier Run's pictures
            return (*blank, f"Error: {message}", session, mask_t)
        session.runs = [
            ImageRun(name, image, result, prompts)
            for (name, image), result in zip(images, results, strict=True)
        ]
        names = [run.name for run in session.runs]
        shown = draw(session, names[0], mask_t, box_t, request)
        status = f"Done: {len(names)} image(s)." + (" Not read: " + "; ".join(errors) if errors else "")
        selector = gr.update(choices=names, value=names[0])
        return (*shown, selector, status, session, mask_t)

    def redraw(session, selected, mask_t, box_t, request: gr.Request):
        """Slider moved or another image picked: the cached results cut anew (no SAM 3 forward)."""
        if detector is None or not session.runs:
            return (*[gr.skip()] * NOTHING, gr.skip(), gr.skip())
        return (*draw(session, selected, mask_t, box_t, request), gr.skip(), "Done.")

    def forget(request: gr.Request):
        """The browser tab closed: the downloads folder made for it goes (none for a session never served)."""
        folders.forget(getattr(request, "session_hash", None))

    with gr.Blocks(title="SAM 3 anomaly detection") as app:
        gr.Markdown("## SAM 3 zero-shot anomaly detection")
        status = gr.Markdown(problem or "Upload one or more images and press Run.", elem_id="status")
        session = gr.State(Session())  # copied per browser session
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="images", file_count="multiple", type="filepath", elem_id="upload")
                folder = gr.File(
                    label="or a folder of images", file_count="directory", type="filepath", elem_id="folder"
                )
                category = gr.Dropdown(
                    ["", *CATEGORIES],
                    value="",
                    allow_custom_value=True,
                    label="category (MVTec AD / VisA, or type your own; empty: generic)",
                    elem_id="category",
                )
                strategy = gr.Radio(
                    list(STRATEGIES),
                    value=cfg["prompt_strategy"],
                    label="prompt strategy (base: strictly zero-shot; the others use category vocabularies)",
                    elem_id="strategy",
                )
                prompts = gr.Textbox(
                    label="prompts, comma-separated (empty: built from category and strategy)",
                    elem_id="prompts",
                )
                refs = gr.File(
                    label="reference good images (optional: few-shot scoring against them)",
                    file_count="multiple",
                    type="filepath",
                    elem_id="references",
                )
                mask_t = gr.Slider(
                    0.0,
                    1.0,
                    value=cfg["mask_threshold"],
                    step=0.01,
                    label="mask threshold",
                    elem_id="mask_slider",
                )
                box_t = gr.Slider(
                    BOX_FLOOR,
                    1.0,
                    value=max(cfg["box_threshold"], BOX_FLOOR),
                    step=0.01,
                    label="box threshold",
                    elem_id="box_slider",
                )
                run = gr.Button("Run", variant="primary", elem_id="run")
            with gr.Column():
                selector = gr.Dropdown([], label="image shown", elem_id="image_select", interactive=True)
                overlay = gr.Image(label="heatmap", elem_id="overlay", format="png")
                mask = gr.Image(label="mask", elem_id="mask", format="png")
                boxes = gr.Image(label="boxes", elem_id="boxes", format="png")
        summary = gr.Dataframe(
            headers=["image", "score", "mask pixels", "boxes"], label="all images", elem_id="summary"
        )
        result = gr.Textbox(label="result (JSON)", lines=12, elem_id="result_json", interactive=False)
        table = gr.Dataframe(
            headers=["prompt", "presence", "best score"], label="per prompt", elem_id="presence"
        )
        downloads = gr.File(label="downloads", file_count="multiple", interactive=False, elem_id="downloads")
        shown = [overlay, mask, boxes, result, table, summary, downloads]
        inputs = [upload, folder, category, strategy, prompts, refs, mask_t, box_t, session]
        run.click(analyse, inputs, [*shown, selector, status, session, mask_t], api_name="run")
        for slider in (mask_t, box_t):
            slider.change(redraw, [session, selector, mask_t, box_t], [*shown, selector, status])
        selector.input(redraw, [session, selector, mask_t, box_t], [*shown, selector, status])
        app.unload(forget)
    return app


def main(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, not_config=NOT_CONFIG)
    warning = exposure_warning(args.host, args.share, args.auth)
    if warning:
        log.warning(warning)
    build_app(cfg).launch(server_name=args.host, server_port=args.port, share=args.share, auth=args.auth)
    return 0


if __name__ == "__main__":
    sys.exit(run(main, parse_args, sys.argv[1:]))
