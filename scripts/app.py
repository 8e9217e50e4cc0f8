"""A web app: upload an image, see the heatmap, mask, boxes and JSON; sliders re-threshold without SAM 3.

    python scripts/app.py --model_path ~/autodl-tmp/download/sam3 [--port 7860] [--share]

Takes demo.py's flags (prompts, scoring, --mask_threshold, --box_threshold, --thresholds FILE). The model
loads once per process; each uploaded image is run through SAM 3 once per (prompts, category) and cached in
the browser session (utils/app.py), so moving a slider only recomputes the mask and the boxes. Without a
model folder the app still starts and says what to download.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gradio as gr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.app import (  # noqa: E402
    BOX_FLOOR,
    EncodeCache,
    engine_calls,
    missing_model_message,
    parse_prompts,
    pictures,
    presence_rows,
    read_upload,
    result_json,
    rethreshold,
    with_floor,
)
from utils.config.cli import config_from_args, script_parser, user_message  # noqa: E402
from utils.evaluation.thresholds import mask_threshold_from  # noqa: E402
from utils.pipeline import build_detector  # noqa: E402


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """demo.py's config flags plus --port, --share and --host."""
    parser = script_parser("demo", __doc__.splitlines()[0])
    parser.add_argument(
        "--port", type=int, default=7860, help="local port (AutoDL: 6006, its custom service)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    return parser.parse_args(argv)


def build_app(cfg: dict[str, Any]) -> gr.Blocks:
    """The gradio page; the detector is loaded here, once (None with a message when it cannot be)."""
    problem = missing_model_message(cfg["model_path"])
    detector = None
    if problem is None:
        try:
            detector = with_floor(build_detector(cfg)[0])
        except Exception as err:  # a user error (bad weights, device) is shown in the page
            problem = user_message(err)
            if problem is None:
                raise

    def analyse(upload, category, prompts_text, mask_t, box_t, cache):
        """Run SAM 3 (or take the cached result) and draw everything at the slider values."""
        if detector is None:
            return (*[None] * 5, problem, cache, mask_t)
        try:
            image = read_upload(upload)
            category = (category or "").strip() or None
            if cfg["thresholds"] and category:
                mask_t = mask_threshold_from(cfg["thresholds"], category)
        except Exception as err:
            message = user_message(err)
            if message is None:
                raise
            return (*[None] * 5, f"Error: {message}", cache, mask_t)
        prompts = parse_prompts(prompts_text)
        result = cache.result(detector, image, prompts, category)
        cut = rethreshold(result, mask_t, box_t)
        doc = json.dumps(result_json(result, cut, prompts, engine_calls(detector)), indent=1)
        overlay, mask, boxes = pictures(image, result, cut)
        return overlay, mask, boxes, doc, presence_rows(result), "Done.", cache, mask_t

    def rethreshold_only(upload, category, prompts_text, mask_t, box_t, cache):
        """Slider moved: the cached result cut anew (nothing to do before the first run)."""
        if detector is None or not len(cache):
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        try:
            image = read_upload(upload)
        except Exception:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        category = (category or "").strip() or None
        prompts = parse_prompts(prompts_text)
        result = cache.result(detector, image, prompts, category)  # cached: no SAM 3 forward
        cut = rethreshold(result, mask_t, box_t)
        overlay, mask, boxes = pictures(image, result, cut)
        doc = json.dumps(result_json(result, cut, prompts, engine_calls(detector)), indent=1)
        return overlay, mask, boxes, doc, "Done."

    with gr.Blocks(title="SAM 3 anomaly detection") as app:
        gr.Markdown("## SAM 3 zero-shot anomaly detection")
        status = gr.Markdown(problem or "Upload an image and press Run.", elem_id="status")
        cache = gr.State(EncodeCache())  # copied per browser session
        with gr.Row():
            with gr.Column():
                upload = gr.File(label="image", type="filepath", elem_id="upload")
                category = gr.Textbox(label="category (e.g. bottle; empty: generic)", elem_id="category")
                prompts = gr.Textbox(
                    label="prompts, comma-separated (empty: the category's)", elem_id="prompts"
                )
                # Few-shot reference images (issue 10) go here once the detector takes them.
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
                overlay = gr.Image(label="heatmap", elem_id="overlay", format="png")
                mask = gr.Image(label="mask", elem_id="mask", format="png")
                boxes = gr.Image(label="boxes", elem_id="boxes", format="png")
        result = gr.Textbox(label="result (JSON)", lines=12, elem_id="result_json", interactive=False)
        table = gr.Dataframe(headers=["prompt", "presence", "best score"], label="per prompt")
        inputs = [upload, category, prompts, mask_t, box_t, cache]
        run.click(analyse, inputs, [overlay, mask, boxes, result, table, status, cache, mask_t])
        for slider in (mask_t, box_t):
            slider.change(rethreshold_only, inputs, [overlay, mask, boxes, result, status])
    return app


def main(args: argparse.Namespace) -> int:
    cfg = config_from_args(args, not_config=("port", "host", "share"))
    build_app(cfg).launch(server_name=args.host, server_port=args.port, share=args.share)
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args(sys.argv[1:])))
