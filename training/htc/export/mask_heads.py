"""``mask_heads.onnx``: the mask cascade, pooling its RoIs itself.

Each RoI is pooled once, on its own FPN level (the RoIs split by level inside the graph with
NonZero + Gather, the result put back in input order with one Gather by the inverse
permutation), and the heads' 2x2 upsampling and 1x1 logits run at 14x14 (:class:`MaskHeadsGraph`)."""

from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_align

from ..model.roi_head import MaskCascade, RoIExtractor, semantic_roi_features


class KeepInput(nn.Module):
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


def _split_levels(extractor: RoIExtractor, rois: Tensor) -> List[Tensor]:
    """Indices of the RoIs of each level (ascending within a level)."""
    lvl = extractor.levels(rois)
    return [torch.nonzero(lvl == i, as_tuple=False).squeeze(1) for i in range(len(extractor.strides))]


def inverse_permutation(order: Tensor) -> Tensor:
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


class MaskHeadsGraph(nn.Module):
    """``MaskCascade`` (same heads, same inputs and outputs) as ``mask_heads.onnx`` computes it.

    The 2x2 stride-2 transposed convolution writes each input pixel's four sub-pixels (a, b)
    from four disjoint weight slices, and ReLU and the 1x1 logits conv act per pixel; so
    upsample + ReLU + logits run at 14x14 as a 1x1 conv to 4 x C channels (sub-pixel major),
    ReLU and a 4-group 1x1 conv to 4 x classes; the label's four channels are gathered and
    one DepthToSpace (CRD) puts every stage's sub-pixels in place at the end: the same sums
    on 1/16 of the data that ConvTranspose + full-size ReLU and logits moved. The rearranged
    weights are buffers ``up_w{t}``, ``up_b{t}``, ``cls_w{t}``, ``cls_b{t}``
    (:func:`htc.export.from_bundle.heads_state_from_bundle` puts them back)."""
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
        return masks[inverse_permutation(order)]
