"""Writing a checkpoint file so that a reader never sees half of it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def save_checkpoint(obj: Any, path: Path) -> None:
    """torch.save to a temporary name beside ``path``, then rename it over ``path``
    (atomic on one file system); the parent folder is created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
