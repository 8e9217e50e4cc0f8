"""Count the test images of a dataset on disk, per category (for the table of docs/datasets.md).

    python -m dataset.counts mvtec_loco ~/autodl-tmp/datasets [--split test]

Prints a Markdown table: category, images, normal, anomalous, unlabelled, and a total row. Only the index
is read (KolektorSDD2 decodes its ground-truth masks for the labels).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dataset import DATASET_NAMES, DatasetError, available_categories, load_dataset


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=DATASET_NAMES)
    parser.add_argument("root", help="the datasets root (or the dataset's own folder)")
    parser.add_argument("--split", default="test", help="test (default), train, or a set's own split name")
    parser.add_argument("--resolution", default=None, help="real_iad: the realiad_<res> folder when several")
    return parser.parse_args(argv)


def count_table(name: str, root: str, split: str, resolution: str | None = None) -> str:
    """The Markdown table of `main` (module docstring)."""
    lines = ["| category | images | normal | anomalous | unlabelled |", "|---|---|---|---|---|"]
    total = [0, 0, 0, 0]
    for category in available_categories(name, root):
        labels = [r.label for r in load_dataset(name, root, category, split, resolution).records]
        row = [len(labels), labels.count(0), labels.count(1), labels.count(None)]
        total = [a + b for a, b in zip(total, row, strict=True)]
        lines.append(f"| {category} | " + " | ".join(map(str, row)) + " |")
    lines.append("| **total** | " + " | ".join(f"**{v}**" for v in total) + " |")
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> int:
    try:
        print(count_table(args.dataset, args.root, args.split, args.resolution), end="")
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
