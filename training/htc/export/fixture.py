"""The reference fixture (``fixture/``): an input image and, per TTA plan, the proposals,
detections and graph intermediates PyTorch produced (:mod:`htc.model.tta`), which Go's
parity test matches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np
import torch
from PIL import Image

from ..builders import data_root
from ..config import Config
from ..evaluation import rle as rle_mod
from ..model.detector import HTC
from ..model.tta import View, predict_aug
from .manifest import dump_yaml, long_short


def parse_scales(text: str) -> List[List[int]]:
    """'320x320,416x416' -> [[320, 320], [416, 416]] as [long, short]."""
    out = []
    for part in text.split(","):
        a, sep, b = part.strip().lower().partition("x")
        if not sep or not a.isdigit() or not b.isdigit() or int(a) <= 0 or int(b) <= 0:
            raise ValueError(f"--tta-scales: {part!r} is not LONGxSHORT (e.g. 1333x800)")
        out.append(long_short((int(a), int(b))))
    if len(out) != 2:
        raise ValueError(f"--tta-scales: need two scales (the plan is 2 scales x flip), got {len(out)}")
    return out


def default_tta_scales(test_scale: Sequence[int]) -> List[List[int]]:
    """The test scale and 1.3x it, rounded to multiples of 32 (320x320 -> 416x416)."""
    big = [int(round(v * 1.3 / 32.0)) * 32 for v in long_short(test_scale)]
    return [long_short(test_scale), big]


def load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.array(im.convert("RGB"), dtype=np.uint8)


def first_val_image(cfg: Config, work_dir: Path) -> Path:
    """The first image (lowest id) of the config's val split."""
    root = data_root(cfg, work_dir)
    ann = root / cfg.data.val_ann
    if not ann.is_file():
        raise FileNotFoundError(f"the val split's {ann} (data.val_ann) is not here")
    with open(ann, "r", encoding="utf-8") as f:
        images = json.load(f).get("images", [])
    if not images:
        raise ValueError(f"no fixture image: {ann} lists no images; pass --fixture-image")
    first = min(images, key=lambda im: int(im["id"]))
    return root / cfg.data.val_images / first["file_name"]


def _detections_json(res: Dict[str, Any]) -> Dict[str, Any]:
    dets = []
    for k in range(res["boxes"].shape[0]):
        dets.append({
            "box": [float(v) for v in res["boxes"][k]],
            "score": float(res["scores"][k]),
            "label": int(res["labels"][k]),
            "stage_scores": [float(v) for v in res["stage_scores"][k]],
            "mask": rle_mod.encode(res["masks"][k].numpy()),
        })
    return {"proposals": [[float(v) for v in p] for p in res["proposals"]], "detections": dets}


@torch.no_grad()
def write_fixture(model: HTC, cfg: Config, out: Path, image_path: Path,
                  tta_scales: Sequence[Sequence[int]]) -> Dict[str, Any]:
    """fixture/fixture.yaml, image.png, single.json and tta.json; returns the fixture.yaml dict."""
    fx = out / "fixture"
    fx.mkdir(parents=True, exist_ok=True)
    rgb = load_rgb(image_path)
    Image.fromarray(rgb, mode="RGB").save(fx / "image.png")
    rgb = load_rgb(fx / "image.png")  # what Go will read
    test_scale = long_short(cfg.data.test_scale)
    tta = [View(tuple(long_short(s)), f) for s in tta_scales for f in (False, True)]
    # (name, views, ensemble): the default ensemble (softmax of the mean logits, None), and
    # Go's other option: detectron2's mean of probabilities with unequal stage weights
    plans = [
        ("single", [View(tuple(test_scale), False)], None),
        ("tta", tta, None),
        ("tta_probs", tta, {"mode": "probs", "weights": fixture_stage_weights(cfg.model.roi.num_stages)}),
    ]
    doc: Dict[str, Any] = {"image": "image.png", "plans": []}
    tensors: Dict[str, Any] = {}
    d = cfg.data
    for name, views, ens in plans:
        kw = {"ensemble": ens["mode"], "stage_weights": ens["weights"]} if ens else {}
        res = predict_aug(model, torch.from_numpy(rgb), views, mean=d.mean, std=d.std, size_divisor=d.size_divisor,
                          **kw)
        with open(fx / f"{name}.json", "w", encoding="utf-8") as f:
            json.dump(_detections_json(res), f)
        tensors[name] = _write_intermediates(fx, name, res)
        entry: Dict[str, Any] = {
            "name": name,
            "views": [{"scale": list(v.scale), "flip": v.flip} for v in views],
        }
        if ens:
            entry["ensemble"] = ens
        entry["detections"] = f"{name}.json"
        doc["plans"].append(entry)
    (fx / "fixture.yaml").write_text(dump_yaml(doc), encoding="utf-8")
    (fx / "tensors.yaml").write_text(TENSORS_HEADER + dump_yaml(tensors), encoding="utf-8")
    return doc


def fixture_stage_weights(num_stages: int) -> List[float]:
    """The unequal stage weights of the fixture's ``tta_probs`` plan: 0.5, 1, 2, ... (later stages more)."""
    return [float(2.0 ** (t - 1)) for t in range(num_stages)]


TENSORS_HEADER = """\
# Intermediates behind fixture.yaml's plans, to locate a parity failure (fixture.yaml does not
# reference this file). Per plan and view: `input`, the view's 8-bit RGB picture after resize
# and flip, before normalisation and padding (PNG); the graph inputs and outputs of that view as
# raw little-endian files (.f32 float32, .i64 int64) with their shapes. `rois` are the shared
# proposals mapped into the view (the first box stage's input); `mask_rois`/`mask_labels` the final
# detections mapped into the view (mask_heads input) and `stage_masks` their mask_heads output
# (not un-flipped). Bundles exported before the tta_probs plan have stage_masks for single only.
"""


def _write_intermediates(fx: Path, plan: str, res: Dict[str, Any]) -> Dict[str, Any]:
    views = []
    for i, (prep, vo) in enumerate(zip(res["views"], res["view_outputs"])):
        stem = f"{plan}_v{i}"
        Image.fromarray(prep.pixels.permute(1, 2, 0).contiguous().numpy(), mode="RGB").save(fx / f"{stem}_input.png")
        entry: Dict[str, Any] = {"input": f"{stem}_input.png", "image_size": [prep.height, prep.width]}
        for key in ("rois", "stage_logits", "stage_boxes", "mask_rois", "mask_labels", "stage_masks"):
            t = vo[key]
            if t.dtype == torch.int64:
                arr, ext, dtype = t.numpy().astype("<i8"), "i64", "int64"
            else:
                arr, ext, dtype = t.to(torch.float32).numpy().astype("<f4"), "f32", "float32"
            name = f"{stem}_{key}.{ext}"
            arr.tofile(fx / name)
            entry[key] = {"file": name, "dtype": dtype, "shape": [int(v) for v in t.shape]}
        views.append(entry)
    return {"views": views}
