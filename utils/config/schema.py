"""Every setting, declared once: the sections of the configuration as dataclasses; `Config` holds one of each.

Each field is made with `model.settings.setting(default, help, section, ...)`: name = YAML key and flag,
annotation = type, plus default, allowed values and help (scoring fields: `model.settings.ScoringSettings`,
as model/ must not import utils/). What scripts do with each setting is the table of utils/config/policy.py.
Derived from `SETTINGS`: defaults, flags (`utils.config.cli`), checks (`utils.config.loading`), the resume
fingerprint (`utils.evaluation.fingerprint`), docs/settings.md's table and the generated, never read
configs/config.yaml (both written by `utils.config.render`; checked by tests/test_schema.py).
Adding a setting = one `setting(...)` field + its row in policy.py + its use.
"""

from __future__ import annotations

import copy
import enum
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, fields
from typing import Any

import yaml

from dataset import DATASET_NAMES, TEXTURE_CATEGORIES
from dataset.images import SENSOR_DEPTHS
from model.engine import DEFAULT_BATCH_SIZE, DEFAULT_CHUNK_SIZE
from model.prompts import DEFAULT_STRATEGY, STRATEGIES
from model.settings import MASK_THRESHOLD, ScoringSettings, SettingInfo, setting, setting_info
from utils.config.choices import AUPRO_VARIANTS, DEFAULT_OUTPUT_DIR, METRICS_RESOLUTIONS
from utils.config.policy import POLICIES, Policy

DEFAULT_MODEL_PATH = "~/autodl-tmp/download/sam3"  # where scripts/download_weights.py puts facebook/sam3
DTYPES: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
CONCEPT_MODES: tuple[str, ...] = ("replace", "add")
MAX_EVAL_SIZE = 8192  # one float16 map of 8192 x 8192 is 128 MB; far larger sizes overflow the map store
MAX_SEED = 2**32 - 1  # the largest seed numpy and torch both take
# Section name -> the heading of its block in configs/config.yaml and the settings table (docs/settings.md).
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


@dataclass(frozen=True)
class DataSettings:
    dataset: str = setting(
        "mvtec",
        "which loader reads the images and masks (docs/datasets.md; folder: your own)",
        "data",
        choices=DATASET_NAMES,
    )
    dataset_path: str | None = setting(
        None,
        "datasets root (contains mvtec/ or visa/); null -> first line of dataset_dir.txt",
        "data",
    )
    categories: list[str] | None = setting(
        None,
        "categories to use (comma-separated as a flag); null -> every category found under the root",
        "data",
    )
    test_split: str = setting(
        "test",
        "the split test.py scores; mvtec_ad2 also test_private / test_private_mixed (unlabelled: no metrics)",
        "data",
        choices=("test", "test_private", "test_private_mixed"),
    )
    realiad_resolution: str | None = setting(
        None,
        "real_iad: the realiad_<res> folder to read (256, 512, 1024, raw) when several; null -> the only one",
        "data",
    )
    texture_categories: list[str] = setting(
        list(TEXTURE_CATEGORIES),
        "categories without object-prompt regularisation (default: dataset.TEXTURE_CATEGORIES)",
        "data",
    )
    bit_depth: int | None = setting(
        None,
        "bits per sample of >8-bit images without sBIT (a 12-bit camera in 16-bit PNGs: 12); "
        "null -> per category, the smallest of 8/10/12/14/16 holding its brightest sample",
        "data",
        choices=SENSOR_DEPTHS,
    )


@dataclass(frozen=True)
class ModelSettings:
    model_path: str = setting(
        DEFAULT_MODEL_PATH,
        "a local facebook/sam3 download (config.json + model.safetensors)",
        "model",
    )
    checkpoint: str | None = setting(
        None,
        "trained concepts from scripts/train.py (OUTPUT_DIR/last.safetensors); null = zero-shot",
        "model",
    )
    concept_mode: str = setting(
        "replace",
        "with a checkpoint: replace the text prompts by the learned concepts, or add them",
        "model",
        choices=CONCEPT_MODES,
    )
    device: str = setting(
        "auto",
        "auto | cpu | cuda | cuda:N",
        "model",
    )
    dtype: str = setting(
        "auto",
        "auto (bf16 on GPUs with native bf16: compute capability >= 8.0; else fp32) | fp32 | bf16 | fp16",
        "model",
        choices=DTYPES,
    )
    batch_size: int = setting(
        DEFAULT_BATCH_SIZE,
        "images per vision-encoder pass (train.py: per micro-step)",
        "model",
        minimum=1,
    )
    chunk_size: int = setting(
        DEFAULT_CHUNK_SIZE,
        "image x prompt rows per decoder pass (bounds memory)",
        "model",
        minimum=1,
    )


@dataclass(frozen=True)
class PromptSettings:
    prompt_strategy: str = setting(
        DEFAULT_STRATEGY,
        "base (strictly zero-shot) | category | mixed | contextual (prior knowledge)",
        "prompts",
        choices=STRATEGIES,
    )
    extra_prompts: list[str] = setting(
        [],
        "defect phrases added to every category's prompts",
        "prompts",
    )
    prompt_overrides: dict[str, list[str]] = setting(
        {},
        "{category: [phrases]} replaces the built prompts of that category (YAML only)",
        "prompts",
    )


@dataclass(frozen=True)
class EvaluationSettings:
    eval_size: int = setting(
        256,
        "side of the square maps test.py compares with the masks (demo, app: scored so, shown at image size)",
        "evaluation",
        minimum=1,
        maximum=MAX_EVAL_SIZE,
    )
    aupro_variant: str = setting(
        "official",
        "official (MVTec AD definition) | clip (200 thresholds, rescaled FPR)",
        "evaluation",
        choices=AUPRO_VARIANTS,
    )
    output_dir: str = setting(
        DEFAULT_OUTPUT_DIR,
        "where outputs go; test.py uses <this>/<dataset> unless --output_dir or the --config file sets it",
        "evaluation",
    )
    visualize: bool = setting(
        False,
        "write overlays for a sample of images per category",
        "evaluation",
    )
    num_visualize: int = setting(
        8,
        "images per category to visualise (worst errors first)",
        "evaluation",
        minimum=0,
    )
    defect_type_report: bool = setting(
        False,
        "mvtec, mpdd, mvtec_loco with a vocabulary prompt strategy: defect type of each anomalous image by "
        "the prompt covering its ground truth (one more pass over them; defect_types.csv + accuracy)",
        "evaluation",
    )
    save_maps: str | None = setting(
        None,
        "tiff: also write float32 maps as anomaly_maps/<category>/test/<defect>/<stem>.tiff (MVTec's layout)",
        "evaluation",
        choices=("tiff",),
    )
    metrics_resolution: str = setting(
        "eval_size",
        "eval_size: pixel metrics on the stored eval_size maps | native: on each map resized to its image's "
        "ground-truth size (the TIFF export's resize), as the benchmarks' official tools compute them",
        "evaluation",
        choices=METRICS_RESOLUTIONS,
    )
    ad2_submission: str | None = setting(
        None,
        "mvtec_ad2: also score test_private and test_private_mixed and write the evaluation server's folder "
        "(anomaly_images/, anomaly_images_thresholded/) here",
        "evaluation",
    )


@dataclass(frozen=True)
class FewShotSettings:
    """The few-shot references (``cfg.fewshot``); the visual mode itself is ``cfg.scoring.visual``."""

    shots: int = setting(
        4,
        "visual fewshot: normal reference images per category, drawn from its train split (train/good)",
        "visual",
        minimum=1,
    )
    shot_seed: int = setting(
        0,
        "visual fewshot: seed of the draw of the reference images",
        "visual",
        minimum=0,
    )
    shot_seeds: list[int] | None = setting(
        None,
        "visual fewshot: a run per seed, each in output_dir/seed_N/, then their mean in output_dir "
        "(comma-separated as a flag); null -> one run with shot_seed",
        "visual",
        minimum=0,
    )


@dataclass(frozen=True)
class DemoSettings:
    mask_threshold: float = setting(
        MASK_THRESHOLD,
        "binary mask = anomaly map >= this",
        "demo",
    )
    thresholds: str | None = setting(
        None,
        "thresholds.json from test.py: mask = map >= the category's pixel_normal_threshold (docs/outputs.md)",
        "demo",
    )
    max_upload_mb: int = setting(
        256,
        "web app (scripts/app.py): the largest file an upload may be, in MB (a larger one is refused; an "
        "81-megapixel photo as PNG is up to ~250 MB)",
        "demo",
        minimum=1,
    )


@dataclass(frozen=True)
class TrainingSettings:
    num_epochs: int = setting(
        5,
        "passes over the training images",
        "training",
        minimum=1,
    )
    lr: float = setting(
        1.0e-3,
        "AdamW learning rate (1e-3 for concept embeddings; 1e-5 is the seed's value for full heads)",
        "training",
        minimum=0.0,
    )
    weight_decay: float = setting(
        0.0,
        "AdamW weight decay",
        "training",
        minimum=0.0,
    )
    grad_accum: int = setting(
        4,
        "micro-steps per optimiser step",
        "training",
        minimum=1,
    )
    num_concepts: int = setting(
        4,
        "learned concept embeddings added to the text prompts, seeded from generic prompts",
        "training",
        minimum=1,
    )
    train_head: bool = setting(
        False,
        "also fine-tune SAM 3's semantic-segmentation head",
        "training",
    )
    focal_weight: float = setting(
        1.0,
        "weight of the focal loss",
        "training",
        minimum=0.0,
    )
    dice_weight: float = setting(
        1.0,
        "weight of the dice loss",
        "training",
        minimum=0.0,
    )
    image_loss_weight: float = setting(
        0.5,
        "weight of the image-level loss",
        "training",
        minimum=0.0,
    )
    seed: int = setting(
        0,
        "random seed of training",
        "training",
        minimum=0,
        maximum=MAX_SEED,
    )

    def __post_init__(self) -> None:
        if self.focal_weight == self.dice_weight == self.image_loss_weight == 0:
            raise ValueError(
                "focal_weight, dice_weight and image_loss_weight are all 0, so nothing would be learned: "
                "give one of them a weight > 0"
            )


SECTIONS: tuple[type, ...] = (
    DataSettings,
    ModelSettings,
    PromptSettings,
    ScoringSettings,
    FewShotSettings,
    EvaluationSettings,
    DemoSettings,
    TrainingSettings,
)


@dataclass(frozen=True)
class Setting:
    """One declared setting. `kind` is the type a non-null value has (str, int, float, bool, list, dict).

    `info`: its declaration (help, section, allowed values); `policy`: its row of utils/config/policy.py.
    `item`: the type of a list's elements (`list[int]` -> int), None for other kinds.
    """

    name: str
    kind: type
    nullable: bool
    default: Any
    info: SettingInfo
    policy: Policy
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
    """Every field of SECTIONS, in section order, then field order (the order of configs/config.yaml).

    Raises:
        ValueError: a setting declared twice, or declared without (or with more than) its row in POLICIES.
    """
    found: list[Setting] = []
    names = [f.name for section in SECTIONS for f in fields(section)]
    duplicated = {n for n in names if names.count(n) > 1}
    if duplicated:
        raise ValueError(f"settings declared twice: {sorted(duplicated)}")
    if set(names) != set(POLICIES):
        missing, extra = sorted(set(names) - set(POLICIES)), sorted(set(POLICIES) - set(names))
        raise ValueError(
            f"utils/config/policy.py POLICIES must have one row per declared setting: "
            f"add {missing or 'none'}, remove {extra or 'none'}"
        )
    for section in SECTIONS:
        hints = typing.get_type_hints(section)
        for f in fields(section):
            kind, nullable = _kind(hints[f.name])
            item = _item(hints[f.name])
            found.append(
                Setting(f.name, kind, nullable, _default(f), setting_info(f), POLICIES[f.name], item)
            )
    order = list(SECTION_TITLES)
    found.sort(key=lambda s: order.index(s.info.section))  # stable: field order kept within a section
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
    return [s for s in SETTINGS.values() if script in s.policy.scripts]


def fingerprinted(mode: str) -> tuple[str, ...]:
    """The names of the settings with `fingerprint == mode` ("value" or "identity")."""
    return tuple(name for name, s in SETTINGS.items() if s.policy.fingerprint == mode)


@dataclass(frozen=True)
class Config:
    """A resolved configuration: one instance of each section, read as `cfg.model.batch_size`.

    Built once per run by `utils.config.loading.resolve_config` (defaults <- YAML <- flags); frozen, so a
    per-run change is a new Config (`replace`). Code reads typed attributes, never string keys; `to_dict()`
    gives the flat form for what is written to files (results.json, checkpoints, the resume fingerprint).
    """

    data: DataSettings
    model: ModelSettings
    prompts: PromptSettings
    scoring: ScoringSettings
    fewshot: FewShotSettings
    evaluation: EvaluationSettings
    demo: DemoSettings
    training: TrainingSettings

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Config:
        """Each section from its keys of `values`; a missing key takes its declared default.

        Raises:
            KeyError: a key of `values` that is no declared setting.
        """
        unknown = sorted(set(values) - set(SETTINGS))
        if unknown:
            raise KeyError(f"not declared settings: {', '.join(unknown)}")
        return cls(
            **{
                attribute: section(**{f.name: values[f.name] for f in fields(section) if f.name in values})
                for attribute, section in _SECTION_OF.items()
            }
        )

    def to_dict(self) -> dict[str, Any]:
        """Every setting as {key: value}, in the order of SETTINGS (configs/config.yaml's order); enum values
        (the visual mode) as their plain strings, as YAML and JSON write them."""
        sections = [getattr(self, attribute) for attribute in _SECTION_OF]
        flat = {f.name: getattr(section, f.name) for section in sections for f in fields(section)}
        return {name: _plain(flat[name]) for name in SETTINGS}

    def replace(self, **changes: Any) -> Config:
        """A new Config with some settings changed, by key: `cfg.replace(shot_seed=1)`."""
        return Config.from_dict({**self.to_dict(), **changes})


def _plain(value: Any) -> Any:
    """`value`, or an enum member's value (a str enum compares equal to it either way)."""
    return value.value if isinstance(value, enum.Enum) else value


_SECTION_OF: dict[str, type] = dict(typing.get_type_hints(Config))  # attribute -> section class
if sorted(map(id, _SECTION_OF.values())) != sorted(map(id, SECTIONS)):
    raise TypeError("Config must hold exactly one attribute per section of SECTIONS")
