"""Convert an old pickle checkpoint of scripts/train.py (epoch_NNN.pt, last.pt) to the safetensors format.

    python scripts/convert_checkpoint.py runs/mvtec/last.pt            # writes runs/mvtec/last.safetensors
    python scripts/convert_checkpoint.py OLD.pt --output NEW.safetensors

The old file is read with `torch.load(weights_only=True)`, which rebuilds only tensors and plain values
(dicts, lists, tuples, strings, numbers) and refuses anything else without running it. Old checkpoints hold
nothing else, so a file that needs more was not written by scripts/train.py and is not converted.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.versions import require_torch  # noqa: E402

require_torch()  # one line naming both versions when torch is too old, before torch is imported

import torch  # noqa: E402

from utils.config.cli import run  # noqa: E402
from utils.config.parser import OneLineParser  # noqa: E402
from utils.training.checkpoint import REQUIRED_JSON, SUFFIX, CheckpointError, load_checkpoint, save_checkpoint  # noqa: E402

OLD_KEYS = ("concepts", *REQUIRED_JSON)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="old checkpoint written by scripts/train.py (.pt)")
    parser.add_argument("--output", help=f"new checkpoint (default: the old path with {SUFFIX})")
    return parser.parse_args(argv)


def read_old(path: Path) -> dict[str, Any]:
    """The old checkpoint's dict, unpickled with weights_only=True; CheckpointError when it is refused."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[0]
        raise CheckpointError(
            f"refused {path}: it holds objects other than tensors and plain values ({reason}); "
            "only checkpoints written by scripts/train.py are converted"
        ) from None
    except Exception as err:  # torch raises several types for a truncated or foreign file
        raise CheckpointError(f"cannot read {path}: {type(err).__name__} (file corrupt?)") from None
    missing = [key for key in OLD_KEYS if not isinstance(ckpt, dict) or key not in ckpt]
    if missing:
        raise CheckpointError(
            f"{path} is not a checkpoint of scripts/train.py (it lacks {', '.join(missing)})"
        )
    return ckpt


def main(args: argparse.Namespace) -> int:
    old = Path(args.checkpoint).expanduser()
    new = Path(args.output).expanduser() if args.output else old.with_suffix(SUFFIX)
    if new.exists():
        raise CheckpointError(f"{new} exists already: delete it or choose another --output")
    save_checkpoint(read_old(old), new)
    ckpt = load_checkpoint(new)  # the same checks as --checkpoint / --resume
    print(f"converted {old} -> {new} (epoch {ckpt['epoch']}, {ckpt['concepts']['embeds'].shape[0]} concepts)")
    return 0


if __name__ == "__main__":
    sys.exit(run(main, parse_args, sys.argv[1:]))
