"""COCO-format instance dataset with optional COCO-stuff semantic label maps.

Reads an instances JSON (polygon, uncompressed-RLE and compressed-RLE masks,
iscrowd) and, when ``seg_dir`` is given, the per-image label PNG
``seg_dir/<image stem>.png``. Its values are the semantic head's channel
indices, used as they are, 255 = ignore; what a channel means is the
``semantic_layout`` (``model.semantic_classes``):

* ``"cocostuff"``: COCO-stuff's "stuffthingmaps", value = COCO-stuff id - 1
  (things 0..90 *with COCO's gaps*, stuff 91..181; see
  :mod:`htc.data.cocostuff`). A stop sign (id 13) is semantic channel 12 but
  instance label 11: instance labels and semantic channels differ.
* ``"things_stuff"``: the file's things 0..C-1 (instance label order) then its
  ``stuff_categories`` C..C+K-1, as :mod:`htc.data.synthetic` writes them.

Items follow the data contract::

    image  float32 [3,H,W], normalised ((rgb - mean) / std)
    target boxes float32 [N,4] xyxy, labels int64 [N] (0..C-1), masks uint8 [N,H,W],
           semantic int64 [H,W], iscrowd uint8 [N], image_id int, orig_size (h, w),
           img_size (h, w), scale_factor float, flip bool

Category ids of the file map to instance labels 0..C-1 in order of sorted id
(COCO's 80 ids 1..90 with gaps -> 0..79), whatever the semantic layout.
Annotations are filtered as mmdetection does: boxes with no area inside the
image, w or h below 1, or area <= 0 are dropped. Crowd regions stay, flagged
by ``iscrowd`` (the model does not train on them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..evaluation import rle as rle_mod
from . import cocostuff
from .transforms import DEFAULT_MEAN, DEFAULT_STD, Normalize

IGNORE_INDEX = 255


class CocoDataset(Dataset):
    """COCO instances (+ semantic maps) as (image, target) pairs.

    Args:
        ann_file: instances JSON.
        img_dir: folder the images' ``file_name`` is relative to.
        seg_dir: folder of semantic label PNGs, or None (semantic is all 255).
        transforms: geometric (image, target) transform, e.g. from
            :func:`htc.data.transforms.build_transforms`; applied before
            normalisation.
        mean, std: normalisation, RGB.
        filter_empty: drop images without a usable non-crowd annotation
            (mmdetection does this for training).
        semantic_layout: what label PNG values mean: "things_stuff" or
            "cocostuff" (then values above 182 other than 255 are an error).
    """

    def __init__(
        self,
        ann_file: str | os.PathLike,
        img_dir: str | os.PathLike,
        seg_dir: str | os.PathLike | None = None,
        transforms: Callable | None = None,
        mean: Sequence[float] = DEFAULT_MEAN,
        std: Sequence[float] = DEFAULT_STD,
        filter_empty: bool = False,
        semantic_layout: str = "things_stuff",
    ):
        if semantic_layout not in ("things_stuff", "cocostuff"):
            raise ValueError(f"semantic_layout must be 'things_stuff' or 'cocostuff', got {semantic_layout!r}")
        self.semantic_layout = semantic_layout
        self.ann_file = Path(ann_file)
        self.img_dir = Path(img_dir)
        self.seg_dir = Path(seg_dir) if seg_dir is not None else None
        self.transforms = transforms
        self.normalize = Normalize(mean, std)
        with open(self.ann_file, "r", encoding="utf-8") as f:
            coco = json.load(f)
        for key in ("images", "annotations", "categories"):
            if key not in coco:
                raise ValueError(f"{self.ann_file}: no '{key}' list; is this a COCO instances file?")
        self.coco = coco
        cats = sorted(coco["categories"], key=lambda c: int(c["id"]))
        self.cat_ids = [int(c["id"]) for c in cats]
        self.class_names = [str(c.get("name", c["id"])) for c in cats]
        self.cat_id_to_label = {cid: i for i, cid in enumerate(self.cat_ids)}
        self.stuff_names = [s if isinstance(s, str) else str(s.get("name")) for s in coco.get("stuff_categories", [])]

        self._anns: dict[int, list[dict]] = {}
        for ann in coco["annotations"]:
            self._anns.setdefault(int(ann["image_id"]), []).append(ann)
        images = sorted(coco["images"], key=lambda im: int(im["id"]))
        if filter_empty:
            images = [im for im in images if any(not a[3] for a in self._usable(im))]
        self.images = images
        self.img_ids = [int(im["id"]) for im in images]

    @property
    def num_classes(self) -> int:
        return len(self.cat_ids)

    @property
    def num_semantic_classes(self) -> int:
        """Semantic channels: 183 for COCO-stuff, else things then stuff."""
        if self.semantic_layout == "cocostuff":
            return cocostuff.NUM_COCOSTUFF_CHANNELS
        return len(self.cat_ids) + len(self.stuff_names)

    @property
    def semantic_names(self) -> list[str]:
        """Name of every semantic channel (label PNG value)."""
        if self.semantic_layout == "cocostuff":
            return list(cocostuff.COCOSTUFF_NAMES)
        return self.class_names + self.stuff_names

    def __len__(self) -> int:
        return len(self.images)

    # ------------------------------------------------------------------
    def _usable(self, im: dict) -> list[tuple]:
        """(xyxy box, label, segmentation, iscrowd) of the image's kept annotations."""
        h, w = int(im["height"]), int(im["width"])
        out = []
        for ann in self._anns.get(int(im["id"]), []):
            if ann.get("ignore", False):
                continue
            cid = int(ann["category_id"])
            if cid not in self.cat_id_to_label:
                continue
            x, y, bw, bh = (float(v) for v in ann["bbox"])
            inter_w = max(0.0, min(x + bw, w) - max(x, 0.0))
            inter_h = max(0.0, min(y + bh, h) - max(y, 0.0))
            if inter_w * inter_h == 0 or float(ann.get("area", bw * bh)) <= 0 or bw < 1 or bh < 1:
                continue
            out.append(([x, y, x + bw, y + bh], self.cat_id_to_label[cid], ann.get("segmentation"), int(ann.get("iscrowd", 0))))
        return out

    def load_image(self, index: int) -> np.ndarray:
        """RGB uint8 [H,W,3] of item ``index``."""
        im = self.images[index]
        path = self.img_dir / im["file_name"]
        with Image.open(path) as pil:
            arr = np.asarray(pil.convert("RGB"))
        h, w = int(im["height"]), int(im["width"])
        if arr.shape[:2] != (h, w):
            raise ValueError(f"{path}: image is {arr.shape[1]}x{arr.shape[0]}, annotations say {w}x{h}")
        return arr

    def load_semantic(self, index: int) -> np.ndarray:
        """int64 [H,W] label map of item ``index`` (all 255 without seg_dir)."""
        im = self.images[index]
        h, w = int(im["height"]), int(im["width"])
        if self.seg_dir is None:
            return np.full((h, w), IGNORE_INDEX, dtype=np.int64)
        path = self.seg_dir / (Path(im["file_name"]).stem + ".png")
        if not path.exists():
            raise FileNotFoundError(f"semantic label map {path} not found (seg_dir layout: <stem>.png)")
        with Image.open(path) as pil:
            if pil.mode not in ("L", "P", "I", "I;16"):
                raise ValueError(f"{path}: label map must be a single-channel PNG, got mode {pil.mode}")
            sem = np.asarray(pil).astype(np.int64)
        if sem.shape != (h, w):
            raise ValueError(f"{path}: label map is {sem.shape[1]}x{sem.shape[0]}, image is {w}x{h}")
        if self.semantic_layout == "cocostuff":
            bad = (sem >= cocostuff.NUM_COCOSTUFF_CHANNELS) & (sem != IGNORE_INDEX)
            if bad.any():
                raise ValueError(f"{path}: value {int(sem[bad][0])} is no COCO-stuff channel (stuffthingmaps hold "
                                 f"COCO-stuff id - 1, 0..181, and 255 for unlabeled)")
        return sem

    def raw_target(self, index: int) -> dict:
        """Target in original-image coordinates, before any transform."""
        im = self.images[index]
        h, w = int(im["height"]), int(im["width"])
        anns = self._usable(im)
        n = len(anns)
        masks = np.zeros((n, h, w), dtype=np.uint8)
        for i, (_, _, segm, _) in enumerate(anns):
            if segm is None:
                raise ValueError(f"{self.ann_file}: an annotation of image {im['id']} has no segmentation")
            rle = rle_mod.fr_segmentation(segm, h, w)
            if [int(v) for v in rle["size"]] != [h, w]:
                raise ValueError(f"{self.ann_file}: mask size {rle['size']} of image {im['id']} is not {[h, w]}")
            masks[i] = rle_mod.decode(rle)
        return {
            "boxes": torch.tensor([a[0] for a in anns], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([a[1] for a in anns], dtype=torch.int64),
            "masks": torch.from_numpy(masks),
            "semantic": torch.from_numpy(self.load_semantic(index)),
            "iscrowd": torch.tensor([a[3] for a in anns], dtype=torch.uint8),
            "image_id": int(im["id"]),
            "orig_size": (h, w),
            "img_size": (h, w),
            "scale_factor": 1.0,
            "flip": False,
        }

    def __getitem__(self, index: int):
        img = self.load_image(index)
        image = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).to(torch.float32)
        target = self.raw_target(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        image, target = self.normalize(image, target)
        return image, target


def synthetic_split(root: str | os.PathLike, split: str, **kwargs) -> CocoDataset:
    """The dataset of one split written by :mod:`htc.data.synthetic` (or any COCO + stuffthingmaps tree)."""
    root = Path(root)
    seg_dir = root / "stuffthingmaps" / split
    return CocoDataset(
        root / "annotations" / f"instances_{split}.json",
        root / "images" / split,
        seg_dir if seg_dir.is_dir() else None,
        **kwargs,
    )
