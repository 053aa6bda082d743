"""The per-stage box head, the per-stage mask head and the semantic segmentation head.

Attribute names follow mmdetection's Shared2FCBBoxHead, HTCMaskHead and
FusedSemanticHead so released checkpoints map one to one.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch.nn.functional as F
from torch import Tensor, nn

from .backbone import ConvModule


def _init_logits(conv: nn.Conv2d) -> None:
    # Kaiming fan_out (mmdetection's choice) scales with 1/sqrt(num_classes): with a
    # handful of classes and no pretrained features the first logits reach tens and
    # the first steps diverge. Small logits start every loss near its chance value.
    nn.init.normal_(conv.weight, std=0.01)
    nn.init.zeros_(conv.bias)


class BBoxHead(nn.Module):
    """B_t: two shared FC + ReLU, then C+1 class logits (background last) and
    class-agnostic deltas (4)."""

    def __init__(self, *, in_channels: int, roi_size: int, fc_dim: int, num_classes: int) -> None:
        super().__init__()
        self.shared_fcs = nn.ModuleList(
            [nn.Linear(in_channels * roi_size * roi_size, fc_dim), nn.Linear(fc_dim, fc_dim)]
        )
        self.fc_cls = nn.Linear(fc_dim, num_classes + 1)
        self.fc_reg = nn.Linear(fc_dim, 4)
        for fc in self.shared_fcs:
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)
        nn.init.normal_(self.fc_cls.weight, std=0.01)
        nn.init.normal_(self.fc_reg.weight, std=0.001)
        nn.init.zeros_(self.fc_cls.bias)
        nn.init.zeros_(self.fc_reg.bias)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        x = x.flatten(1)
        for fc in self.shared_fcs:
            x = F.relu(fc(x))
        return self.fc_cls(x), self.fc_reg(x)


class HTCMaskHead(nn.Module):
    """M_t: 4 conv3x3 + ReLU (M_t^- in the paper) -> deconv 2x2 s2 + ReLU -> 1x1 logits.

    With ``with_conv_res`` (heads of stages > 0 under mask information flow) the
    previous head's 4th-conv feature goes through G_t = 1x1 conv + ReLU and is
    added to the RoI feature first (paper Eq. 4).
    """

    def __init__(self, *, in_channels: int, channels: int, num_convs: int, num_classes: int,
                 with_conv_res: bool) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            ConvModule(in_channels if i == 0 else channels, channels, 3, padding=1) for i in range(num_convs)
        )
        self.upsample = nn.ConvTranspose2d(channels, channels, 2, stride=2)
        self.conv_logits = nn.Conv2d(channels, num_classes, 1)
        self.conv_res = ConvModule(channels, in_channels, 1) if with_conv_res else None
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        _init_logits(self.conv_logits)

    def features(self, x: Tensor, res_feat: Optional[Tensor] = None) -> Tensor:
        """The 14x14 representation m_t^- handed to the next stage."""
        if res_feat is not None:
            if self.conv_res is None:
                raise ValueError("this mask head has no conv_res: it cannot take a previous stage's feature")
            x = x + self.conv_res(res_feat)
        for conv in self.convs:
            x = conv(x)
        return x

    def logits(self, feat: Tensor) -> Tensor:
        return self.conv_logits(F.relu(self.upsample(feat)))

    def forward(self, x: Tensor, res_feat: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """(mask logits [N, C, 2S, 2S], feature [N, channels, S, S])."""
        feat = self.features(x, res_feat)
        return self.logits(feat), feat


class FusedSemanticHead(nn.Module):
    """S(x) of the paper's Fig. 3: every level resized to the fusion level (P3),
    1x1 conv + ReLU, summed, 4 conv3x3 + ReLU, then segmentation logits and a
    1x1 conv + ReLU embedding that is the fused semantic feature."""

    def __init__(self, *, in_channels: int, num_levels: int, fusion_level: int, num_convs: int,
                 num_classes: int) -> None:
        super().__init__()
        self.fusion_level = fusion_level
        self.lateral_convs = nn.ModuleList(ConvModule(in_channels, in_channels, 1) for _ in range(num_levels))
        self.convs = nn.ModuleList(ConvModule(in_channels, in_channels, 3, padding=1) for _ in range(num_convs))
        self.conv_embedding = ConvModule(in_channels, in_channels, 1)
        self.conv_logits = nn.Conv2d(in_channels, num_classes, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        _init_logits(self.conv_logits)

    def forward(self, feats: Sequence[Tensor]) -> Tuple[Tensor, Tensor]:
        """(segmentation logits [B, S, H/8, W/8], semantic feature [B, C, H/8, W/8])."""
        x = self.lateral_convs[self.fusion_level](feats[self.fusion_level])
        size = x.shape[-2:]
        for i, feat in enumerate(feats):
            if i != self.fusion_level:
                feat = F.interpolate(feat, size=size, mode="bilinear", align_corners=True)
                x = x + self.lateral_convs[i](feat)
        for conv in self.convs:
            x = conv(x)
        return self.conv_logits(x), self.conv_embedding(x)
