"""Writing a checkpoint file so that a reader never sees half of it, and naming where one stands."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional

import torch


def save_checkpoint(obj: Any, path: Path) -> None:
    """torch.save to a temporary name beside ``path``, then rename it over ``path``
    (atomic on one file system); the parent folder is created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def epoch_label(ckpt: Dict[str, Any]) -> Optional[str]:
    """Where in its run an htc.train checkpoint was written, for a bundle's name:
    ``epoch3`` after epoch 3, ``epoch1_step42`` at step 42 within epoch 1 (a stop
    on a signal or ``train.checkpoint_steps``, whose ``epoch`` field counts the
    epochs done, 0 here). None for a file without an epoch (weights only)."""
    if "epoch" not in ckpt:
        return None
    done, step = int(ckpt["epoch"]), int(ckpt.get("epoch_iter") or 0)
    return f"epoch{done + 1}_step{step}" if step else f"epoch{done}"
