"""Download facebook/sam3 (transformers checkpoint, tokenizer, configs) into a local model folder.

    python scripts/download_weights.py                   # ModelScope -> ~/autodl-tmp/download/sam3
    python scripts/download_weights.py --source huggingface --model_dir DIR

The 3.4 GB `sam3.pt` (Meta's original checkpoint) is skipped: transformers reads `model.safetensors`.
Hugging Face needs the licence accepted on https://huggingface.co/facebook/sam3 and `hf auth login` first.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO_ID = "facebook/sam3"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.config.parser import OneLineParser  # noqa: E402
from utils.config.schema import DEFAULT_MODEL_PATH  # noqa: E402

DEFAULT_MODEL_DIR = DEFAULT_MODEL_PATH
SKIPPED = ["sam3.pt"]  # Meta's original checkpoint; transformers does not need it


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model_dir", default=DEFAULT_MODEL_DIR, help=f"target folder (default {DEFAULT_MODEL_DIR})"
    )
    parser.add_argument("--source", choices=["modelscope", "huggingface"], default="modelscope")
    return parser.parse_args(argv)


def download_request(source: str, model_dir: str) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The snapshot_download function of `source` and the keyword arguments to call it with."""
    local_dir = str(Path(model_dir).expanduser())
    if source == "modelscope":
        from modelscope import snapshot_download

        return snapshot_download, {"model_id": REPO_ID, "local_dir": local_dir, "ignore_patterns": SKIPPED}
    if source == "huggingface":
        from huggingface_hub import snapshot_download

        return snapshot_download, {"repo_id": REPO_ID, "local_dir": local_dir, "ignore_patterns": SKIPPED}
    raise ValueError(f"unknown source {source!r}: use modelscope or huggingface")


def main(args: argparse.Namespace) -> int:
    download, kwargs = download_request(args.source, args.model_dir)
    print(
        f"downloading {REPO_ID} from {args.source} into {kwargs['local_dir']} (skipping {', '.join(SKIPPED)})"
    )
    try:
        download(**kwargs)
    except OSError as err:  # ConnectionError and the hubs' network errors derive from OSError
        other = "huggingface" if args.source == "modelscope" else "modelscope"
        print(
            f"error: could not download {REPO_ID} from {args.source} ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:160] if str(err) else 'no details'}): check the network "
            f"(and, for huggingface, the licence and `hf auth login`), or retry with --source {other}",
            file=sys.stderr,
        )
        return 2
    print(f"done: use --model_path {kwargs['local_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args(sys.argv[1:])))
