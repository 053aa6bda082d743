"""``manifest.yaml`` (docs/model-bundle.md) from the model and data config exported."""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import yaml

from ..config import Config
from ..model.box_ops import MAX_LOG_RATIO
from ..model.roi_head import ROI_STRIDES, SEMANTIC_STRIDE
from .contract import CONTRACT, GRAPH_FILES, stage_file


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
    from ..data.cocostuff import COCOSTUFF_NAMES, cocostuff_stuff_mask

    mask = cocostuff_stuff_mask()
    stuff_channels = [c for c, is_stuff in enumerate(mask) if is_stuff]
    want = [COCOSTUFF_NAMES[c] for c in stuff_channels]
    if stuff and [str(s) for s in stuff] != want:
        raise ValueError(f"model.semantic_classes is cocostuff, whose {len(want)} stuff channels are "
                         f"{want[0]} ... {want[-1]}; got {len(stuff)} other stuff names")
    return {"layout": "cocostuff", "classes": list(COCOSTUFF_NAMES), "stuff": stuff_channels}


def graphs_section(cfg: Config) -> Dict[str, Any]:
    """The manifest's ``contract``, ``graphs`` and ``roi`` keys."""
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


def build_manifest(cfg: Config, *, name: str, things: Sequence[str], stuff: Sequence[str]) -> Dict[str, Any]:
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
    graphs = graphs_section(cfg)
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
