"""Test-time steps after the graphs: stage ensembling, class-wise NMS, mask pasting.

These are the data-dependent steps the Go runtime reimplements; they follow
mmdetection 2.x (``multiclass_nms``, ``FCNMaskHead._do_paste_mask``).
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import batched_nms


def ensemble_scores(stage_logits: Tensor) -> Tensor:
    """[R, T, C+1] -> class probabilities [R, C+1]: softmax of the stages' mean logits."""
    return F.softmax(stage_logits.mean(dim=1), dim=1)


def multiclass_nms(boxes: Tensor, scores: Tensor, *, score_thr: float, iou: float,
                   max_num: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Class-wise NMS over class-agnostic boxes [R, 4] and scores [R, C+1] (background last).

    Every (box, class) pair scoring above ``score_thr`` is a candidate; returns
    (row index into ``boxes``, label, score), sorted by score, at most ``max_num``.
    """
    cls_scores = scores[:, :-1]
    rows, labels = torch.nonzero(cls_scores > score_thr, as_tuple=True)
    cand_scores = cls_scores[rows, labels]
    keep = batched_nms(boxes[rows], cand_scores, labels, iou)
    if max_num > 0:
        keep = keep[:max_num]
    return rows[keep], labels[keep], cand_scores[keep]


def paste_masks(probs: Tensor, boxes: Tensor, height: int, width: int, threshold: float) -> Tensor:
    """Paste [K, S, S] probabilities into a [K, height, width] uint8 image, box by box.

    Each output pixel centre (+0.5) is mapped into the box and sampled bilinearly;
    pixels outside the box +-1 px cannot reach the threshold and stay 0.
    """
    out = torch.zeros((probs.shape[0], height, width), dtype=torch.uint8)
    for k in range(probs.shape[0]):
        x0, y0, x1, y1 = (float(v) for v in boxes[k])
        xi0 = max(int(math.floor(x0)) - 1, 0)
        yi0 = max(int(math.floor(y0)) - 1, 0)
        xi1 = min(int(math.ceil(x1)) + 1, width)
        yi1 = min(int(math.ceil(y1)) + 1, height)
        if xi1 <= xi0 or yi1 <= yi0 or x1 <= x0 or y1 <= y0:
            continue
        xs = (torch.arange(xi0, xi1, dtype=torch.float32) + 0.5 - x0) / (x1 - x0) * 2 - 1
        ys = (torch.arange(yi0, yi1, dtype=torch.float32) + 0.5 - y0) / (y1 - y0) * 2 - 1
        grid = torch.stack(
            [xs[None, :].expand(ys.numel(), -1), ys[:, None].expand(-1, xs.numel())], dim=2
        )
        img = F.grid_sample(probs[k][None, None].float().cpu(), grid[None], align_corners=False)[0, 0]
        out[k, yi0:yi1, xi0:xi1] = (img >= threshold).to(torch.uint8)
    return out
