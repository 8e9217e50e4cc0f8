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
}


def object_noun(category: str) -> str:
    """The prompt noun of `category`; an unknown category gives its name with `_` replaced by spaces."""
    return OBJECT_NOUNS.get(category, category.replace("_", " "))
