"""A web app: upload images, see heatmaps, masks, boxes and JSON; sliders re-threshold without SAM 3.

    python scripts/app.py --model_path ~/autodl-tmp/download/sam3 [--port 7860] [--auth USER:PASSWORD]

Takes demo.py's flags (prompts, scoring, --mask_threshold, --box_threshold, --thresholds FILE). The model
loads once per process; each uploaded image is run through SAM 3 once per (prompts, category, references) and
cached in the browser session (utils/app.py). A slider step re-cuts only the image shown (mask, boxes, score
line, JSON); the overview table and the downloads follow when the slider is released. Downloads (results.json
and the mask PNGs) go to a folder the app makes for each browser session. See docs/app.md (exposing the app).
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

from utils.versions import require_torch  # noqa: E402

require_torch()  # one line naming both versions when torch is too old, before torch is imported

from model.prompts import STRATEGIES  # noqa: E402
from utils.app import (  # noqa: E402
    BOX_FLOOR,
    EXAMPLES,
    ImageRun,
    Session,
    SessionFolders,
    category_choices,
    cut_pictures,
    engine_calls,
    exposure_warning,
    heatmap_picture,
    image_threshold_from,
    load_references,
    lower_box_threshold_to_floor,
    missing_model_message,
    presence_rows,
    read_uploads,
    resolve_prompts,
    result_json,
    rethreshold,
    score_line,
    summary_rows,
    upload_paths,
    visual_problem,
    write_downloads,
)
from utils.config.cli import config_from_args, run, script_parser, user_message  # noqa: E402
from utils.config.schema import Config  # noqa: E402
from utils.evaluation.thresholds import mask_threshold_from  # noqa: E402
from utils.pipeline import build_detector  # noqa: E402
from utils.run_log import get_logger  # noqa: E402

log = get_logger(__name__)
NOT_CONFIG = ("port", "host", "share", "auth")  # this script's own flags, not settings
IMAGE_HEIGHT = 250  # px: the four pictures side by side fit one 1366x768 screen with the controls
# slider / selector events: no spinners, the last value wins, and no queue (a direct request: less latency)
QUIET = {"show_progress": "hidden", "trigger_mode": "always_last", "queue": False}


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


def build_app(cfg: Config, temp_root: Path | None = None) -> gr.Blocks:
    """The gradio page; the detector is loaded here, once (None with a message when it cannot be).

    Downloads go to session folders the app makes inside a new folder under `temp_root` (default: the
    system's temporary folder), removed when the process ends.
    """
    problem = missing_model_message(cfg.model.model_path) or visual_problem(cfg.scoring.visual)
    detector, concepts = None, []
    if problem is None:
        try:
            detector, concepts = build_detector(cfg)
            detector = lower_box_threshold_to_floor(detector)
        except Exception as err:  # a user error (bad weights, device) is shown in the page
            problem = user_message(err)
            if problem is None:
                raise
    downloads_root = Path(tempfile.mkdtemp(prefix="sam3_app_", dir=temp_root))
    atexit.register(shutil.rmtree, downloads_root, ignore_errors=True)
    folders = SessionFolders(downloads_root)

    def references(session: Session) -> list[str]:
        return session.references.names if session.references is not None else []

    def recut(session: Session, selected: str | None, mask_t: float, box_t: float) -> tuple[Any, ...]:
        """The shown image's mask, boxes, score line and JSON at the slider values (a slider step)."""
        run = session.run(selected)
        if detector is None or run is None:
            return (gr.skip(),) * 4
        cut = rethreshold(run.result, mask_t, box_t)
        doc = result_json(run.result, cut, run.prompts, engine_calls(detector), run.name, references(session))
        mask, boxes = cut_pictures(run.image, cut)
        return (
            mask,
            boxes,
            score_line(run.result.image_score, session.image_threshold),
            json.dumps(doc, indent=1),
        )

    def show(session: Session, selected: str | None, mask_t: float, box_t: float) -> tuple[Any, ...]:
        """All about the image picked in the selector: input, heatmap, per-prompt table, then `recut`."""
        run = session.run(selected)
        if detector is None or run is None:
            return (gr.skip(),) * 7
        return (
            run.image,
            heatmap_picture(run.image, run.result),
            presence_rows(run.result),
            *recut(session, selected, mask_t, box_t),
        )

    def overview(
        session: Session, mask_t: float, box_t: float, request: gr.Request | None
    ) -> tuple[Any, ...]:
        """Every image's row and the downloads (results.json and the masks) at the slider values."""
        if detector is None or not session.runs:
            return gr.skip(), gr.skip()
        calls, docs, masks = engine_calls(detector), [], []
        for run in session.runs:
            cut = rethreshold(run.result, mask_t, box_t)
            docs.append(result_json(run.result, cut, run.prompts, calls, run.name, references(session)))
            masks.append(cut.mask)
        folder = folders.folder(getattr(request, "session_hash", None))
        return summary_rows(docs), [str(p) for p in write_downloads(folder, docs, masks)]

    def analyse(
        files,
        folder,
        category,
        strategy,
        prompts_text,
        refs,
        selected,
        mask_t,
        box_t,
        session,
        request: gr.Request,
    ):
        """Run SAM 3 on the images not cached yet; show the image shown before when it is still there."""
        session.run_count += 1
        try:
            if detector is None:
                raise RuntimeError(problem)
            paths = upload_paths(files, folder)
            category = (category or "").strip() or None
            session.image_threshold = None
            if cfg.demo.thresholds and category:
                mask_t = mask_threshold_from(cfg.demo.thresholds, category)
                session.image_threshold = image_threshold_from(cfg.demo.thresholds, category)
            session.references = load_references(detector, refs, session.references)
            prompts, noun = resolve_prompts(cfg, category, strategy, prompts_text, concepts)
            images, errors = read_uploads(paths)
            results = session.cache.results(
                detector, [im for _, im in images], prompts, noun, session.references, cfg.model.batch_size
            )
        except Exception as err:
            message = problem if detector is None else user_message(err)
            if message is None:
                raise
            gr.Warning(message)
            session.runs = []  # the sliders must not bring back an earlier Run's pictures
            blank = (None, None, None, None, None, "", "", None, None)
            status = f"**Error (Run {session.run_count}):** {message}"
            return (*blank, gr.update(choices=[], value=None), status, session, mask_t)
        session.runs = [
            ImageRun(name, image, result, prompts)
            for (name, image), result in zip(images, results, strict=True)
        ]
        names = [run.name for run in session.runs]
        selected = selected if selected in names else names[0]
        status = f"Done (Run {session.run_count}): {len(names)} image(s)."
        if errors:
            gr.Warning("Not read: " + "; ".join(errors))
            status += " **Not read:** " + "; ".join(errors)
        shown = (*show(session, selected, mask_t, box_t), *overview(session, mask_t, box_t, request))
        return (*shown, gr.update(choices=names, value=selected), status, session, mask_t)

    def forget(request: gr.Request):
        """The browser tab closed: the downloads folder made for it goes (none for a session never served)."""
        folders.forget(getattr(request, "session_hash", None))

    with gr.Blocks(title="SAM 3 anomaly detection") as app:
        session = gr.State(Session())  # copied per browser session
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=330):
                gr.Markdown("### SAM 3 zero-shot anomaly detection")
                upload = gr.File(
                    label="images", file_count="multiple", type="filepath", elem_id="upload", height=110
                )
                gr.Examples([[[str(p)]] for p in EXAMPLES], [upload], label="examples: click one, then Run")
                category = gr.Dropdown(
                    ["", *category_choices()],
                    value="",
                    allow_custom_value=True,
                    label="category (or type your own; empty: generic)",
                    elem_id="category",
                )
                with gr.Row(equal_height=False):
                    run = gr.Button("Run", variant="primary", elem_id="run", scale=1, min_width=80)
                    status = gr.Markdown(
                        problem or "Upload images (or click an example) and press Run.",
                        elem_id="status",
                        scale=3,
                    )
                mask_t = gr.Slider(
                    0.0,
                    1.0,
                    value=cfg.demo.mask_threshold,
                    step=0.01,
                    label="mask threshold",
                    elem_id="mask_slider",
                )
                box_t = gr.Slider(
                    BOX_FLOOR,
                    1.0,
                    value=max(cfg.scoring.box_threshold, BOX_FLOOR),
                    step=0.01,
                    label="box threshold",
                    elem_id="box_slider",
                )
                with gr.Accordion("more: prompts, references, folder", open=False):
                    strategy = gr.Radio(
                        list(STRATEGIES),
                        value=cfg.prompts.prompt_strategy,
                        label="prompt strategy (base: strictly zero-shot; others: category vocabularies)",
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
                    folder = gr.File(
                        label="or a folder of images",
                        file_count="directory",
                        type="filepath",
                        elem_id="folder",
                    )
            with gr.Column(scale=3):
                with gr.Row(equal_height=True):
                    selector = gr.Dropdown(
                        [], label="image shown", elem_id="image_select", interactive=True, scale=1
                    )
                    verdict = gr.Markdown("", elem_id="verdict")
                with gr.Row(equal_height=True):
                    pictures_row = [
                        gr.Image(
                            label=name, elem_id=key, format="png", height=IMAGE_HEIGHT, interactive=False
                        )
                        for key, name in (
                            ("input", "input"),
                            ("overlay", "heatmap (anomaly score 0-1)"),
                            ("mask", "mask"),
                            ("boxes", "boxes"),
                        )
                    ]
                summary = gr.Dataframe(
                    headers=["image", "score", "mask pixels", "boxes"],
                    label="all images",
                    elem_id="summary",
                    max_height=180,
                )
        with gr.Row():
            table = gr.Dataframe(
                headers=["prompt", "presence", "best score"], label="per prompt", elem_id="presence"
            )
            downloads = gr.File(
                label="downloads", file_count="multiple", interactive=False, elem_id="downloads"
            )
        result = gr.Textbox(
            label="result (JSON)", lines=10, max_lines=30, elem_id="result_json", interactive=False
        )
        picture_in, overlay, mask, boxes = pictures_row
        shown = [picture_in, overlay, table, mask, boxes, verdict, result]
        everything = [*shown, summary, downloads]
        inputs = [upload, folder, category, strategy, prompts, refs, selector, mask_t, box_t, session]
        run.click(analyse, inputs, [*everything, selector, status, session, mask_t], api_name="run")
        look = [session, selector, mask_t, box_t]
        selector.input(show, look, shown, api_name="show", **QUIET)
        for slider in (mask_t, box_t):
            slider.input(recut, look, [mask, boxes, verdict, result], api_name=False, **QUIET)
            slider.release(overview, [session, mask_t, box_t], [summary, downloads], api_name=False, **QUIET)
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
