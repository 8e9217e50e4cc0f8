"""Write a tiny random SAM 3 in the real facebook/sam3 folder layout (for tests, benchmarks, trying things).

    python scripts/make_tiny_sam3.py OUT_DIR

The builder itself is `model.tiny_sam3.build_tiny_sam3` (see there for what the folder holds).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.tiny_sam3 import build_tiny_sam3  # noqa: E402
from utils.config.parser import OneLineParser  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="folder to write (created; existing files of the same name replaced)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    print(f"tiny SAM 3 written to {build_tiny_sam3(args.out_dir, seed=args.seed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
