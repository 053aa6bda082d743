"""Test-time steps after the graphs: stage ensembling, class-wise NMS, mask pasting.

These are the data-dependent steps the Go runtime reimplements; they follow
mmdetection 2.x (``multiclass_nms``, ``FCNMaskHead._do_paste_mask``).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import batched_nms


ENSEMBLE_MODES = ("logits", "probs")


def ensemble_scores(stage_logits: Tensor, mode: str = "logits",
                    weights: Optional[Sequence[float]] = None) -> Tensor:
    """[R, T, C+1] -> class probabilities [R, C+1], as Go's ``cascade.Ensemble``.

    ``logits`` (default; mmdetection's HTC and Cascade R-CNN): softmax of the stages'
    weighted mean logits. ``probs`` (detectron2's Cascade R-CNN): the weighted mean of
    each stage's softmax. ``weights`` per stage (non-negative, not all zero); None means
    equal weights."""
    if mode not in ENSEMBLE_MODES:
        raise ValueError(f"ensemble mode {mode!r}: want logits or probs")
    t = stage_logits.shape[1]
    if weights is None:
        w = stage_logits.new_ones(t)
    else:
        if len(weights) != t:
            raise ValueError(f"ensemble: {len(weights)} stage weights for {t} stages")
        if any(not (float(v) >= 0) for v in weights) or sum(float(v) for v in weights) == 0:
            raise ValueError(f"ensemble: stage weights {list(weights)} must be non-negative and not all zero")
        w = stage_logits.new_tensor([float(v) for v in weights])
    w = w.view(1, t, 1)
    if mode == "probs":
        return (F.softmax(stage_logits, dim=2) * w).sum(dim=1) / w.sum()
    return F.softmax((stage_logits * w).sum(dim=1) / w.sum(), dim=1)


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
