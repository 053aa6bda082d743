"""Box geometry, delta coding, IoU assignment and random sampling (mmdetection 2.x semantics).

Boxes are xyxy floats in network-input pixels; widths are x2 - x1 (no +1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

# Largest |dw|, |dh| a delta may carry: a box may grow or shrink by at most 1000/16.
MAX_LOG_RATIO = abs(math.log(16.0 / 1000.0))


def encode_deltas(boxes: Tensor, targets: Tensor, stds: Sequence[float]) -> Tensor:
    """Deltas (dx, dy, dw, dh) / stds that move ``boxes`` onto ``targets``."""
    pw = boxes[:, 2] - boxes[:, 0]
    ph = boxes[:, 3] - boxes[:, 1]
    px = (boxes[:, 0] + boxes[:, 2]) * 0.5
    py = (boxes[:, 1] + boxes[:, 3]) * 0.5
    gw = targets[:, 2] - targets[:, 0]
    gh = targets[:, 3] - targets[:, 1]
    gx = (targets[:, 0] + targets[:, 2]) * 0.5
    gy = (targets[:, 1] + targets[:, 3]) * 0.5
    deltas = torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], dim=1)
    return deltas / deltas.new_tensor(stds)


def decode_deltas(boxes: Tensor, deltas: Tensor, stds: Sequence[float],
                  max_shape: Optional[Tensor] = None) -> Tensor:
    """Apply ``deltas`` (scaled by ``stds``) to ``boxes``.

    ``max_shape`` is [N, 2] (h, w) per box, or [2]; decoded boxes are clipped to
    [0, w] x [0, h]. Uses only ops that export to ONNX (no data-dependent branches).
    """
    d = deltas * deltas.new_tensor(stds)
    dw = d[:, 2].clamp(min=-MAX_LOG_RATIO, max=MAX_LOG_RATIO)
    dh = d[:, 3].clamp(min=-MAX_LOG_RATIO, max=MAX_LOG_RATIO)
    pw = boxes[:, 2] - boxes[:, 0]
    ph = boxes[:, 3] - boxes[:, 1]
    px = (boxes[:, 0] + boxes[:, 2]) * 0.5
    py = (boxes[:, 1] + boxes[:, 3]) * 0.5
    gw = pw * dw.exp()
    gh = ph * dh.exp()
    gx = px + pw * d[:, 0]
    gy = py + ph * d[:, 1]
    x1 = gx - gw * 0.5
    y1 = gy - gh * 0.5
    x2 = gx + gw * 0.5
    y2 = gy + gh * 0.5
    if max_shape is not None:
        shape = max_shape.to(boxes.dtype)
        h = shape[..., 0]
        w = shape[..., 1]
        zero = torch.zeros_like(x1)
        x1 = torch.minimum(torch.maximum(x1, zero), w)
        y1 = torch.minimum(torch.maximum(y1, zero), h)
        x2 = torch.minimum(torch.maximum(x2, zero), w)
        y2 = torch.minimum(torch.maximum(y2, zero), h)
    return torch.stack([x1, y1, x2, y2], dim=1)


def box_iou(a: Tensor, b: Tensor, eps: float = 1e-6) -> Tensor:
    """IoU matrix [len(a), len(b)]; degenerate boxes give 0, never NaN."""
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = (area_a[:, None] + area_b[None, :] - inter).clamp(min=eps)
    return inter / union


def assign_max_iou(boxes: Tensor, gt_boxes: Tensor, *, pos_iou: float, neg_iou: float, min_pos_iou: float,
                   match_low_quality: bool) -> Tensor:
    """mmdetection's MaxIoUAssigner.

    Returns ``gt_inds`` [N]: -1 ignored, 0 negative, k > 0 matched to gt k - 1.
    With ``match_low_quality`` every gt also claims all boxes that reach its
    highest IoU (if at least ``min_pos_iou``), so no gt is left without a match.
    """
    n = boxes.shape[0]
    gt_inds = torch.full((n,), -1, dtype=torch.long, device=boxes.device)
    if gt_boxes.shape[0] == 0:
        gt_inds.zero_()
        return gt_inds
    if n == 0:
        return gt_inds
    overlaps = box_iou(gt_boxes, boxes)
    max_overlaps, argmax = overlaps.max(dim=0)
    gt_inds[(max_overlaps >= 0) & (max_overlaps < neg_iou)] = 0
    pos = max_overlaps >= pos_iou
    gt_inds[pos] = argmax[pos] + 1
    if match_low_quality:
        gt_max, _ = overlaps.max(dim=1)
        for i in range(gt_boxes.shape[0]):
            if gt_max[i] >= min_pos_iou:
                gt_inds[overlaps[i] == gt_max[i]] = i + 1
    return gt_inds


def sample_random(gt_inds: Tensor, num: int, pos_fraction: float):
    """mmdetection's RandomSampler: up to num * pos_fraction positives, negatives fill to ``num``.

    Returns (pos_idx, neg_idx). Uses the global torch RNG so a seed reproduces it.
    """
    pos = torch.nonzero(gt_inds > 0, as_tuple=False).squeeze(1)
    neg = torch.nonzero(gt_inds == 0, as_tuple=False).squeeze(1)
    num_pos = int(num * pos_fraction)
    if pos.numel() > num_pos:
        pos = pos[torch.randperm(pos.numel(), device=pos.device)[:num_pos]]
    num_neg = num - pos.numel()
    if neg.numel() > num_neg:
        neg = neg[torch.randperm(neg.numel(), device=neg.device)[:num_neg]]
    return pos, neg


@dataclass
class RoISample:
    """RoIs sampled for one image at one cascade stage (positives first)."""

    boxes: Tensor          # [n, 4]
    num_pos: int
    pos_gt_inds: Tensor    # [num_pos] index into the image's gt boxes
    pos_is_gt: Tensor      # [num_pos] bool: the RoI is a gt box added as proposal

    @property
    def pos_boxes(self) -> Tensor:
        return self.boxes[: self.num_pos]


def sample_rois(proposals: Tensor, gt_boxes: Tensor, *, iou: float, num: int, pos_fraction: float) -> RoISample:
    """Assign proposals at one IoU (pos = neg = min-pos threshold), add gt boxes as proposals, sample.

    The assigner matches low-quality boxes as mmdetection 2.x's HTC config does:
    its R-CNN stages name no ``match_low_quality`` and MaxIoUAssigner defaults
    to True (only the Cascade R-CNN base config sets False). With min-pos =
    pos IoU this only moves a box that is some gt's best match (and already
    positive for another gt) to that gt, ties included.

    The gt boxes are prepended and matched to themselves, as mmdetection's
    sampler does after assigning the proposals.
    """
    gt_inds = assign_max_iou(proposals, gt_boxes, pos_iou=iou, neg_iou=iou, min_pos_iou=iou,
                             match_low_quality=True)
    num_gt = gt_boxes.shape[0]
    all_boxes = torch.cat([gt_boxes.to(proposals.dtype), proposals], dim=0)
    self_inds = torch.arange(1, num_gt + 1, dtype=torch.long, device=proposals.device)
    all_inds = torch.cat([self_inds, gt_inds], dim=0)
    pos, neg = sample_random(all_inds, num, pos_fraction)
    is_gt = torch.zeros(all_boxes.shape[0], dtype=torch.bool, device=proposals.device)
    is_gt[:num_gt] = True
    return RoISample(
        boxes=torch.cat([all_boxes[pos], all_boxes[neg]], dim=0),
        num_pos=pos.numel(),
        pos_gt_inds=all_inds[pos] - 1,
        pos_is_gt=is_gt[pos],
    )


def boxes_to_rois(boxes_list: Sequence[Tensor]) -> Tensor:
    """Concatenate per-image boxes into RoIs [R, 5] = (batch index, x1, y1, x2, y2)."""
    rois = []
    for i, b in enumerate(boxes_list):
        rois.append(torch.cat([b.new_full((b.shape[0], 1), float(i)), b[:, :4]], dim=1))
    if not rois:
        return torch.zeros((0, 5))
    return torch.cat(rois, dim=0)


def smooth_l1(pred: Tensor, target: Tensor, beta: float) -> Tensor:
    """Elementwise smooth L1 (unreduced), mmdetection's definition."""
    diff = (pred - target).abs()
    if beta <= 0:
        return diff
    return torch.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)
