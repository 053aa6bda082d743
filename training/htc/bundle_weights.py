"""A bundle's weights read back from its ONNX graphs, as a weights-only checkpoint in htc.train's format.

    cd training && python3 -m htc.bundle_weights --bundle ../examples/models/htc_tiny_synthetic \\
        --config ../configs/model/htc_tiny.yaml --out ../examples/models/htc_tiny_synthetic.pth

writes ``{model, config, meta}`` (no optimiser, scheduler or RNG state) as
``htc.evaluate_model``, ``htc.export`` and ``htc.train --load-from`` read it,
then runs the bundle's reference fixture (``single`` plan) through the loaded
model and reports the largest differences (``--no-check`` skips that).

Where the weights come from:

* the box and mask heads: the head graphs' initializers keep the parameter
  names (:func:`htc.export.heads_state_from_bundle`), read back exactly;
* the backbone graph (ResNet, FPN, RPN head, semantic head): the exporter ran in
  eval mode with constant folding, which folds every BatchNorm into the
  convolution before it, and such a folded weight is stored under an anonymous
  name (``onnx::Conv_418``). Its Conv nodes are matched, in graph order, to the
  Conv2d modules in the order ``FeatureNet`` calls them (shapes, strides, pads,
  groups and any parameter name the graph kept are checked). A folded conv
  becomes the conv with the folded weight and its norm layer an identity plus a
  bias: weight 1, bias = the folded bias, running_mean 0 and running_var
  ``1 - eps`` rounded to float32, for which ``var + eps`` is exactly 1.0 in
  float32, so the norm adds the bias and scales by exactly 1. A norm the graph
  kept is read as it is: a BatchNormalization node's parameters, or the Mul +
  Add that ``FrozenBatchNorm2d`` exports as (its scale and shift become weight
  and bias over the same identity statistics).

The result computes the bundle's function, not the training run's exact
parameters: ``W * gamma / sqrt(var + eps)`` and ``beta - mean * gamma /
sqrt(var + eps)`` cannot be split back into conv weight and BatchNorm
statistics, so the checkpoint is for evaluation and export (or as the start of
a new run), not to resume training. Exported again (torch.onnx folds the identity
norms back), it gives the same graphs: ``htc.export --checkpoint`` of the default
bundle's checkpoint writes its manifest and every ``.onnx`` file byte for byte.

The bundle may be in any graph layout (contract 1's ``legacy``/``sorted``, contract
2's ``stages``); its manifest must be what the config exports in one of them. A
quantised bundle is refused (its weights are not the float model's).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
import torch
import yaml
from onnx import numpy_helper
from torch import Tensor, nn

from .builders import load_config_with_overrides
from .checkpoint_file import save_checkpoint
from .config import Config
from .evaluation import rle as rle_mod
from .export import (GRAPH_FILES, GRAPH_LAYOUTS, BackboneGraph, build_manifest, dump_yaml, heads_state_from_bundle,
                     load_rgb)
from .mmdet_checkpoint import compare_state
from .model import build_model
from .model.backbone import FrozenBatchNorm2d
from .model.detector import HTC
from .model.tta import View, predict_aug

NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)


# --------------------------------------------------------------------------- folded BatchNorm


def identity_var(eps: float) -> float:
    """A float32 running variance v with float32(v + eps) == 1.0 exactly (so 1/sqrt(v + eps) == 1)."""
    one = np.float32(1.0)
    v = np.float32(1.0 - eps)
    for _ in range(4):
        s = np.float32(v + np.float32(eps))
        if s == one:
            return float(v)
        v = np.nextafter(v, np.float32(0.0) if s > one else np.float32(2.0), dtype=np.float32)
    raise ValueError(f"no float32 running_var makes var + {eps} exactly 1")


def set_identity_norm(norm: nn.Module, bias: Tensor) -> None:
    """``norm`` (eval mode) becomes x + bias, exactly: weight 1, mean 0, var + eps == 1."""
    with torch.no_grad():
        norm.weight.fill_(1.0)
        norm.bias.copy_(bias)
        norm.running_mean.zero_()
        norm.running_var.fill_(identity_var(norm.eps))


# --------------------------------------------------------------------------- the backbone graph


def conv_calls(model: HTC, hw: Tuple[int, int] = (64, 64)) -> Tuple[List[str], Dict[str, str]]:
    """The Conv2d modules (model state names) in the order the backbone graph's module calls
    them (a shared module, such as the RPN head on every level, once per call), and
    conv -> the norm layer applied directly to its output."""
    graph = BackboneGraph(model).eval()
    names = {id(m): n for n, m in model.named_modules()}
    calls: List[str] = []
    last_out: Dict[int, Tuple[str, Tensor]] = {}  # the tensor kept alive, so its id is not reused
    follows: Dict[str, str] = {}

    def on_conv(mod, _inp, out):
        calls.append(names[id(mod)])
        last_out[id(out)] = (names[id(mod)], out)

    def on_norm(mod, inp, _out):
        conv = last_out.get(id(inp[0]))
        if conv is None or conv[1] is not inp[0]:
            raise ValueError(f"{names[id(mod)]} does not follow a convolution directly: cannot unfold")
        follows[conv[0]] = names[id(mod)]

    hooks = []
    for m in graph.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(on_conv))
        elif isinstance(m, NORMS):
            hooks.append(m.register_forward_hook(on_norm))
    try:
        with torch.no_grad():
            graph(torch.zeros(1, 3, *hw))
    finally:
        for h in hooks:
            h.remove()
    return calls, follows


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


HINT = "; pass the config the bundle was exported from"


def _constants(graph: onnx.GraphProto) -> Dict[str, np.ndarray]:
    """Every constant tensor by name: initializers, Constant nodes and Identity copies of them
    (the exporter stores equal tensors once and refers to the copy through Identity)."""
    const = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant" and n.output:
            for a in n.attribute:
                if a.name == "value":
                    const[n.output[0]] = numpy_helper.to_array(a.t)
        elif n.op_type == "Identity" and n.input[0] in const:
            const[n.output[0]] = const[n.input[0]]
    return const


def _channel_const(node: onnx.NodeProto, data: str, const: Dict[str, np.ndarray], channels: int) -> Optional[Tensor]:
    """The per-channel constant operand of a binary ``node`` whose other operand is ``data``."""
    others = [i for i in node.input if i != data]
    if len(node.input) != 2 or len(others) != 1 or others[0] not in const:
        return None
    arr = const[others[0]]
    if arr.size != channels or arr.ndim not in (1, 3, 4) or (arr.ndim > 1 and arr.shape[-2:] != (1, 1)):
        return None
    return torch.from_numpy(arr.reshape(channels).astype(np.float32).copy())


def _norm_from_graph(conv_node: onnx.NodeProto, consumers: Dict[str, List[onnx.NodeProto]],
                     const: Dict[str, np.ndarray], norm: nn.Module, channels: int,
                     where: str) -> Optional[Tuple[str, Dict[str, Tensor]]]:
    """The norm after a Conv node when the graph kept it: a BatchNormalization node (its
    parameters as they are) or the Mul + Add that FrozenBatchNorm2d exports as (scale and shift
    as weight and bias over identity statistics); None if it was folded into the Conv."""
    after = consumers.get(conv_node.output[0], [])
    if len(after) != 1:
        return None
    nxt = after[0]
    if nxt.op_type == "BatchNormalization":
        params = [const.get(i) for i in nxt.input[1:5]]
        if any(p is None for p in params):
            raise ValueError(f"{where}: its BatchNormalization's parameters are not constants")
        eps = float(_attr(nxt, "epsilon", 1e-5))
        if np.float32(eps) != np.float32(norm.eps):
            raise ValueError(f"{where}: BatchNormalization epsilon {eps}, the model's {norm.eps}")
        w, b, mean, var = (torch.from_numpy(p.astype(np.float32).copy()) for p in params)
        return "kept", {"weight": w, "bias": b, "running_mean": mean, "running_var": var}
    if nxt.op_type == "Mul":
        scale = _channel_const(nxt, conv_node.output[0], const, channels)
        add = consumers.get(nxt.output[0], [])
        if scale is None or len(add) != 1 or add[0].op_type != "Add":
            return None
        shift = _channel_const(add[0], nxt.output[0], const, channels)
        if shift is None:
            return None
        return "affine", {"weight": scale, "bias": shift, "running_mean": torch.zeros(channels),
                          "running_var": torch.full((channels,), identity_var(norm.eps))}
    return None


def backbone_state_from_bundle(bundle: Path, model: HTC) -> Tuple[Dict[str, Tensor], Dict[str, int]]:
    """The state of ``model``'s backbone, neck, RPN head and semantic head read from the
    bundle's backbone graph (BatchNorm unfolded as the module docstring says), and counts:
    convs, shared (calls of a conv already read), folded (norms folded into their conv),
    kept (norms the graph kept: BatchNormalization, or FrozenBatchNorm2d's Mul + Add) and
    named (convs whose weight name the graph kept, checked)."""
    path = bundle / GRAPH_FILES["backbone"]
    graph = onnx.load(str(path)).graph
    left = sorted({n.op_type for n in graph.node} & {"ConvTranspose", "Gemm", "MatMul"})
    if left:
        raise ValueError(f"{path}: has {', '.join(left)} nodes; only Conv weights are read back")
    const = _constants(graph)
    consumers: Dict[str, List[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    convs = [n for n in graph.node if n.op_type == "Conv"]
    calls, follows = conv_calls(model)
    if len(convs) != len(calls):
        raise ValueError(f"{path}: {len(convs)} Conv nodes, the config's model calls {len(calls)} convolutions{HINT}")
    modules = dict(model.named_modules())
    graph_names = {id(m): n for n, m in BackboneGraph(model).named_modules()}
    state: Dict[str, Tensor] = {}
    seen: Dict[str, Tuple[str, Optional[str]]] = {}
    counts = {"convs": 0, "shared": 0, "folded": 0, "kept": 0, "named": 0}
    for k, (node, name) in enumerate(zip(convs, calls)):
        conv = modules[name]
        where = f"{path}: Conv node {k} ({node.name or 'unnamed'}) as {name}"
        w_name = node.input[1]
        b_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if w_name not in const or (b_name is not None and b_name not in const):
            raise ValueError(f"{where}: its weight or bias is not a constant")
        if name in seen:  # a module called again (the RPN head per level) must reuse its tensors
            if seen[name] != (w_name, b_name):
                raise ValueError(f"{where}: uses {w_name}, {b_name}, its earlier call {seen[name]}")
            counts["shared"] += 1
            continue
        seen[name] = (w_name, b_name)
        counts["convs"] += 1
        weight = torch.from_numpy(const[w_name].copy())
        if tuple(weight.shape) != tuple(conv.weight.shape):
            raise ValueError(f"{where}: weight {tuple(weight.shape)}, the model's {tuple(conv.weight.shape)}{HINT}")
        want = {"strides": list(conv.stride), "pads": list(conv.padding) * 2, "group": conv.groups,
                "dilations": list(conv.dilation)}
        got = {"strides": list(_attr(node, "strides", [1, 1])), "pads": list(_attr(node, "pads", [0, 0, 0, 0])),
               "group": int(_attr(node, "group", 1)), "dilations": list(_attr(node, "dilations", [1, 1]))}
        if got != want:
            raise ValueError(f"{where}: attributes {got}, the module's {want}{HINT}")
        if not w_name.startswith("onnx::"):
            # the exporter kept a parameter name: it must be this module's
            if w_name != graph_names[id(conv)] + ".weight":
                raise ValueError(f"{where}: the graph names its weight {w_name}{HINT}")
            counts["named"] += 1
        bias = torch.from_numpy(const[b_name].copy()) if b_name else None
        if bias is not None and tuple(bias.shape) != (conv.out_channels,):
            raise ValueError(f"{where}: bias {tuple(bias.shape)}, want ({conv.out_channels},){HINT}")
        state[f"{name}.weight"] = weight
        norm_name = follows.get(name)
        kept = None
        if norm_name is not None:
            kept = _norm_from_graph(node, consumers, const, modules[norm_name], conv.out_channels, where)
        if norm_name is not None and kept is None:
            # folded: conv(x, W') + b'. The conv keeps W' (and no bias of its own), the norm adds b'.
            norm = modules[norm_name]
            set_identity_norm(norm, bias if bias is not None else torch.zeros(conv.out_channels))
            for key, value in norm.state_dict().items():
                state[f"{norm_name}.{key}"] = value.clone()
            if conv.bias is not None:
                state[f"{name}.bias"] = torch.zeros(conv.out_channels)
            counts["folded"] += 1
            continue
        if kept is not None:
            for key, value in kept[1].items():
                state[f"{norm_name}.{key}"] = value
            if isinstance(modules[norm_name], nn.BatchNorm2d):
                state[f"{norm_name}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
            counts["kept"] += 1
        if conv.bias is not None:
            state[f"{name}.bias"] = bias if bias is not None else torch.zeros(conv.out_channels)
        elif bias is not None and bool(bias.any()):
            raise ValueError(f"{where}: the graph adds a bias the model's conv cannot hold{HINT}")
    return state, counts


# --------------------------------------------------------------------------- the checkpoint


def check_manifest(bundle: Path, cfg: Config) -> Dict[str, Any]:
    """The bundle's manifest; it must be what ``cfg`` exports in one of the graph layouts
    (apart from the name), else the config is not the one the bundle came from. A quantised
    bundle's weights are not the model's: refused."""
    man = yaml.safe_load((bundle / "manifest.yaml").read_text(encoding="utf-8"))
    if man.get("quantization"):
        raise ValueError(f"{bundle} is quantised ({man['quantization']}): its weights are not the float model's; "
                         "read the float bundle it was made from")
    closest: Optional[Tuple[List[str], Dict[str, Any]]] = None  # the layout with the fewest differing keys
    for layout in GRAPH_LAYOUTS:
        want = yaml.safe_load(dump_yaml(build_manifest(cfg, name=man.get("name", ""), things=man.get("things", []),
                                                       stuff=man.get("stuff", []), layout=layout)))
        diff = sorted(k for k in set(want) | set(man) if want.get(k) != man.get(k))
        if not diff:
            return man
        if closest is None or len(diff) < len(closest[0]):
            closest = (diff, want)
    assert closest is not None
    diff, want = closest
    shown = "; ".join(f"{k}: bundle {man.get(k)!r}, config {want.get(k)!r}" for k in diff[:3])
    raise ValueError(f"{bundle}/manifest.yaml differs from what the config exports ({shown}){HINT}")


def model_from_bundle(bundle: Path, cfg: Config) -> Tuple[HTC, Dict[str, int]]:
    """``cfg``'s model (eval mode) holding the bundle's weights; every tensor is set."""
    model = build_model(cfg).eval()
    backbone, counts = backbone_state_from_bundle(bundle, model)
    heads = heads_state_from_bundle(bundle)
    state = {**backbone, **heads}
    own = model.state_dict()
    extra, missing, misshapen = compare_state(own, state)
    if missing or extra:
        raise ValueError(f"{bundle}: the graphs do not give the config's model (missing {missing[:3]}, "
                         f"unexpected {extra[:3]}){HINT}")
    if misshapen:
        k = misshapen[0]
        raise ValueError(f"{bundle}: {k} is {tuple(state[k].shape)} in the graph, {tuple(own[k].shape)} in the model{HINT}")
    model.load_state_dict(state, strict=False)  # num_batches_tracked keeps the fresh model's 0
    return model.eval(), counts


def checkpoint_from_bundle(bundle: Path, cfg: Config) -> Tuple[Dict[str, Any], Dict[str, int]]:
    """``{model, config, meta}`` in htc.train's format, and the backbone counts."""
    man = check_manifest(bundle, cfg)
    model, counts = model_from_bundle(bundle, cfg)
    meta = {
        "classes": [str(c) for c in man["things"]],
        "stuff_classes": [str(s) for s in man.get("stuff", [])],
        "source": f"bundle {man.get('name', bundle.name)}: weights read back from its ONNX graphs, "
                  "BatchNorm folded into the backbone convolutions (htc.bundle_weights)",
        "torch": torch.__version__,
    }
    if "semantic" in man:
        meta["semantic_names"] = list(man["semantic"]["classes"])
    return {"model": model.state_dict(), "config": cfg.to_dict(), "meta": meta}, counts


# --------------------------------------------------------------------------- the fixture


# The largest differences from the fixture accepted. Both sides run float32 and the folded
# convolutions round differently from conv + BatchNorm, so they differ by rounding, as ONNX
# Runtime does from the same fixture (cascade/parity_stages_test.go bounds Go at 10x this).
# Pixel quantities (proposals, rois, boxes) in px of a 320-px view; counts must be 0.
TOLERANCES = {
    "proposals": 1e-3, "rois": 1e-3, "stage_boxes": 1e-3, "mask_rois": 1e-3, "boxes": 1e-3,
    "stage_logits": 1e-3, "stage_masks": 1e-4, "scores": 1e-4, "stage_scores": 1e-4, "mask_labels": 0.0,
    "detections": 0.0, "labels": 0.0, "mask_pixels": 0.0,
}


def _read_tensor(fx: Path, spec: Dict[str, Any]) -> np.ndarray:
    dtype = "<i8" if spec["dtype"] == "int64" else "<f4"
    return np.fromfile(fx / spec["file"], dtype=dtype).reshape(spec["shape"])


def _maxdiff(a: Any, b: Any) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a - b).max()) if a.size else 0.0


@torch.no_grad()
def fixture_differences(model: HTC, cfg: Config, bundle: Path, plan: str = "single") -> Dict[str, float]:
    """``predict_aug`` on the fixture image with ``plan``'s views against the fixture: the largest
    absolute difference of the proposals, every view's graph inputs/outputs the fixture
    holds, the detections' boxes, scores and stage scores; ``detections`` (count difference),
    ``labels`` and ``mask_pixels`` (how many differ)."""
    fx = bundle / "fixture"
    doc = yaml.safe_load((fx / "fixture.yaml").read_text(encoding="utf-8"))
    entry = next((p for p in doc["plans"] if p["name"] == plan), None)
    if entry is None:
        raise ValueError(f"{fx}/fixture.yaml has no {plan!r} plan")
    views = [View(tuple(v["scale"]), bool(v["flip"])) for v in entry["views"]]
    ens = entry.get("ensemble")
    kw = {"ensemble": ens["mode"], "stage_weights": ens["weights"]} if ens else {}
    d = cfg.data
    res = predict_aug(model, load_rgb(fx / doc["image"]), views, mean=d.mean, std=d.std,
                      size_divisor=d.size_divisor, **kw)
    want = json.loads((fx / entry["detections"]).read_text(encoding="utf-8"))
    dets = want["detections"]
    out: Dict[str, float] = {"proposals": _maxdiff(want["proposals"], res["proposals"].numpy())}
    tensors_file = fx / "tensors.yaml"
    if tensors_file.is_file():
        tensors = yaml.safe_load(tensors_file.read_text(encoding="utf-8"))
        for spec, vo in zip(tensors.get(plan, {}).get("views", []), res["view_outputs"]):
            for key in ("rois", "stage_logits", "stage_boxes", "mask_rois", "mask_labels", "stage_masks"):
                if key in spec:
                    diff = _maxdiff(_read_tensor(fx, spec[key]), vo[key].numpy())
                    out[key] = max(out.get(key, 0.0), diff)
    out["detections"] = float(abs(len(dets) - len(res["boxes"])))
    if len(dets) == len(res["boxes"]):
        out["boxes"] = _maxdiff([x["box"] for x in dets], res["boxes"].numpy())
        out["scores"] = _maxdiff([x["score"] for x in dets], res["scores"].numpy())
        out["stage_scores"] = _maxdiff([x["stage_scores"] for x in dets], res["stage_scores"].numpy())
        out["labels"] = float(sum(int(x["label"]) != int(y) for x, y in zip(dets, res["labels"].tolist())))
        out["mask_pixels"] = float(sum(int((rle_mod.decode(x["mask"]) != m.numpy()).sum())
                                       for x, m in zip(dets, res["masks"])))
    return out


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m htc.bundle_weights", description=__doc__.split("\n")[0])
    p.add_argument("--bundle", required=True, help="a model bundle written by htc.export")
    p.add_argument("--config", required=True, help="the model config the bundle was exported from")
    p.add_argument("--set", dest="overrides", action="append", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override a config value")
    p.add_argument("--out", required=True, help="the .pth to write")
    p.add_argument("--no-check", action="store_true",
                   help="skip the comparison with the bundle's fixture (TOLERANCES; nothing is written if it fails)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.monotonic()
    try:
        bundle = Path(args.bundle)
        cfg = load_config_with_overrides(args.config, [s for g in args.overrides for s in g])
        ckpt, counts = checkpoint_from_bundle(bundle, cfg)
        line = (f"{counts['convs']} backbone convs ({counts['folded']} with BatchNorm unfolded, "
                f"{counts['kept']} with the norm kept in the graph, {counts['named']} checked by name, "
                f"{counts['shared']} shared calls)")
        if not args.no_check and (bundle / "fixture" / "fixture.yaml").is_file():
            model = build_model(cfg).eval()
            model.load_state_dict(ckpt["model"])
            diffs = fixture_differences(model, cfg, bundle)
            shown = ", ".join(f"{k} {v:.2g}" for k, v in diffs.items())
            bad = [k for k, v in diffs.items() if not v <= TOLERANCES[k]]
            if bad:
                raise ValueError(f"the recovered weights do not reproduce {bundle}/fixture ({shown}); nothing written")
            line += f"; fixture (single) largest differences: {shown}"
        out = Path(args.out)
        save_checkpoint(ckpt, out)
    except (OSError, ValueError) as e:
        print(f"htc.bundle_weights: {e}", file=sys.stderr)
        return 2
    print(f"htc.bundle_weights: {line}")
    print(f"htc.bundle_weights: wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
