"""SAM 3 loading, the two-step (encode once, predict many) engine, and the anomaly detector on top."""

from model.detector import AnomalyDetector, AnomalyResult, ScoringSettings
from model.engine import ConceptOutputs, ImageFeatures, Sam3Engine, TextFeatures
from model.loader import ModelLoadError, load_sam3, resolve_device, resolve_dtype
from model.mutual import MutualScorer
from model.visual import VisualMode

__all__ = [
    "AnomalyDetector",
    "AnomalyResult",
    "ConceptOutputs",
    "ImageFeatures",
    "ModelLoadError",
    "MutualScorer",
    "Sam3Engine",
    "ScoringSettings",
    "TextFeatures",
    "VisualMode",
    "load_sam3",
    "resolve_device",
    "resolve_dtype",
]
