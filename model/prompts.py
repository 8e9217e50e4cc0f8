"""Text prompts for SAM 3: defect vocabularies as data, and one pure function that builds a prompt list.

Strategies (`STRATEGIES`):

- ``base``: generic defect words (`BASE_DEFECTS`), the same for every category; for the medical classes of
  the meta.json sets (`MEDICAL_CATEGORIES`) generic medical finding words (`MEDICAL_BASE_DEFECTS`), the same
  for every medical class. This is the only strictly zero-shot strategy: it uses no knowledge of any
  benchmark beyond whether its images are medical.
- ``category``: a defect vocabulary per category (`CATEGORY_DEFECTS`); an unknown category falls back to
  ``base``.
- ``mixed``: ``base`` followed by ``category``, duplicates removed, order kept.
- ``contextual``: ``"<defect> on the <object noun>"`` for every word of ``mixed`` (e.g. "crack on the metal
  nut"), so that SAM 3 ties the defect to the object rather than to the background.

Disclosure (prior knowledge): the per-category vocabularies were written from what each object can
physically suffer (a capsule can be cracked or dented, a PCB can miss a component), but by an author who
knows MVTec AD and VisA. Several entries coincide with, or paraphrase, the datasets' defect folder names /
defect class names (e.g. "crack", "hole", "scratch", "bent lead", "broken teeth", "faulty imprint",
"missing wire", "glue"). ``category``, ``mixed`` and ``contextual`` therefore carry disclosed prior knowledge
and are not strictly zero-shot; report ``base`` when claiming zero-shot results. The medical classes'
vocabularies name the findings their sets annotate (polyps, brain tumours, skin lesions, thyroid nodules,
COVID-19 opacities): disclosed prior knowledge too.

Prompts stay short (at most 8 words) because SAM 3's text encoder reads at most 32 tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from dataset.constants import (
    DAGM_CATEGORIES,
    DTD_CATEGORIES,
    MEDICAL_CATEGORIES,
    MEDICAL_ORGANS,
    OBJECT_NOUNS,
    REAL_IAD_CATEGORIES,
    SDD_CATEGORIES,
    TEXTURE_CATEGORIES,
    object_noun,
)

STRATEGIES: tuple[str, ...] = ("base", "category", "mixed", "contextual")
DEFAULT_STRATEGY = "base"  # strictly zero-shot: the prompt_strategy setting's declared default

# Generic defect words, valid for any manufactured part or material.
BASE_DEFECTS: tuple[str, ...] = (
    "defect",
    "damage",
    "scratch",
    "crack",
    "hole",
    "stain",
    "contamination",
    "dent",
    "break",
    "missing part",
)

# Generic medical finding words: the ``base`` vocabulary of every medical class (industrial defect words
# name nothing in a scan). Written for medical images in general, not for any set's annotations.
MEDICAL_BASE_DEFECTS: tuple[str, ...] = (
    "lesion",
    "tumor",
    "polyp",
    "nodule",
    "mass",
    "abnormal tissue",
    "opacity",
    "inflammation",
)

# Per-category defect vocabulary (at most 3 words per entry so contextual prompts stay <= 8 words).
# See the module docstring: entries overlapping the datasets' defect names are disclosed prior knowledge.
CATEGORY_DEFECTS: dict[str, tuple[str, ...]] = {
    # --- MVTec AD: objects ----------------------------------------------------------------------
    "bottle": ("broken rim", "chipped glass", "crack", "dirt", "foreign particle"),
    "cable": ("cut insulation", "exposed wire", "missing wire", "bent wire", "wrong colored wire"),
    "capsule": ("crack", "dent", "scratch", "faulty imprint", "squeezed capsule"),
    "hazelnut": ("crack", "hole", "cut", "print on shell", "broken shell"),
    "metal_nut": ("bent", "scratch", "discoloration", "flipped nut", "deformation"),
    "pill": ("crack", "scratch", "contamination", "discoloration", "faulty imprint", "chipped pill"),
    "screw": ("scratch", "damaged thread", "deformed head", "bent tip"),
    "toothbrush": ("frayed bristles", "missing bristles", "bent bristles", "contamination"),
    "transistor": ("bent lead", "cut lead", "damaged case", "missing transistor", "misplaced transistor"),
    "zipper": ("broken teeth", "missing teeth", "torn fabric", "frayed fabric", "split teeth"),
    # --- MVTec AD: textures ---------------------------------------------------------------------
    "carpet": ("hole", "cut", "stain", "loose thread", "color spot", "metal contamination"),
    "grid": ("bent wire", "broken wire", "glue", "loose thread", "metal contamination"),
    "leather": ("cut", "fold", "glue", "color spot", "puncture", "scratch"),
    "tile": ("crack", "glue strip", "oil stain", "rough surface", "gray stroke"),
    "wood": ("hole", "scratch", "liquid stain", "color spot", "crack"),
    # --- VisA -----------------------------------------------------------------------------------
    "candle": ("chunk of wax missing", "foreign particle", "damaged wick", "wax melt", "discoloration"),
    "capsules": ("bubble", "dent", "scratch", "deformed capsule", "discoloration"),
    "cashew": ("burnt spot", "broken cashew", "hole", "stain", "foreign particle", "corner missing"),
    "chewinggum": ("chunk missing", "crack", "scratch", "stain", "corner missing"),
    "fryum": ("burnt spot", "broken fryum", "crack", "foreign particle", "discoloration"),
    "macaroni1": ("chip", "crack", "broken macaroni", "stain", "foreign particle"),
    "macaroni2": ("chip", "crack", "broken macaroni", "stain", "foreign particle"),
    "pcb1": ("bent pin", "missing component", "melted plastic", "scratch", "burnt spot"),
    "pcb2": ("bent pin", "missing component", "melted plastic", "scratch", "burnt spot"),
    "pcb3": ("bent pin", "missing component", "melted plastic", "scratch", "burnt spot"),
    "pcb4": ("missing component", "damaged component", "scratch", "burnt spot", "extra solder"),
    "pipe_fryum": ("burnt spot", "broken fryum", "crack", "foreign particle", "discoloration"),
    # --- MPDD -----------------------------------------------------------------------------------
    "bracket_black": ("hole", "scratch", "bent bracket", "deformation"),
    "bracket_brown": ("bent bracket", "wrong part", "mismatched part", "deformation"),
    "bracket_white": ("paint defect", "scratch", "peeling paint", "stain"),
    "connector": ("wrong part", "mismatched part", "missing part", "deformation"),
    "metal_plate": ("rust", "rust spot", "rusted surface", "scratch"),
    "tubes": ("dent", "deformed tube", "scratch", "crack"),
    # --- MVTec LOCO AD (logical phrases first, then structural) ---------------------------------
    "breakfast_box": ("missing food", "extra food", "wrong food", "broken box", "contamination", "crack"),
    "juice_bottle": ("missing label", "wrong label", "wrong fill level", "contamination", "broken label"),
    "pushpins": ("missing pushpin", "extra pushpin", "wrong color pushpin", "broken pushpin", "bent pin"),
    "screw_bag": ("missing screw", "extra screw", "wrong screw", "torn bag", "broken washer"),
    "splicing_connectors": ("missing cable", "wrong cable", "extra connector", "broken cable", "cut cable"),
    # --- MVTec AD 2 -----------------------------------------------------------------------------
    "can": ("dent", "scratch", "stain", "contamination"),
    "fabric": ("hole", "stain", "loose thread", "cut", "contamination"),
    "fruit_jelly": ("bubble", "foreign particle", "deformation", "missing piece", "stain"),
    "rice": ("foreign particle", "broken grain", "discolored grain", "contamination"),
    "sheet_metal": ("scratch", "dent", "hole", "stain"),
    "vial": ("crack", "foreign particle", "wrong fill level", "contamination"),
    "wallplugs": ("crack", "deformation", "missing part", "contamination"),
    "walnuts": ("crack", "hole", "broken shell", "foreign particle"),
    # --- BTAD (anonymised products) and KolektorSDD2 --------------------------------------------
    "01": ("scratch", "crack", "dent", "stain", "missing part"),
    "02": ("scratch", "crack", "stain", "hole"),
    "03": ("scratch", "crack", "stain", "dent"),
    "ksdd2": ("scratch", "crack", "spot", "stain", "dent"),
    # --- meta.json sets: KolektorSDD, DAGM, DTD-Synthetic ---------------------------------------
    **dict.fromkeys(SDD_CATEGORIES, ("scratch", "crack", "spot", "stain", "dent")),
    **dict.fromkeys(DAGM_CATEGORIES, ("scratch", "spot", "stain", "streak", "smudge")),
    **dict.fromkeys(DTD_CATEGORIES, ("irregular patch", "stain", "spot", "hole", "discoloration")),
}
# Medical classes: the findings their organ's sets annotate (see the module docstring's disclosure).
ORGAN_FINDINGS: dict[str, tuple[str, ...]] = {
    "brain": ("brain tumor", "hemorrhage", "glioma", "meningioma", "lesion"),
    "chest": ("lung opacity", "ground-glass opacity", "consolidation", "infiltrate"),
    "colon": ("polyp", "adenoma", "colorectal lesion", "bleeding"),
    "skin": ("skin lesion", "melanoma", "mole", "pigmented lesion"),
    "thyroid": ("thyroid nodule", "cyst", "hypoechoic mass", "calcification"),
}
CATEGORY_DEFECTS.update({c: ORGAN_FINDINGS[organ] for c, organ in MEDICAL_ORGANS.items()})
# Real-IAD: the eight defect classes of the set, shared by its 30 categories (toothbrush and zipper, also
# MVTec AD categories, keep their MVTec AD vocabulary: prompts are keyed by category name only).
REAL_IAD_DEFECTS: tuple[str, ...] = (
    "pit",
    "deformation",
    "abrasion",
    "scratch",
    "damage",
    "missing part",
    "foreign object",
    "contamination",
)
for _category in REAL_IAD_CATEGORIES:
    CATEGORY_DEFECTS.setdefault(_category, REAL_IAD_DEFECTS)

# Which test defect folder each vocabulary phrase names, for the defect-type report
# (utils/evaluation/defect_types.py). Sets whose folders name the defect: MVTec AD, MPDD, MVTec LOCO
# (its two anomaly types). A phrase missing here names no folder (a prediction that cannot be right).
DEFECT_FOLDERS: dict[str, dict[str, str]] = {
    # --- MVTec AD -------------------------------------------------------------------------------
    "bottle": {
        "broken rim": "broken_large",
        "chipped glass": "broken_small",
        "dirt": "contamination",
        "foreign particle": "contamination",
    },
    "cable": {
        "cut insulation": "cut_outer_insulation",
        "exposed wire": "cut_inner_insulation",
        "missing wire": "missing_wire",
        "bent wire": "bent_wire",
        "wrong colored wire": "cable_swap",
    },
    "capsule": {
        "crack": "crack",
        "dent": "poke",
        "scratch": "scratch",
        "faulty imprint": "faulty_imprint",
        "squeezed capsule": "squeeze",
    },
    "hazelnut": {
        "crack": "crack",
        "hole": "hole",
        "cut": "cut",
        "print on shell": "print",
        "broken shell": "crack",
    },
    "metal_nut": {"bent": "bent", "scratch": "scratch", "discoloration": "color", "flipped nut": "flip"},
    "pill": {
        "crack": "crack",
        "scratch": "scratch",
        "contamination": "contamination",
        "discoloration": "color",
        "faulty imprint": "faulty_imprint",
    },
    "screw": {"damaged thread": "thread_side", "deformed head": "manipulated_front"},
    "toothbrush": {
        "frayed bristles": "defective",
        "missing bristles": "defective",
        "bent bristles": "defective",
        "contamination": "defective",
    },
    "transistor": {
        "bent lead": "bent_lead",
        "cut lead": "cut_lead",
        "damaged case": "damaged_case",
        "missing transistor": "misplaced",
        "misplaced transistor": "misplaced",
    },
    "zipper": {
        "broken teeth": "broken_teeth",
        "split teeth": "split_teeth",
        "torn fabric": "fabric_interior",
        "frayed fabric": "fabric_border",
    },
    "carpet": {
        "hole": "hole",
        "cut": "cut",
        "stain": "color",
        "loose thread": "thread",
        "color spot": "color",
        "metal contamination": "metal_contamination",
    },
    "grid": {
        "bent wire": "bent",
        "broken wire": "broken",
        "glue": "glue",
        "loose thread": "thread",
        "metal contamination": "metal_contamination",
    },
    "leather": {"cut": "cut", "fold": "fold", "glue": "glue", "color spot": "color", "puncture": "poke"},
    "tile": {
        "crack": "crack",
        "glue strip": "glue_strip",
        "oil stain": "oil",
        "rough surface": "rough",
        "gray stroke": "gray_stroke",
    },
    "wood": {"hole": "hole", "scratch": "scratch", "liquid stain": "liquid", "color spot": "color"},
    # --- MPDD -----------------------------------------------------------------------------------
    "bracket_black": {"hole": "hole", "scratch": "scratches"},
    "bracket_brown": {
        "bent bracket": "bend_and_parts_mismatch",
        "deformation": "bend_and_parts_mismatch",
        "wrong part": "parts_mismatch",
        "mismatched part": "parts_mismatch",
    },
    "bracket_white": {
        "paint defect": "defective_painting",
        "peeling paint": "defective_painting",
        "scratch": "scratches",
    },
    "connector": {
        "wrong part": "parts_mismatch",
        "mismatched part": "parts_mismatch",
        "missing part": "parts_mismatch",
    },
    "metal_plate": {
        "rust": "total_rust",
        "rusted surface": "total_rust",
        "rust spot": "major_rust",
        "scratch": "scratches",
    },
    "tubes": {
        "dent": "anomalous",
        "deformed tube": "anomalous",
        "scratch": "anomalous",
        "crack": "anomalous",
    },
    # --- MVTec LOCO AD --------------------------------------------------------------------------
    "breakfast_box": {
        "missing food": "logical_anomalies",
        "extra food": "logical_anomalies",
        "wrong food": "logical_anomalies",
        "broken box": "structural_anomalies",
        "contamination": "structural_anomalies",
        "crack": "structural_anomalies",
    },
    "juice_bottle": {
        "missing label": "logical_anomalies",
        "wrong label": "logical_anomalies",
        "wrong fill level": "logical_anomalies",
        "contamination": "structural_anomalies",
        "broken label": "structural_anomalies",
    },
    "pushpins": {
        "missing pushpin": "logical_anomalies",
        "extra pushpin": "logical_anomalies",
        "wrong color pushpin": "logical_anomalies",
        "broken pushpin": "structural_anomalies",
        "bent pin": "structural_anomalies",
    },
    "screw_bag": {
        "missing screw": "logical_anomalies",
        "extra screw": "logical_anomalies",
        "wrong screw": "logical_anomalies",
        "torn bag": "structural_anomalies",
        "broken washer": "structural_anomalies",
    },
    "splicing_connectors": {
        "missing cable": "logical_anomalies",
        "wrong cable": "logical_anomalies",
        "extra connector": "logical_anomalies",
        "broken cable": "structural_anomalies",
        "cut cable": "structural_anomalies",
    },
}

# The object noun used by `contextual` when no category is given.
GENERIC_OBJECT: str = "object"


def _dedupe(prompts: Iterable[str]) -> list[str]:
    """Strip and collapse whitespace, drop empty strings and repeats (case-insensitive); keep first order."""
    seen: set[str] = set()
    out: list[str] = []
    for prompt in prompts:
        text = " ".join(str(prompt).split())
        key = text.lower()
        if text and key not in seen:
            seen.add(key)
            out.append(text)
    return out


def base_defects(category: str | None) -> tuple[str, ...]:
    """The ``base`` words of `category`: `MEDICAL_BASE_DEFECTS` for a medical class, else `BASE_DEFECTS`."""
    return MEDICAL_BASE_DEFECTS if category in MEDICAL_CATEGORIES else BASE_DEFECTS


def category_defects(category: str | None) -> tuple[str, ...]:
    """The defect vocabulary of `category`; None or an unknown category gives `BASE_DEFECTS`."""
    if category is None:
        return BASE_DEFECTS
    return CATEGORY_DEFECTS.get(category, BASE_DEFECTS)


def contextual_prompt(defect: str, noun: str) -> str:
    """``"<defect> on the <noun>"``, e.g. "crack on the metal nut"."""
    return f"{defect} on the {noun}"


def build_prompts(
    category: str | None,
    strategy: str,
    extra: Sequence[str] = (),
    overrides: Mapping[str, Sequence[str]] | None = None,
) -> list[str]:
    """Build the defect prompts of one category.

    Args:
        category: a category name (e.g. "bottle", "pcb1"); None or an unknown name gives the generic
            ``base`` words (``contextual`` then uses "object" for None, or the unknown name as the noun).
        strategy: one of `STRATEGIES` (see the module docstring).
        extra: phrases appended to the built list (config key ``extra_prompts``).
        overrides: ``{category: [phrases]}``; when `category` is a key, its phrases replace the built list
            (config key ``prompt_overrides``); `extra` is still appended.

    Returns:
        The prompts, whitespace-normalised, without duplicates (case-insensitive), in order.

    Raises:
        ValueError: `strategy` is not one of `STRATEGIES`, or no prompt is left (an override of only blank
            phrases and no `extra`; the config check reports this when the config is read).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown prompt strategy {strategy!r}: use one of {', '.join(STRATEGIES)}")
    if overrides and category is not None and category in overrides:
        built: list[str] = list(overrides[category])
    elif strategy == "base":
        built = list(base_defects(category))
    elif strategy == "category":
        built = list(category_defects(category))
    else:
        built = _dedupe([*base_defects(category), *category_defects(category)])
        if strategy == "contextual":
            noun = GENERIC_OBJECT if category is None else object_noun(category)
            built = [contextual_prompt(defect, noun) for defect in built]
    prompts = _dedupe([*built, *extra])
    if not prompts:
        raise ValueError(f"no prompts for category {category!r}: its prompt_overrides entry has no phrase")
    return prompts


def prompt_defect_folders(category: str, prompts: Sequence[str]) -> dict[str, str]:
    """prompt -> the defect folder its vocabulary phrase names (`DEFECT_FOLDERS`), for prompts naming one.

    A contextual prompt ("crack on the hazelnut") is read as its phrase ("crack"); case is ignored.
    """
    folders = {phrase.lower(): folder for phrase, folder in DEFECT_FOLDERS.get(category, {}).items()}
    suffix = contextual_prompt("", object_noun(category)).lower()  # " on the <noun>"
    named = {}
    for prompt in prompts:
        phrase = " ".join(prompt.split()).lower()
        phrase = phrase[: -len(suffix)] if phrase.endswith(suffix) else phrase
        if phrase in folders:
            named[prompt] = folders[phrase]
    return named


def given_prompts(prompts: str | Sequence[str]) -> list[str]:
    """Prompts a caller passed, as a list: one string is one prompt (`"crack"` -> `["crack"]`, not letters).

    Raises:
        TypeError: `prompts` is neither a string nor a list (bytes, a number, None).
        ValueError: an item that is not a string, or a blank one (it would be scored as an empty phrase).
    """
    if isinstance(prompts, (bytes, bytearray)) or not isinstance(prompts, Iterable):
        raise TypeError(
            f"prompts must be a string or a list of strings (['scratch']), got {type(prompts).__name__}"
        )
    listed = [prompts] if isinstance(prompts, str) else list(prompts)
    for phrase in listed:
        if not isinstance(phrase, str) or not phrase.strip():
            raise ValueError(f"prompts hold {phrase!r}: each prompt must be a non-blank string ('scratch')")
    return listed


def object_prompt(category: str | None, texture_categories: Sequence[str] = TEXTURE_CATEGORIES) -> str | None:
    """The object noun scored for object regularisation of `category`, or None to skip it.

    None for no category, for a category without a known object (not in `OBJECT_NOUNS`, e.g. an own
    folder) and for `texture_categories`, where the whole image is the surface.
    """
    if category is None or category not in OBJECT_NOUNS or category in texture_categories:
        return None
    return object_noun(category)
