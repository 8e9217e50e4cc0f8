"""The choices and messages of the page: categories, examples, and what is missing to run.

Messages shown in the page speak of the page (no command-line flags); the console gets the operator's
version with the flags (`for_console=True`).
"""

from __future__ import annotations

from pathlib import Path

from dataset import benchmark_categories

EXAMPLES: tuple[Path, ...] = tuple(
    Path(__file__).resolve().parents[2] / "assets" / name
    for name in ("demo_scratch.png", "demo_hole.png", "demo_good.png")
)  # clickable examples (assets/README.md rebuilds them)
TINY_MODEL = "python scripts/make_tiny_sam3.py /tmp/tiny_sam3"  # a random SAM 3 for trying the app


def category_choices() -> list[str]:
    """The category dropdown's names: every published category of every benchmark in the dataset registry
    (`dataset.benchmark_categories`), in dataset order, each once."""
    return list(benchmark_categories())


def missing_model_message(model_path: str | Path, for_console: bool = False) -> str | None:
    """Why the app cannot load SAM 3 from `model_path` and what to download; None when it looks usable."""
    folder = Path(model_path).expanduser()
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        return None
    restart = "restart with --model_path FOLDER" if for_console else "restart the app with its folder"
    return (
        f"No SAM 3 model in {folder} (config.json + model.safetensors needed): download facebook/sam3 with "
        f"`python scripts/download_weights.py` and {restart}. To try the app without it, make a tiny random "
        f"model (its scores are noise): `{TINY_MODEL}`, then {restart.replace('FOLDER', '/tmp/tiny_sam3')}."
    )


def visual_problem(visual: str, for_console: bool = False) -> str | None:
    """Why the app cannot score with the visual mode `visual` (the setting), or None (none, fewshot work)."""
    if visual != "mutual":
        return None
    restart = "start the app with --visual none" if for_console else "restart the app without mutual scoring"
    return (
        "mutual scoring compares a whole category at once, the app scores images one by one: "
        f"{restart} (and upload reference good images in the page for few-shot scoring)"
    )
