"""Small models and synthetic batches shared by the model tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch

from htc.config import Config, config_from_dict

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "model"

# Smaller than configs/model/htc_tiny.yaml so every test runs in well under a second.
TEST_MODEL: Dict[str, Any] = {
    "num_classes": 3,
    "num_stuff_classes": 2,
    "backbone": {"depth": 18, "width": 8, "frozen_stages": -1, "norm": "batch"},
    "neck": {"out_channels": 32},
    "rpn": {"train_pre_nms": 300, "train_max_proposals": 300, "test_pre_nms": 200,
            "test_max_proposals": 200},
    "roi": {"num_samples": 32, "fc_dim": 64, "mask_channels": 32},
    "test": {"max_per_img": 20},
}


def small_config(**model_overrides: Any) -> Config:
    model = copy.deepcopy(TEST_MODEL)
    for key, value in model_overrides.items():
        if isinstance(value, dict):
            model.setdefault(key, {}).update(value)
        else:
            model[key] = value
    return config_from_dict({"model": model})


# (x0, y0, x1, y1, label) per image; labels are thing classes 0..2.
SHAPES: List[List[Tuple[int, int, int, int, int]]] = [
    [(8, 10, 48, 60, 0), (60, 20, 120, 70, 1), (20, 75, 90, 120, 2)],
    [(30, 30, 100, 100, 1), (5, 90, 40, 125, 0)],
]


def make_batch(size: int = 128, shapes=SHAPES, num_classes: int = 3) -> Tuple[torch.Tensor, List[Dict[str, Any]]]:
    """Images with one colour per class on a dark background, plus contract targets.

    Masks are ellipses inscribed in the boxes so mask targets are not just the box.
    The semantic map labels things by class and the background as stuff class C.
    """
    images, targets = [], []
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    colours = torch.tensor([[2.0, -1.0, -1.0], [-1.0, 2.0, -1.0], [-1.0, -1.0, 2.0]])
    for objs in shapes:
        img = torch.full((3, size, size), -1.5)
        semantic = torch.full((size, size), num_classes, dtype=torch.long)
        boxes, labels, masks = [], [], []
        for x0, y0, x1, y1, label in objs:
            cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
            mask = (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2) <= 1.0
            img[:, mask] = colours[label][:, None]
            semantic[mask] = label
            boxes.append([x0, y0, x1, y1])
            labels.append(label)
            masks.append(mask.to(torch.uint8))
        images.append(img)
        n = len(objs)
        targets.append({
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.long),
            "masks": torch.stack(masks) if masks else torch.zeros((0, size, size), dtype=torch.uint8),
            "semantic": semantic,
            "iscrowd": torch.zeros(n, dtype=torch.uint8),
            "image_id": len(targets),
            "orig_size": (size, size),
            "img_size": (size, size),
            "scale_factor": 1.0,
            "flip": False,
        })
    return torch.stack(images), targets


def near_gt_proposals(model, targets, copies: int = 8, jitter: float = 3.0):
    """Replace the RPN's training proposals with jittered ground truth (plus the RPN's own),
    so every cascade stage has positives regardless of how trained the RPN is."""
    original = model.rpn_head.proposals

    def proposals(cls, reg, img_sizes, *, training):
        out = original(cls, reg, img_sizes, training=training)
        if not training:
            return out
        result = []
        for props, t in zip(out, targets):
            gt = t["boxes"].repeat(copies, 1)
            jittered = gt + torch.randn_like(gt) * jitter
            scored = torch.cat([jittered, torch.ones(len(jittered), 1)], dim=1)
            result.append(torch.cat([scored, props], dim=0))
        return result

    model.rpn_head.proposals = proposals
    return model
