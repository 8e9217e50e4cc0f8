"""SAM 3 loading and the two-step (encode once, predict many) inference engine."""

from model.engine import ConceptOutputs, ImageFeatures, Sam3Engine, TextFeatures
from model.loader import ModelLoadError, load_sam3, resolve_device, resolve_dtype

__all__ = [
    "ConceptOutputs",
    "ImageFeatures",
    "ModelLoadError",
    "Sam3Engine",
    "TextFeatures",
    "load_sam3",
    "resolve_device",
    "resolve_dtype",
]
