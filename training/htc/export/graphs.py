"""The bundle's graphs traced and written as ONNX (opset 16; dynamic batch, size and RoI
axes), each checked against the contract's signature."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import onnx
import torch
from torch import nn

from .. import dcn
from ..config import Config
from ..model.detector import HTC
from .backbone import BackboneGraph
from .box_stages import StagesBoxCascade, pooled_channels_last
from .contract import GRAPH_FILES, LEVEL_STRIDES, OPSET, V1_BOX_GRAPH, check_graph, names, stage_file
from .manifest import long_short
from .mask_heads import KeepInput, MaskHeadsGraph

# the graph groups export_graphs writes: the backbone, every box stage, the mask heads
GRAPH_GROUPS = ("backbone", "bbox_stages", "mask_heads")


def trace_size(cfg: Config) -> Tuple[int, int]:
    """The (height, width) the graphs are traced at: the test scale, padded."""
    long, short = long_short(cfg.data.test_scale)
    div = cfg.data.size_divisor
    return -(-short // div) * div, -(-long // div) * div


def remove_box_graphs(out: Path) -> None:
    """Box graphs of an earlier export (of another stage count, or contract 1's) would be left
    behind unread."""
    for p in [out / V1_BOX_GRAPH, *out.glob("bbox_stage*.onnx")]:
        p.unlink(missing_ok=True)


def head_graphs(model: HTC) -> Tuple[StagesBoxCascade, MaskHeadsGraph]:
    """The box cascade as the runtime computes it from the stage graphs, and the mask heads
    graph's module: both with the model's cascade's inputs and outputs, to compare with it."""
    return StagesBoxCascade(model.box_cascade()), MaskHeadsGraph(model.mask_cascade())


def _axes() -> Dict[str, Dict[int, str]]:
    """Every tensor's dynamic axes: batch, image size (per stride) and RoI count."""
    axes = {"image": {0: "batch", 2: "height", 3: "width"}}
    for i, s in zip(range(2, 7), LEVEL_STRIDES):
        for name in (f"p{i}", f"rpn_cls_{i}", f"rpn_reg_{i}"):
            axes[name] = {0: "batch", 2: f"h{s}", 3: f"w{s}"}
    axes["semantic_feat"] = {0: "batch", 2: "h8", 3: "w8"}
    axes["semantic_logits"] = {0: "batch", 2: "h8", 3: "w8"}
    axes.update({"rois": {0: "rois"}, "image_sizes": {0: "batch"}, "labels": {0: "rois"},
                 "stage_masks": {0: "rois"}, "roi_feats": {0: "rois"}, "logits": {0: "rois"},
                 "boxes": {0: "rois"}})
    return axes


def _export(module: nn.Module, args: tuple, path: Path, kind: str) -> None:
    inputs, outputs = names(kind, "inputs"), names(kind, "outputs")
    axes = _axes()
    # a DCN backbone's deform_conv2d becomes ONNX DeformConv, and its graph opset 19 (htc.dcn)
    dcn.register_symbolic(OPSET)
    with warnings.catch_warnings():
        # torchvision's tracing notes, aligned RoIAlign's opset-16 remark, shape-inference notices
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), opset_version=OPSET, input_names=inputs,
                          output_names=outputs, dynamic_axes={k: v for k, v in axes.items()
                                                              if k in set(inputs) | set(outputs)},
                          do_constant_folding=True)
    dcn.raise_opset(path, OPSET)


@torch.no_grad()
def export_graphs(model: HTC, out: Path, sample_hw: Tuple[int, int] = (320, 320), *,
                  kinds: Sequence[str] = GRAPH_GROUPS) -> Dict[str, Path]:
    """Write the graph groups ``kinds`` (backbone, bbox_stages, mask_heads; default all) into
    ``out`` and return them by file name; ``sample_hw`` is the (padded) trace size."""
    unknown = set(kinds) - set(GRAPH_GROUPS)
    if unknown:
        raise ValueError(f"graph groups {sorted(unknown)}, want some of {', '.join(GRAPH_GROUPS)}")
    model = model.eval()
    cfg = model.cfg
    h, w = sample_hw
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, h, w, generator=gen)
    backbone = BackboneGraph(model)
    feats = dict(zip(names("backbone"), backbone(image)))
    p2345 = tuple(feats[f"p{i}"] for i in range(2, 6))
    sem_feat = feats["semantic_feat"]
    rois = torch.tensor([[0.0, 4.0, 6.0, 60.0, 50.0], [0.0, 10.0, 20.0, min(w, 300.0), min(h, 250.0)],
                         [0.0, 1.0, 1.0, 9.0, 7.0]])
    sizes = torch.tensor([[float(h), float(w)]])
    labels = torch.tensor([0, cfg.num_classes - 1, 0], dtype=torch.int64)
    box, mask = head_graphs(model)
    # (group, signature kind, file, module, trace inputs)
    specs: List[Tuple[str, str, str, nn.Module, tuple]] = [
        ("backbone", "backbone", GRAPH_FILES["backbone"], backbone, (image,))]
    roi_feats = pooled_channels_last(box.cascade, p2345, sem_feat, rois)
    specs += [("bbox_stages", "bbox_stage", stage_file(t), stage, (roi_feats, rois, sizes))
              for t, stage in enumerate(box.stages)]
    specs.append(("mask_heads", "mask_heads", GRAPH_FILES["mask_heads"],
                  KeepInput(mask, "mask" in set(model.roi_head.semantic_fusion)), (*p2345, sem_feat, rois, labels)))
    paths: Dict[str, Path] = {}
    for group, kind, file, module, args in specs:
        if group not in kinds:
            continue
        path = paths[file] = out / file
        # torch.onnx.export restores the wrapper's own training flag on the whole tree afterwards;
        # a fresh wrapper is in training mode and would leave the model's BatchNorm training.
        module.eval()
        _export(module, args, path, kind)
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
