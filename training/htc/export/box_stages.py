"""``bbox_stage1.onnx`` ... ``bbox_stageT.onnx``: one graph per box stage, on RoI features the
runtime pooled.

RoIAlign is not in these graphs: the runtime pools each RoI on its own level (and the
semantic feature, 14x14 averaged to 7x7) itself, channels last, and feeds stage t's graph
``roi_feats`` [R, S*S*C] (bin-major, channels last: the first FC's columns are permuted to
match, so no transpose runs); the graph is the stage's FCs and the box decoding. ONNX
Runtime's CPU RoiAlign (scalar, one channel plane at a time) was three quarters of the box
heads' time when it ran inside the graph (contract 1); the runtime's own pooling reads each
sample's neighbours as contiguous channel vectors."""

from __future__ import annotations

import copy
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..model.box_ops import decode_deltas
from ..model.roi_head import BoxCascade


def channels_last_columns(weight: Tensor, channels: int, size: int) -> Tensor:
    """A first FC's weight [out, C*S*S] (input flattened C, y, x) with its columns in the
    (y, x, C) order of channels-last pooled features."""
    out = weight.shape[0]
    return weight.reshape(out, channels, size, size).permute(0, 2, 3, 1).reshape(out, size * size * channels)


def channels_first_columns(weight: Tensor, channels: int, size: int) -> Tensor:
    """The inverse of :func:`channels_last_columns`."""
    out = weight.shape[0]
    return weight.reshape(out, size, size, channels).permute(0, 3, 1, 2).reshape(out, channels * size * size)


class BoxStageGraph(nn.Module):
    """Box stage t: ``roi_feats`` [R, S*S*C] (the RoIs pooled channels last, semantic
    feature added) -> logits [R, C+1], boxes [R, 4] (deltas decoded on ``rois`` and clipped
    to the image). The head's first FC takes the channels-last order; its parameters keep
    the head's names under ``head.``."""

    def __init__(self, cascade: BoxCascade, t: int) -> None:
        super().__init__()
        head = cascade.heads[t]
        fc = head.shared_fcs[0]
        size = cascade.extractor.out_size
        if fc.in_features % (size * size):
            raise ValueError(f"box head {t}: first FC takes {fc.in_features} values, not C x {size} x {size}")
        self.channels = fc.in_features // (size * size)
        self.head = copy.deepcopy(head)
        with torch.no_grad():
            self.head.shared_fcs[0].weight.copy_(channels_last_columns(fc.weight, self.channels, size))
        self.stds = list(cascade.stds[t])

    def forward(self, roi_feats: Tensor, rois: Tensor, img_sizes: Tensor) -> Tuple[Tensor, Tensor]:
        logits, deltas = self.head(roi_feats)
        boxes = decode_deltas(rois[:, 1:], deltas, self.stds, img_sizes.to(rois.dtype)[rois[:, 0].long()])
        return logits, boxes


def pooled_channels_last(cascade: BoxCascade, feats: Sequence[Tensor], semantic_feat: Optional[Tensor],
                         rois: Tensor) -> Tensor:
    """What the runtime feeds ``roi_feats``: each RoI pooled on its own level (plus the
    semantic feature, 14x14 averaged to 7x7, when the box branch fuses it), [R, S*S*C]
    channels last."""
    with torch.no_grad():
        x = cascade.roi_features(feats, semantic_feat, rois)
    return x.permute(0, 2, 3, 1).flatten(1)


class StagesBoxCascade(nn.Module):
    """``BoxCascade`` (same inputs and outputs) computed as the runtime does: pool in
    PyTorch, then each stage's :class:`BoxStageGraph`. Tests compare it with the model's."""

    def __init__(self, cascade: BoxCascade) -> None:
        super().__init__()
        self.cascade = cascade
        self.stages = nn.ModuleList(BoxStageGraph(cascade, t) for t in range(len(cascade.heads)))

    def forward(self, p2: Tensor, p3: Tensor, p4: Tensor, p5: Tensor, semantic_feat: Tensor,
                rois: Tensor, img_sizes: Tensor) -> Tuple[Tensor, Tensor]:
        logits_all, boxes_all = [], []
        for stage in self.stages:
            x = pooled_channels_last(self.cascade, (p2, p3, p4, p5), semantic_feat, rois)
            logits, boxes = stage(x, rois, img_sizes)
            logits_all.append(logits)
            boxes_all.append(boxes)
            rois = torch.cat([rois[:, :1], boxes], dim=1)
        return torch.stack(logits_all, dim=1), torch.stack(boxes_all, dim=1)
