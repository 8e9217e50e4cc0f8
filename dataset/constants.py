"""Category names of the benchmarks and the object noun used in prompts for each category.

The nouns are data, not logic: prompt code asks `object_noun(category)` and never hard-codes names.
"""

from __future__ import annotations

MVTEC_CATEGORIES: tuple[str, ...] = (
    "bottle",
    "cable",
    "capsule",
    "carpet",
    "grid",
    "hazelnut",
    "leather",
    "metal_nut",
    "pill",
    "screw",
    "tile",
    "toothbrush",
    "transistor",
    "wood",
    "zipper",
)

VISA_CATEGORIES: tuple[str, ...] = (
    "candle",
    "capsules",
    "cashew",
    "chewinggum",
    "fryum",
    "macaroni1",
    "macaroni2",
    "pcb1",
    "pcb2",
    "pcb3",
    "pcb4",
    "pipe_fryum",
)

MVTEC_AD2_CATEGORIES: tuple[str, ...] = (
    "can",
    "fabric",
    "fruit_jelly",
    "rice",
    "sheet_metal",
    "vial",
    "wallplugs",
    "walnuts",
)

MVTEC_LOCO_CATEGORIES: tuple[str, ...] = (
    "breakfast_box",
    "juice_bottle",
    "pushpins",
    "screw_bag",
    "splicing_connectors",
)

MPDD_CATEGORIES: tuple[str, ...] = (
    "bracket_black",
    "bracket_brown",
    "bracket_white",
    "connector",
    "metal_plate",
    "tubes",
)

BTAD_CATEGORIES: tuple[str, ...] = ("01", "02", "03")

# KolektorSDD2 is one surface: a single category of this name.
KSDD2_CATEGORIES: tuple[str, ...] = ("ksdd2",)

REAL_IAD_CATEGORIES: tuple[str, ...] = (
    "audiojack",
    "bottle_cap",
    "button_battery",
    "end_cap",
    "eraser",
    "fire_hood",
    "mint",
    "mounts",
    "pcb",
    "phone_battery",
    "plastic_nut",
    "plastic_plug",
    "porcelain_doll",
    "regulator",
    "rolled_strip_base",
    "sim_card_set",
    "switch",
    "tape",
    "terminalblock",
    "toothbrush",
    "toy",
    "toy_brick",
    "transistor1",
    "u_block",
    "usb",
    "usb_adaptor",
    "vcpill",
    "wooden_beads",
    "woodstick",
    "zipper",
)

# The classes of the meta.json sets of the CLIP-based zero-shot papers beyond the benchmarks above: SDD
# (KolektorSDD), DAGM, DTD-Synthetic and the medical sets. AnomalyCLIP's generate_dataset_json names the
# medical classes by organ (BrainMRI, HeadCT, Br35H: brain; COVID-19: chest; ISIC: skin; CVC-ColonDB,
# CVC-ClinicDB, Kvasir, Endo: colon; TN3K: thyroid), AdaCLIP's preprocessed copies by set (brain_mri, ...).
SDD_CATEGORIES: tuple[str, ...] = ("electrical commutators", "SDD")
DAGM_CATEGORIES: tuple[str, ...] = tuple(f"Class{i}" for i in range(1, 11))
DTD_CATEGORIES: tuple[str, ...] = (
    "Blotchy_099",
    "Fibrous_183",
    "Marbled_078",
    "Matted_069",
    "Mesh_114",
    "Perforated_037",
    "Stratified_154",
    "Woven_001",
    "Woven_068",
    "Woven_104",
    "Woven_125",
    "Woven_127",
)
# medical class -> the organ its images show
MEDICAL_ORGANS: dict[str, str] = {
    "brain": "brain",
    "brain_mri": "brain",
    "br35h": "brain",
    "headct": "brain",
    "chest": "chest",
    "colon": "colon",
    "ColonDB": "colon",
    "ClinicDB": "colon",
    "skin": "skin",
    "isic": "skin",
    "thyroid": "thyroid",
    "tn3k": "thyroid",
}
MEDICAL_CATEGORIES: tuple[str, ...] = tuple(MEDICAL_ORGANS)
META_JSON_CATEGORIES: tuple[str, ...] = (
    *MVTEC_CATEGORIES,
    *VISA_CATEGORIES,
    *MPDD_CATEGORIES,
    *BTAD_CATEGORIES,
    *SDD_CATEGORIES,
    *DAGM_CATEGORIES,
    *DTD_CATEGORIES,
    *MEDICAL_CATEGORIES,
)

# MVTec AD texture categories: the whole image is the "object", so no object mask is needed.
TEXTURE_CATEGORIES: tuple[str, ...] = ("carpet", "grid", "leather", "tile", "wood")

# A natural noun phrase for each category, as a person would name the object in a text prompt.
OBJECT_NOUNS: dict[str, str] = {
    # MVTec AD
    "bottle": "bottle",
    "cable": "cable",
    "capsule": "capsule",
    "carpet": "carpet",
    "grid": "metal grid",
    "hazelnut": "hazelnut",
    "leather": "leather",
    "metal_nut": "metal nut",
    "pill": "pill",
    "screw": "screw",
    "tile": "tile",
    "toothbrush": "toothbrush",
    "transistor": "transistor",
    "wood": "wood",
    "zipper": "zipper",
    # VisA
    "candle": "candles",
    "capsules": "green capsules",
    "cashew": "cashew nut",
    "chewinggum": "chewing gum",
    "fryum": "wheel-shaped fryum snack",
    "macaroni1": "macaroni",
    "macaroni2": "macaroni",
    "pcb1": "printed circuit board",
    "pcb2": "printed circuit board",
    "pcb3": "printed circuit board",
    "pcb4": "printed circuit board",
    "pipe_fryum": "pipe-shaped fryum snack",
    # MVTec AD 2
    "can": "can",
    "fabric": "fabric",
    "fruit_jelly": "fruit jelly",
    "rice": "rice grains",
    "sheet_metal": "sheet metal",
    "vial": "vial",
    "wallplugs": "wall plugs",
    "walnuts": "walnuts",
    # MVTec LOCO AD
    "breakfast_box": "breakfast box",
    "juice_bottle": "juice bottle",
    "pushpins": "pushpins",
    "screw_bag": "screw bag",
    "splicing_connectors": "splicing connectors",
    # MPDD
    "bracket_black": "black metal bracket",
    "bracket_brown": "brown metal bracket",
    "bracket_white": "white metal bracket",
    "connector": "metal connector",
    "metal_plate": "metal plate",
    "tubes": "metal tubes",
    # BTAD (anonymised product classes)
    "01": "product",
    "02": "product",
    "03": "product",
    # KolektorSDD2
    "ksdd2": "electrical commutator surface",
    # Real-IAD
    "audiojack": "audio jack",
    "bottle_cap": "bottle cap",
    "button_battery": "button battery",
    "end_cap": "end cap",
    "eraser": "eraser",
    "fire_hood": "fire hood",
    "mint": "mint candy",
    "mounts": "mount",
    "pcb": "printed circuit board",
    "phone_battery": "phone battery",
    "plastic_nut": "plastic nut",
    "plastic_plug": "plastic plug",
    "porcelain_doll": "porcelain doll",
    "regulator": "regulator",
    "rolled_strip_base": "rolled strip base",
    "sim_card_set": "sim card tray",
    "switch": "switch",
    "tape": "tape",
    "terminalblock": "terminal block",
    "toy": "toy",
    "toy_brick": "toy brick",
    "transistor1": "transistor",
    "u_block": "u-shaped block",
    "usb": "usb plug",
    "usb_adaptor": "usb adaptor",
    "vcpill": "pill",
    "wooden_beads": "wooden beads",
    "woodstick": "wooden stick",
    # medical classes whose images show the organ as an object on a background (MRI / CT slices, X-rays)
    **{c: organ for c, organ in MEDICAL_ORGANS.items() if organ in ("brain", "chest")},
}

# Nouns of categories whose image is all surface: used in contextual prompts, never as an object prior
# (`model.prompts.object_prompt` skips categories missing from OBJECT_NOUNS).
SURFACE_NOUNS: dict[str, str] = {
    **dict.fromkeys(SDD_CATEGORIES, "electrical commutator surface"),
    **dict.fromkeys(DAGM_CATEGORIES, "textured surface"),
    "Blotchy_099": "blotchy texture",
    "Fibrous_183": "fibrous texture",
    "Marbled_078": "marbled texture",
    "Matted_069": "matted texture",
    "Mesh_114": "mesh texture",
    "Perforated_037": "perforated texture",
    "Stratified_154": "stratified texture",
    **dict.fromkeys(("Woven_001", "Woven_068", "Woven_104", "Woven_125", "Woven_127"), "woven texture"),
    # endoscopy, dermoscopy and ultrasound views fill the frame with the organ's surface
    **{c: organ for c, organ in MEDICAL_ORGANS.items() if organ in ("colon", "skin", "thyroid")},
}


def object_noun(category: str) -> str:
    """The prompt noun of `category` (OBJECT_NOUNS, then SURFACE_NOUNS); an unknown category gives its name
    with `_` replaced by spaces."""
    return OBJECT_NOUNS.get(category) or SURFACE_NOUNS.get(category) or category.replace("_", " ")
