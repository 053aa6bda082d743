"""INT8 post-export pass: a bundle's graphs in ONNX QDQ form (issue 14 item 3).

    python3 -m htc.quantize --bundle IN --out OUT --calib-images DIR [--num-images 16]
        [--graphs backbone,bbox_stages,mask_heads]

Works on the bundle's ONNX graphs alone (no checkpoint needed): the graph groups are
``backbone``, ``bbox_stages`` (one graph per box stage) and ``mask_heads``. Static
quantisation:

- every Conv (and Gemm, with ``transA`` 0, ``alpha`` = ``beta`` = 1) whose weight is an
  initializer gets its weight stored as int8 (symmetric; per output channel for Conv, per
  tensor for Gemm) behind a DequantizeLinear, its bias as int32 (scale = input scale x
  weight scale) behind a DequantizeLinear;
- its activation input, and a Conv's output, pass through QuantizeLinear -> DequantizeLinear
  (uint8, asymmetric, one scale per tensor, from the min/max seen on the calibration
  images); a Relu that is a Conv's (or Gemm's) only consumer is dropped into the output's
  quantisation (zero point 0 clamps at 0 as the Relu did);
- a Gemm's output stays float unless a Relu follows it (ONNX Runtime's QGemm can output
  float), so class logits and box deltas are not rounded.

ONNX Runtime's QDQ optimiser (graph optimisation level "all", as ``infer`` sets it) fuses
DQ -> Conv -> Q into QLinearConv and DQ -> Gemm [-> Q] into QGemm: integer kernels (VNNI on
this machine). Other ops (RoiAlign, Resize, Add, ...) stay float between a DQ and a Q.

Calibration needs the float graphs' activations. There is no ONNX Runtime for Python here
(and this ``onnx`` has no reference evaluator), so the graphs run through ONNX Runtime in
a small Go helper (``internal/ortrun``, built on first use), with the tensors to calibrate
added as graph outputs (which ortrun returns as their min and max only, so a real-size
backbone's ~150 activations are not written out). Each calibration image is resized as Go
does (``prepare_view``),
the backbone runs on it, proposals are decoded from its RPN outputs (the manifest's
anchors and NMS settings), the box heads run on the proposals, and the mask heads on the
best-scoring last-stage boxes. The box stages run as Go runs them: each stage graph's ``roi_feats`` are pooled here from the float backbone outputs as the
manifest's ``roi`` section says (:func:`pool_roi_feats`: torchvision's aligned RoIAlign,
channels last), and stage t + 1 pools stage t's boxes; each stage graph is calibrated on
its own inputs.

The written bundle is the input bundle with the quantised graphs and a ``quantization``
section in its manifest (docs/model-bundle.md); the fixture is not copied (it is PyTorch's
float reference, which an INT8 bundle does not match to the parity test's tolerances).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

GRAPHS = ("backbone", "bbox_stages", "mask_heads")  # the graph groups of a bundle
SCHEME = "qdq-u8s8"  # uint8 activations, int8 weights, ONNX QDQ
REPO = Path(__file__).resolve().parents[2]


def graph_files(manifest: dict, group: str) -> List[str]:
    """The files of a graph group (one, or the stage graphs in stage order)."""
    f = manifest["graphs"][group]
    return list(f) if isinstance(f, list) else [f]


# ---------------------------------------------------------------------------- the ONNX Runtime helper

class Runner:
    """Runs ONNX graphs through ONNX Runtime with ``internal/ortrun``."""

    def __init__(self, binary: Optional[str] = None, threads: int = 2) -> None:
        self.binary = binary or find_ortrun()
        self.threads = threads

    def run(self, model: Path, feeds: Sequence[Dict[str, np.ndarray]],
            minmax: Iterable[str] = ()) -> Iterator[Dict[str, np.ndarray]]:
        """Run ``model`` once per feed; yields each run's outputs by name (read lazily, one
        run at a time). The float outputs named in ``minmax`` come back as ``[min, max]``
        (empty for an empty tensor), which is all :class:`Ranges` takes of them: the
        calibration outputs of a real-size backbone are gigabytes a run."""
        with tempfile.TemporaryDirectory(prefix="ortrun") as tmp:
            runs = []
            for i, feed in enumerate(feeds):
                inputs = []
                for name, arr in feed.items():
                    arr = np.ascontiguousarray(arr)
                    dtype = {np.dtype(np.float32): "float32", np.dtype(np.int64): "int64"}[arr.dtype]
                    f = Path(tmp) / f"in{i}_{len(inputs)}.bin"
                    arr.tofile(f)
                    inputs.append({"name": name, "dtype": dtype, "shape": list(arr.shape), "file": str(f)})
                runs.append({"inputs": inputs, "out_dir": str(Path(tmp) / f"out{i}")})
            req = Path(tmp) / "request.json"
            req.write_text(json.dumps({"model": str(model), "threads": self.threads, "runs": runs,
                                       "minmax": sorted(set(minmax))}))
            proc = subprocess.run([self.binary, str(req)], capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"ortrun failed on {model}: {proc.stderr.strip()}")
            for r in runs:
                out = Path(r["out_dir"])
                meta = json.loads((out / "outputs.json").read_text())
                res = {}
                for t in meta:
                    res[t["name"]] = np.fromfile(out / t["file"], dtype=t["dtype"]).reshape(t["shape"])
                yield res
                shutil.rmtree(out)


def find_ortrun() -> str:
    """$HTCSTREAM_ORTRUN, else build/ortrun (built from internal/ortrun when missing or older
    than its source)."""
    env = os.environ.get("HTCSTREAM_ORTRUN")
    if env:
        return env
    out = REPO / "build" / "ortrun"
    src = REPO / "internal" / "ortrun" / "main.go"
    if out.exists() and (not src.exists() or out.stat().st_mtime >= src.stat().st_mtime):
        return str(out)
    go = shutil.which("go") or "/usr/local/go/bin/go"
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([go, "build", "-o", str(out), "./internal/ortrun"], cwd=REPO,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"building internal/ortrun failed (set HTCSTREAM_ORTRUN to a built one): "
                           f"{proc.stderr.strip()}")
    return str(out)


# ---------------------------------------------------------------------------- the plan: what to quantise

class Plan:
    """The nodes to quantise in one graph and the activation tensors they need ranges for."""

    def __init__(self, model: onnx.ModelProto, ops: Sequence[str] = ("Conv", "Gemm")) -> None:
        g = model.graph
        # constant tensors: initializers, and what Identity (the exporter's way to share equal
        # initializers) and Constant nodes make of them
        self.inits = {i.name: i for i in g.initializer}
        for n in g.node:
            if n.op_type == "Identity" and n.input[0] in self.inits:
                self.inits[n.output[0]] = self.inits[n.input[0]]
            elif n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.inits[n.output[0]] = n.attribute[0].t
        self.consumers: Dict[str, List[onnx.NodeProto]] = defaultdict(list)
        for n in g.node:
            for x in n.input:
                self.consumers[x].append(n)
        self.outputs = {o.name for o in g.output}
        self.nodes: List[onnx.NodeProto] = []
        self.relu_of: Dict[str, onnx.NodeProto] = {}   # quantised node's output -> absorbed Relu
        self.quantise_output: Set[str] = set()           # node outputs given a Q
        for n in g.node:
            if n.op_type not in ops or not self._weights_constant(n):
                continue
            if n.op_type == "Gemm":
                a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
                if a.get("transA", 0) != 0 or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
                    continue
            self.nodes.append(n)
            y = n.output[0]
            cons = self.consumers.get(y, [])
            if len(cons) == 1 and cons[0].op_type == "Relu" and y not in self.outputs:
                self.relu_of[y] = cons[0]
                self.quantise_output.add(y)
            elif n.op_type == "Conv":
                self.quantise_output.add(y)

    def _weights_constant(self, n: onnx.NodeProto) -> bool:
        return (len(n.input) > 1 and n.input[1] in self.inits
                and (len(n.input) < 3 or n.input[2] == "" or n.input[2] in self.inits))

    def value_name(self, out: str) -> str:
        """The tensor whose range a quantised output ``out`` takes: the absorbed Relu's output."""
        r = self.relu_of.get(out)
        return r.output[0] if r is not None else out

    def tensors(self) -> List[str]:
        """Every activation tensor a range is needed for, in graph order."""
        names: List[str] = []
        seen: Set[str] = set()
        for n in self.nodes:
            for t in (n.input[0], *(self.value_name(y) for y in n.output[:1] if y in self.quantise_output)):
                if t not in seen:
                    seen.add(t)
                    names.append(t)
        return names


def with_outputs(model: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs ``names`` (float tensors)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output} | {i.name for i in m.graph.input}
    for t in names:
        if t not in have:
            m.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
    return m


# ---------------------------------------------------------------------------- calibration

class Ranges:
    """Running min/max per tensor."""

    def __init__(self) -> None:
        self.lo: Dict[str, float] = {}
        self.hi: Dict[str, float] = {}

    def update(self, outputs: Dict[str, np.ndarray], names: Iterable[str]) -> None:
        for t in names:
            a = outputs.get(t)
            if a is None or a.size == 0:
                continue
            lo, hi = float(a.min()), float(a.max())
            self.lo[t] = min(self.lo.get(t, lo), lo)
            self.hi[t] = max(self.hi.get(t, hi), hi)

    def get(self, t: str) -> Tuple[float, float]:
        if t not in self.lo:
            raise KeyError(f"no calibration range for tensor {t!r} (never computed on the calibration images)")
        return self.lo[t], self.hi[t]


def load_images(folder: Path, n: int) -> List[np.ndarray]:
    from PIL import Image

    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise ValueError(f"--calib-images {folder}: no .png/.jpg images")
    if len(files) > n:  # spread over the folder, deterministic
        files = [files[round(i * (len(files) - 1) / (n - 1))] for i in range(n)] if n > 1 else files[:1]
    out = []
    for f in files:
        with Image.open(f) as im:
            out.append(np.asarray(im.convert("RGB")))
    return out


def network_inputs(images: Sequence[np.ndarray], manifest: dict):
    """Each image as the backbone's input at the manifest's first test scale (Go's resize)."""
    import torch

    from .model.tta import View, prepare_view

    inp = manifest["input"]
    scale = tuple(inp["test_scales"][0])
    out = []
    for img in images:
        v = prepare_view(torch.from_numpy(np.array(img)), View(scale=scale), mean=inp["mean"],
                         std=inp["std"], size_divisor=inp["size_divisor"])
        out.append((v.image[None].numpy().astype(np.float32), (v.height, v.width)))
    return out


def proposals(outs: Dict[str, np.ndarray], size: Tuple[int, int], manifest: dict) -> np.ndarray:
    """The RPN proposals of one image, [R, 5] (0, x1, y1, x2, y2), as Go's step 1."""
    import torch

    from .model.rpn import AnchorGenerator, select_proposals

    anc, rpn = manifest["anchors"], manifest["rpn"]
    gen = AnchorGenerator(strides=anc["strides"], scales=anc["scales"], ratios=anc["ratios"])
    levels = range(2, 2 + len(anc["strides"]))
    cls = [torch.from_numpy(outs[f"rpn_cls_{i}"]) for i in levels]
    reg = [torch.from_numpy(outs[f"rpn_reg_{i}"]) for i in levels]
    anchors = gen.grid([tuple(c.shape[-2:]) for c in cls])
    b = select_proposals(cls, reg, anchors, [size], pre_nms=rpn["nms_pre"], max_num=rpn["max_proposals"],
                         nms_iou=rpn["nms_iou"], min_size=rpn.get("min_box_size", 0))[0][:, :4].numpy()
    return np.concatenate([np.zeros((len(b), 1), np.float32), b], axis=1).astype(np.float32)


def mask_rois(outs: Dict[str, np.ndarray], max_dets: int = 100, min_score: float = 0.05) -> Tuple[np.ndarray, np.ndarray]:
    """Detections for the mask heads: the last stage's boxes of the proposals whose mean-logit
    softmax gives a thing class more than ``min_score`` (at most ``max_dets``, at least 8)."""
    logits = outs["stage_logits"].mean(axis=1)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    fg = p[:, :-1]
    labels = fg.argmax(axis=1)
    score = fg.max(axis=1)
    order = np.argsort(-score)
    n = int(min(max_dets, max(8, (score > min_score).sum()), len(order)))
    keep = order[:n]
    boxes = outs["stage_boxes"][keep, -1]
    rois = np.concatenate([np.zeros((n, 1), np.float32), boxes], axis=1).astype(np.float32)
    return rois, labels[keep].astype(np.int64)


FEATS = ("p2", "p3", "p4", "p5", "semantic_feat")
OUTPUTS_PER_RUN = 48  # calibration-only outputs of one backbone run (see calibrate)


def pool_roi_feats(feats: Dict[str, np.ndarray], rois: np.ndarray, roi: dict) -> np.ndarray:
    """A box stage's ``roi_feats`` [R, S*S*F] as the manifest's ``roi`` section says
    (docs/model-bundle.md, ``cascade.RoIAlign``): each RoI pooled on its own level
    (floor(log2(sqrt(w h) / finest_scale + 1e-6)), clamped; level i is p{2+i}) with
    torchvision's RoIAlign (aligned, avg, ``sampling_ratio``), plus ``semantic_feat`` pooled
    ``semantic_size`` square and averaged down to S x S when ``semantic_size`` > 0; channels
    last, bin-major."""
    import torch
    import torch.nn.functional as F
    from torchvision.ops import roi_align

    from .model.roi_head import RoIExtractor

    size, ratio, strides = int(roi["size"]), int(roi["sampling_ratio"]), roi["strides"]
    r = torch.from_numpy(np.ascontiguousarray(rois, np.float32))
    ext = RoIExtractor(out_size=size, finest_scale=float(roi["finest_scale"]), strides=strides, sampling_ratio=ratio)
    with torch.no_grad():
        out = ext([torch.from_numpy(feats[f"p{2 + i}"]) for i in range(len(strides))], r, dense=False)
        sem_size = int(roi.get("semantic_size", 0))
        if sem_size > 0:
            sem = roi_align(torch.from_numpy(feats["semantic_feat"]), r, (sem_size, sem_size),
                            1.0 / roi["semantic_stride"], ratio, True)
            k = sem_size // size
            out += F.avg_pool2d(sem, k, k) if k > 1 else sem
    return np.ascontiguousarray(out.permute(0, 2, 3, 1).reshape(r.shape[0], -1).numpy())


def _stage_rois(rois: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([rois[:, :1], boxes], axis=1).astype(np.float32)


def calibrate(bundle: Path, manifest: dict, images: Sequence[np.ndarray], runner: Runner,
              graphs: Sequence[str], work: Path) -> Dict[str, Ranges]:
    """Ranges of every tensor the plans of ``graphs`` (graph groups) need, from the float
    graphs on ``images``; by graph file."""
    files = {k: graph_files(manifest, k) for k in GRAPHS}
    ranges = {f: Ranges() for k in GRAPHS for f in files[k]}
    models = {}
    reduced: Dict[str, List[str]] = defaultdict(list)  # outputs added only for their range
    more_runs: Dict[str, List[Tuple[Path, List[str]]]] = defaultdict(list)
    for k in GRAPHS:
        for f in files[k]:
            if k not in graphs:
                models[f] = (bundle / f, [])
                continue
            m = onnx.load(str(bundle / f))
            names = Plan(m).tensors()
            own = {o.name for o in m.graph.output}
            reduced[f] = [t for t in names if t not in own]
            # ONNX Runtime holds every output of a run at once: a real-size backbone's
            # ~150 activations at 1333x800 took 5 GB in ortrun, so they are spread over
            # runs (interleaved, as the early layers' are the large ones)
            n = max(1, -(-len(reduced[f]) // OUTPUTS_PER_RUN)) if k == "backbone" else 1
            parts = [reduced[f][i::n] for i in range(n)]
            reduced[f] = parts[0]
            for i, part in enumerate(parts):
                p = work / f"calib_{Path(f).stem}_{i}.onnx"
                onnx.save(with_outputs(m, part), str(p))
                if i == 0:
                    models[f] = (p, names)
                else:
                    more_runs[f].append((p, part))
            del m
    inputs = network_inputs(images, manifest)
    box_feeds, heads_feats = [], []
    path, names = models[files["backbone"][0]]
    for (x, size), outs in zip(inputs, runner.run(path, [{"image": x} for x, _ in inputs],
                                                   minmax=reduced[files["backbone"][0]])):
        ranges[files["backbone"][0]].update(dict(outs, image=x), names)
        feats = {f: outs[f] for f in FEATS}
        heads_feats.append(feats)
        box_feeds.append(dict(feats, rois=proposals(outs, size, manifest),
                              image_sizes=np.array([size], np.float32)))
    for p, part in more_runs[files["backbone"][0]]:
        for outs in runner.run(p, [{"image": x} for x, _ in inputs], minmax=part):
            ranges[files["backbone"][0]].update(outs, part)
    if "bbox_stages" not in graphs and "mask_heads" not in graphs:
        return ranges
    # the stage loop as Go runs it: pool, stage t, pool its boxes, ...
    rois = [feed["rois"] for feed in box_feeds]
    logits: List[List[np.ndarray]] = [[] for _ in box_feeds]
    boxes: List[List[np.ndarray]] = [[] for _ in box_feeds]
    for f in files["bbox_stages"]:
        path, names = models[f]

        def feeds(f=f, names=names, rois=rois):
            # made one at a time as the runner writes them (the pooled features of all
            # images need not be held at once); the graph inputs' ranges taken here
            for feed, r in zip(box_feeds, rois):
                fd = {"roi_feats": pool_roi_feats(feed, r, manifest["roi"]), "rois": r,
                      "image_sizes": feed["image_sizes"]}
                ranges[f].update(fd, names)
                yield fd

        nxt = []
        for i, outs in enumerate(runner.run(path, feeds(), minmax=reduced[f])):
            ranges[f].update(outs, names)
            logits[i].append(outs["logits"])
            boxes[i].append(outs["boxes"])
            nxt.append(_stage_rois(rois[i], outs["boxes"]))
        rois = nxt
    box_outs = [{"stage_logits": np.stack(lg, axis=1), "stage_boxes": np.stack(bx, axis=1)}
                for lg, bx in zip(logits, boxes)]
    if "mask_heads" in graphs:
        mask_feeds = []
        for feats, outs in zip(heads_feats, box_outs):
            rois_m, labels = mask_rois(outs)
            mask_feeds.append(dict(feats, rois=rois_m, labels=labels))
        path, names = models[files["mask_heads"][0]]
        for feed, outs in zip(mask_feeds, runner.run(path, mask_feeds, minmax=reduced[files["mask_heads"][0]])):
            ranges[files["mask_heads"][0]].update(dict(feed, **outs), names)
    return ranges


# ---------------------------------------------------------------------------- the graph pass

def activation_qparams(lo: float, hi: float) -> Tuple[float, int]:
    """uint8 asymmetric scale and zero point for [lo, hi] (0 always representable)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi - lo < 1e-12:
        return 1.0, 0
    scale = (hi - lo) / 255.0
    zp = int(round(-lo / scale))
    return float(np.float32(scale)), int(min(max(zp, 0), 255))


def weight_qparams(w: np.ndarray, per_channel: bool) -> Tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights and their scales (per output channel = axis 0, or one)."""
    if per_channel:
        m = np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
    else:
        m = np.array([np.abs(w).max()])
    scale = np.where(m > 0, m / 127.0, 1.0).astype(np.float32)
    s = scale.reshape((-1,) + (1,) * (w.ndim - 1)) if per_channel else scale[0]
    q = np.clip(np.round(w / s), -127, 127).astype(np.int8)
    return q, (scale if per_channel else scale.reshape(()))


def quantize_model(model: onnx.ModelProto, ranges: Ranges, *, conv_per_channel: bool = True,
                   gemm_per_channel: bool = False) -> Tuple[onnx.ModelProto, Dict[str, int]]:
    """``model`` in QDQ form (see the module doc). Returns it and counts of what was done."""
    plan = Plan(model)
    g = model.graph
    absorbed = {id(r) for r in plan.relu_of.values()}
    graph_inputs = {i.name for i in g.input}
    new_inits: List[onnx.TensorProto] = []
    qp: Dict[str, Tuple[str, str]] = {}  # activation tensor -> (scale, zero point) initializer names
    act_scale: Dict[str, float] = {}
    counter = defaultdict(int)

    def uniq(base: str) -> str:
        counter[base] += 1
        return f"{base}__{counter[base]}"

    # activation tensors: the name consumers read (after Relu removal) -> the name the Q reads
    act: Dict[str, str] = {}
    for n in plan.nodes:
        act.setdefault(n.input[0], n.input[0])
        y = n.output[0]
        if y in plan.quantise_output:
            act[plan.value_name(y)] = y
    for t in act:
        s, z = activation_qparams(*ranges.get(t))
        sn, zn = f"{t}__scale", f"{t}__zp"
        new_inits += [numpy_helper.from_array(np.array(s, np.float32), sn),
                      numpy_helper.from_array(np.array(z, np.uint8), zn)]
        qp[t] = (sn, zn)
        act_scale[t] = s

    # sources: a Q (and a DQ per consumer) follows the node that produces the Q's input
    renamed: Dict[str, str] = {}      # a graph output produced by a node -> the float name it gets
    for t, src in act.items():
        if src == t and t in plan.outputs and t not in graph_inputs:
            renamed[t] = f"{t}__f"
    produced_by: Dict[str, List[str]] = defaultdict(list)  # producer output name -> tensors quantised from it
    for t, src in act.items():
        produced_by[src].append(t)

    quant_nodes = {id(n) for n in plan.nodes}
    wq_cache: Dict[Tuple[str, bool], Tuple[str, np.ndarray]] = {}
    out_nodes: List[onnx.NodeProto] = []
    dq_of_consumer: Dict[Tuple[int, str], str] = {}
    stats = {"quantized_conv": 0, "quantized_gemm": 0, "relu_absorbed": len(absorbed), "activations": len(act)}

    def emit_qdq(t: str) -> List[onnx.NodeProto]:
        src = renamed.get(act[t], act[t])
        sn, zn = qp[t]
        qn = f"{t}__q"
        nodes = [helper.make_node("QuantizeLinear", [src, sn, zn], [qn], name=uniq(f"{t}/Q"))]
        readers = [c for c in plan.consumers.get(t, []) if id(c) not in absorbed]
        for c in readers:
            d = uniq(f"{t}/DQ")
            dq_of_consumer[(id(c), t)] = d
            nodes.append(helper.make_node("DequantizeLinear", [qn, sn, zn], [d], name=d))
        if t in plan.outputs:
            nodes.append(helper.make_node("DequantizeLinear", [qn, sn, zn], [t], name=uniq(f"{t}/DQout")))
        return nodes

    def weight_dq(node: onnx.NodeProto, x: str, per_channel: bool) -> List[onnx.NodeProto]:
        wname = node.input[1]
        key = (wname, per_channel)
        if key not in wq_cache:
            w = numpy_helper.to_array(plan.inits[wname]).astype(np.float32)
            q, scale = weight_qparams(w, per_channel)
            qname, sname, zname = f"{wname}__i8", f"{wname}__wscale", f"{wname}__wzp"
            new_inits.extend([numpy_helper.from_array(q, qname), numpy_helper.from_array(scale, sname),
                              numpy_helper.from_array(np.zeros(scale.shape, np.int8), zname)])
            wq_cache[key] = (qname, scale)
        qname, scale = wq_cache[key]
        attrs = {"axis": 0} if per_channel else {}
        d = uniq(f"{wname}/DQ")
        nodes = [helper.make_node("DequantizeLinear", [qname, f"{wname}__wscale", f"{wname}__wzp"], [d],
                                  name=d, **attrs)]
        node.input[1] = d
        if len(node.input) > 2 and node.input[2]:
            bname = node.input[2]
            b = numpy_helper.to_array(plan.inits[bname]).astype(np.float64)
            bs = (act_scale[x] * scale.astype(np.float64)).reshape(-1)
            if bs.size == 1:
                bs = np.full(b.shape, bs[0])
            bq = np.clip(np.round(b / bs), -2**31, 2**31 - 1).astype(np.int32)
            base = uniq(f"{bname}__i32")
            bsn, bzn = f"{base}__scale", f"{base}__zp"
            new_inits.extend([numpy_helper.from_array(bq, base),
                              numpy_helper.from_array(bs.astype(np.float32), bsn),
                              numpy_helper.from_array(np.zeros(b.shape, np.int32), bzn)])
            bd = uniq(f"{bname}/DQ")
            nodes.append(helper.make_node("DequantizeLinear", [base, bsn, bzn], [bd], name=bd, axis=0))
            node.input[2] = bd
        return nodes

    # graph inputs that are quantised: their Q/DQ go first
    for t in act:
        if act[t] in graph_inputs:
            out_nodes.extend(emit_qdq(t))
    for n in g.node:
        if id(n) in absorbed:
            continue
        node = onnx.NodeProto()
        node.CopyFrom(n)
        for i, x in enumerate(node.input):
            d = dq_of_consumer.get((id(n), x))
            if d is not None:
                node.input[i] = d
        pre: List[onnx.NodeProto] = []
        if id(n) in quant_nodes:
            per_channel = conv_per_channel if n.op_type == "Conv" else gemm_per_channel
            pre = weight_dq(node, n.input[0], per_channel)
            stats["quantized_conv" if n.op_type == "Conv" else "quantized_gemm"] += 1
        for i, y in enumerate(node.output):
            if y in renamed:
                node.output[i] = renamed[y]
        out_nodes.extend(pre)
        out_nodes.append(node)
        for y in n.output:
            for t in produced_by.get(y, []):
                out_nodes.extend(emit_qdq(t))

    # Identity/Constant nodes that only fed the float weights
    while True:
        read = {x for n in out_nodes for x in n.input} | plan.outputs
        dead = [n for n in out_nodes if n.op_type in ("Identity", "Constant") and not set(n.output) & read]
        if not dead:
            break
        out_nodes = [n for n in out_nodes if n not in dead]
    del g.node[:]
    g.node.extend(out_nodes)
    g.initializer.extend(new_inits)
    # the float weights no longer used
    used = {x for n in g.node for x in n.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    del g.value_info[:]
    deform = sum(n.op_type == "DeformConv" for n in g.node)
    if deform:
        stats["float_deformconv"] = deform  # no integer DeformConv in ONNX: read through DQs, float
        # an opset-19 graph (htc.dcn.raise_opset), which python3-onnx 1.12's checker does not
        # know: checked at 17 with DeformConv set aside, as the exporter checks it
        from .dcn import check_lifted_model

        check_lifted_model(model)
    else:
        onnx.checker.check_model(model)
    return model, stats


# ---------------------------------------------------------------------------- the bundle

def quantize_bundle(bundle: Path, out: Path, calib_images: Path, *, num_images: int = 16,
                    graphs: Optional[Sequence[str]] = None, runner: Optional[Runner] = None,
                    log=print) -> Dict[str, Dict[str, int]]:
    """Write ``bundle``'s INT8 form to ``out``. ``graphs``: the graph groups to quantise (default:
    all, :data:`GRAPHS`). Returns what was done per graph file (by its
    name without ``.onnx``: backbone, bbox_stage1 ..., mask_heads)."""
    bundle, out = Path(bundle), Path(out)
    if out.resolve() == bundle.resolve():
        raise ValueError("--out must be another folder than --bundle")
    manifest = yaml.safe_load((bundle / "manifest.yaml").read_text())
    if manifest.get("quantization"):
        raise ValueError(f"{bundle} is already quantised ({manifest['quantization']})")
    from .export import CONTRACT, dump_yaml

    if manifest.get("contract") != CONTRACT:
        raise ValueError(f"{bundle}/manifest.yaml: contract {manifest.get('contract')}, want {CONTRACT}; "
                         "re-export it first (python3 -m htc.export --from-bundle, or htcstream export --from-bundle)")
    groups = GRAPHS
    graphs = list(groups if graphs is None else graphs)
    for k in graphs:
        if k not in groups:
            raise ValueError(f"unknown graph {k!r} (want some of {', '.join(groups)})")
    runner = runner or Runner()
    images = load_images(calib_images, num_images)
    log(f"calibrating on {len(images)} images from {calib_images}")
    out.mkdir(parents=True, exist_ok=True)
    stats = {}
    with tempfile.TemporaryDirectory(prefix="htcq") as tmp:
        ranges = calibrate(bundle, manifest, images, runner, graphs, Path(tmp))
    for k in groups:
        for f in graph_files(manifest, k):
            src, dst = bundle / f, out / f
            if k in graphs:
                name = Path(f).stem
                m, stats[name] = quantize_model(onnx.load(str(src)), ranges[f])
                onnx.save(m, str(dst))
                log(f"{name}: {stats[name]}")
            else:
                shutil.copyfile(src, dst)
    manifest["quantization"] = {
        "scheme": SCHEME,
        "graphs": [k for k in groups if k in graphs],
        "calibration": f"min/max over {len(images)} images",
    }
    (out / "manifest.yaml").write_text(dump_yaml(manifest))
    return stats


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m htc.quantize", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True, help="float bundle to read")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--calib-images", required=True, help="folder of calibration images (.png/.jpg, searched recursively)")
    p.add_argument("--num-images", type=int, default=16, help="calibration images used, spread over the folder (default 16)")
    p.add_argument("--graphs", default=None,
                   help="graph groups to quantise, comma-separated: backbone, bbox_stages, mask_heads (default: all)")
    p.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads for calibration")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    graphs = None if args.graphs is None else [g for g in args.graphs.split(",") if g]
    try:
        quantize_bundle(Path(args.bundle), Path(args.out), Path(args.calib_images), num_images=args.num_images,
                        graphs=graphs, runner=Runner(threads=args.threads))
    except (ValueError, KeyError, RuntimeError, FileNotFoundError) as e:
        print(f"htc.quantize: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
