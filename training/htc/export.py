"""Export a trained HTC checkpoint as a model bundle (docs/model-bundle.md, ``htcstream-bundle/2``).

    cd training && python3 -m htc.export --checkpoint ../work_dirs/htc_tiny/latest.pth \\
        --out ../work_dirs/bundle [--config CFG] [--name NAME] [--fixture-image IMG] \\
        [--tta-scales 320x320,416x416] [--no-fixture] [--graph-layout stages|sorted|legacy]
    cd training && python3 -m htc.export --from-bundle OLD_BUNDLE --config CFG --out NEW_BUNDLE

The head graphs come in three layouts (``GRAPH_LAYOUTS``): ``stages`` (default, contract 2)
leaves RoIAlign to the runtime and has one graph per box stage; ``sorted`` and ``legacy``
(contract 1) pool inside one box-heads graph. ``--from-bundle`` re-exports an existing
bundle's heads from the weights stored in its own graphs (no checkpoint needed).

Writes ``manifest.yaml``, ``backbone.onnx``, ``bbox_heads.onnx`` and
``mask_heads.onnx`` (opset 16, the contract's input/output names, order and
ranks, dynamic batch, size and RoI axes), each checked with onnx.checker and
against the contract's signatures; then the reference fixture in
``fixture/``: the input image, and per TTA plan (``single``: the test scale;
``tta``: 2 scales x flip; ``tta_probs``: the same views with Go's other stage ensemble, the
mean of probabilities with unequal stage weights) the shared proposals and the detections PyTorch
produced (:mod:`htc.model.tta`, whose single view is ``HTC.predict``).

Without ``--config`` the config saved in the checkpoint is used. Class names
come from the checkpoint's ``meta`` (or the config's annotation files).

A released mmdetection HTC checkpoint is read directly (its architecture from
its weights' shapes, ``--config``/``--set`` on top; :mod:`htc.mmdet_checkpoint`);
it comes without data, so its bundle has a fixture only with ``--fixture-image``.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from torch import Tensor, nn
from torchvision.ops import roi_align

from .builders import data_root
from .checkpoint_file import epoch_label
from .config import Config
from .evaluate_model import load_checkpoint_config, load_model_from_checkpoint
from .evaluation import rle as rle_mod
from .mmdet_checkpoint import compare_state
from .model.box_ops import MAX_LOG_RATIO
from .model.box_ops import decode_deltas
from .model.detector import HTC
from .model.roi_head import ROI_STRIDES, SEMANTIC_STRIDE, BoxCascade, MaskCascade, RoIExtractor, semantic_roi_features
from .model.tta import View, predict_aug

# ``stages`` bundles (the default layout) are contract 2: their box graphs take pooled RoI
# features; ``sorted`` and ``legacy`` bundles are contract 1 (docs/model-bundle.md).
CONTRACT = "htcstream-bundle/2"
CONTRACT_V1 = "htcstream-bundle/1"
OPSET = 16
GRAPH_FILES = {"backbone": "backbone.onnx", "bbox_heads": "bbox_heads.onnx", "mask_heads": "mask_heads.onnx"}


def stage_file(t: int) -> str:
    """Contract 2's box graph of stage t (0-based)."""
    return f"bbox_stage{t + 1}.onnx"
LEVEL_STRIDES = (4, 8, 16, 32, 64)

FLOAT = onnx.TensorProto.FLOAT
INT64 = onnx.TensorProto.INT64
_FEATS = [(n, 4, FLOAT) for n in ("p2", "p3", "p4", "p5", "semantic_feat")]
# (name, rank, element type) of every input and output, in order: docs/model-bundle.md.
SIGNATURES: Dict[str, Tuple[List[tuple], List[tuple]]] = {
    "backbone": (
        [("image", 4, FLOAT)],
        [(f"p{i}", 4, FLOAT) for i in range(2, 7)]
        + [("semantic_feat", 4, FLOAT), ("semantic_logits", 4, FLOAT)]
        + [(f"rpn_cls_{i}", 4, FLOAT) for i in range(2, 7)]
        + [(f"rpn_reg_{i}", 4, FLOAT) for i in range(2, 7)],
    ),
    "bbox_heads": (
        _FEATS + [("rois", 2, FLOAT), ("image_sizes", 2, FLOAT)],
        [("stage_logits", 3, FLOAT), ("stage_boxes", 3, FLOAT)],
    ),
    "mask_heads": (
        _FEATS + [("rois", 2, FLOAT), ("labels", 1, INT64)],
        [("stage_masks", 4, FLOAT)],
    ),
    # contract 2: one graph per box stage, on features the caller pooled
    "bbox_stage": (
        [("roi_feats", 2, FLOAT), ("rois", 2, FLOAT), ("image_sizes", 2, FLOAT)],
        [("logits", 2, FLOAT), ("boxes", 2, FLOAT)],
    ),
}


# --------------------------------------------------------------------------- graphs


class BackboneGraph(nn.Module):
    """FeatureNet with the contract's outputs. A model without the semantic branch
    emits zeros for ``semantic_feat`` / ``semantic_logits`` (its heads never read them)."""

    def __init__(self, model: HTC) -> None:
        super().__init__()
        self.net = model.feature_net()
        self.num_semantic = model.cfg.num_semantic_classes

    def forward(self, image: Tensor) -> Tuple[Tensor, ...]:
        f = self.net.features(image)
        if f.semantic_feat is None:
            p3 = f.fpn[1]
            sem_feat = p3 * 0.0
            sem_logits = (p3[:, :1] * 0.0).repeat(1, self.num_semantic, 1, 1)
        else:
            sem_feat, sem_logits = f.semantic_feat, f.semantic_logits
        return tuple(f.fpn) + (sem_feat, sem_logits) + tuple(f.rpn_cls) + tuple(f.rpn_reg)


class _KeepInput(nn.Module):
    """A cascade whose heads may not read ``semantic_feat`` (fusion off): the input is
    still part of the graph's signature, touched by a zero-weight term."""

    def __init__(self, inner: nn.Module, uses_semantic: bool) -> None:
        super().__init__()
        self.inner = inner
        self.uses_semantic = uses_semantic

    def forward(self, p2, p3, p4, p5, semantic_feat, rois, extra):
        out = self.inner(p2, p3, p4, p5, semantic_feat, rois, extra)
        if self.uses_semantic:
            return out
        touch = semantic_feat.flatten()[:1].sum() * 0.0
        if isinstance(out, tuple):
            return (out[0] + touch,) + tuple(out[1:])
        return out + touch


# Graph layouts of the head graphs. All compute the same function; ``legacy`` and ``sorted``
# (contract 1) have the same inputs and outputs, ``stages`` (contract 2) moves RoIAlign out:
#
# - ``legacy``: every RoI is pooled on every FPN level (an empty box on the levels that
#   are not its own) and the level's result picked with Where; the box branch's semantic
#   feature is pooled 14x14 and averaged 2x2 (AveragePool, which ONNX Runtime runs in its
#   blocked layout with a reorder in and out of it).
# - ``sorted``: RoIs are split by level inside the graph (NonZero + Gather), each pooled
#   once on its own level, and a stage runs in that level order; its outputs are put back
#   in the input order at the end (a Gather by the inverse permutation). The box branch's
#   semantic pooling is one 7x7 RoIAlign with 2g samples per bin for RoIs whose adaptive
#   14x14 grid is g x g (g = 1, 2: 90 % of real proposals), the same sample points as
#   14x14 + 2x2 average; other RoIs take the 14x14 + average path. The mask heads' 2x2
#   stride-2 transposed convolution, ReLU and 1x1 logits run at 14x14 (SortedMaskCascade),
#   one DepthToSpace placing the label's sub-pixels at the end: the same sums.
# - ``stages`` (contract 2): RoIAlign leaves the graphs. The runtime pools each RoI on its
#   own level (and the semantic feature, 14x14 averaged to 7x7) itself, channels last, and
#   feeds stage t's graph ``roi_feats`` [R, S*S*C] (bin-major, channels last: the first FC's
#   columns are permuted to match, so no transpose runs); the graph is the stage's FCs and
#   the box decoding. ONNX Runtime's CPU RoiAlign (scalar, one channel plane at a time) was
#   three quarters of the ``sorted`` box heads' time; the runtime's own pooling reads each
#   sample's neighbours as contiguous channel vectors. The mask heads graph is ``sorted``'s.
GRAPH_LAYOUTS = ("stages", "sorted", "legacy")


def _split_levels(extractor: RoIExtractor, rois: Tensor) -> List[Tensor]:
    """Indices of the RoIs of each level (ascending within a level)."""
    lvl = extractor.levels(rois)
    return [torch.nonzero(lvl == i, as_tuple=False).squeeze(1) for i in range(len(extractor.strides))]


def _inverse(order: Tensor) -> Tensor:
    """inv with inv[order[j]] = j for a permutation ``order``."""
    ar = torch.arange(order.shape[0], device=order.device, dtype=order.dtype)
    return torch.zeros_like(order).scatter(0, order, ar)


def pool_by_level(extractor: RoIExtractor, feats: Sequence[Tensor], rois: Tensor) -> Tuple[Tensor, Tensor]:
    """Each RoI pooled once, on its own level: (features [R, C, S, S] in level order, order [R]),
    row j of the features being RoI ``order[j]``."""
    parts = _split_levels(extractor, rois)
    size = (extractor.out_size, extractor.out_size)
    pooled = [roi_align(feats[i], rois[idx], size, 1.0 / stride, 0, True)
              for i, (idx, stride) in enumerate(zip(parts, extractor.strides))]
    return torch.cat(pooled), torch.cat(parts)


def semantic_box_features(semantic_feat: Tensor, rois: Tensor, roi_size: int, out_size: int) -> Tensor:
    """avg_pool(RoIAlign(S(x), r, roi_size), roi_size // out_size) [R, C, out, out] in the order of ``rois``.

    Adaptive RoIAlign samples a bin with g = ceil(extent / bins) points per side; the k x k
    average of a (k*out)-bin pooling with g points is an out-bin pooling with k*g points
    per side at the same positions. So a RoI whose grid is g x g (g = 1 or 2) is pooled
    directly at out x out with sampling ratio k*g; the rest (non-square grids, empty boxes)
    take the roi_size pooling and a mean over k x k blocks."""
    k = roi_size // out_size
    scale = 1.0 / SEMANTIC_STRIDE
    if k <= 1 or k * out_size != roi_size:
        sem = roi_align(semantic_feat, rois, (roi_size, roi_size), scale, 0, True)
        return F.avg_pool2d(sem, k, k) if k > 1 else sem
    # the grid exactly as RoIAlign computes it (float32: start = x * scale - 0.5, extent = end - start)
    x1, y1 = rois[:, 1] * scale - 0.5, rois[:, 2] * scale - 0.5
    x2, y2 = rois[:, 3] * scale - 0.5, rois[:, 4] * scale - 0.5
    gw = torch.ceil((x2 - x1) / float(roi_size))
    gh = torch.ceil((y2 - y1) / float(roi_size))
    parts, pooled = [], []
    direct = torch.zeros_like(gw, dtype=torch.bool)
    for g in (1, 2):
        hit = (gw == g) & (gh == g)
        direct = direct | hit
        idx = torch.nonzero(hit, as_tuple=False).squeeze(1)
        parts.append(idx)
        pooled.append(roi_align(semantic_feat, rois[idx], (out_size, out_size), scale, k * g, True))
    idx = torch.nonzero(~direct, as_tuple=False).squeeze(1)
    parts.append(idx)
    sem = roi_align(semantic_feat, rois[idx], (roi_size, roi_size), scale, 0, True)
    n, c = sem.shape[0], sem.shape[1]
    pooled.append(sem.reshape(n, c, out_size, k, out_size, k).mean(dim=(3, 5)))
    return torch.cat(pooled)[_inverse(torch.cat(parts))]


class SortedBoxCascade(nn.Module):
    """``BoxCascade`` (same heads, same inputs and outputs) in the ``sorted`` layout."""

    def __init__(self, cascade: BoxCascade) -> None:
        super().__init__()
        self.heads = cascade.heads
        self.extractor = cascade.extractor
        self.stds = cascade.stds
        self.semantic_roi_size = cascade.semantic_roi_size
        self.fuse_semantic = cascade.fuse_semantic

    def forward(self, p2: Tensor, p3: Tensor, p4: Tensor, p5: Tensor, semantic_feat: Tensor,
                rois: Tensor, img_sizes: Tensor) -> Tuple[Tensor, Tensor]:
        feats = (p2, p3, p4, p5)
        sizes = img_sizes.to(rois.dtype)
        perm: Optional[Tensor] = None  # perm[j]: the input RoI that row j of this stage is
        logits_all, boxes_all = [], []
        for t in range(len(self.heads)):
            x, order = pool_by_level(self.extractor, feats, rois)
            rois = rois[order]
            perm = order if perm is None else perm[order]
            if self.fuse_semantic:
                x = x + semantic_box_features(semantic_feat, rois, self.semantic_roi_size, self.extractor.out_size)
            logits, deltas = self.heads[t](x)
            boxes = decode_deltas(rois[:, 1:], deltas, self.stds[t], sizes[rois[:, 0].long()])
            inv = _inverse(perm)
            logits_all.append(logits[inv])
            boxes_all.append(boxes[inv])
            rois = torch.cat([rois[:, :1], boxes], dim=1)
        return torch.stack(logits_all, dim=1), torch.stack(boxes_all, dim=1)


class SortedMaskCascade(nn.Module):
    """``MaskCascade`` (same heads, same inputs and outputs) in the ``sorted`` layout.

    The 2x2 stride-2 transposed convolution writes each input pixel's four sub-pixels (a, b)
    from four disjoint weight slices, and ReLU and the 1x1 logits conv act per pixel; so
    upsample + ReLU + logits run at 14x14 as a 1x1 conv to 4 x C channels (sub-pixel major),
    ReLU and a 4-group 1x1 conv to 4 x classes; the label's four channels are gathered and
    one DepthToSpace (CRD) puts every stage's sub-pixels in place at the end: the same sums
    on 1/16 of the data that ConvTranspose + full-size ReLU and logits moved."""

    def __init__(self, cascade: MaskCascade) -> None:
        super().__init__()
        self.heads = cascade.heads
        self.extractor = cascade.extractor
        self.fuse_semantic = cascade.fuse_semantic
        self.info_flow = cascade.info_flow
        for t, head in enumerate(self.heads):
            up, cl = head.upsample, head.conv_logits
            if up.kernel_size != (2, 2) or up.stride != (2, 2) or up.padding != (0, 0) or cl.kernel_size != (1, 1):
                raise ValueError(f"mask head {t}: not a 2x2 stride-2 transposed convolution and a 1x1 logits conv")
            w = up.weight.detach()  # [in, out, 2, 2] -> [(a, b, out), in, 1, 1]
            self.register_buffer(f"up_w{t}", w.permute(2, 3, 1, 0).reshape(4 * w.shape[1], w.shape[0], 1, 1).clone())
            self.register_buffer(f"up_b{t}", up.bias.detach().repeat(4).clone())
            self.register_buffer(f"cls_w{t}", cl.weight.detach().repeat(4, 1, 1, 1).clone())  # [(s, class), out, 1, 1]
            self.register_buffer(f"cls_b{t}", cl.bias.detach().repeat(4).clone())
        self.num_classes = self.heads[0].conv_logits.out_channels

    def forward(self, p2: Tensor, p3: Tensor, p4: Tensor, p5: Tensor, semantic_feat: Tensor,
                rois: Tensor, labels: Tensor) -> Tensor:
        x, order = pool_by_level(self.extractor, (p2, p3, p4, p5), rois)
        rois = rois[order]
        labels = labels[order]
        if self.fuse_semantic:
            x = x + semantic_roi_features(semantic_feat, rois, self.extractor.out_size)
        n, size = x.shape[0], x.shape[-1]
        # channel s * classes + label of the 4-group logits, s = 2a + b
        sub = torch.arange(4, device=labels.device, dtype=torch.int64) * self.num_classes
        index = (labels.long().view(-1, 1) + sub.view(1, 4)).view(-1, 4, 1, 1).expand(n, 4, size, size)
        last = None
        subpixels = []
        for t, head in enumerate(self.heads):
            feat = head.features(x, last if self.info_flow else None)
            last = feat
            up = F.relu(F.conv2d(feat, getattr(self, f"up_w{t}"), getattr(self, f"up_b{t}")))
            logits = F.conv2d(up, getattr(self, f"cls_w{t}"), getattr(self, f"cls_b{t}"), groups=4)
            subpixels.append(logits.gather(1, index))
        masks = F.pixel_shuffle(torch.cat(subpixels, dim=1), 2).sigmoid()  # [M, T, 2S, 2S]
        return masks[_inverse(order)]


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
    """Box stage t of the ``stages`` layout: ``roi_feats`` [R, S*S*C] (the RoIs pooled
    channels last, semantic feature added) -> logits [R, C+1], boxes [R, 4] (deltas decoded
    on ``rois`` and clipped to the image). The head's first FC takes the channels-last
    order; its parameters keep the head's names under ``head.``."""

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
    """What a contract-2 runtime feeds ``roi_feats``: each RoI pooled on its own level (plus the
    semantic feature, 14x14 averaged to 7x7, when the box branch fuses it), [R, S*S*C]
    channels last."""
    with torch.no_grad():
        x = cascade.roi_features(feats, semantic_feat, rois)
    return x.permute(0, 2, 3, 1).flatten(1)


class StagesBoxCascade(nn.Module):
    """``BoxCascade`` (same inputs and outputs) computed as a contract-2 runtime does: pool
    in PyTorch, then each stage's :class:`BoxStageGraph`. Tests compare it with the others."""

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


def head_graphs(model: HTC, layout: str = "sorted") -> Tuple[nn.Module, nn.Module]:
    """The (box, mask) head modules: for ``sorted``/``legacy`` those exported as
    ``bbox_heads.onnx`` / ``mask_heads.onnx``; for ``stages`` the box cascade as a runtime
    computes it from the stage graphs (:class:`StagesBoxCascade`) and ``sorted``'s mask heads."""
    if layout not in GRAPH_LAYOUTS:
        raise ValueError(f"graph layout {layout!r}, want one of {', '.join(GRAPH_LAYOUTS)}")
    box, mask = model.box_cascade(), model.mask_cascade()
    if layout == "stages":
        return StagesBoxCascade(box), SortedMaskCascade(mask)
    if layout == "sorted":
        return SortedBoxCascade(box), SortedMaskCascade(mask)
    return box, mask


def _feat_axes() -> Dict[str, Dict[int, str]]:
    axes = {f"p{i}": {0: "batch", 2: f"h{s}", 3: f"w{s}"} for i, s in zip(range(2, 7), LEVEL_STRIDES)}
    axes["semantic_feat"] = {0: "batch", 2: "h8", 3: "w8"}
    axes["semantic_logits"] = {0: "batch", 2: "h8", 3: "w8"}
    return axes


def _export(module: nn.Module, args: tuple, path: Path, inputs: Sequence[str], outputs: Sequence[str],
            axes: Dict[str, Dict[int, str]]) -> None:
    with warnings.catch_warnings():
        # torchvision's tracing notes, aligned RoIAlign's opset-16 remark, shape-inference notices
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), opset_version=OPSET, input_names=list(inputs),
                          output_names=list(outputs), dynamic_axes={k: v for k, v in axes.items()
                                                                    if k in set(inputs) | set(outputs)},
                          do_constant_folding=True)


def check_graph(path: Path, kind: str) -> None:
    """onnx.checker plus the contract's names, order, ranks and element types."""
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    if not any(o.domain in ("", "ai.onnx") and o.version == OPSET for o in model.opset_import):
        raise ValueError(f"{path}: opset {[(o.domain, o.version) for o in model.opset_import]}, want {OPSET}")
    want_in, want_out = SIGNATURES[kind]
    init = {i.name for i in model.graph.initializer}
    got_in = [i for i in model.graph.input if i.name not in init]
    for side, got, want in (("inputs", got_in, want_in), ("outputs", list(model.graph.output), want_out)):
        names = [g.name for g in got]
        if names != [w[0] for w in want]:
            raise ValueError(f"{path}: {side} {names}, the contract has {[w[0] for w in want]}")
        for g, (name, rank, dtype) in zip(got, want):
            t = g.type.tensor_type
            if t.elem_type != dtype or len(t.shape.dim) != rank:
                raise ValueError(f"{path}: {name} has element type {t.elem_type} and rank {len(t.shape.dim)}, "
                                 f"want {dtype} and {rank}")


@torch.no_grad()
def export_graphs(model: HTC, out: Path, sample_hw: Tuple[int, int] = (320, 320), *, layout: str = "stages",
                  kinds: Sequence[str] = tuple(GRAPH_FILES)) -> Dict[str, Path]:
    """Write the graphs ``kinds`` (backbone, bbox_heads, mask_heads; default all) into ``out``
    and return them by file name; ``sample_hw`` is the (padded) trace size, ``layout`` the head
    graphs' layout (``GRAPH_LAYOUTS``: with ``stages``, bbox_heads means the stage graphs)."""
    model = model.eval()
    cfg = model.cfg
    h, w = sample_hw
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, h, w, generator=gen)
    backbone = BackboneGraph(model)
    outs = backbone(image)
    p2, p3, p4, p5, _p6, sem_feat = outs[:6]
    rois = torch.tensor([[0.0, 4.0, 6.0, 60.0, 50.0], [0.0, 10.0, 20.0, min(w, 300.0), min(h, 250.0)],
                         [0.0, 1.0, 1.0, 9.0, 7.0]])
    sizes = torch.tensor([[float(h), float(w)]])
    labels = torch.tensor([0, cfg.num_classes - 1, 0], dtype=torch.int64)
    fusion = set(model.roi_head.semantic_fusion)
    feats_in = ["p2", "p3", "p4", "p5", "semantic_feat"]
    axes = _feat_axes()
    axes.update({"image": {0: "batch", 2: "height", 3: "width"}})
    for i, s in zip(range(2, 7), LEVEL_STRIDES):
        axes[f"rpn_cls_{i}"] = {0: "batch", 2: f"h{s}", 3: f"w{s}"}
        axes[f"rpn_reg_{i}"] = {0: "batch", 2: f"h{s}", 3: f"w{s}"}
    axes.update({"rois": {0: "rois"}, "image_sizes": {0: "batch"}, "labels": {0: "rois"},
                 "stage_logits": {0: "rois"}, "stage_boxes": {0: "rois"}, "stage_masks": {0: "rois"},
                 "roi_feats": {0: "rois"}, "logits": {0: "rois"}, "boxes": {0: "rois"}})
    box, mask = head_graphs(model, layout)
    specs: List[Tuple[str, str, nn.Module, tuple]] = [("backbone", GRAPH_FILES["backbone"], backbone, (image,))]
    if layout == "stages":
        feats = pooled_channels_last(box.cascade, (p2, p3, p4, p5), sem_feat, rois)
        specs += [("bbox_stage", stage_file(t), stage, (feats, rois, sizes)) for t, stage in enumerate(box.stages)]
    else:
        specs.append(("bbox_heads", GRAPH_FILES["bbox_heads"], _KeepInput(box, "bbox" in fusion),
                      (p2, p3, p4, p5, sem_feat, rois, sizes)))
    specs.append(("mask_heads", GRAPH_FILES["mask_heads"], _KeepInput(mask, "mask" in fusion),
                  (p2, p3, p4, p5, sem_feat, rois, labels)))
    paths: Dict[str, Path] = {}
    for kind, file, module, args in specs:
        if (kind if kind != "bbox_stage" else "bbox_heads") not in kinds:
            continue
        path = paths[file] = out / file
        ins, outs_ = SIGNATURES[kind]
        # torch.onnx.export restores the wrapper's own training flag on the whole tree afterwards;
        # a fresh wrapper is in training mode and would leave the model's BatchNorm training.
        module.eval()
        _export(module, args, path, [n for n, _, _ in ins], [n for n, _, _ in outs_], axes)
        if kind == "mask_heads":
            # the exporter loses the static T x S x S of the gathered masks; state them
            size = 2 * cfg.roi.mask_roi_size
            _set_static_dims(path, "stage_masks", {1: cfg.roi.num_stages, 2: size, 3: size})
        check_graph(path, kind)
    return paths


def _set_static_dims(path: Path, output: str, dims: Dict[int, int]) -> None:
    model = onnx.load(str(path))
    for o in model.graph.output:
        if o.name == output:
            for i, v in dims.items():
                d = o.type.tensor_type.shape.dim[i]
                d.Clear()
                d.dim_value = v
    onnx.save(model, str(path))


# --------------------------------------------------------------------------- manifest


class _Dumper(yaml.SafeDumper):
    pass


def _represent_list(dumper: yaml.SafeDumper, data: list):
    # lists of numbers/strings (and lists of those) on one line, as the contract writes them
    flat = all(not isinstance(x, (dict, list)) or (isinstance(x, list) and all(not isinstance(y, (dict, list))
                                                                                 for y in x)) for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


_Dumper.add_representer(list, _represent_list)


def dump_yaml(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)


def long_short(scale: Sequence[int]) -> List[int]:
    return [int(max(scale)), int(min(scale))]


def _semantic_section(stuff: Sequence[str]) -> Dict[str, Any]:
    """The manifest's ``semantic`` section of a COCO-stuff head: every channel's name
    and the stuff channels. ``stuff`` may be empty or the stuff channels' names."""
    from .data.cocostuff import COCOSTUFF_NAMES, cocostuff_stuff_mask

    mask = cocostuff_stuff_mask()
    stuff_channels = [c for c, is_stuff in enumerate(mask) if is_stuff]
    want = [COCOSTUFF_NAMES[c] for c in stuff_channels]
    if stuff and [str(s) for s in stuff] != want:
        raise ValueError(f"model.semantic_classes is cocostuff, whose {len(want)} stuff channels are "
                         f"{want[0]} ... {want[-1]}; got {len(stuff)} other stuff names")
    return {"layout": "cocostuff", "classes": list(COCOSTUFF_NAMES), "stuff": stuff_channels}


def graphs_section(cfg: Config, layout: str) -> Dict[str, Any]:
    """The manifest's ``contract``, ``graphs`` and (contract 2) ``roi`` keys for ``layout``."""
    if layout != "stages":
        return {"contract": CONTRACT_V1, "graphs": dict(GRAPH_FILES)}
    m = cfg.model
    fuse = m.semantic and "bbox" in m.semantic_fusion
    return {
        "contract": CONTRACT,
        "graphs": {"backbone": GRAPH_FILES["backbone"],
                   "bbox_stages": [stage_file(t) for t in range(m.roi.num_stages)],
                   "mask_heads": GRAPH_FILES["mask_heads"]},
        # how the runtime pools roi_feats: torchvision's RoIAlign, aligned, avg, on a RoI's
        # own level floor(log2(sqrt(w h) / finest_scale + 1e-6)) clamped to the strides
        "roi": {
            "size": m.roi.box_roi_size,
            "sampling_ratio": 0,
            "finest_scale": float(m.roi.finest_scale),
            "strides": [int(s) for s in ROI_STRIDES],
            "channels": m.neck.out_channels,
            "semantic_size": m.roi.mask_roi_size if fuse else 0,
            "semantic_stride": SEMANTIC_STRIDE,
        },
    }


def build_manifest(cfg: Config, *, name: str, things: Sequence[str], stuff: Sequence[str],
                   layout: str = "stages") -> Dict[str, Any]:
    """manifest.yaml of docs/model-bundle.md from the model/data config actually exported.

    A ``things_stuff`` model writes ``stuff`` (semantic channels: things, then stuff);
    a ``cocostuff`` model writes the ``semantic`` section instead (183 channels by
    COCO-stuff id, their names and which are stuff); ``stuff`` may then be empty."""
    m, d = cfg.model, cfg.data
    if len(things) != m.num_classes:
        raise ValueError(f"{len(things)} thing class names for model.num_classes {m.num_classes}")
    if m.semantic_classes == "cocostuff":
        classes: Dict[str, Any] = {"semantic": _semantic_section(stuff)}
    else:
        if len(stuff) != m.num_stuff_classes:
            raise ValueError(f"{len(stuff)} stuff class names for model.num_stuff_classes {m.num_stuff_classes}")
        classes = {"stuff": [str(s) for s in stuff]}
    graphs = graphs_section(cfg, layout)
    return {
        "contract": graphs.pop("contract"),
        "name": name,
        "things": [str(t) for t in things],
        **classes,
        "num_stages": m.roi.num_stages,
        "input": {
            "color": "RGB",
            "mean": [float(v) for v in d.mean],
            "std": [float(v) for v in d.std],
            "size_divisor": d.size_divisor,
            "test_scales": [long_short(d.test_scale)],
        },
        "anchors": {
            "strides": [int(s) for s in m.rpn.anchor_strides],
            "scales": [float(s) for s in m.rpn.anchor_scales],
            "ratios": [float(r) for r in m.rpn.anchor_ratios],
        },
        "rpn": {
            "nms_pre": m.rpn.test_pre_nms,
            "nms_iou": float(m.rpn.nms_iou),
            "max_proposals": m.rpn.test_max_proposals,
            "min_box_size": 0,
            "delta_clip": float(MAX_LOG_RATIO),
        },
        "rcnn": {
            "box_stds": [[float(v) for v in s] for s in m.roi.box_stds],
            "score_threshold": float(m.test.score_thr),
            "nms_iou": float(m.test.nms_iou),
            "max_per_image": m.test.max_per_img,
            "mask_size": 2 * m.roi.mask_roi_size,
            "mask_threshold": float(m.test.mask_thr),
        },
        **graphs,
    }


# --------------------------------------------------------------------------- fixture


def parse_scales(text: str) -> List[List[int]]:
    """'320x320,416x416' -> [[320, 320], [416, 416]] as [long, short]."""
    out = []
    for part in text.split(","):
        a, sep, b = part.strip().lower().partition("x")
        if not sep or not a.isdigit() or not b.isdigit() or int(a) <= 0 or int(b) <= 0:
            raise ValueError(f"--tta-scales: {part!r} is not LONGxSHORT (e.g. 1333x800)")
        out.append(long_short((int(a), int(b))))
    if len(out) != 2:
        raise ValueError(f"--tta-scales: need two scales (the plan is 2 scales x flip), got {len(out)}")
    return out


def default_tta_scales(test_scale: Sequence[int]) -> List[List[int]]:
    """The test scale and 1.3x it, rounded to multiples of 32 (320x320 -> 416x416)."""
    big = [int(round(v * 1.3 / 32.0)) * 32 for v in long_short(test_scale)]
    return [long_short(test_scale), big]


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im.convert("RGB"), dtype=np.uint8)


def first_val_image(cfg: Config, work_dir: Path) -> Path:
    """The first image (lowest id) of the config's val split."""
    root = data_root(cfg, work_dir)
    ann = root / cfg.data.val_ann
    if not ann.is_file():
        raise FileNotFoundError(f"no fixture image: {ann} (data.val_ann) not found; pass --fixture-image")
    with open(ann, "r", encoding="utf-8") as f:
        images = json.load(f).get("images", [])
    if not images:
        raise ValueError(f"no fixture image: {ann} lists no images; pass --fixture-image")
    first = min(images, key=lambda im: int(im["id"]))
    return root / cfg.data.val_images / first["file_name"]


def _detections_json(res: Dict[str, Any]) -> Dict[str, Any]:
    dets = []
    for k in range(res["boxes"].shape[0]):
        dets.append({
            "box": [float(v) for v in res["boxes"][k]],
            "score": float(res["scores"][k]),
            "label": int(res["labels"][k]),
            "stage_scores": [float(v) for v in res["stage_scores"][k]],
            "mask": rle_mod.encode(res["masks"][k].numpy()),
        })
    return {"proposals": [[float(v) for v in p] for p in res["proposals"]], "detections": dets}


@torch.no_grad()
def write_fixture(model: HTC, cfg: Config, out: Path, image_path: Path,
                  tta_scales: Sequence[Sequence[int]]) -> Dict[str, Any]:
    """fixture/fixture.yaml, image.png, single.json and tta.json; returns the fixture.yaml dict."""
    fx = out / "fixture"
    fx.mkdir(parents=True, exist_ok=True)
    rgb = load_rgb(image_path)
    Image.fromarray(rgb, mode="RGB").save(fx / "image.png")
    rgb = load_rgb(fx / "image.png")  # what Go will read
    test_scale = long_short(cfg.data.test_scale)
    tta = [View(tuple(long_short(s)), f) for s in tta_scales for f in (False, True)]
    # (name, views, ensemble): the default ensemble (softmax of the mean logits, None), and
    # Go's other option: detectron2's mean of probabilities with unequal stage weights
    plans = [
        ("single", [View(tuple(test_scale), False)], None),
        ("tta", tta, None),
        ("tta_probs", tta, {"mode": "probs", "weights": fixture_stage_weights(cfg.model.roi.num_stages)}),
    ]
    doc: Dict[str, Any] = {"image": "image.png", "plans": []}
    tensors: Dict[str, Any] = {}
    d = cfg.data
    for name, views, ens in plans:
        kw = {"ensemble": ens["mode"], "stage_weights": ens["weights"]} if ens else {}
        res = predict_aug(model, torch.from_numpy(rgb), views, mean=d.mean, std=d.std, size_divisor=d.size_divisor,
                          **kw)
        with open(fx / f"{name}.json", "w", encoding="utf-8") as f:
            json.dump(_detections_json(res), f)
        tensors[name] = _write_intermediates(fx, name, res)
        entry: Dict[str, Any] = {
            "name": name,
            "views": [{"scale": list(v.scale), "flip": v.flip} for v in views],
        }
        if ens:
            entry["ensemble"] = ens
        entry["detections"] = f"{name}.json"
        doc["plans"].append(entry)
    (fx / "fixture.yaml").write_text(dump_yaml(doc), encoding="utf-8")
    (fx / "tensors.yaml").write_text(TENSORS_HEADER + dump_yaml(tensors), encoding="utf-8")
    return doc


def fixture_stage_weights(num_stages: int) -> List[float]:
    """The unequal stage weights of the fixture's ``tta_probs`` plan: 0.5, 1, 2, ... (later stages more)."""
    return [float(2.0 ** (t - 1)) for t in range(num_stages)]


TENSORS_HEADER = """\
# Intermediates behind fixture.yaml's plans, to locate a parity failure (fixture.yaml does not
# reference this file). Per plan and view: `input`, the view's 8-bit RGB picture after resize
# and flip, before normalisation and padding (PNG); the graph inputs and outputs of that view as
# raw little-endian files (.f32 float32, .i64 int64) with their shapes. `rois` are the shared
# proposals mapped into the view (bbox_heads input); `mask_rois`/`mask_labels` the final
# detections mapped into the view (mask_heads input) and `stage_masks` their mask_heads output
# (not un-flipped). Bundles exported before the tta_probs plan have stage_masks for single only.
"""


def _write_intermediates(fx: Path, plan: str, res: Dict[str, Any]) -> Dict[str, Any]:
    views = []
    for i, (prep, vo) in enumerate(zip(res["views"], res["view_outputs"])):
        stem = f"{plan}_v{i}"
        Image.fromarray(prep.pixels.permute(1, 2, 0).contiguous().numpy(), mode="RGB").save(fx / f"{stem}_input.png")
        entry: Dict[str, Any] = {"input": f"{stem}_input.png", "image_size": [prep.height, prep.width]}
        for key in ("rois", "stage_logits", "stage_boxes", "mask_rois", "mask_labels", "stage_masks"):
            t = vo[key]
            if t.dtype == torch.int64:
                arr, ext, dtype = t.numpy().astype("<i8"), "i64", "int64"
            else:
                arr, ext, dtype = t.to(torch.float32).numpy().astype("<f4"), "f32", "float32"
            name = f"{stem}_{key}.{ext}"
            arr.tofile(fx / name)
            entry[key] = {"file": name, "dtype": dtype, "shape": [int(v) for v in t.shape]}
        views.append(entry)
    return {"views": views}


# --------------------------------------------------------------------------- checkpoint and CLI


def _class_names(cfg: Config, ckpt: Dict[str, Any], work_dir: Path) -> Tuple[List[str], List[str]]:
    meta = ckpt.get("meta") or {}
    things = list(meta.get("classes") or [])
    stuff = list(meta.get("stuff_classes") or [])
    if not things:
        root = data_root(cfg, work_dir)
        for ann in (root / cfg.data.val_ann, root / cfg.data.train_ann):
            if ann.is_file():
                with open(ann, "r", encoding="utf-8") as f:
                    coco = json.load(f)
                cats = sorted(coco.get("categories", []), key=lambda c: int(c["id"]))
                things = [str(c.get("name", c["id"])) for c in cats]
                stuff = [s if isinstance(s, str) else str(s.get("name")) for s in coco.get("stuff_categories", [])]
                break
    m = cfg.model
    if m.semantic_classes == "cocostuff":
        # the semantic channels are COCO-stuff's (the manifest's semantic section)
        from .data.cocostuff import COCO_THING_NAMES, NUM_COCOSTUFF_CHANNELS

        named = meta.get("semantic_names")
        if named is not None and len(named) != NUM_COCOSTUFF_CHANNELS:
            raise ValueError(f"the checkpoint's meta.semantic_names has {len(named)} names, "
                             f"model.semantic_classes cocostuff has {NUM_COCOSTUFF_CHANNELS} channels")
        if not things and m.num_classes == len(COCO_THING_NAMES):
            things = list(COCO_THING_NAMES)
        if len(things) != m.num_classes:
            raise ValueError(f"the checkpoint names {len(things)} thing classes but model.num_classes is {m.num_classes}")
        return things, []
    if not things:
        things = [f"class_{i}" for i in range(m.num_classes)]
    if len(things) != m.num_classes:
        raise ValueError(f"the checkpoint names {len(things)} thing classes but model.num_classes is {m.num_classes}")
    if len(stuff) > m.num_stuff_classes:
        raise ValueError(f"{len(stuff)} stuff class names but model.num_stuff_classes is {m.num_stuff_classes}")
    stuff += [f"stuff_{i}" for i in range(len(stuff), m.num_stuff_classes)]
    return things, stuff


def load_checkpoint(path: Path, config: Optional[str], overrides: Sequence[str] = ()) -> Tuple[HTC, Config, dict]:
    cfg, ckpt = load_checkpoint_config(path, config, overrides)
    return load_model_from_checkpoint(cfg, ckpt, torch.device("cpu")), cfg, ckpt


def export_bundle(model: HTC, cfg: Config, out: Path, *, name: str, things: Sequence[str], stuff: Sequence[str],
                  fixture_image: Optional[Path], tta_scales: Optional[Sequence[Sequence[int]]],
                  layout: str = "stages") -> Dict[str, Any]:
    """Write a complete bundle into ``out`` (created; existing bundle files and fixture replaced)."""
    manifest = build_manifest(cfg, name=name, things=things, stuff=stuff, layout=layout)
    out.mkdir(parents=True, exist_ok=True)
    ls = long_short(cfg.data.test_scale)
    div = cfg.data.size_divisor
    sample = (-(-ls[1] // div) * div, -(-ls[0] // div) * div)
    _remove_box_graphs(out)
    export_graphs(model, out, sample, layout=layout)
    (out / "manifest.yaml").write_text(dump_yaml(manifest), encoding="utf-8")
    # a fixture from an earlier export would not match these graphs
    shutil.rmtree(out / "fixture", ignore_errors=True)
    if fixture_image is not None:
        write_fixture(model, cfg, out, fixture_image, tta_scales or default_tta_scales(cfg.data.test_scale))
    return manifest


# --------------------------------------------------------------------------- heads of an existing bundle

# the exported head modules' parameter prefix -> the model's (export wraps the cascade in _KeepInput;
# a contract-2 stage graph holds its head under ``head.``)
_HEAD_PREFIXES = {"bbox_heads": ("inner.heads.", "roi_head.bbox_head."),
                  "mask_heads": ("inner.heads.", "roi_head.mask_head.")}


def _initializers(path: Path, prefix: str) -> Dict[str, Tensor]:
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    found = {init.name[len(prefix):]: torch.from_numpy(numpy_helper.to_array(init).copy())
             for init in graph.initializer if init.name.startswith(prefix)}
    if not found:
        raise ValueError(f"{path}: no initializer named {prefix}*: not a graph written by htc.export")
    return found


def heads_state_from_bundle(bundle: Path) -> Dict[str, Tensor]:
    """The box and mask heads' weights, read back from a bundle's head graphs (their
    initializers keep the parameter names: ``inner.heads.T.*``, or ``head.*`` in contract 2's
    stage graphs, whose first FC is stored channels last and is put back). A bundle's
    checkpoint may be gone; its head graphs can still be re-exported in another layout."""
    manifest = yaml.safe_load((bundle / "manifest.yaml").read_text(encoding="utf-8"))
    graphs = manifest.get("graphs") or {}
    state: Dict[str, Tensor] = {}
    src, dst = _HEAD_PREFIXES["mask_heads"]
    mask_path = bundle / graphs.get("mask_heads", GRAPH_FILES["mask_heads"])
    # one read of the graph: the heads' own parameters (src) and, beside them, the sorted
    # layout's rearranged upsample and logits weights (SortedMaskCascade), put back below
    wrapper = _initializers(mask_path, "inner.")
    inner = src[len("inner."):]
    heads = {k[len(inner):]: v for k, v in wrapper.items() if k.startswith(inner)}
    if not heads:
        raise ValueError(f"{mask_path}: no initializer named {src}*: not a graph written by htc.export")
    for k, v in heads.items():
        state[dst + k] = v
    for k, v in wrapper.items():
        kind, t = k.rstrip("0123456789"), k[len(k.rstrip("0123456789")):]
        if kind not in ("up_w", "up_b", "cls_w", "cls_b") or not t:
            continue
        if kind == "up_w":  # [(a, b, out), in, 1, 1] -> [in, out, 2, 2]
            v = v.reshape(2, 2, v.shape[0] // 4, v.shape[1]).permute(3, 2, 0, 1).contiguous()
            state[f"{dst}{t}.upsample.weight"] = v
        else:  # four copies, one per sub-pixel
            v = v[: v.shape[0] // 4].clone()
            name = {"up_b": "upsample.bias", "cls_w": "conv_logits.weight", "cls_b": "conv_logits.bias"}[kind]
            state[f"{dst}{t}.{name}"] = v
    dst = _HEAD_PREFIXES["bbox_heads"][1]
    if "bbox_stages" in graphs:
        roi = manifest["roi"]
        for t, file in enumerate(graphs["bbox_stages"]):
            for k, v in _initializers(bundle / file, "head.").items():
                if k == "shared_fcs.0.weight":
                    v = channels_first_columns(v, int(roi["channels"]), int(roi["size"]))
                state[f"{dst}{t}.{k}"] = v
    else:
        src = _HEAD_PREFIXES["bbox_heads"][0]
        for k, v in _initializers(bundle / graphs.get("bbox_heads", GRAPH_FILES["bbox_heads"]), src).items():
            state[dst + k] = v
    return state


def _remove_box_graphs(out: Path) -> None:
    """Box graphs of an earlier export of another layout would be left behind unread."""
    for p in [out / GRAPH_FILES["bbox_heads"], *out.glob("bbox_stage*.onnx")]:
        p.unlink(missing_ok=True)


def rebuild_bundle_heads(src: Path, out: Path, cfg: Config, *, layout: str = "stages") -> Dict[str, Path]:
    """A copy of bundle ``src`` in ``out`` whose head graphs are re-exported in ``layout`` from the
    weights in ``src``'s own head graphs (``cfg``: the model config it was trained with). The
    backbone graph and fixture are copied as they are, the manifest with the contract and
    graphs of ``layout``: the heads compute the same function, so the fixture still checks
    the new graphs."""
    if src.resolve() == out.resolve():
        raise ValueError("--from-bundle: write the rebuilt bundle to another folder")
    model = HTC(cfg.model, size_divisor=cfg.data.size_divisor).eval()
    state = heads_state_from_bundle(src)
    own = model.state_dict()
    heads = {k: v for k, v in own.items() if k.startswith(("roi_head.bbox_head.", "roi_head.mask_head."))}
    extra, missing, misshapen = compare_state(heads, state)
    if missing or extra:
        raise ValueError(f"{src}: its head graphs do not fit the config's model "
                         f"(missing {missing[:3]}, unexpected {extra[:3]}); pass the config it was trained with "
                         "(a tensor equal to another, such as an untrained zero bias, is stored once under "
                         "the other's name and cannot be told apart)")
    if misshapen:
        k = misshapen[0]
        raise ValueError(f"{src}: {k} is {tuple(state[k].shape)} in the graph, {tuple(own[k].shape)} in the config's model")
    model.load_state_dict(state, strict=False)
    out.mkdir(parents=True, exist_ok=True)
    manifest = yaml.safe_load((src / "manifest.yaml").read_text(encoding="utf-8"))
    for key in ("contract", "graphs", "roi"):
        manifest.pop(key, None)
    head = graphs_section(cfg, layout)
    manifest = {"contract": head.pop("contract"), **manifest, **head}
    (out / "manifest.yaml").write_text(dump_yaml(manifest), encoding="utf-8")
    shutil.copyfile(src / GRAPH_FILES["backbone"], out / GRAPH_FILES["backbone"])
    shutil.rmtree(out / "fixture", ignore_errors=True)
    if (src / "fixture").is_dir():
        shutil.copytree(src / "fixture", out / "fixture")
    _remove_box_graphs(out)
    ls = long_short(cfg.data.test_scale)
    div = cfg.data.size_divisor
    sample = (-(-ls[1] // div) * div, -(-ls[0] // div) * div)
    return export_graphs(model, out, sample, layout=layout, kinds=("bbox_heads", "mask_heads"))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m htc.export", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint",
                   help="a .pth written by htc.train, or a released mmdetection HTC checkpoint (htc.mmdet_checkpoint)")
    p.add_argument("--from-bundle", metavar="BUNDLE",
                   help="instead of --checkpoint: re-export BUNDLE's head graphs (in --graph-layout) from the weights "
                        "in those graphs, copying its backbone, manifest and fixture; needs --config")
    p.add_argument("--graph-layout", choices=GRAPH_LAYOUTS, default="stages",
                   help="the head graphs' layout: stages (contract 2, the default: the runtime pools RoIs, one "
                        "graph per box stage), sorted (contract 1, RoIAlign in the graph, each RoI pooled once on "
                        "its own level) or legacy (contract 1, every level, selected with Where: earlier exports)")
    p.add_argument("--config", help="YAML config (default: the one saved in the checkpoint)")
    p.add_argument("--set", dest="overrides", action="append", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set model.test.max_per_img=50")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--name", help="manifest name (default: <checkpoint folder>_epoch<N>, _epoch<N>_step<S> within an epoch)")
    p.add_argument("--fixture-image", help="fixture input image (default: the first image of the val split)")
    p.add_argument("--tta-scales", help="the fixture's TTA plan scales, LONGxSHORT,LONGxSHORT "
                                        "(default: the test scale and 1.3x it, e.g. 320x320,416x416)")
    p.add_argument("--no-fixture", action="store_true", help="write no reference fixture")
    p.add_argument("--work-dir", help="where a synthetic set without data.root lives "
                                      "(default: the checkpoint's folder)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.checkpoint is None) == (args.from_bundle is None):
        parser.error("give exactly one of --checkpoint and --from-bundle")
    if args.from_bundle is not None and args.config is None:
        parser.error("--from-bundle needs --config (the model config the bundle was trained with)")
    t0 = time.monotonic()
    if args.from_bundle is not None:
        try:
            from .builders import load_config_with_overrides

            cfg = load_config_with_overrides(args.config, [s for group in args.overrides for s in group])
            out = Path(args.out)
            rebuild_bundle_heads(Path(args.from_bundle), out, cfg, layout=args.graph_layout)
        except (OSError, ValueError) as e:
            print(f"htc.export: {e}", file=sys.stderr)
            return 2
        print(f"htc.export: wrote {out} (head graphs of {args.from_bundle} in the {args.graph_layout} layout) "
              f"in {time.monotonic() - t0:.1f} s")
        return 0
    try:
        ckpt_path = Path(args.checkpoint)
        overrides = [s for group in args.overrides for s in group]
        model, cfg, ckpt = load_checkpoint(ckpt_path, args.config, overrides)
        work_dir = Path(args.work_dir) if args.work_dir else ckpt_path.parent
        things, stuff = _class_names(cfg, ckpt, work_dir)
        label = epoch_label(ckpt)
        name = args.name or (f"{ckpt_path.resolve().parent.name}_{label}" if label else ckpt_path.stem)
        tta = parse_scales(args.tta_scales) if args.tta_scales else None
        image = None
        imported = str((ckpt.get("meta") or {}).get("source", "")).startswith("mmdetection")
        if imported and not args.no_fixture and not args.fixture_image:
            # a released model comes without its dataset: no image to make the fixture from
            print("htc.export: no reference fixture (pass --fixture-image IMG to write one)", file=sys.stderr)
        elif not args.no_fixture:
            image = Path(args.fixture_image) if args.fixture_image else first_val_image(cfg, work_dir)
            if not image.is_file():
                raise FileNotFoundError(f"fixture image {image} not found")
        out = Path(args.out)
        export_bundle(model, cfg, out, name=name, things=things, stuff=stuff, fixture_image=image, tta_scales=tta,
                      layout=args.graph_layout)
    except (OSError, ValueError) as e:
        print(f"htc.export: {e}", file=sys.stderr)
        return 2
    sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in sorted(out.glob("*.onnx")))
    print(f"htc.export: wrote {out} ({name}; {sizes}{'; fixture' if image else ''}) "
          f"in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
