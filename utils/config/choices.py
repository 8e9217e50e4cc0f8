"""Allowed values of a setting that evaluation code checks too, declared below both (no schema import needed).

utils/config is the lower layer: utils/evaluation reads settings, never the other way round, so the
metrics module imports this choice list from here rather than the schema importing it from the metrics.
"""

from __future__ import annotations

AUPRO_VARIANTS: tuple[str, ...] = ("official", "clip")
METRICS_RESOLUTIONS: tuple[str, ...] = ("eval_size", "native")
