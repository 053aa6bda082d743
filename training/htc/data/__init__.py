"""Data: synthetic COCO-format generator, COCO loader, transforms and collate."""

from .coco import CocoDataset, synthetic_split
from .transforms import (
    Compose,
    Normalize,
    RandomFlip,
    Resize,
    build_transforms,
    collate,
    hflip,
    resize,
)

__all__ = [
    "CocoDataset",
    "synthetic_split",
    "Compose",
    "Normalize",
    "RandomFlip",
    "Resize",
    "build_transforms",
    "collate",
    "hflip",
    "resize",
]
