"""``--from-bundle``: a bundle's head graphs exported again from the weights stored in its own
graphs, no checkpoint needed. This is how a bundle of the retired contract 1 (one
``bbox_heads.onnx`` that pooled RoIs itself, exported before issue 14) becomes a contract-2
bundle; it also re-exports a contract-2 bundle's heads after an exporter change."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Dict

import onnx
import torch
import yaml
from onnx import numpy_helper
from torch import Tensor

from ..config import Config
from ..mmdet_checkpoint import compare_state
from ..model.detector import HTC
from .box_stages import channels_first_columns
from .contract import GRAPH_FILES, V1_BOX_GRAPH
from .graphs import export_graphs, remove_box_graphs, trace_size
from .manifest import dump_yaml, graphs_section

BOX, MASK = "roi_head.bbox_head.", "roi_head.mask_head."


def _initializers(path: Path, prefix: str) -> Dict[str, Tensor]:
    graph = onnx.load(str(path)).graph
    found = {init.name[len(prefix):]: torch.from_numpy(numpy_helper.to_array(init).copy())
             for init in graph.initializer if init.name.startswith(prefix)}
    if not found:
        raise ValueError(f"{path}: no initializer named {prefix}*: not a graph written by htc.export")
    return found


def _mask_heads_state(path: Path) -> Dict[str, Tensor]:
    """The mask heads' weights from ``mask_heads.onnx``: the heads' own parameters
    (``inner.heads.*``) and the upsample and logits weights :class:`MaskHeadsGraph` stores
    rearranged (``inner.up_w{t}`` ...), put back. A contract-1 ``legacy`` graph ran the heads
    as they are and keeps every parameter under ``inner.heads.``."""
    wrapper = _initializers(path, "inner.")
    state = {MASK + k[len("heads."):]: v for k, v in wrapper.items() if k.startswith("heads.")}
    if not state:
        raise ValueError(f"{path}: no initializer named inner.heads.*: not a graph written by htc.export")
    for k, v in wrapper.items():
        kind = k.rstrip("0123456789")
        t = k[len(kind):]
        if kind not in ("up_w", "up_b", "cls_w", "cls_b") or not t:
            continue
        if kind == "up_w":  # [(a, b, out), in, 1, 1] -> [in, out, 2, 2]
            v = v.reshape(2, 2, v.shape[0] // 4, v.shape[1]).permute(3, 2, 0, 1).contiguous()
            state[f"{MASK}{t}.upsample.weight"] = v
        else:  # four copies, one per sub-pixel
            name = {"up_b": "upsample.bias", "cls_w": "conv_logits.weight", "cls_b": "conv_logits.bias"}[kind]
            state[f"{MASK}{t}.{name}"] = v[: v.shape[0] // 4].clone()
    return state


def heads_state_from_bundle(bundle: Path) -> Dict[str, Tensor]:
    """The box and mask heads' weights, read back from a bundle's head graphs: their
    initializers keep the parameter names (``head.*`` in each stage graph, whose first FC is
    stored channels last and is put back; ``inner.heads.*`` in contract 1's ``bbox_heads.onnx``)."""
    manifest = yaml.safe_load((bundle / "manifest.yaml").read_text(encoding="utf-8"))
    if manifest.get("quantization"):
        raise ValueError(f"{bundle} is quantised: its weights are not the float model's; read the float bundle "
                         "it was made from")
    graphs = manifest.get("graphs") or {}
    state = _mask_heads_state(bundle / graphs.get("mask_heads", GRAPH_FILES["mask_heads"]))
    if "bbox_stages" in graphs:
        roi = manifest["roi"]
        for t, file in enumerate(graphs["bbox_stages"]):
            for k, v in _initializers(bundle / file, "head.").items():
                if k == "shared_fcs.0.weight":
                    v = channels_first_columns(v, int(roi["channels"]), int(roi["size"]))
                state[f"{BOX}{t}.{k}"] = v
    else:  # contract 1
        for k, v in _initializers(bundle / graphs.get("bbox_heads", V1_BOX_GRAPH), "inner.heads.").items():
            state[BOX + k] = v
    return state


def rebuild_bundle_heads(src: Path, out: Path, cfg: Config) -> Dict[str, Path]:
    """A copy of bundle ``src`` (either contract) in ``out`` whose head graphs are exported
    again from the weights in ``src``'s own head graphs (``cfg``: the model config it was
    trained with). The backbone graph and fixture are copied as they are, the manifest with
    this contract's version, graphs and roi section: the heads compute the same function, so
    the fixture still checks the new graphs."""
    if src.resolve() == out.resolve():
        raise ValueError("--from-bundle: write the rebuilt bundle to another folder")
    model = HTC(cfg.model, size_divisor=cfg.data.size_divisor).eval()
    state = heads_state_from_bundle(src)
    own = model.state_dict()
    heads = {k: v for k, v in own.items() if k.startswith((BOX, MASK))}
    extra, missing, misshapen = compare_state(heads, state)
    if missing or extra:
        raise ValueError(f"{src}: its head graphs do not fit the config's model "
                         f"(missing {missing[:3]}, unexpected {extra[:3]}); pass the config it was trained with "
                         "(a tensor equal to another, such as an untrained zero bias, is stored once under "
                         "the other's name and cannot be told apart)")
    if misshapen:
        k = misshapen[0]
        raise ValueError(f"{src}: {k} is {tuple(state[k].shape)} in the graph, {tuple(own[k].shape)} in the config's model")
    model.load_state_dict(state, strict=False)
    out.mkdir(parents=True, exist_ok=True)
    manifest = yaml.safe_load((src / "manifest.yaml").read_text(encoding="utf-8"))
    for key in ("contract", "graphs", "roi"):
        manifest.pop(key, None)
    head = graphs_section(cfg)
    manifest = {"contract": head.pop("contract"), **manifest, **head}
    (out / "manifest.yaml").write_text(dump_yaml(manifest), encoding="utf-8")
    shutil.copyfile(src / GRAPH_FILES["backbone"], out / GRAPH_FILES["backbone"])
    shutil.rmtree(out / "fixture", ignore_errors=True)
    if (src / "fixture").is_dir():
        shutil.copytree(src / "fixture", out / "fixture")
    remove_box_graphs(out)
    return export_graphs(model, out, trace_size(cfg), kinds=("bbox_stages", "mask_heads"))
