"""The HTC detector: training losses (``loss``) and the mmdetection 2.x simple test (``predict``).

Test time is split into the three pieces the exporter turns into ONNX graphs:
``feature_net()`` (backbone, FPN, RPN head, semantic head), ``box_cascade()``
and ``mask_cascade()``. ``predict`` runs exactly those modules and adds the
data-dependent steps (proposal decoding, stage ensembling, NMS, mask paste)
that the Go runtime reimplements, so exported graphs and ``predict`` agree by
construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ..config import Config, ModelConfig
from .backbone import FPN, ResNet
from .box_ops import boxes_to_rois
from .heads import FusedSemanticHead
from .postprocess import ensemble_scores, multiclass_nms, paste_masks
from .roi_head import BoxCascade, HTCRoIHead, MaskCascade
from .rpn import RPNHead

FPN_LEVELS = ("p2", "p3", "p4", "p5", "p6")

# resized / original size: (x, y) per axis, or one number for both
ScaleFactor = Union[float, Sequence[float]]


@dataclass
class Features:
    """Everything the image-level network computes for a batch."""

    fpn: List[Tensor]                  # P2..P6, [B, C, H/s, W/s]
    semantic_feat: Optional[Tensor]    # [B, C, H/8, W/8] (None without the semantic branch)
    semantic_logits: Optional[Tensor]  # [B, S, H/8, W/8]
    rpn_cls: List[Tensor]              # per level [B, A, h, w]
    rpn_reg: List[Tensor]              # per level [B, 4A, h, w]


class FeatureNet(nn.Module):
    """Export graph 1: images [B, 3, H, W] -> a flat tuple named by ``output_names``:
    P2..P6, (semantic feature, semantic logits), RPN objectness per level, RPN deltas per level."""

    def __init__(self, *, backbone: nn.Module, neck: nn.Module, rpn_head: RPNHead,
                 semantic_head: Optional[FusedSemanticHead]) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.rpn_head = rpn_head
        self.semantic_head = semantic_head

    @property
    def output_names(self) -> List[str]:
        names = list(FPN_LEVELS)
        if self.semantic_head is not None:
            names += ["semantic_feat", "semantic_logits"]
        names += [f"rpn_cls_{n}" for n in FPN_LEVELS] + [f"rpn_reg_{n}" for n in FPN_LEVELS]
        return names

    def forward(self, images: Tensor) -> Tuple[Tensor, ...]:
        fpn = self.neck(self.backbone(images))
        outs: List[Tensor] = list(fpn)
        if self.semantic_head is not None:
            logits, feat = self.semantic_head(fpn)
            outs += [feat, logits]
        cls, reg = self.rpn_head(fpn)
        return tuple(outs + cls + reg)

    def unflatten(self, outputs: Sequence[Tensor]) -> Features:
        n = len(FPN_LEVELS)
        fpn = list(outputs[:n])
        rest = list(outputs[n:])
        semantic_feat = semantic_logits = None
        if self.semantic_head is not None:
            semantic_feat, semantic_logits = rest[0], rest[1]
            rest = rest[2:]
        return Features(fpn=fpn, semantic_feat=semantic_feat, semantic_logits=semantic_logits,
                        rpn_cls=rest[:n], rpn_reg=rest[n:])

    def features(self, images: Tensor) -> Features:
        return self.unflatten(self(images))


class HTC(nn.Module):
    """Hybrid Task Cascade (Chen et al., CVPR 2019) with mmdetection's module names."""

    def __init__(self, cfg: ModelConfig, *, size_divisor: int = 32) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = ResNet(depth=cfg.backbone.depth, width=cfg.backbone.width,
                               frozen_stages=cfg.backbone.frozen_stages, norm=cfg.backbone.norm,
                               groups=cfg.backbone.groups, width_per_group=cfg.backbone.width_per_group,
                               dcn_stages=cfg.backbone.dcn.stages, deform_groups=cfg.backbone.dcn.deform_groups)
        self.neck = FPN(in_channels=self.backbone.out_channels, out_channels=cfg.neck.out_channels)
        self.rpn_head = RPNHead(in_channels=cfg.neck.out_channels, cfg=cfg.rpn, size_divisor=size_divisor)
        self.roi_head = HTCRoIHead(cfg, in_channels=cfg.neck.out_channels)

    # ------------------------------------------------------------------ export pieces

    def feature_net(self) -> FeatureNet:
        return FeatureNet(backbone=self.backbone, neck=self.neck, rpn_head=self.rpn_head,
                          semantic_head=self.roi_head.semantic_head)

    def box_cascade(self) -> BoxCascade:
        return self.roi_head.box_cascade()

    def mask_cascade(self) -> MaskCascade:
        return self.roi_head.mask_cascade()

    # ------------------------------------------------------------------ training

    def loss(self, images: Tensor, targets: Sequence[Dict[str, Any]]) -> Dict[str, Tensor]:
        """Paper Eq. 7: RPN + semantic + per-stage (weighted) box and mask losses.

        ``targets`` follow the dataset contract (boxes, labels, masks, semantic,
        iscrowd, img_size); crowd instances are not used.
        """
        if len(targets) != images.shape[0]:
            raise ValueError(f"loss: {images.shape[0]} images but {len(targets)} targets")
        device = images.device
        img_sizes = [self._img_size(t, images) for t in targets]
        gts = [self._training_gt(t, i, device) for i, t in enumerate(targets)]
        feats = self.feature_net().features(images)

        losses: Dict[str, Tensor] = {}
        losses.update(self.rpn_head.loss(feats.rpn_cls, feats.rpn_reg, [g["boxes"] for g in gts], img_sizes))
        if self.roi_head.with_semantic:
            maps = []
            for i, t in enumerate(targets):
                if t.get("semantic") is None:
                    raise ValueError(f"loss: target {i} has no 'semantic' label map but the model has a "
                                     "semantic branch (set model.semantic: false to train without one)")
                m = torch.as_tensor(t["semantic"])
                num = self.cfg.num_semantic_classes
                bad = (m != 255) & ((m < 0) | (m >= num))
                if bool(bad.any()):
                    raise ValueError(f"loss: target {i} semantic map has values outside 0..{num - 1} and 255 "
                                     f"(ignore): {sorted(set(m[bad].tolist()))[:10]}")
                maps.append(m)
            losses["loss_semantic_seg"] = self.roi_head.semantic_loss(feats.semantic_logits, maps)
        proposals = self.rpn_head.proposals(feats.rpn_cls, feats.rpn_reg, img_sizes, training=True)
        sizes_t = torch.tensor(img_sizes, dtype=torch.float32, device=device)
        losses.update(self.roi_head.loss(feats.fpn, feats.semantic_feat, proposals, gts, sizes_t))
        return losses

    def _img_size(self, target: Dict[str, Any], images: Tensor) -> Tuple[int, int]:
        size = target.get("img_size")
        if size is None:
            return int(images.shape[-2]), int(images.shape[-1])
        return int(size[0]), int(size[1])

    def _training_gt(self, target: Dict[str, Any], index: int, device) -> Dict[str, Tensor]:
        boxes = torch.as_tensor(target["boxes"], dtype=torch.float32, device=device).reshape(-1, 4)
        labels = torch.as_tensor(target["labels"], dtype=torch.long, device=device).reshape(-1)
        masks = torch.as_tensor(target["masks"], device=device)
        n = boxes.shape[0]
        if labels.shape[0] != n or masks.shape[0] != n:
            raise ValueError(f"loss: target {index} has {n} boxes, {labels.shape[0]} labels and "
                             f"{masks.shape[0]} masks; they must match")
        if n and (labels.min() < 0 or labels.max() >= self.cfg.num_classes):
            raise ValueError(f"loss: target {index} has labels outside 0..{self.cfg.num_classes - 1}: "
                             f"{labels.tolist()}")
        # A zero-size box has no regression target (log 0), so it cannot be trained on.
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        crowd = target.get("iscrowd")
        if crowd is not None:
            keep &= torch.as_tensor(crowd, device=device).reshape(-1) == 0
        return {"boxes": boxes[keep], "labels": labels[keep], "masks": masks[keep]}

    # ------------------------------------------------------------------ test

    @torch.no_grad()
    def predict(self, images: Tensor, img_sizes: Sequence[Tuple[int, int]], scale_factors: Sequence[ScaleFactor],
                orig_sizes: Sequence[Tuple[int, int]]) -> List[Dict[str, Tensor]]:
        """mmdetection 2.x simple test. Per image: boxes [K, 4] xyxy in original-image
        pixels, scores [K], labels [K] (0..C-1), masks uint8 [K, H0, W0]. Call ``eval()`` first.

        ``scale_factors``: per image, resized / original size as (x, y), i.e.
        (new_w / w, new_h / h) as the data transforms record it; boxes are
        divided by it per axis, like mmdetection's [w, h, w, h] scale_factor,
        the TTA path and Go. A single number scales both axes."""
        return self.predict_raw(images, img_sizes, scale_factors, orig_sizes)["results"]

    @torch.no_grad()
    def predict_raw(self, images: Tensor, img_sizes: Sequence[Tuple[int, int]], scale_factors: Sequence[ScaleFactor],
                    orig_sizes: Sequence[Tuple[int, int]]) -> Dict[str, Any]:
        """``predict`` plus its intermediates, as the export graphs produce them:

        - ``features``: the FeatureNet outputs (Features)
        - ``rois`` [R, 5]: RPN proposals (batch index, box) fed to the box cascade
        - ``stage_logits`` [R, T, C+1], ``stage_boxes`` [R, T, 4]: box cascade outputs
        - ``scores`` [R, C+1]: softmax of the mean stage logits
        - ``mask_rois`` [M, 5], ``mask_labels`` [M]: final detections in network-input pixels
        - ``stage_mask_probs`` [M, T, 28, 28]: mask cascade outputs
        - ``results``: what ``predict`` returns
        """
        n = images.shape[0]
        if not (len(img_sizes) == len(scale_factors) == len(orig_sizes) == n):
            raise ValueError(f"predict: {n} images but {len(img_sizes)} img_sizes, {len(scale_factors)} "
                             f"scale_factors, {len(orig_sizes)} orig_sizes")
        test = self.cfg.test
        img_sizes = [(int(h), int(w)) for h, w in img_sizes]
        feats = self.feature_net().features(images)
        p2, p3, p4, p5 = feats.fpn[:4]
        proposals = self.rpn_head.proposals(feats.rpn_cls, feats.rpn_reg, img_sizes, training=False)
        rois = boxes_to_rois([p[:, :4] for p in proposals]).to(images.device)
        sizes_t = torch.tensor(img_sizes, dtype=torch.float32, device=images.device)
        stage_logits, stage_boxes = self.box_cascade()(p2, p3, p4, p5, feats.semantic_feat, rois, sizes_t)
        scores = ensemble_scores(stage_logits)
        final_boxes = stage_boxes[:, -1]

        dets = []
        for i in range(n):
            sel = rois[:, 0] == i
            boxes_i, scores_i = final_boxes[sel], scores[sel]
            scale = axis_scales(scale_factors[i], final_boxes)
            rows, labels, det_scores = multiclass_nms(boxes_i / scale, scores_i, score_thr=test.score_thr,
                                                      iou=test.nms_iou, max_num=test.max_per_img)
            dets.append((boxes_i[rows], labels, det_scores, scale))

        mask_rois = boxes_to_rois([d[0] for d in dets]).to(images.device)
        mask_labels = torch.cat([d[1] for d in dets]) if dets else torch.zeros(0, dtype=torch.long)
        stage_mask_probs = self.mask_cascade()(p2, p3, p4, p5, feats.semantic_feat, mask_rois, mask_labels)
        mask_probs = stage_mask_probs.mean(dim=1)

        results = []
        for i, (net_boxes, labels, det_scores, scale) in enumerate(dets):
            sel = mask_rois[:, 0] == i
            boxes = net_boxes / scale
            h0, w0 = int(orig_sizes[i][0]), int(orig_sizes[i][1])
            results.append({
                "boxes": boxes.cpu(),
                "scores": det_scores.cpu(),
                "labels": labels.cpu(),
                "masks": paste_masks(mask_probs[sel].cpu(), boxes.cpu(), h0, w0, test.mask_thr),
            })
        return {
            "features": feats,
            "rois": rois,
            "stage_logits": stage_logits,
            "stage_boxes": stage_boxes,
            "scores": scores,
            "mask_rois": mask_rois,
            "mask_labels": mask_labels,
            "stage_mask_probs": stage_mask_probs,
            "results": results,
        }


def axis_scales(factor: ScaleFactor, like: Tensor) -> Tensor:
    """[sx, sy, sx, sy] from a per-axis (sx, sy) pair or one number for both axes."""
    if isinstance(factor, Tensor):
        factor = factor.tolist()
    if isinstance(factor, (int, float)):
        sx = sy = float(factor)
    else:
        values = [float(v) for v in factor]
        if len(values) == 4:  # mmdetection's [w, h, w, h]
            values = values[:2]
        if len(values) != 2:
            raise ValueError(f"predict: a scale factor is a number or an (x, y) pair, got {factor!r}")
        sx, sy = values
    if not (sx > 0 and sy > 0):
        raise ValueError(f"predict: scale factors must be positive, got {factor!r}")
    return like.new_tensor([sx, sy, sx, sy])


def build_model(cfg: Union[Config, ModelConfig]) -> HTC:
    """HTC from a full Config (uses data.size_divisor) or a ModelConfig."""
    if isinstance(cfg, Config):
        return HTC(cfg.model, size_divisor=cfg.data.size_divisor)
    return HTC(cfg)
