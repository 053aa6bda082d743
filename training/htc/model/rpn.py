"""Region proposal network: anchors, head, training targets/loss and proposal decoding."""

from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms

from ..config import RPNConfig
from .box_ops import assign_max_iou, decode_deltas, encode_deltas, sample_random, smooth_l1

RPN_STDS = (1.0, 1.0, 1.0, 1.0)


class AnchorGenerator:
    """mmdetection 2.x anchors: base size = stride, h = s*sqrt(r), w = s/sqrt(r),
    centred on the cell's top-left corner, ratio-major order within a location,
    locations row-major (y outer) with the anchors of one location adjacent."""

    def __init__(self, *, strides: Sequence[int], scales: Sequence[float], ratios: Sequence[float]) -> None:
        self.strides = list(strides)
        self.base_anchors = [self._base(s, scales, ratios) for s in self.strides]

    @property
    def num_anchors(self) -> int:
        return self.base_anchors[0].shape[0]

    @staticmethod
    def _base(stride: int, scales: Sequence[float], ratios: Sequence[float]) -> Tensor:
        ratios_t = torch.tensor(ratios, dtype=torch.float32)
        scales_t = torch.tensor(scales, dtype=torch.float32)
        h_ratios = ratios_t.sqrt()
        w_ratios = 1.0 / h_ratios
        ws = (stride * w_ratios[:, None] * scales_t[None, :]).reshape(-1)
        hs = (stride * h_ratios[:, None] * scales_t[None, :]).reshape(-1)
        return torch.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], dim=1)

    def grid(self, featmap_sizes: Sequence[Tuple[int, int]], device=None) -> List[Tensor]:
        """Anchors per level, [H*W*A, 4] in the order the head's outputs are flattened."""
        out = []
        for base, stride, (h, w) in zip(self.base_anchors, self.strides, featmap_sizes):
            xs = torch.arange(w, dtype=torch.float32, device=device) * stride
            ys = torch.arange(h, dtype=torch.float32, device=device) * stride
            yy, xx = torch.meshgrid(ys, xs, indexing="ij")
            shifts = torch.stack([xx.reshape(-1), yy.reshape(-1), xx.reshape(-1), yy.reshape(-1)], dim=1)
            out.append((shifts[:, None, :] + base.to(device)[None, :, :]).reshape(-1, 4))
        return out

    def valid_flags(self, featmap_sizes: Sequence[Tuple[int, int]], pad_shape: Tuple[int, int],
                    device=None) -> List[Tensor]:
        """Anchors whose cell lies inside this image's own padded extent (not the batch's)."""
        out = []
        for stride, (h, w) in zip(self.strides, featmap_sizes):
            vh = min(int(math.ceil(pad_shape[0] / stride)), h)
            vw = min(int(math.ceil(pad_shape[1] / stride)), w)
            vy = torch.zeros(h, dtype=torch.bool, device=device)
            vx = torch.zeros(w, dtype=torch.bool, device=device)
            vy[:vh] = True
            vx[:vw] = True
            valid = (vy[:, None] & vx[None, :]).reshape(-1)
            out.append(valid[:, None].expand(-1, self.num_anchors).reshape(-1))
        return out


class RPNHead(nn.Module):
    """3x3 conv + ReLU shared over levels, then per-anchor objectness (sigmoid) and deltas."""

    def __init__(self, *, in_channels: int, cfg: RPNConfig, size_divisor: int = 32) -> None:
        super().__init__()
        self.cfg = cfg
        self.size_divisor = size_divisor
        self.anchor_generator = AnchorGenerator(strides=cfg.anchor_strides, scales=cfg.anchor_scales,
                                                ratios=cfg.anchor_ratios)
        a = self.anchor_generator.num_anchors
        self.rpn_conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.rpn_cls = nn.Conv2d(in_channels, a, 1)
        self.rpn_reg = nn.Conv2d(in_channels, a * 4, 1)
        for m in (self.rpn_conv, self.rpn_cls, self.rpn_reg):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)

    def forward(self, feats: Sequence[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        """Per level: objectness logits [B, A, H, W] and deltas [B, 4A, H, W]."""
        cls, reg = [], []
        for x in feats:
            t = F.relu(self.rpn_conv(x))
            cls.append(self.rpn_cls(t))
            reg.append(self.rpn_reg(t))
        return cls, reg

    # ------------------------------------------------------------------ training

    def loss(self, cls: Sequence[Tensor], reg: Sequence[Tensor], gt_boxes: Sequence[Tensor],
             img_sizes: Sequence[Tuple[int, int]]) -> Dict[str, Tensor]:
        """Sigmoid BCE over sampled anchors + smooth L1 over positives, both averaged
        over the batch's sampled anchors (mmdetection's avg_factor)."""
        cfg = self.cfg
        sizes = [tuple(c.shape[-2:]) for c in cls]
        device = cls[0].device
        anchors = torch.cat(self.anchor_generator.grid(sizes, device), dim=0)
        batch = cls[0].shape[0]
        cls_flat = torch.cat([c.permute(0, 2, 3, 1).reshape(batch, -1) for c in cls], dim=1)
        reg_flat = torch.cat([r.permute(0, 2, 3, 1).reshape(batch, -1, 4) for r in reg], dim=1)

        cls_terms, reg_terms = [], []
        num_samples = 0
        for i in range(batch):
            h, w = img_sizes[i]
            pad = (_ceil_to(h, self.size_divisor), _ceil_to(w, self.size_divisor))
            flags = torch.cat(self.anchor_generator.valid_flags(sizes, pad, device), dim=0)
            if cfg.allowed_border >= 0:
                b = cfg.allowed_border
                flags = flags & (anchors[:, 0] >= -b) & (anchors[:, 1] >= -b) \
                    & (anchors[:, 2] < w + b) & (anchors[:, 3] < h + b)
            inside = torch.nonzero(flags, as_tuple=False).squeeze(1)
            gts = gt_boxes[i].to(anchors.dtype)
            gt_inds = assign_max_iou(anchors[inside], gts, pos_iou=cfg.pos_iou_thr, neg_iou=cfg.neg_iou_thr,
                                     min_pos_iou=cfg.min_pos_iou, match_low_quality=True)
            pos, neg = sample_random(gt_inds, cfg.num_samples, cfg.pos_fraction)
            # mmdetection counts at least one positive and one negative per image.
            num_samples += max(pos.numel(), 1) + max(neg.numel(), 1)
            pos_a, neg_a = inside[pos], inside[neg]
            logits = torch.cat([cls_flat[i, pos_a], cls_flat[i, neg_a]])
            labels = torch.cat([logits.new_ones(pos_a.numel()), logits.new_zeros(neg_a.numel())])
            cls_terms.append(F.binary_cross_entropy_with_logits(logits, labels, reduction="sum"))
            if pos_a.numel() > 0:
                targets = encode_deltas(anchors[pos_a], gts[gt_inds[pos] - 1], RPN_STDS)
                reg_terms.append(smooth_l1(reg_flat[i, pos_a], targets, cfg.loss_bbox_beta).sum())
            else:
                reg_terms.append(reg_flat[i, pos_a].sum())
        return {
            "loss_rpn_cls": torch.stack(cls_terms).sum() / num_samples,
            "loss_rpn_bbox": torch.stack(reg_terms).sum() / num_samples,
        }

    # ------------------------------------------------------------------ proposals

    @torch.no_grad()
    def proposals(self, cls: Sequence[Tensor], reg: Sequence[Tensor], img_sizes: Sequence[Tuple[int, int]],
                  *, training: bool) -> List[Tensor]:
        """Per image [K, 5] (x1, y1, x2, y2, score): :func:`select_proposals` with this
        RPN's anchors and the train or test limits."""
        cfg = self.cfg
        anchors = self.anchor_generator.grid([tuple(c.shape[-2:]) for c in cls], cls[0].device)
        return select_proposals(cls, reg, anchors, img_sizes,
                                pre_nms=cfg.train_pre_nms if training else cfg.test_pre_nms,
                                max_num=cfg.train_max_proposals if training else cfg.test_max_proposals,
                                nms_iou=cfg.nms_iou)


def select_proposals(cls: Sequence[Tensor], reg: Sequence[Tensor], anchors: Sequence[Tensor],
                     img_sizes: Sequence[Tuple[int, int]], *, pre_nms: int, max_num: int, nms_iou: float,
                     min_size: float = 0.0) -> List[Tensor]:
    """Per image [K, 5] (x1, y1, x2, y2, score) from the RPN's per-level outputs and
    anchors: top-k per level, decode, clip, drop boxes not wider and taller than
    ``min_size``, NMS per level, keep the best ``max_num``."""
    out = []
    for i in range(cls[0].shape[0]):
        shape = torch.tensor(img_sizes[i], dtype=torch.float32, device=cls[0].device)
        boxes_l, scores_l, levels_l = [], [], []
        for lvl, (c, r, a) in enumerate(zip(cls, reg, anchors)):
            scores = c[i].permute(1, 2, 0).reshape(-1).sigmoid()
            deltas = r[i].permute(1, 2, 0).reshape(-1, 4)
            if scores.numel() > pre_nms:
                scores, keep = scores.topk(pre_nms)
                deltas, anc = deltas[keep], a[keep]
            else:
                anc = a
            boxes_l.append(decode_deltas(anc, deltas, RPN_STDS, shape))
            scores_l.append(scores)
            levels_l.append(torch.full_like(scores, lvl, dtype=torch.long))
        boxes = torch.cat(boxes_l)
        scores = torch.cat(scores_l)
        levels = torch.cat(levels_l)
        valid = ((boxes[:, 2] - boxes[:, 0]) > min_size) & ((boxes[:, 3] - boxes[:, 1]) > min_size)
        boxes, scores, levels = boxes[valid], scores[valid], levels[valid]
        keep = batched_nms(boxes, scores, levels, nms_iou)[:max_num]
        out.append(torch.cat([boxes[keep], scores[keep, None]], dim=1))
    return out


def _ceil_to(x: int, divisor: int) -> int:
    return int(math.ceil(x / divisor) * divisor)
