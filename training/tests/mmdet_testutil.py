"""Checkpoints laid out as mmdetection's released HTC models, from random weights.

The names and shapes below are written out from mmdetection's modules
(ResNet/ResNeXt, FPN, RPNHead, Shared2FCBBoxHead, HTCMaskHead,
FusedSemanticHead) and its checkpoint container, independently of
htc.model, so that a test loading them checks the import against
mmdetection, not against our own names.

    /usr/bin/python3 tests/mmdet_testutil.py --out X.pth [--layout v2|v1] [--depth 50] [--groups 1 --width-per-group 64] [--dcn]

writes one (the Go end-to-end test uses this).
"""

from __future__ import annotations

import argparse
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Tuple

import torch

BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
# mmdetection's CocoDataset.CLASSES, as meta['CLASSES'] carries it
COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)


def _shapes(*, depth: int, groups: int, width_per_group: int, layout: str, num_classes: int,
            semantic_classes: int, dcn: bool) -> "OrderedDict[str, Tuple[int, ...]]":
    s: "OrderedDict[str, Tuple[int, ...]]" = OrderedDict()

    def bn(name: str, c: int) -> None:
        for p in ("weight", "bias", "running_mean", "running_var"):
            s[f"{name}.{p}"] = (c,)
        s[f"{name}.num_batches_tracked"] = ()

    def conv(name: str, cout: int, cin: int, k: int, bias: bool = True) -> None:
        s[f"{name}.weight"] = (cout, cin, k, k)
        if bias:
            s[f"{name}.bias"] = (cout,)

    conv("backbone.conv1", 64, 3, 7, bias=False)
    bn("backbone.bn1", 64)
    cin = 64
    for i, n in enumerate(BLOCKS[depth]):
        planes = 64 * 2**i
        inner = planes if groups == 1 else planes * width_per_group // 64 * groups
        for b in range(n):
            pre = f"backbone.layer{i + 1}.{b}"
            conv(f"{pre}.conv1", inner, cin, 1, bias=False)
            bn(f"{pre}.bn1", inner)
            conv(f"{pre}.conv2", inner, inner // groups, 3, bias=False)
            if dcn and i > 0:
                # mmcv's DeformConv2dPack (2.x) / v1's separate conv2_offset: 2 * 3 * 3 offsets
                conv(f"{pre}.conv2_offset" if layout == "v1" else f"{pre}.conv2.conv_offset", 18, inner, 3)
            bn(f"{pre}.bn2", inner)
            conv(f"{pre}.conv3", planes * 4, inner, 1, bias=False)
            bn(f"{pre}.bn3", planes * 4)
            if b == 0:
                conv(f"{pre}.downsample.0", planes * 4, cin, 1, bias=False)
                bn(f"{pre}.downsample.1", planes * 4)
            cin = planes * 4
    for i, c in enumerate((256, 512, 1024, 2048)):
        conv(f"neck.lateral_convs.{i}.conv", 256, c, 1)
    for i in range(4):
        conv(f"neck.fpn_convs.{i}.conv", 256, 256, 3)
    conv("rpn_head.rpn_conv", 256, 256, 3)
    conv("rpn_head.rpn_cls", 3, 256, 1)
    conv("rpn_head.rpn_reg", 12, 256, 1)
    head = "roi_head." if layout == "v2" else ""
    for i in range(5):
        conv(f"{head}semantic_head.lateral_convs.{i}.conv", 256, 256, 1)
    for i in range(4):
        conv(f"{head}semantic_head.convs.{i}.conv", 256, 256, 3)
    conv(f"{head}semantic_head.conv_embedding.conv", 256, 256, 1)
    conv(f"{head}semantic_head.conv_logits", semantic_classes, 256, 1)
    for t in range(3):
        pre = f"{head}bbox_head.{t}"
        s[f"{pre}.shared_fcs.0.weight"], s[f"{pre}.shared_fcs.0.bias"] = (1024, 256 * 49), (1024,)
        s[f"{pre}.shared_fcs.1.weight"], s[f"{pre}.shared_fcs.1.bias"] = (1024, 1024), (1024,)
        s[f"{pre}.fc_cls.weight"], s[f"{pre}.fc_cls.bias"] = (num_classes + 1, 1024), (num_classes + 1,)
        s[f"{pre}.fc_reg.weight"], s[f"{pre}.fc_reg.bias"] = (4, 1024), (4,)
    for t in range(3):
        pre = f"{head}mask_head.{t}"
        for i in range(4):
            conv(f"{pre}.convs.{i}.conv", 256, 256, 3)
        s[f"{pre}.upsample.weight"], s[f"{pre}.upsample.bias"] = (256, 256, 2, 2), (256,)
        conv(f"{pre}.conv_logits", num_classes + (1 if layout == "v1" else 0), 256, 1)
        # 2.x: with_conv_res=False on the first head; v1 builds conv_res on every head
        if t > 0 or layout == "v1":
            conv(f"{pre}.conv_res.conv", 256, 256, 1)
    return s


def mmdet_htc_checkpoint(*, depth: int = 50, groups: int = 1, width_per_group: int = 64, layout: str = "v2",
                         num_classes: int = 80, semantic_classes: int = 183, classes=COCO_CLASSES,
                         dcn: bool = False, seed: int = 0) -> Dict[str, object]:
    """``{state_dict, meta}`` as mmcv's save_checkpoint writes a released HTC model (random weights)."""
    # Initialised roughly as mmdetection initialises a fresh model (kaiming convs,
    # xavier FPN and FCs, normal 0.01 for the RPN and classifiers), with the last
    # BatchNorm of every residual branch scaled down (0.1) so 33 random blocks do not
    # blow the features up: the graphs then see finite, image-dependent values.
    gen = torch.Generator().manual_seed(seed)
    sd: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for name, shape in _shapes(depth=depth, groups=groups, width_per_group=width_per_group, layout=layout,
                               num_classes=num_classes, semantic_classes=semantic_classes, dcn=dcn).items():
        if name.endswith("num_batches_tracked"):
            sd[name] = torch.tensor(0, dtype=torch.int64)
        elif name.endswith("running_var"):
            sd[name] = torch.rand(shape, generator=gen) * 0.5 + 0.75
        elif name.endswith("running_mean"):
            sd[name] = torch.randn(shape, generator=gen) * 0.1
        elif ".bn" in name or "downsample.1" in name:
            scale = 0.1 if ".bn3." in name else 1.0
            sd[name] = (torch.full(shape, scale) if name.endswith("weight") else torch.zeros(shape))
        elif name.endswith("bias"):
            sd[name] = torch.zeros(shape)
        else:
            fan_in, fan_out = 1, shape[0]
            for d in shape[1:]:
                fan_in *= d
            if len(shape) == 4:
                fan_out *= shape[2] * shape[3]
            if name.startswith("rpn_head.") or ".fc_cls." in name or "conv_logits" in name:
                std = 0.01
            elif ".fc_reg." in name:
                std = 0.001
            elif name.startswith("neck.") or "shared_fcs" in name:
                std = (2.0 / (fan_in + fan_out)) ** 0.5
            else:
                std = (2.0 / fan_out) ** 0.5
            sd[name] = torch.randn(shape, generator=gen) * std
    meta = {"mmdet_version": "2.11.0" if layout == "v2" else "1.0rc0+d3ca926", "epoch": 20, "iter": 0}
    if classes is not None:
        meta["CLASSES"] = tuple(classes)
    return {"meta": meta, "state_dict": sd}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--layout", choices=("v2", "v1"), default="v2")
    p.add_argument("--depth", type=int, choices=sorted(BLOCKS), default=50)
    p.add_argument("--groups", type=int, default=1)
    p.add_argument("--width-per-group", type=int, default=64)
    p.add_argument("--dcn", action="store_true", help="deformable convs in c3-c5 (the model zoo's dconv rows)")
    args = p.parse_args(argv)
    ckpt = mmdet_htc_checkpoint(depth=args.depth, groups=args.groups, width_per_group=args.width_per_group,
                                layout=args.layout, dcn=args.dcn)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
