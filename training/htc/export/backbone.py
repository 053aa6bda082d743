"""``backbone.onnx``: backbone, FPN, RPN head and semantic head, one image batch in."""

from __future__ import annotations

from typing import Tuple

from torch import Tensor, nn

from ..model.detector import HTC
from .contract import names


class BackboneGraph(nn.Module):
    """FeatureNet with the contract's outputs, in the contract's order. A model without the
    semantic branch emits zeros for ``semantic_feat`` / ``semantic_logits`` (its heads never
    read them)."""

    def __init__(self, model: HTC) -> None:
        super().__init__()
        self.net = model.feature_net()
        self.num_semantic = model.cfg.num_semantic_classes
        self.outputs = names("backbone")

    def forward(self, image: Tensor) -> Tuple[Tensor, ...]:
        f = self.net.features(image)
        if f.semantic_feat is None:
            p3 = f.fpn[1]
            sem_feat = p3 * 0.0
            sem_logits = (p3[:, :1] * 0.0).repeat(1, self.num_semantic, 1, 1)
        else:
            sem_feat, sem_logits = f.semantic_feat, f.semantic_logits
        named = {"semantic_feat": sem_feat, "semantic_logits": sem_logits}
        for i, (p, cls, reg) in enumerate(zip(f.fpn, f.rpn_cls, f.rpn_reg)):
            named.update({f"p{i + 2}": p, f"rpn_cls_{i + 2}": cls, f"rpn_reg_{i + 2}": reg})
        return tuple(named[n] for n in self.outputs)
