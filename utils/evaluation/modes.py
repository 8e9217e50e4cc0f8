"""The evaluation modes of a paper table, one table: the settings of each mode, read by test.sh (as test.py
flags) and by the results code (to name the mode of a results.json).

    python -m utils.evaluation.modes flags text fewshot   # one line of test.py flags per mode (test.sh)
    python -m utils.evaluation.modes root                 # the declared output_dir (test.sh's OUTPUT_ROOT)

An unknown mode is a one-line error with exit code 2. Light on purpose (no torch import): test.sh calls it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from utils.config.choices import DEFAULT_OUTPUT_DIR

# mode -> the settings that make a run of that mode, in the order compare.md lists the modes. mutual with
# visual_weight 1 is the visual map alone; text+mutual fuses it with the text map (declared visual_weight);
# fewshot scores against `shots` normal train images per category (labelled `fewshot K=<shots>`).
TEST_MODES: dict[str, dict[str, Any]] = {
    "text": {"visual": "none"},
    "mutual": {"visual": "mutual", "visual_weight": 1.0},
    "text+mutual": {"visual": "mutual"},
    "fewshot": {"visual": "fewshot"},
}
MODE_ORDER: tuple[str, ...] = tuple(TEST_MODES)


def mode_flags(mode: str) -> list[str]:
    """test.py's flags for `mode`: `["--visual", "mutual", "--visual_weight", "1"]`.

    Raises:
        ValueError: an unknown mode, naming the known ones.
    """
    if mode not in TEST_MODES:
        raise ValueError(f"unknown mode '{mode}' in MODES: use {', '.join(MODE_ORDER)}")
    return [part for key, value in TEST_MODES[mode].items() for part in (f"--{key}", str(value))]


def mode_of(config: Mapping[str, Any]) -> str:
    """The mode whose settings `config` (a flat results.json config) has: the most specific one that matches
    (mutual before text+mutual); "text" when none does."""
    by_detail = sorted(TEST_MODES, key=lambda mode: -len(TEST_MODES[mode]))
    for mode in by_detail:
        if all(config.get(key) == value for key, value in TEST_MODES[mode].items()):
            return mode
    return "text"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the evaluation modes of test.sh")
    parser.add_argument("what", choices=("flags", "root"), help="flags of MODES, or the default output root")
    parser.add_argument("modes", nargs="*", help="mode names (with `flags`)")
    args = parser.parse_args(argv)
    if args.what == "root":
        print(DEFAULT_OUTPUT_DIR)
        return 0
    try:
        lines = [" ".join(mode_flags(mode)) for mode in args.modes]
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
