"""The hybrid task cascade: RoI feature extraction, the box and mask cascades, and their training.

Paper notation (§3): x are the FPN features, P(.) RoIAlign, S(x) the semantic
feature, B_t / M_t the stage-t box / mask heads, r_t the stage-t boxes.

    x_t^box  = P(x, r_{t-1}) + P(S(x), r_{t-1})                         Eq. 6
    r_t      = B_t(x_t^box)
    x_t^mask = P(x, r_t) + P(S(x), r_t)            (interleaved, Eq. 2)
    m_t      = M_t(x_t^mask + G_t(m_{t-1}^-))      (information flow, Eq. 3-5)

``BoxCascade`` and ``MaskCascade`` are the test-time pieces the exporter turns
into ONNX graphs; they wrap (do not own) the heads registered on
``HTCRoIHead`` so parameter names stay mmdetection's.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from ..config import ModelConfig
from .box_ops import RoISample, boxes_to_rois, decode_deltas, encode_deltas, sample_rois, smooth_l1
from .heads import BBoxHead, FusedSemanticHead, HTCMaskHead

# Strides of the FPN levels RoIs are pooled from (P2-P5) and of the semantic feature (P3).
ROI_STRIDES = (4, 8, 16, 32)
SEMANTIC_STRIDE = 8


def _exporting() -> bool:
    return torch.onnx.is_in_onnx_export() or torch.jit.is_tracing()


class RoIExtractor:
    """Multi-level RoIAlign (aligned, adaptive sampling): a RoI of scale sqrt(wh)
    goes to level floor(log2(scale / finest_scale + 1e-6)), clamped to P2..P5."""

    def __init__(self, *, out_size: int, finest_scale: float, strides: Sequence[int] = ROI_STRIDES,
                 sampling_ratio: int = 0) -> None:
        self.out_size = out_size
        self.finest_scale = finest_scale
        self.strides = tuple(strides)
        # samples per bin side; 0 = adaptive (the model's; a bundle's roi section may say otherwise)
        self.sampling_ratio = sampling_ratio

    def levels(self, rois: Tensor) -> Tensor:
        scale = ((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2])).sqrt()
        lvl = torch.floor(torch.log2(scale / self.finest_scale + 1e-6))
        return lvl.clamp(min=0, max=len(self.strides) - 1).long()

    def __call__(self, feats: Sequence[Tensor], rois: Tensor, *, dense: Optional[bool] = None) -> Tensor:
        """RoI features [R, C, S, S].

        ``dense`` pools every RoI on every level and selects with ``where``: no
        data-dependent indexing, so it exports to ONNX; used automatically while
        exporting. The sparse path pools each RoI once and gives the same values.
        """
        if dense is None:
            dense = _exporting()
        lvl = self.levels(rois)
        size = (self.out_size, self.out_size)
        if dense:
            # On the levels a RoI does not belong to it is pooled as an empty
            # box: adaptive sampling then takes no samples, so each RoI costs
            # one real RoIAlign instead of four (a large RoI on P2 would
            # otherwise sample a grid sixty times denser than on P5).
            empty = torch.cat([rois[:, :1], torch.zeros_like(rois[:, 1:])], dim=1)
            out = None
            for i, stride in enumerate(self.strides):
                here = (lvl == i).view(-1, 1)
                pooled = roi_align(feats[i], torch.where(here, rois, empty), size, 1.0 / stride,
                                   self.sampling_ratio, True)
                out = pooled if out is None else torch.where(here.view(-1, 1, 1, 1), pooled, out)
            return out
        out = rois.new_zeros((rois.shape[0], feats[0].shape[1], self.out_size, self.out_size))
        for i, stride in enumerate(self.strides):
            idx = torch.nonzero(lvl == i, as_tuple=False).squeeze(1)
            out = out.index_put((idx,), roi_align(feats[i], rois[idx], size, 1.0 / stride, self.sampling_ratio, True))
        return out


def semantic_roi_features(semantic_feat: Tensor, rois: Tensor, out_size: int) -> Tensor:
    """P(S(x), r): the semantic feature has one level, at stride 8."""
    return roi_align(semantic_feat, rois, (out_size, out_size), 1.0 / SEMANTIC_STRIDE, 0, True)


class BoxCascade(nn.Module):
    """Test-time box cascade (export graph 2).

    forward(p2, p3, p4, p5, semantic_feat, rois [R, 5], img_sizes [B, 2] (h, w))
      -> stage logits [R, T, C+1], stage boxes [R, T, 4]

    Stage t runs on stage t-1's boxes (the proposals for t = 0); its boxes are
    its deltas decoded on its input RoIs and clipped to the image. Ensembling
    (mean of logits, last stage's boxes) is left to the caller.
    """

    def __init__(self, *, heads: nn.ModuleList, extractor: RoIExtractor, stds: Sequence[Sequence[float]],
                 semantic_roi_size: int, fuse_semantic: bool) -> None:
        super().__init__()
        self.heads = heads
        self.extractor = extractor
        self.stds = [list(s) for s in stds]
        self.semantic_roi_size = semantic_roi_size
        self.fuse_semantic = fuse_semantic

    def roi_features(self, feats: Sequence[Tensor], semantic_feat: Optional[Tensor], rois: Tensor) -> Tensor:
        x = self.extractor(feats, rois)
        if self.fuse_semantic:
            sem = semantic_roi_features(semantic_feat, rois, self.semantic_roi_size)
            k = self.semantic_roi_size // self.extractor.out_size
            x = x + (F.avg_pool2d(sem, k, k) if k > 1 else sem)
        return x

    def stage(self, t: int, feats: Sequence[Tensor], semantic_feat: Optional[Tensor],
              rois: Tensor) -> Tuple[Tensor, Tensor]:
        """B_t on P(x, r) (+ P(S(x), r)): (logits [R, C+1], deltas [R, 4])."""
        return self.heads[t](self.roi_features(feats, semantic_feat, rois))

    def forward(self, p2: Tensor, p3: Tensor, p4: Tensor, p5: Tensor, semantic_feat: Optional[Tensor],
                rois: Tensor, img_sizes: Tensor) -> Tuple[Tensor, Tensor]:
        feats = (p2, p3, p4, p5)
        batch_idx = rois[:, :1]
        max_shape = img_sizes.to(rois.dtype)[rois[:, 0].long()]
        logits_all, boxes_all = [], []
        for t in range(len(self.heads)):
            logits, deltas = self.stage(t, feats, semantic_feat, rois)
            boxes = decode_deltas(rois[:, 1:], deltas, self.stds[t], max_shape)
            logits_all.append(logits)
            boxes_all.append(boxes)
            rois = torch.cat([batch_idx, boxes], dim=1)
        return torch.stack(logits_all, dim=1), torch.stack(boxes_all, dim=1)


class MaskCascade(nn.Module):
    """Test-time mask cascade (export graph 3).

    forward(p2, p3, p4, p5, semantic_feat, rois [M, 5], labels [M])
      -> stage mask probabilities [M, T, 2S, 2S] of each RoI's label channel

    All stages see the same RoI feature (the final boxes); with information
    flow each head also takes the previous head's 4th-conv feature.
    """

    def __init__(self, *, heads: nn.ModuleList, extractor: RoIExtractor, fuse_semantic: bool,
                 info_flow: bool) -> None:
        super().__init__()
        self.heads = heads
        self.extractor = extractor
        self.fuse_semantic = fuse_semantic
        self.info_flow = info_flow

    def roi_features(self, feats: Sequence[Tensor], semantic_feat: Optional[Tensor], rois: Tensor) -> Tensor:
        x = self.extractor(feats, rois)
        if self.fuse_semantic:
            x = x + semantic_roi_features(semantic_feat, rois, self.extractor.out_size)
        return x

    def stage_logits(self, t: int, feats: Sequence[Tensor], semantic_feat: Optional[Tensor],
                     rois: Tensor) -> Tensor:
        """Training form of M_t: heads 0..t-1 run on the same RoIs (features only,
        with gradient, Eq. 5) to give m_{t-1}^-; returns head t's logits [N, C, 2S, 2S]."""
        x = self.roi_features(feats, semantic_feat, rois)
        last = None
        if self.info_flow:
            for i in range(t):
                last = self.heads[i].features(x, last)
        return self.heads[t].logits(self.heads[t].features(x, last))

    def forward(self, p2: Tensor, p3: Tensor, p4: Tensor, p5: Tensor, semantic_feat: Optional[Tensor],
                rois: Tensor, labels: Tensor) -> Tensor:
        x = self.roi_features((p2, p3, p4, p5), semantic_feat, rois)
        last = None
        probs = []
        for head in self.heads:
            logits, feat = head(x, last if self.info_flow else None)
            last = feat
            size = logits.shape[-1]
            index = labels.long().view(-1, 1, 1, 1).expand(-1, 1, size, size)
            probs.append(logits.gather(1, index).sigmoid())
        return torch.cat(probs, dim=1)


class HTCRoIHead(nn.Module):
    """Owns the semantic head, the T box heads and the T mask heads; trains them (``loss``)
    and hands out the test-time cascades (``box_cascade``, ``mask_cascade``)."""

    def __init__(self, cfg: ModelConfig, *, in_channels: int) -> None:
        super().__init__()
        self.cfg = cfg
        r = cfg.roi
        self.num_classes = cfg.num_classes
        self.num_stages = r.num_stages
        self.interleaved = cfg.interleaved
        self.mask_info_flow = cfg.mask_info_flow
        self.with_semantic = cfg.semantic
        self.semantic_fusion = tuple(cfg.semantic_fusion) if cfg.semantic else ()
        if cfg.semantic:
            self.semantic_head = FusedSemanticHead(
                in_channels=in_channels, num_levels=5, fusion_level=1, num_convs=cfg.semantic_num_convs,
                num_classes=cfg.num_semantic_classes,
            )
        else:
            self.semantic_head = None
        self.bbox_head = nn.ModuleList(
            BBoxHead(in_channels=in_channels, roi_size=r.box_roi_size, fc_dim=r.fc_dim,
                     num_classes=cfg.num_classes)
            for _ in range(r.num_stages)
        )
        self.mask_head = nn.ModuleList(
            HTCMaskHead(in_channels=in_channels, channels=r.mask_channels, num_convs=r.mask_num_convs,
                        num_classes=cfg.num_classes, with_conv_res=cfg.mask_info_flow and t > 0)
            for t in range(r.num_stages)
        )
        self.box_extractor = RoIExtractor(out_size=r.box_roi_size, finest_scale=r.finest_scale)
        self.mask_extractor = RoIExtractor(out_size=r.mask_roi_size, finest_scale=r.finest_scale)

    # ------------------------------------------------------------------ test-time pieces

    def box_cascade(self) -> BoxCascade:
        return BoxCascade(heads=self.bbox_head, extractor=self.box_extractor, stds=self.cfg.roi.box_stds,
                          semantic_roi_size=self.cfg.roi.mask_roi_size,
                          fuse_semantic="bbox" in self.semantic_fusion)

    def mask_cascade(self) -> MaskCascade:
        return MaskCascade(heads=self.mask_head, extractor=self.mask_extractor,
                           fuse_semantic="mask" in self.semantic_fusion, info_flow=self.mask_info_flow)

    # ------------------------------------------------------------------ training

    def semantic_loss(self, logits: Tensor, semantic_maps: Sequence[Tensor]) -> Tensor:
        """CE against the label maps padded with 255 to the batch size and downscaled
        1/8 nearest; averaged over labelled pixels, times the semantic loss weight."""
        b, _, h, w = logits.shape
        pad_h, pad_w = h * SEMANTIC_STRIDE, w * SEMANTIC_STRIDE
        labels = torch.full((b, pad_h, pad_w), 255, dtype=torch.long, device=logits.device)
        for i, m in enumerate(semantic_maps):
            m = m[:pad_h, :pad_w]
            labels[i, : m.shape[0], : m.shape[1]] = m.to(logits.device).long()
        labels = F.interpolate(labels[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
        total = F.cross_entropy(logits, labels, ignore_index=255, reduction="sum")
        count = (labels != 255).sum().clamp(min=1)
        return total / count * self.cfg.semantic_loss_weight

    def loss(self, feats: Sequence[Tensor], semantic_feat: Optional[Tensor], proposals: Sequence[Tensor],
             gts: Sequence[Dict[str, Tensor]], img_sizes: Tensor) -> Dict[str, Tensor]:
        """Box and mask losses of every stage, keys ``s{t}.loss_cls|loss_bbox|loss_mask``,
        already multiplied by the stage loss weights (paper Eq. 7).

        ``proposals`` are per-image boxes [n, 4] (detached); ``gts`` per image
        hold ``boxes`` [N, 4], ``labels`` [N], ``masks`` [N, H, W] (crowd removed);
        ``img_sizes`` is [B, 2] (h, w) of the unpadded images.
        """
        r = self.cfg.roi
        boxes_net = self.box_cascade()
        masks_net = self.mask_cascade()
        feats = feats[: len(ROI_STRIDES)]
        losses: Dict[str, Tensor] = {}
        props = [p[:, :4].detach() for p in proposals]
        for t in range(self.num_stages):
            weight = r.stage_loss_weights[t]
            samples = [
                sample_rois(props[i], g["boxes"], iou=r.iou_thresholds[t], num=r.num_samples,
                            pos_fraction=r.pos_fraction)
                for i, g in enumerate(gts)
            ]
            rois = boxes_to_rois([s.boxes for s in samples]).to(feats[0].device)
            logits, deltas = self._box_forward(boxes_net, t, feats, semantic_feat, rois)
            loss_cls, loss_bbox = self._box_loss(t, logits, deltas, samples, gts)
            losses[f"s{t}.loss_cls"] = loss_cls * weight
            losses[f"s{t}.loss_bbox"] = loss_bbox * weight

            refined = None
            if self.interleaved or t < self.num_stages - 1:
                refined = self._refine(t, rois, deltas, samples, img_sizes)
            if self.interleaved:
                # Eq. 2: the stage-t mask branch trains on the boxes stage t just regressed,
                # re-assigned and re-sampled at stage t's IoU.
                with torch.no_grad():
                    mask_samples = [
                        sample_rois(refined[i], g["boxes"], iou=r.iou_thresholds[t], num=r.num_samples,
                                    pos_fraction=r.pos_fraction)
                        for i, g in enumerate(gts)
                    ]
            else:
                mask_samples = samples
            pos_rois = boxes_to_rois([s.pos_boxes for s in mask_samples]).to(feats[0].device)
            mask_logits = self._mask_forward_train(masks_net, t, feats, semantic_feat, pos_rois)
            losses[f"s{t}.loss_mask"] = self._mask_loss(mask_logits, mask_samples, gts) * weight
            if refined is not None:
                props = refined
        return losses

    # The two per-stage forwards are methods of their own so that a test (or a debugging
    # session) can observe exactly which RoIs each stage's box and mask branch received.

    def _box_forward(self, boxes_net: BoxCascade, t: int, feats: Sequence[Tensor],
                     semantic_feat: Optional[Tensor], rois: Tensor) -> Tuple[Tensor, Tensor]:
        return boxes_net.stage(t, feats, semantic_feat, rois)

    def _mask_forward_train(self, masks_net: MaskCascade, t: int, feats: Sequence[Tensor],
                            semantic_feat: Optional[Tensor], rois: Tensor) -> Tensor:
        return masks_net.stage_logits(t, feats, semantic_feat, rois)

    def _box_loss(self, t: int, logits: Tensor, deltas: Tensor, samples: Sequence[RoISample],
                  gts: Sequence[Dict[str, Tensor]]) -> Tuple[Tensor, Tensor]:
        """Softmax CE over all sampled RoIs; smooth L1 on positives divided by the number of
        sampled RoIs (mmdetection's avg_factor)."""
        r = self.cfg.roi
        labels, targets, pos_index = [], [], []
        start = 0
        for s, g in zip(samples, gts):
            n = s.boxes.shape[0]
            lab = torch.full((n,), self.num_classes, dtype=torch.long, device=logits.device)
            lab[: s.num_pos] = g["labels"][s.pos_gt_inds].to(logits.device)
            labels.append(lab)
            if s.num_pos:
                targets.append(encode_deltas(s.pos_boxes, g["boxes"][s.pos_gt_inds].to(s.boxes.dtype),
                                             r.box_stds[t]))
                pos_index.append(torch.arange(start, start + s.num_pos, device=logits.device))
            start += n
        if logits.shape[0] == 0:
            zero = logits.sum() + deltas.sum()
            return zero, zero
        loss_cls = F.cross_entropy(logits, torch.cat(labels))
        if not pos_index:
            return loss_cls, deltas[:0].sum()
        idx = torch.cat(pos_index)
        target = torch.cat(targets).to(deltas.device)
        loss_bbox = smooth_l1(deltas[idx], target, r.box_loss_beta).sum() / logits.shape[0]
        return loss_cls, loss_bbox

    @torch.no_grad()
    def _refine(self, t: int, rois: Tensor, deltas: Tensor, samples: Sequence[RoISample],
                img_sizes: Tensor) -> List[Tensor]:
        """Stage t's boxes for each image: its deltas decoded on its sampled RoIs, clipped,
        with the RoIs that were gt boxes dropped (they would leak gt into the next stage)."""
        max_shape = img_sizes.to(rois.dtype)[rois[:, 0].long()]
        boxes = decode_deltas(rois[:, 1:], deltas.detach(), self.cfg.roi.box_stds[t], max_shape)
        out, start = [], 0
        for s in samples:
            n = s.boxes.shape[0]
            keep = torch.ones(n, dtype=torch.bool, device=boxes.device)
            keep[: s.num_pos] = ~s.pos_is_gt.to(boxes.device)
            out.append(boxes[start:start + n][keep])
            start += n
        return out

    def _mask_loss(self, logits: Tensor, samples: Sequence[RoISample], gts: Sequence[Dict[str, Tensor]]) -> Tensor:
        """BCE on each positive's gt-class channel against its gt mask cropped to the RoI
        (RoIAlign to the logits' size, binarised at 0.5)."""
        if logits.shape[0] == 0:
            return logits.sum()
        size = logits.shape[-1]
        targets, labels = [], []
        for s, g in zip(samples, gts):
            if s.num_pos == 0:
                continue
            targets.append(mask_targets(g["masks"], s.pos_boxes, s.pos_gt_inds, size))
            labels.append(g["labels"][s.pos_gt_inds])
        target = torch.cat(targets).to(logits.device)
        label = torch.cat(labels).to(logits.device)
        pred = logits[torch.arange(logits.shape[0], device=logits.device), label]
        return F.binary_cross_entropy_with_logits(pred, target)


def mask_targets(masks: Tensor, boxes: Tensor, gt_inds: Tensor, size: int) -> Tensor:
    """Binary [P, size, size] targets: gt mask ``gt_inds[i]`` cropped to ``boxes[i]``."""
    uniq, inverse = gt_inds.unique(return_inverse=True)
    src = masks[uniq].to(boxes.device, torch.float32)[:, None]
    rois = torch.cat([inverse[:, None].to(boxes.dtype), boxes], dim=1)
    return (roi_align(src, rois, (size, size), 1.0, 0, True)[:, 0] >= 0.5).to(torch.float32)
