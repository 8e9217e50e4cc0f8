"""Every setting, declared once: the sections of configs/config.yaml as dataclasses.

Each field is made with `model.settings.setting(default, help, section, ...)`: its name is the YAML key and
the flag, its annotation the type, plus allowed values, help, which scripts expose it as a flag and whether it
changes scores. The scoring fields are declared in `model.detector.ScoringSettings` (model/ must not import
utils/) and composed here with the rest. Derived from `SETTINGS`: the defaults, the flags of scripts/
(`utils.config.cli`), type and value checks (`utils.config.loading`), the resume fingerprint tables
(`utils.evaluation.fingerprint`) and the README's config table (`markdown_table`).

Defaults live here, in code, because `ScoringSettings` must carry them for the Python API without reading
any file; configs/config.yaml mirrors them with a comment per key, and tests/test_schema.py keeps the two
equal. Adding a setting = one `setting(...)` field here (or in `ScoringSettings`) + its use.
"""

from __future__ import annotations

import copy
import types
import typing
from dataclasses import MISSING, Field, dataclass, fields
from typing import Any

import yaml

from dataset import DATASET_NAMES, TEXTURE_CATEGORIES
from model.detector import ScoringSettings
from model.prompts import STRATEGIES
from model.settings import EVAL_SCRIPTS, SCRIPTS, SettingInfo, setting, setting_info
from utils.config.choices import AUPRO_VARIANTS

DEFAULT_MODEL_PATH = "~/autodl-tmp/download/sam3"  # where scripts/download_weights.py puts facebook/sam3
DTYPES: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
CONCEPT_MODES: tuple[str, ...] = ("replace", "add")
ALL = SCRIPTS
EVAL = EVAL_SCRIPTS
TRAIN_ONLY = "scripts/train.py only"
# Section name -> the heading of its block in configs/config.yaml and the README table.
SECTION_TITLES: dict[str, str] = {
    "data": "data",
    "model": "model",
    "prompts": "prompts",
    "map": "from SAM 3 outputs to an anomaly map",
    "visual": "visual signal from SAM 3's patch features (model/visual.py)",
    "evaluation": "evaluation",
    "demo": "demo",
    "training": "training (scripts/train.py)",
}


@dataclass
class DataSettings:
    dataset: str = setting(
        "mvtec",
        "which loader reads the images and masks (folder: your own, see README)",
        "data",
        choices=DATASET_NAMES,
        fingerprint="value",
        scripts=ALL,
        resume="fixed",
    )
    dataset_path: str | None = setting(
        None,
        "datasets root (contains mvtec/ or visa/); null -> first line of dataset_dir.txt",
        "data",
        not_fingerprinted="the stored image paths are compared one by one instead (progress.json)",
        scripts=("test", "train"),
        resume="changeable",
    )
    categories: list[str] | None = setting(
        None,
        "categories to use (comma-separated as a flag); null -> every category found under the root",
        "data",
        not_fingerprinted="every category has its own store",
        scripts=("test", "train"),
        resume="fixed",
    )
    texture_categories: list[str] = setting(
        list(TEXTURE_CATEGORIES),
        "categories without object-prompt regularisation (default: dataset.TEXTURE_CATEGORIES)",
        "data",
        fingerprint="value",
        scripts=EVAL,
    )


@dataclass
class ModelSettings:
    model_path: str = setting(
        DEFAULT_MODEL_PATH,
        "a local facebook/sam3 download (config.json + model.safetensors)",
        "model",
        fingerprint="identity",
        scripts=ALL,
        resume="fixed",
    )
    checkpoint: str | None = setting(
        None,
        "trained concepts from scripts/train.py (OUTPUT_DIR/last.safetensors); null = zero-shot",
        "model",
        fingerprint="identity",
        scripts=EVAL,
    )
    concept_mode: str = setting(
        "replace",
        "with a checkpoint: replace the text prompts by the learned concepts, or add them",
        "model",
        choices=CONCEPT_MODES,
        fingerprint="value",
        scripts=EVAL,
    )
    device: str = setting(
        "auto",
        "auto | cpu | cuda | cuda:N",
        "model",
        fingerprint="identity",
        scripts=ALL,
        resume="changeable",
    )
    dtype: str = setting(
        "auto",
        "auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16",
        "model",
        choices=DTYPES,
        fingerprint="value",
        scripts=ALL,
        resume="changeable",
    )
    batch_size: int = setting(
        4,
        "images per vision-encoder pass (train.py: per micro-step)",
        "model",
        minimum=1,
        not_fingerprinted="images per encoder pass: the same results up to float rounding",
        scripts=ALL,
        resume="changeable",
    )
    chunk_size: int = setting(
        8,
        "image x prompt rows per decoder pass (bounds memory)",
        "model",
        minimum=1,
        not_fingerprinted="rows per decoder pass: the same results up to float rounding",
        scripts=ALL,
        resume="changeable",
    )


@dataclass
class PromptSettings:
    prompt_strategy: str = setting(
        "base",
        "base (strictly zero-shot) | category | mixed | contextual (prior knowledge)",
        "prompts",
        choices=STRATEGIES,
        fingerprint="value",
        scripts=ALL,
        resume="fixed",
    )
    extra_prompts: list[str] = setting(
        [],
        "defect phrases added to every category's prompts",
        "prompts",
        fingerprint="value",
        scripts=EVAL,
    )
    prompt_overrides: dict[str, list[str]] = setting(
        {},
        "{category: [phrases]} replaces the built prompts of that category (YAML only)",
        "prompts",
        fingerprint="value",
    )


@dataclass
class EvaluationSettings:
    eval_size: int = setting(
        256,
        "maps and masks are compared at eval_size x eval_size",
        "evaluation",
        minimum=1,
        fingerprint="value",
        scripts=("test",),
    )
    aupro_variant: str = setting(
        "official",
        "official (MVTec AD definition) | clip (200 thresholds, rescaled FPR)",
        "evaluation",
        choices=AUPRO_VARIANTS,
        not_fingerprinted="metrics only: in metrics.json, recomputed from the stored maps when it differs",
        scripts=("test",),
    )
    output_dir: str = setting(
        "results",
        "where outputs go; test.py uses <this>/<dataset> unless --output_dir or the --config file sets it",
        "evaluation",
        not_fingerprinted="where the store is",
        scripts=ALL,
        resume="changeable",
    )
    visualize: bool = setting(
        False,
        "write overlays for a sample of images per category",
        "evaluation",
        not_fingerprinted="overlays are drawn from the stored maps at every run",
        scripts=("test",),
    )
    num_visualize: int = setting(
        8,
        "images per category to visualise (worst errors first)",
        "evaluation",
        not_fingerprinted="overlays are drawn from the stored maps at every run",
        scripts=("test",),
    )
    save_maps: str | None = setting(
        None,
        "tiff: also write float32 maps as anomaly_maps/<category>/test/<defect>/<stem>.tiff (MVTec's layout)",
        "evaluation",
        choices=("tiff",),
        not_fingerprinted="written from the stored maps at every run",
        scripts=("test",),
    )


@dataclass
class VisualSettings:
    shots: int = setting(
        4,
        "visual fewshot: normal reference images per category, drawn from its train split (train/good)",
        "visual",
        minimum=1,
        fingerprint="value",
        scripts=("test",),
    )
    shot_seed: int = setting(
        0,
        "visual fewshot: seed of the draw of the reference images",
        "visual",
        fingerprint="value",
        scripts=("test",),
    )
    shot_seeds: list[int] | None = setting(
        None,
        "visual fewshot: a run per seed, each in output_dir/seed_N/, then their mean in output_dir "
        "(comma-separated as a flag); null -> one run with shot_seed",
        "visual",
        not_fingerprinted="each seed is its own run in seed_N/, whose fingerprint holds shot_seed = N",
        scripts=("test",),
    )


@dataclass
class DemoSettings:
    mask_threshold: float = setting(
        0.5,
        "binary mask = anomaly map >= this",
        "demo",
        not_fingerprinted="demo.py only (binary masks)",
        scripts=("demo",),
    )
    thresholds: str | None = setting(
        None,
        "thresholds.json from test.py: mask = map >= the category's pixel_normal_threshold (README)",
        "demo",
        not_fingerprinted="demo.py only (binary masks)",
        scripts=("demo",),
    )


@dataclass
class TrainingSettings:
    num_epochs: int = setting(
        5,
        "passes over the training images",
        "training",
        minimum=1,
        not_fingerprinted="scripts/train.py only: training reaches test.py through the checkpoint's bytes",
        scripts=("train",),
        resume="changeable",
    )
    lr: float = setting(
        1.0e-3,
        "AdamW learning rate (1e-3 for concept embeddings; 1e-5 is the seed's value for full heads)",
        "training",
        not_fingerprinted=TRAIN_ONLY,
        scripts=("train",),
        resume="changeable",
    )
    weight_decay: float = setting(
        0.0,
        "AdamW weight decay",
        "training",
        not_fingerprinted=TRAIN_ONLY,
        scripts=("train",),
        resume="changeable",
    )
    grad_accum: int = setting(
        4,
        "micro-steps per optimiser step",
        "training",
        minimum=1,
        not_fingerprinted=TRAIN_ONLY,
        scripts=("train",),
        resume="changeable",
    )
    num_concepts: int = setting(
        4,
        "learned concept embeddings added to the text prompts, seeded from generic prompts",
        "training",
        minimum=1,
        not_fingerprinted=TRAIN_ONLY,
        scripts=("train",),
        resume="fixed",
    )
    train_head: bool = setting(
        False,
        "also fine-tune SAM 3's semantic-segmentation head",
        "training",
        not_fingerprinted=TRAIN_ONLY,
        scripts=("train",),
        resume="fixed",
    )
    focal_weight: float = setting(
        1.0,
        "weight of the focal loss",
        "training",
        not_fingerprinted=TRAIN_ONLY,
        scripts=("train",),
        resume="changeable",
    )
    dice_weight: float = setting(
        1.0,
        "weight of the dice loss",
        "training",
        not_fingerprinted=TRAIN_ONLY,
        scripts=("train",),
        resume="changeable",
    )
    image_loss_weight: float = setting(
        0.5,
        "weight of the image-level loss",
        "training",
        not_fingerprinted=TRAIN_ONLY,
        scripts=("train",),
        resume="changeable",
    )
    seed: int = setting(
        0,
        "random seed of training",
        "training",
        not_fingerprinted="scripts/train.py only (evaluation is deterministic)",
        scripts=("train",),
        resume="changeable",
    )


SECTIONS: tuple[type, ...] = (
    DataSettings,
    ModelSettings,
    PromptSettings,
    ScoringSettings,
    VisualSettings,
    EvaluationSettings,
    DemoSettings,
    TrainingSettings,
)


@dataclass(frozen=True)
class Setting:
    """One declared setting. `kind` is the type a non-null value has (str, int, float, bool, list, dict).

    `item`: the type of a list's elements (`list[int]` -> int), None for other kinds.
    """

    name: str
    kind: type
    nullable: bool
    default: Any
    info: SettingInfo
    item: type | None = None


def _kind(annotation: Any) -> tuple[type, bool]:
    """(base type, nullable) of an annotation: `int`, `str | None`, `list[str]`, `dict[str, list[str]]`."""
    args = typing.get_args(annotation)
    if isinstance(annotation, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]
        return _kind(inner)[0], True
    return typing.get_origin(annotation) or annotation, False


def _item(annotation: Any) -> type | None:
    """The element type of a list annotation (`list[int]`, `list[str] | None`), else None."""
    if isinstance(annotation, types.UnionType):
        (inner,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _item(inner)
    return typing.get_args(annotation)[0] if typing.get_origin(annotation) is list else None


def _default(f: Field) -> Any:
    return f.default_factory() if f.default is MISSING else f.default


def _collect() -> dict[str, Setting]:
    """Every field of SECTIONS, in section order, then field order (the order of configs/config.yaml)."""
    found: list[Setting] = []
    for section in SECTIONS:
        hints = typing.get_type_hints(section)
        for f in fields(section):
            kind, nullable = _kind(hints[f.name])
            item = _item(hints[f.name])
            found.append(Setting(f.name, kind, nullable, _default(f), setting_info(f), item))
    order = list(SECTION_TITLES)
    found.sort(key=lambda s: order.index(s.info.section))  # stable: field order kept within a section
    names = [s.name for s in found]
    duplicated = {n for n in names if names.count(n) > 1}
    if duplicated:
        raise ValueError(f"settings declared twice: {sorted(duplicated)}")
    return {s.name: s for s in found}


SETTINGS: dict[str, Setting] = _collect()


def defaults() -> dict[str, Any]:
    """A fresh dict of every setting's default, in the order of configs/config.yaml."""
    return {name: _default_copy(s) for name, s in SETTINGS.items()}


def _default_copy(s: Setting) -> Any:
    return copy.deepcopy(s.default)


def yaml_value(value: Any) -> str:
    """A value as written in configs/config.yaml: `null`, `true`, `[carpet, grid]`, `{}`, `0.001`."""
    return yaml.safe_dump(value, default_flow_style=True, width=1000).removesuffix("\n").removesuffix("\n...")


def flags_of(script: str) -> list[Setting]:
    """The settings that `scripts/<script>.py` takes as `--<name>` flags."""
    return [s for s in SETTINGS.values() if script in s.info.scripts]


def fingerprinted(mode: str) -> tuple[str, ...]:
    """The names of the settings with `fingerprint == mode` ("value" or "identity")."""
    return tuple(name for name, s in SETTINGS.items() if s.info.fingerprint == mode)


def markdown_table() -> str:
    """The README's config table: key, default, allowed values, flags, changes scores, meaning."""
    rows = [
        "| key | default | allowed | flag of | changes scores | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in SETTINGS.items():
        allowed = " \\| ".join(map(str, s.info.choices)) or _range_text(s)
        scores = {"value": "yes", "identity": "yes (what it names)"}.get(s.info.fingerprint or "", "no")
        flag = ", ".join(s.info.scripts) or "YAML only"
        meaning = s.info.help.replace("|", "\\|")
        rows.append(f"| `{name}` | `{yaml_value(s.default)}` | {allowed} | {flag} | {scores} | {meaning} |")
    return "\n".join(rows) + "\n"


def _range_text(s: Setting) -> str:
    low, high = s.info.minimum, s.info.maximum
    if low is not None and high is not None:
        return f"[{low:g}, {high:g}]"
    if low is not None:
        return f">= {low:g}"
    if s.kind is list and s.item is not None:
        return f"list of {s.item.__name__}"
    return "" if s.kind not in (list, dict) else s.kind.__name__


if __name__ == "__main__":  # python -m utils.config.schema: the README's config table
    print(markdown_table(), end="")
