"""Read mmdetection's released HTC checkpoints into this module's model.

    cd training && python3 -m htc.mmdet_checkpoint --checkpoint htc_r50_fpn_1x_coco_20200317-7332cf16.pth \\
        --out ../work_dirs/htc_r50_coco.pth [--config CFG] [--set KEY=VALUE ...]

writes the checkpoint in htc.train's own format (model, config, meta), ready
for ``htc.train --load-from`` or ``htc.export``. ``htc.export`` and
``htc.evaluate_model`` also take an mmdetection checkpoint directly: they call
:func:`load` through ``load_checkpoint_config``.

What is read:

* the container: ``{state_dict, meta}`` as mmcv's ``save_checkpoint`` writes
  it (``optimizer`` ignored), or a bare state dict; a ``module.`` prefix
  (DataParallel) is dropped;
* the layout: mmdetection 2.x (``roi_head.bbox_head.*``, background last, 80
  mask logits) or the 2019 v1 one (``bbox_head.*`` at the top, background at
  index 0 of the classifier, 81 mask logits with background first, and a
  ``conv_res`` on the first mask head that v1 builds but never runs);
* the architecture, from the tensors' shapes: ResNet depth (blocks per
  stage), ResNeXt groups and width per group (the grouped 3x3 convs), FPN
  width, stage count, class count, FC and mask-head widths, semantic branch
  and its class count, mask information flow. ``--config`` (a YAML file) and
  ``--set`` override what was read, key by key.

Loading is strict: a tensor the model lacks, a tensor the checkpoint lacks or
a shape that differs is one error naming the tensor with its mmdetection
name. Deformable convolution (the DCN rows of the model zoo, mmcv's
``DeformConv2dPack``: ``layerN.M.conv2.conv_offset.{weight,bias}`` in 2.x,
``layerN.M.conv2_offset.*`` in v1) is read too: the stages that hold it and
its offset groups come from the tensors (``htc.dcn``); modulated DCN (v2,
``mdconv``) is refused naming its layer. What v1's coordinate conventions differ in (+1 box widths, unaligned
RoIAlign) is not reproduced: v1 weights run with the 2.x test procedure.
"""

from __future__ import annotations

import argparse
import pickle
import re
import sys
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from .builders import apply_overrides
from .checkpoint_file import save_checkpoint
from .config import Config, config_from_dict, merge_configs, read_config_file
from .data.cocostuff import COCO_THING_NAMES, COCOSTUFF_NAMES, NUM_COCOSTUFF_CHANNELS

V2, V1 = "mmdetection 2.x", "mmdetection v1"
_HEADS = ("bbox_head.", "mask_head.", "semantic_head.")
# mmdetection v1's name for a deformable bottleneck conv's offset conv; 2.x (mmcv's
# DeformConv2dPack) keeps it inside the conv as conv2.conv_offset.
_V1_OFFSET = re.compile(r"^(backbone\.layer\d+\.\d+\.)conv2_offset\.")
# offsets per kernel tap and offset group: (dy, dx) for DCN; DCNv2 adds a mask channel
_TAPS = 3 * 3
# (blocks per stage, bottleneck?) -> depth
_DEPTHS = {((2, 2, 2, 2), False): 18, ((3, 4, 6, 3), False): 34, ((3, 4, 6, 3), True): 50,
           ((3, 4, 23, 3), True): 101}


class CheckpointError(ValueError):
    """The file is not an HTC checkpoint this model can load; the message names what and where."""


# --------------------------------------------------------------------------- reading


def read_file(path: Path) -> Any:
    """torch.load with one clear line for a missing, truncated or foreign file."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        return torch.load(path, map_location="cpu")
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError,
            AttributeError, ModuleNotFoundError, IndexError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or another format?): "
                              f"{first}") from e


def is_mmdet(obj: Any) -> bool:
    """An mmcv container, or a bare state dict of an HTC model (htc.train writes ``model``)."""
    if not isinstance(obj, dict) or "model" in obj:
        return False
    if isinstance(obj.get("state_dict"), dict):
        return True
    return bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def state_dict_of(obj: Dict[str, Any], path: Path) -> Dict[str, torch.Tensor]:
    sd = obj["state_dict"] if isinstance(obj.get("state_dict"), dict) else obj
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: state_dict entry {bad[0]!r} is not a tensor")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def detect_layout(sd: Dict[str, torch.Tensor], path: Path) -> str:
    if any(k.startswith("roi_head.bbox_head.") for k in sd):
        return V2
    if any(k.startswith("bbox_head.") for k in sd):
        return V1
    prefixes = sorted({k.split(".")[0] for k in sd})
    raise CheckpointError(f"{path}: not an HTC checkpoint: no roi_head.bbox_head.* (mmdetection 2.x) or bbox_head.* "
                          f"(v1) tensors; top-level names: {', '.join(prefixes[:8]) or 'none'}")


# --------------------------------------------------------------------------- architecture


def _shape(sd: Dict[str, torch.Tensor], key: str, path: Path) -> Tuple[int, ...]:
    if key not in sd:
        raise CheckpointError(f"{path}: missing tensor {key}")
    return tuple(sd[key].shape)


def _count(sd: Dict[str, torch.Tensor], pattern: str) -> int:
    """How many consecutive indices N make ``pattern.format(N)`` a key."""
    n = 0
    while any(k.startswith(pattern.format(n)) for k in sd):
        n += 1
    return n


def infer_model(sd: Dict[str, torch.Tensor], path: Path) -> Dict[str, Any]:
    """The ``model`` section of a config, read off a 2.x-named state dict's shapes."""
    blocks = tuple(_count(sd, f"backbone.layer{i}.{{}}.") for i in range(1, 5))
    bottleneck = "backbone.layer1.0.conv3.weight" in sd
    depth = _DEPTHS.get((blocks, bottleneck))
    if depth is None:
        raise CheckpointError(f"{path}: backbone with {blocks} blocks per stage "
                              f"({'bottleneck' if bottleneck else 'basic'}) is not ResNet-18/34/50/101")
    width = _shape(sd, "backbone.conv1.weight", path)[0]
    inner, per_group = _shape(sd, "backbone.layer1.0.conv2.weight", path)[:2]
    groups = inner // per_group
    width_per_group = inner // groups * 64 // width if bottleneck else 64
    dcn_stages, deform_groups = [], 1
    for i in range(1, 5):
        key = f"backbone.layer{i}.0.conv2.conv_offset.weight"
        dcn_stages.append(key in sd)
        if key in sd:
            ch = _shape(sd, key, path)[0]
            if ch % (2 * _TAPS):
                kind = "modulated deformable convolution (DCNv2, mdconv)" if ch % (3 * _TAPS) == 0 else \
                    "a deformable convolution of unknown form"
                raise CheckpointError(f"{path}: {key} has {ch} offset channels: {kind}, which htcstream does not "
                                      f"support (DCN v1, {2 * _TAPS} channels per offset group, is)")
            deform_groups = ch // (2 * _TAPS)
    if any(dcn_stages) and not bottleneck:
        raise CheckpointError(f"{path}: deformable convolution in a ResNet without bottleneck blocks")
    neck = _shape(sd, "neck.lateral_convs.0.conv.weight", path)[0]
    anchors = _shape(sd, "rpn_head.rpn_cls.weight", path)[0]
    if anchors != 3:
        raise CheckpointError(f"{path}: rpn_head.rpn_cls has {anchors} anchors a location; the model's generator "
                              "makes 3 (scale 8, ratios 0.5/1/2): pass --config with model.rpn's anchors")
    stages = _count(sd, "roi_head.bbox_head.{}.")
    cls_rows, fc_dim = _shape(sd, "roi_head.bbox_head.0.fc_cls.weight", path)
    reg_rows = _shape(sd, "roi_head.bbox_head.0.fc_reg.weight", path)[0]
    if reg_rows != 4:
        raise CheckpointError(f"{path}: roi_head.bbox_head.0.fc_reg has {reg_rows} outputs; htcstream's cascade is "
                              "class-agnostic (4), as HTC's released configs are")
    fc_in = _shape(sd, "roi_head.bbox_head.0.shared_fcs.0.weight", path)[1]
    roi = int(round((fc_in / neck) ** 0.5))
    mask_channels = _shape(sd, "roi_head.mask_head.0.convs.0.conv.weight", path)[0]
    model: Dict[str, Any] = {
        "num_classes": cls_rows - 1,
        "mask_info_flow": "roi_head.mask_head.1.conv_res.conv.weight" in sd,
        "backbone": {"depth": depth, "width": width, "groups": groups, "width_per_group": width_per_group,
                     "frozen_stages": 1, "norm": "frozen",
                     "dcn": {"stages": dcn_stages, "deform_groups": deform_groups}},
        "neck": {"out_channels": neck},
        "roi": {
            "num_stages": stages,
            "fc_dim": fc_dim,
            "box_roi_size": roi,
            "mask_roi_size": 2 * roi,
            "mask_channels": mask_channels,
            "mask_num_convs": _count(sd, "roi_head.mask_head.0.convs.{}."),
        },
    }
    if stages != 3:
        # the config's per-stage lists default to three entries
        from .config import RoIConfig
        d = RoIConfig()
        if stages > 3:
            raise CheckpointError(f"{path}: {stages} cascade stages; pass --config with model.roi's per-stage lists")
        model["roi"].update({"stage_loss_weights": d.stage_loss_weights[:stages],
                             "iou_thresholds": d.iou_thresholds[:stages], "box_stds": d.box_stds[:stages]})
    if "roi_head.semantic_head.conv_logits.weight" in sd:
        sem = _shape(sd, "roi_head.semantic_head.conv_logits.weight", path)[0]
        model.update({
            "semantic": True,
            "semantic_num_convs": _count(sd, "roi_head.semantic_head.convs.{}."),
            # mmdetection's HTC configs weigh the semantic loss 0.2 (the paper: 1)
            "semantic_loss_weight": 0.2,
            "num_stuff_classes": sem - (cls_rows - 1),
        })
        if sem == NUM_COCOSTUFF_CHANNELS:
            model["semantic_classes"] = "cocostuff"
    else:
        model.update({"semantic": False, "semantic_fusion": [], "num_stuff_classes": 0})
    return model


# --------------------------------------------------------------------------- conversion


def to_v2_names(sd: Dict[str, torch.Tensor], layout: str) -> Dict[str, torch.Tensor]:
    """The state dict in mmdetection 2.x names and class order (background last, C mask logits)."""
    if layout == V2:
        return dict(sd)
    out: Dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k.startswith("mask_head.0.conv_res."):
            continue  # v1 builds conv_res on every mask head; the first one never runs
        k = _V1_OFFSET.sub(r"\1conv2.conv_offset.", k)
        out["roi_head." + k if k.startswith(_HEADS) else k] = v
    for t in range(_count(out, "roi_head.bbox_head.{}.")):
        for p in ("weight", "bias"):
            k = f"roi_head.bbox_head.{t}.fc_cls.{p}"
            if k in out:  # v1: background is row 0
                out[k] = torch.cat([out[k][1:], out[k][:1]], dim=0)
    for t in range(_count(out, "roi_head.mask_head.{}.")):
        for p in ("weight", "bias"):
            k = f"roi_head.mask_head.{t}.conv_logits.{p}"
            if k in out:  # v1: one logit map per class including background (channel 0)
                out[k] = out[k][1:]
    return out


def _mmdet_name(key: str, layout: str) -> str:
    if layout == V1 and key.startswith("roi_head."):
        return key[len("roi_head."):]
    if layout == V1:
        return key.replace(".conv2.conv_offset.", ".conv2_offset.")
    return key


def compare_state(own: Dict[str, torch.Tensor], sd: Dict[str, torch.Tensor]) -> Tuple[List[str], List[str], List[str]]:
    """The names ``sd`` has that ``own`` lacks and those it lacks (sorted), and those whose shapes
    differ (in the model's order, so the first named is the earliest layer).

    nn.BatchNorm2d's step counter is ignored: FrozenBatchNorm2d has none,
    and it carries no weight."""
    def counted(keys):
        return sorted(k for k in keys if not k.endswith("num_batches_tracked"))

    extra = [k for k in counted(sd) if k not in own]
    missing = [k for k in counted(own) if k not in sd]
    misshapen = [k for k, v in own.items() if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    return extra, missing, misshapen


def load_strict(model: torch.nn.Module, sd: Dict[str, torch.Tensor], layout: str, path: Path) -> None:
    """Every tensor of the model from ``sd``, none left over, shapes equal; else one error naming a tensor."""
    own = model.state_dict()
    extra, missing, misshapen = compare_state(own, sd)
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise CheckpointError(f"{path}: tensor {_mmdet_name(extra[0], layout)}{more} has no place in the model "
                              f"read from its shapes; an unsupported HTC variant? (--config to describe it)")
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"{path}: missing tensor {_mmdet_name(missing[0], layout)}{more}")
    if misshapen:
        k = misshapen[0]
        raise CheckpointError(f"{path}: tensor {_mmdet_name(k, layout)} has shape {list(sd[k].shape)}, "
                              f"the model expects {list(own[k].shape)}")
    model.load_state_dict(sd, strict=False)


def class_names(meta: Dict[str, Any], num_classes: int) -> List[str]:
    """``meta['CLASSES']``, else COCO's 80 names, else class_<i>."""
    names = meta.get("CLASSES") or meta.get("classes")
    if isinstance(names, str):
        names = [names]
    if names and len(names) == num_classes:
        return [str(n) for n in names]
    if num_classes == len(COCO_THING_NAMES):
        return list(COCO_THING_NAMES)
    return [f"class_{i}" for i in range(num_classes)]


def load(path: Path, config: Optional[str] = None, overrides: Sequence[str] = (),
         obj: Any = None) -> Tuple[Config, Dict[str, Any]]:
    """An mmdetection checkpoint as (config, htc.train-style checkpoint dict).

    The returned dict has ``model`` (this model's state dict, strictly
    checked), ``config`` and ``meta`` (classes, stuff_classes, source).
    ``obj`` is the already-loaded file, if the caller has it.
    """
    from .model import build_model  # keeps `import htc.mmdet_checkpoint` light for the CLI's --help

    path = Path(path)
    if obj is None:
        obj = read_file(path)
    if not is_mmdet(obj):
        raise CheckpointError(f"{path}: neither an mmdetection checkpoint ({{state_dict, meta}}) nor a state dict")
    raw_sd = state_dict_of(obj, path)
    layout = detect_layout(raw_sd, path)
    sd = to_v2_names(raw_sd, layout)
    raw: Dict[str, Any] = {"model": infer_model(sd, path), "data": {"dataset": "coco"}}
    if config is not None:
        user, _ = read_config_file(config)  # its _base_ chain merged in
        # the file may name the model's class count etc.; what it states wins
        raw = merge_configs(raw, user)
    raw = apply_overrides(raw, overrides)
    cfg = config_from_dict(raw, source=config or f"<architecture read from {path.name}>")
    model = build_model(cfg.model)
    load_strict(model, sd, layout, path)
    meta_in = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    things = class_names(meta_in or {}, cfg.model.num_classes)
    meta: Dict[str, Any] = {"classes": things, "source": f"{layout} checkpoint {path.name}"}
    if cfg.model.semantic and cfg.model.num_semantic_classes == NUM_COCOSTUFF_CHANNELS:
        meta["semantic_names"] = list(COCOSTUFF_NAMES)
    if meta_in.get("mmdet_version"):
        meta["mmdet_version"] = str(meta_in["mmdet_version"])
    return cfg, {"model": model.state_dict(), "config": cfg.to_dict(), "meta": meta}


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m htc.mmdet_checkpoint", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="an mmdetection HTC .pth (2.x or the 2019 v1 layout)")
    p.add_argument("--out", required=True, help="where to write the checkpoint in htc.train's format")
    p.add_argument("--config", help="YAML whose keys override what the weights' shapes say")
    p.add_argument("--set", dest="overrides", action="append", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set data.test_scale=[800,480]")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg, ckpt = load(Path(args.checkpoint), args.config, [s for g in args.overrides for s in g])
        out = Path(args.out)
        save_checkpoint(ckpt, out)
    except (OSError, ValueError) as e:
        print(f"htc.mmdet_checkpoint: {e}", file=sys.stderr)
        return 2
    b = cfg.model.backbone
    arch = f"ResNe{'X' if b.groups > 1 else 't'}-{b.depth}" + (f" {b.groups}x{b.width_per_group}d" if b.groups > 1 else "")
    print(f"htc.mmdet_checkpoint: {ckpt['meta']['source']}: {arch}, {cfg.model.roi.num_stages} stages, "
          f"{cfg.model.num_classes} classes, semantic {cfg.model.num_semantic_classes if cfg.model.semantic else 'off'}"
          f" -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
