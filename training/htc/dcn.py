"""Deformable convolution (DCN v1), as mmdetection's ``dcn=dict(type='DCN', deform_groups=1)``.

The DCN rows of mmdetection's HTC table replace the 3x3 conv of every bottleneck in the
stages ``stage_with_dcn`` names (c3-c5: ``(False, True, True, True)``) by mmcv's
``DeformConv2dPack``: a plain conv (``conv_offset``, zero-initialised, with bias) predicts
2 offsets (dy, dx) per kernel tap and deform group, and the main conv samples the input at
the shifted taps. ``torchvision.ops.deform_conv2d`` computes the same operator (the same
offset layout, ported from the same DCN code), so a released checkpoint's
``layerN.M.conv2.weight`` and ``layerN.M.conv2.conv_offset.{weight,bias}`` load by name.

Export: torch 1.13 has no ONNX symbolic for ``torchvision::deform_conv2d``; ``symbolic``
below writes ONNX's ``DeformConv``, which exists from opset 19 on, while torch 1.13 exports
at most opset 17. ``raise_opset`` lifts such a graph to 19 after export; see its docstring
for why that is exact for the operators our graphs hold.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, List, Sequence, Union

import torch
from torch import Tensor, nn
from torchvision.ops import deform_conv2d

DEFORM_OPSET = 19
_EXPORT_DOMAIN = "htcstream.export"


class DeformConv2dPack(nn.Module):
    """mmcv's ``DeformConv2dPack`` (DCN v1) over torchvision's ``deform_conv2d``.

    ``weight`` is the main conv's ``[out, in / groups, k, k]`` kernel (no bias, as
    mmdetection's bottleneck conv2); ``conv_offset`` predicts ``deform_groups * 2 * k * k``
    offset channels at the output resolution, zero at initialisation so that a fresh layer
    is the plain conv.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, *, stride: int = 1,
                 padding: int = 1, dilation: int = 1, groups: int = 1, deform_groups: int = 1) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels {in_channels}->{out_channels} not divisible by groups {groups}")
        if in_channels % deform_groups:
            raise ValueError(f"in_channels {in_channels} not divisible by deform_groups {deform_groups}")
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.groups, self.deform_groups = groups, deform_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kernel_size, kernel_size))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.conv_offset = nn.Conv2d(in_channels, deform_groups * 2 * kernel_size * kernel_size, kernel_size,
                                     stride=stride, padding=padding, dilation=dilation, bias=True)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x: Tensor) -> Tensor:
        offset = self.conv_offset(x)
        return deform_conv2d(x, offset, self.weight, None, stride=self.stride, padding=self.padding,
                             dilation=self.dilation)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return (f"{i * self.groups}, {o}, kernel_size={k}, stride={self.stride}, padding={self.padding}, "
                f"groups={self.groups}, deform_groups={self.deform_groups}")


def check_stages(stages: Sequence[bool], deform_groups: int) -> None:
    """The config's ``model.backbone.dcn``: four flags (layer1..layer4), deform_groups >= 1."""
    if len(stages) != 4:
        raise ValueError(f"model.backbone.dcn.stages: want 4 flags (layer1..layer4), got {list(stages)}")
    if deform_groups < 1:
        raise ValueError(f"model.backbone.dcn.deform_groups: must be >= 1, got {deform_groups}")


# --------------------------------------------------------------------------- export


def symbolic(g, input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
             n_weight_grps, n_offset_grps, use_mask):
    """``torchvision::deform_conv2d`` as ONNX ``DeformConv`` (inputs X, W, offset, B[, mask])."""
    from torch.onnx import symbolic_helper as sym

    kh, kw = sym._get_tensor_sizes(weight)[2:4]
    args = [input, weight, offset, bias]
    if sym._maybe_get_const(use_mask, "b"):
        args.append(mask)
    # torch 1.13 checks the graph at the export opset, where DeformConv does not exist yet:
    # the node is written in a private domain and moved to ONNX's by raise_opset.
    return g.op(f"{_EXPORT_DOMAIN}::DeformConv", *args, kernel_shape_i=[kh, kw],
                strides_i=[sym._maybe_get_const(stride_h, "i"), sym._maybe_get_const(stride_w, "i")],
                pads_i=[sym._maybe_get_const(pad_h, "i"), sym._maybe_get_const(pad_w, "i")] * 2,
                dilations_i=[sym._maybe_get_const(dil_h, "i"), sym._maybe_get_const(dil_w, "i")],
                group_i=sym._maybe_get_const(n_weight_grps, "i"),
                offset_group_i=sym._maybe_get_const(n_offset_grps, "i"))


def register_symbolic(opset: int) -> None:
    """Let ``torch.onnx.export`` at ``opset`` write torchvision's deform_conv2d as DeformConv."""
    torch.onnx.register_custom_op_symbolic("torchvision::deform_conv2d", symbolic, opset)


# Operators whose definition changed between opsets 17 and 19 (the ONNX operator changelog,
# opsets 18 and 19), and what the change means for a node written for opset 17:
#   same    - the update only adds element types or attributes/inputs whose default is the
#             old behaviour, so the node means the same at 19;
#   axes    - opset 18 moved ``axes`` from an attribute to an optional input: rewritten;
#   refuse  - holds subgraphs or otherwise not checked here: export stops and says so.
_CHANGED_17_TO_19 = {
    # opset 18
    "Pad": "same", "Resize": "same", "ScatterElements": "same", "ScatterND": "same", "Split": "same",
    "LpPool": "same", "OptionalHasElement": "refuse", "OptionalGetElement": "refuse",
    "ReduceL1": "axes", "ReduceL2": "axes", "ReduceLogSum": "axes", "ReduceLogSumExp": "axes",
    "ReduceMax": "axes", "ReduceMean": "axes", "ReduceMin": "axes", "ReduceProd": "axes",
    "ReduceSumSquare": "axes",
    # opset 19
    "AveragePool": "same", "Cast": "same", "CastLike": "same", "Constant": "same", "Equal": "same",
    "Identity": "same", "Reshape": "same", "Shape": "same", "Size": "same",
    "DequantizeLinear": "same", "QuantizeLinear": "same",
    "If": "refuse", "Loop": "refuse", "Scan": "refuse",
}


def raise_opset(path: Union[str, Path], from_opset: int) -> bool:
    """Lift an exported graph holding ``DeformConv`` from ``from_opset`` (<= 17) to opset 19,
    in place; a graph without DeformConv is left as it is. Returns whether it changed.

    onnx's version converter cannot do it here (python3-onnx 1.12 knows opset 17 at most), so
    the lift is checked node by node against ``_CHANGED_17_TO_19``. From 16 to 17 nothing
    existing changed (opset 17 only added LayerNormalization, SequenceMap, DFT, STFT, the
    window functions and MelWeightMatrix), so ``from_opset`` must be 16 or 17. A node of an
    operator marked ``refuse`` stops the export with its name; ONNX Runtime checks every node
    against its opset-19 schema again when Go loads the graph.
    """
    import onnx
    from onnx import helper, numpy_helper
    import numpy as np

    model = onnx.load(str(path))
    nodes = list(model.graph.node)
    if not any(n.op_type == "DeformConv" and n.domain == _EXPORT_DOMAIN for n in nodes):
        return False
    if from_opset not in (16, 17):
        raise ValueError(f"{path}: exported at opset {from_opset}; the lift to 19 is checked from 16 and 17 only")
    new_nodes: List = []
    for n in nodes:
        if n.op_type == "DeformConv" and n.domain == _EXPORT_DOMAIN:
            n.domain = ""
        verdict = _CHANGED_17_TO_19.get(n.op_type) if n.domain in ("", "ai.onnx") else None
        if verdict == "refuse":
            raise ValueError(f"{path}: node {n.name or n.op_type} ({n.op_type}) changed between opsets 17 and 19 "
                             "in a way the DeformConv export does not check")
        if verdict == "axes":
            axes = [a for a in n.attribute if a.name == "axes"]
            if axes:
                const = f"{n.name or n.output[0]}_axes"
                model.graph.initializer.append(
                    numpy_helper.from_array(np.asarray(list(axes[0].ints), dtype=np.int64), const))
                keep = [a for a in n.attribute if a.name != "axes"]
                del n.attribute[:]
                n.attribute.extend(keep)
                inputs = list(n.input) + [const]
                del n.input[:]
                n.input.extend(inputs)
        new_nodes.append(n)
    if any(n.domain == _EXPORT_DOMAIN for n in model.graph.node):
        raise ValueError(f"{path}: nodes left in {_EXPORT_DOMAIN}")
    kept = [o for o in model.opset_import if o.domain != _EXPORT_DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = DEFORM_OPSET
    if model.ir_version < 9:
        model.ir_version = 9  # opset 19 is ONNX 1.14's, IR version 9
    onnx.save(model, str(path))
    return True


def check_lifted(path: Union[str, Path]) -> None:
    """onnx.checker on a lifted graph, as far as python3-onnx 1.12 can: the DeformConv nodes
    are moved to a private domain and the rest is checked at opset 17, where every other
    node's meaning is the same (``raise_opset``)."""
    import onnx

    check_lifted_model(onnx.load(str(path)), str(path))


def check_lifted_model(model, name: str = "graph") -> None:
    """:func:`check_lifted` on a loaded model (left unchanged)."""
    import onnx

    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    model, path = m, name
    inits = {i.name: i for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "DeformConv":
            n.domain = "htcstream.deformconv"
        elif _CHANGED_17_TO_19.get(n.op_type) == "axes" and len(n.input) == 2:
            # raise_opset's rewrite undone for the opset-17 check: axes back to an attribute
            if n.input[1] not in inits:
                raise ValueError(f"{path}: {n.op_type} {n.name} takes computed axes; python3-onnx 1.12 cannot check it")
            axes = numpy_helper.to_array(inits[n.input[1]]).tolist()
            del n.input[1]
            n.attribute.append(helper.make_attribute("axes", axes))
    del model.opset_import[:]
    model.opset_import.extend([onnx.helper.make_opsetid("", 17), onnx.helper.make_opsetid("htcstream.deformconv", 1)])
    model.ir_version = 8
    onnx.checker.check_model(model)


def deform_nodes(path: Union[str, Path]) -> Iterable[str]:
    import onnx

    return [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "DeformConv"]
