"""Allowed values and defaults of settings that evaluation code or test.sh read too, declared below both (no
schema import needed: importing the schema loads torch).

utils/config is the lower layer: utils/evaluation reads settings, never the other way round, so the
metrics module imports this choice list from here rather than the schema importing it from the metrics.
"""

from __future__ import annotations

AUPRO_VARIANTS: tuple[str, ...] = ("official", "clip")
DEFAULT_OUTPUT_DIR = "results"  # output_dir; also the root of test.sh's <mode>/<dataset> runs
