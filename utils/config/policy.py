"""What the scripts do with each declared setting: which take it as a flag, whether it changes stored scores
(the resume fingerprint, utils/evaluation/fingerprint.py) and how `train.py --resume` treats a change.

The declarations (model/settings.py `setting(...)`) say what a setting is: default, help, allowed values.
This table is the scripts' policy about it, so it lives here, above model/. utils/config/schema.py checks that
every declared setting has exactly one row: a new setting without a row fails at import.
"""

from __future__ import annotations

from dataclasses import dataclass

SCRIPTS: tuple[str, ...] = ("test", "demo", "train", "app")  # the scripts a setting can be a flag of
ALL: tuple[str, ...] = ("test", "demo", "train")  # app.py takes demo.py's flags and its own
EVAL: tuple[str, ...] = ("test", "demo")  # the scripts that score images
FINGERPRINT_MODES: tuple[str, ...] = ("value", "identity")
# How train.py --resume treats a setting training reads: refuse a change, or apply the new value.
RESUME_MODES: tuple[str, ...] = ("fixed", "changeable")
TRAIN_ONLY = "scripts/train.py only"
DEMO_ONLY = "demo.py only (binary masks)"
BOXES_ONLY = "detections (demo.py boxes) only"
OVERLAYS = "overlays are drawn from the stored maps at every run"


@dataclass(frozen=True)
class Policy:
    """One setting's policy.

    scripts: the scripts that take it as a `--<name>` flag (none: YAML only).
    fingerprint: "value" (its value changes maps or scores), "identity" (what it names does: a folder, a
        file, a device kind) or None, and then `not_fingerprinted` says why it cannot change a stored result.
    resume: for settings training reads, "fixed" (it defines the trained tensors or their data: a change is
        refused) or "changeable" (applied from the next epoch); None otherwise.
    """

    scripts: tuple[str, ...]
    fingerprint: str | None = None
    not_fingerprinted: str = ""
    resume: str | None = None

    def __post_init__(self) -> None:
        if (self.fingerprint is None) == (not self.not_fingerprinted):
            raise ValueError("a policy says either fingerprint='value'/'identity' or not_fingerprinted=why")
        if self.fingerprint is not None and self.fingerprint not in FINGERPRINT_MODES:
            raise ValueError(f"fingerprint must be one of {', '.join(FINGERPRINT_MODES)}")
        if self.resume is not None and self.resume not in RESUME_MODES:
            raise ValueError(f"resume must be one of {', '.join(RESUME_MODES)}")
        unknown = set(self.scripts) - set(SCRIPTS)
        if unknown:
            raise ValueError(f"unknown scripts {sorted(unknown)}: use {', '.join(SCRIPTS)}")


def changes_scores(scripts: tuple[str, ...], how: str = "value", resume: str | None = None) -> Policy:
    """A setting in the resume fingerprint: by its value, or by the identity of what it names."""
    return Policy(scripts, fingerprint=how, resume=resume)


def keeps_scores(scripts: tuple[str, ...], why: str, resume: str | None = None) -> Policy:
    """A setting outside the resume fingerprint, and why it cannot change a stored result."""
    return Policy(scripts, not_fingerprinted=why, resume=resume)


POLICIES: dict[str, Policy] = {
    # data
    "dataset": changes_scores(ALL, resume="fixed"),
    "dataset_path": keeps_scores(
        ("test", "train"),
        "the stored image paths are compared one by one instead (progress.json)",
        resume="changeable",
    ),
    "categories": keeps_scores(("test", "train"), "every category has its own store", resume="fixed"),
    "test_split": changes_scores(("test",), resume="fixed"),
    "realiad_resolution": keeps_scores(
        ("test", "train"),
        "the stored image paths (which name the folder) are compared one by one instead",
        resume="changeable",
    ),
    "texture_categories": changes_scores(EVAL),
    "bit_depth": changes_scores(ALL, resume="fixed"),
    # model
    "model_path": changes_scores(ALL, "identity", resume="fixed"),
    "checkpoint": changes_scores(EVAL, "identity"),
    "concept_mode": changes_scores(EVAL),
    "device": changes_scores(ALL, "identity", resume="changeable"),
    "dtype": changes_scores(ALL, resume="changeable"),
    "batch_size": keeps_scores(
        ALL, "images per encoder pass: the same results up to float rounding", resume="changeable"
    ),
    "chunk_size": keeps_scores(
        ALL, "rows per decoder pass: the same results up to float rounding", resume="changeable"
    ),
    # prompts
    "prompt_strategy": changes_scores(ALL, resume="fixed"),
    "extra_prompts": changes_scores(EVAL),
    "prompt_overrides": changes_scores(()),
    # from SAM 3 outputs to an anomaly map (model/settings.py ScoringSettings)
    "map_source": changes_scores(EVAL, resume="fixed"),
    "prompt_aggregation": changes_scores(EVAL, resume="fixed"),
    "object_regularisation": changes_scores(EVAL),
    "max_object_fraction": changes_scores(EVAL),
    "outside_weight": changes_scores(EVAL),
    "object_dilation": changes_scores(EVAL),
    "object_threshold": changes_scores(EVAL),
    "sigma": changes_scores(EVAL),
    "image_score": changes_scores(EVAL),
    "topk": changes_scores(EVAL),
    "visual": changes_scores(EVAL),
    "visual_weight": changes_scores(EVAL),
    "mutual_fraction": changes_scores(EVAL),
    "visual_grid": changes_scores(EVAL),
    "patch_pool": changes_scores(EVAL),
    "visual_degrees": changes_scores(EVAL),
    "visual_image_score": changes_scores(EVAL),
    "visual_object_prior": changes_scores(EVAL),
    "mutual_partners": changes_scores(EVAL),
    "mutual_rescore": changes_scores(EVAL),
    "rescore_k": changes_scores(EVAL),
    "reference_rotations": changes_scores(EVAL),
    "box_threshold": keeps_scores(("demo",), BOXES_ONLY),
    "box_nms_iou": keeps_scores(("demo",), BOXES_ONLY),
    # visual few-shot references
    "shots": changes_scores(("test",)),
    "shot_seed": changes_scores(("test",)),
    "shot_seeds": keeps_scores(
        ("test",), "each seed is its own run in seed_N/, whose fingerprint holds shot_seed = N"
    ),
    # evaluation
    "eval_size": changes_scores(("test", "demo")),
    "aupro_variant": keeps_scores(
        ("test",), "metrics only: in metrics.json, recomputed from the stored maps when it differs"
    ),
    "output_dir": keeps_scores(ALL, "where the store is", resume="changeable"),
    "visualize": keeps_scores(("test",), OVERLAYS),
    "num_visualize": keeps_scores(("test",), OVERLAYS),
    "save_maps": keeps_scores(("test",), "written from the stored maps at every run"),
    "metrics_resolution": changes_scores(("test",)),
    "ad2_submission": keeps_scores(
        ("test",), "written from the stored maps of the private splits at every run"
    ),
    "defect_type_report": keeps_scores(
        ("test",), "a report made after the maps are stored, from a separate detection pass"
    ),
    # demo
    "mask_threshold": keeps_scores(("demo",), DEMO_ONLY),
    "thresholds": keeps_scores(("demo",), DEMO_ONLY),
    # web app
    "max_upload_mb": keeps_scores(("app",), "the web app's upload limit (scripts/app.py)"),
    # training
    "num_epochs": keeps_scores(
        ("train",),
        "scripts/train.py only: training reaches test.py through the checkpoint's bytes",
        resume="changeable",
    ),
    "lr": keeps_scores(("train",), TRAIN_ONLY, resume="changeable"),
    "weight_decay": keeps_scores(("train",), TRAIN_ONLY, resume="changeable"),
    "grad_accum": keeps_scores(("train",), TRAIN_ONLY, resume="changeable"),
    "num_concepts": keeps_scores(("train",), TRAIN_ONLY, resume="fixed"),
    "train_head": keeps_scores(("train",), TRAIN_ONLY, resume="fixed"),
    "focal_weight": keeps_scores(("train",), TRAIN_ONLY, resume="changeable"),
    "dice_weight": keeps_scores(("train",), TRAIN_ONLY, resume="changeable"),
    "image_loss_weight": keeps_scores(("train",), TRAIN_ONLY, resume="changeable"),
    "seed": keeps_scores(
        ("train",), "scripts/train.py only (evaluation is deterministic)", resume="changeable"
    ),
}
