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
import contextlib
import os
import shutil
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr
from gradio import route_utils

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.versions import require_torch  # noqa: E402

require_torch()  # one line naming both versions when torch is too old, before torch is imported

from model.prompts import STRATEGIES  # noqa: E402
from utils.app import render  # noqa: E402
from utils.app.access import LoginGuard, exposure_warning, read_auth  # noqa: E402
from utils.app.cache import BOX_FLOOR  # noqa: E402
from utils.app.files import UMASK, private_root  # noqa: E402
from utils.app.handlers import RUN_INPUTS, AppHandlers  # noqa: E402
from utils.app.texts import EXAMPLES, category_choices, missing_model_message, visual_problem  # noqa: E402
from utils.config.cli import config_from_args, run, script_parser  # noqa: E402
from utils.config.schema import Config  # noqa: E402
from utils.run_log import get_logger  # noqa: E402

log = get_logger(__name__)
NOT_CONFIG = ("port", "host", "share", "auth", "auth_file")  # this script's own flags, not settings
IMAGE_HEIGHT = 250  # px: the four pictures side by side fit one 1366x768 screen with the controls
DELETE_CACHE = (3600, 12 * 3600)  # gradio's copies: checked hourly, removed after 12 h (and at exit)
# slider / selector events: no spinners, the last value wins, and no queue (a direct request: less latency)
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
        v["mask"] = picture("mask", "mask")
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


def gradio_start_folders() -> list[Path]:
    """The empty folders gradio makes at start in its default temporary folder (read when gradio was
    imported, before the app could point it into its own folder) that do not exist yet, deepest first."""
    default = Path(route_utils.DEFAULT_TEMP_DIR)
    return [p for p in (default / "vibe_edit_history", default) if not p.exists()]


def launch_options(cfg: Config, users: list[tuple[str, str]] | None) -> dict[str, Any]:
    """gradio's launch() options of the app: login guard, upload limit, page style and script."""
    return {
        "auth": LoginGuard(users) if users else None,
        "max_file_size": f"{cfg.demo.max_upload_mb}mb",
        "css": render.PAGE_CSS,
        "js": FOLDER_NAMES_JS,
    }


def main(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, not_config=NOT_CONFIG)
    users = read_auth(args.auth, args.auth_file)
    warning = exposure_warning(args.host, args.share, users)
    if warning:
        log.warning(warning)
    stop_on_sigterm()
    os.umask(UMASK)
    root = private_root()
    os.environ["GRADIO_TEMP_DIR"] = str(root / "gradio")  # uploads and shown pictures: inside the root
    made = gradio_start_folders()
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
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM while gradio was starting (later, gradio catches it)
        log.info("stopped")
    finally:
        shutil.rmtree(root, ignore_errors=True)
        for folder in made:  # deepest first; only when still empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        log.info(f"removed {root} (uploads, pictures and downloads of this run)")
    return 0


if __name__ == "__main__":
    sys.exit(run(main, parse_args, sys.argv[1:]))
