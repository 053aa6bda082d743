"""ResNet backbone and FPN neck.

Module and parameter names follow torchvision's ResNet and mmdetection's FPN so
that released mmdetection checkpoints (``backbone.layer1.0.conv1.weight``,
``neck.lateral_convs.0.conv.weight``...) load by name.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..dcn import DeformConv2dPack, check_stages


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and a trainable affine.

    Detection batches are too small for useful batch statistics, so the
    pretrained running mean and variance are kept, while the affine weight and
    bias still learn: mmdetection's ``norm_eval=True`` with
    ``requires_grad=True``, the setting its HTC configs train with. Frozen
    stages (``frozen_stages``) switch the affine's gradient off with the rest
    of the stage. Names are torchvision's BatchNorm names so checkpoints load
    unchanged.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # nn.BatchNorm2d checkpoints carry a step counter that has no meaning here.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class ConvModule(nn.Module):
    """A conv with an optional ReLU; the ``.conv`` attribute gives mmdetection's ``X.conv.weight`` names."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, padding: int = 0,
                 relu: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        return F.relu(x) if self.relu else x


def _norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "frozen":
        return FrozenBatchNorm2d(channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"unknown norm {kind!r}: expected 'frozen' or 'batch'")


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int, downsample: Optional[nn.Module],
                 norm: str, groups: int = 1, width_per_group: int = 64) -> None:
        super().__init__()
        if groups != 1 or width_per_group != 64:
            raise ValueError("BasicBlock (ResNet-18/34) has no grouped form: groups must be 1, width_per_group 64")
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _norm_layer(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = _norm_layer(norm, planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """"pytorch" style: the stride sits on the 3x3 conv, as in torchvision and mmdetection's HTC.

    With ``groups`` > 1 it is ResNeXt's block: the 3x3 conv is grouped and the
    inner width is ``planes * width_per_group / 64 * groups`` (torchvision's and
    mmdetection's formula: X-101 32x4d has 128 inner channels in layer1).
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int, downsample: Optional[nn.Module],
                 norm: str, groups: int = 1, width_per_group: int = 64, deform_groups: int = 0) -> None:
        super().__init__()
        inner = int(planes * (width_per_group / 64.0)) * groups
        self.conv1 = nn.Conv2d(in_channels, inner, 1, bias=False)
        self.bn1 = _norm_layer(norm, inner)
        if deform_groups:
            # mmdetection's dcn=dict(type='DCN') on the stage: conv2 keeps its name, its
            # offsets are conv2.conv_offset (htc.dcn)
            self.conv2 = DeformConv2dPack(inner, inner, 3, stride=stride, padding=1, groups=groups,
                                          deform_groups=deform_groups)
        else:
            self.conv2 = nn.Conv2d(inner, inner, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = _norm_layer(norm, inner)
        self.conv3 = nn.Conv2d(inner, planes * self.expansion, 1, bias=False)
        self.bn3 = _norm_layer(norm, planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


_ARCHS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


class ResNet(nn.Module):
    """ResNet (or ResNeXt, with ``groups`` > 1) returning C2..C5 (strides 4..32).

    torchvision's constructors fix the stem at 64 channels, so the network is
    built here with a ``width`` knob; at width 64 the names and shapes equal
    torchvision's ``resnet{depth}`` / ``resnext{depth}_{groups}x{width_per_group}d``
    (without ``fc``) and mmdetection's ResNet/ResNeXt backbones.
    """

    def __init__(self, *, depth: int, width: int = 64, frozen_stages: int = 1, norm: str = "frozen",
                 groups: int = 1, width_per_group: int = 64, dcn_stages: Sequence[bool] = (False,) * 4,
                 deform_groups: int = 1) -> None:
        super().__init__()
        if depth not in _ARCHS:
            raise ValueError(f"ResNet depth must be one of {sorted(_ARCHS)}, got {depth}")
        block, layers = _ARCHS[depth]
        check_stages(dcn_stages, deform_groups)
        if any(dcn_stages) and block is not Bottleneck:
            raise ValueError("deformable convolution (dcn) needs bottleneck blocks (depth 50 or 101)")
        self.frozen_stages = frozen_stages
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = _norm_layer(norm, width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = width
        self.out_channels: List[int] = []
        for i, num_blocks in enumerate(layers):
            planes = width * 2**i
            stride = 1 if i == 0 else 2
            blocks = []
            for b in range(num_blocks):
                downsample = None
                if b == 0 and (stride != 1 or in_channels != planes * block.expansion):
                    downsample = nn.Sequential(
                        nn.Conv2d(in_channels, planes * block.expansion, 1, stride=stride, bias=False),
                        _norm_layer(norm, planes * block.expansion),
                    )
                extra = {"deform_groups": deform_groups} if dcn_stages[i] else {}
                blocks.append(block(in_channels, planes, stride if b == 0 else 1, downsample, norm,
                                    groups=groups, width_per_group=width_per_group, **extra))
                in_channels = planes * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.out_channels.append(in_channels)
        self._init_weights()
        self._freeze()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _frozen_modules(self) -> List[nn.Module]:
        mods: List[nn.Module] = []
        if self.frozen_stages >= 0:
            mods += [self.conv1, self.bn1]
        for i in range(1, self.frozen_stages + 1):
            mods.append(getattr(self, f"layer{i}"))
        return mods

    def _freeze(self) -> None:
        for m in self._frozen_modules():
            for p in m.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> "ResNet":
        super().train(mode)
        # Frozen stages keep their running statistics even with trainable BatchNorm elsewhere.
        for m in self._frozen_modules():
            m.eval()
        return self

    def forward(self, x: Tensor) -> List[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            outs.append(x)
        return outs


class FPN(nn.Module):
    """Feature pyramid P2..P6: lateral 1x1 and output 3x3 convs without activation,
    nearest top-down upsampling to the lower level's size, P6 = max-pool(k1, s2) of P5."""

    def __init__(self, *, in_channels: Sequence[int], out_channels: int = 256) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.lateral_convs = nn.ModuleList(ConvModule(c, out_channels, 1, relu=False) for c in in_channels)
        self.fpn_convs = nn.ModuleList(
            ConvModule(out_channels, out_channels, 3, padding=1, relu=False) for _ in in_channels
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, inputs: Sequence[Tensor]) -> List[Tensor]:
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest"
            )
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals)]
        outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return outs
