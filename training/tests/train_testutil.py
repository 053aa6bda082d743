"""A tiny synthetic training setup shared by the train tests: runs in seconds on one core."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Dict, List

import yaml

# Synthetic shapes: 5 thing classes, 4 stuff classes (htc.data.synthetic).
TINY: Dict[str, Any] = {
    "model": {
        "num_classes": 5,
        "num_stuff_classes": 4,
        "backbone": {"depth": 18, "width": 8, "frozen_stages": -1, "norm": "batch"},
        "neck": {"out_channels": 32},
        "rpn": {"train_pre_nms": 300, "train_max_proposals": 300, "test_pre_nms": 100,
                "test_max_proposals": 100},
        "roi": {"num_samples": 32, "fc_dim": 64, "mask_channels": 32},
        "test": {"max_per_img": 20},
    },
    "data": {
        "dataset": "synthetic",
        "train_ann": "annotations/instances_train.json",
        "val_ann": "annotations/instances_val.json",
        "train_images": "images/train",
        "val_images": "images/val",
        "semantic_dir": "stuffthingmaps/train",
        "num_train_images": 4,
        "num_val_images": 2,
        # 320x240 generated images become 64x48 (padded to 64x64)
        "img_scales": [[64, 64]],
        "test_scale": [64, 64],
    },
    "train": {
        "epochs": 2,
        "batch_size": 2,
        "lr": 0.02,
        "warmup_iters": 2,
        "warmup_ratio": 0.1,
        "steps": [2],
        "seed": 0,
        "workers": 0,
        "evaluate": False,
    },
}


def write_config(path: Path, data_root: Path, **sections: Dict[str, Any]) -> Path:
    """TINY with ``data.root`` set and per-section overrides merged in."""
    cfg = copy.deepcopy(TINY)
    cfg["data"]["root"] = str(data_root)
    for name, values in sections.items():
        cfg[name].update(values)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def read_log(work_dir: Path) -> List[Dict[str, Any]]:
    with open(Path(work_dir) / "train_log.jsonl", "r", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def steps(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The per-iteration progress records (not checkpoint/eval ones)."""
    return [r for r in records if "iter" in r]
