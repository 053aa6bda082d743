"""Typed configuration for the HTC model, its data and its training schedule.

A config file is YAML with up to three sections, ``model``, ``data`` and
``train``, and optionally ``_base_`` (mmdetection's name for it): a preset
name (``htc_tiny``, ``htc_r50_fpn``: ``configs/model/<name>.yaml``) or the
path of another config, relative to this file's folder. The file then
extends its base key by key: mappings merge, any other value (lists included)
replaces the base's, and the file's keys win. A base may have a base.

Every key has a built-in default, the paper's HTC R-50 FPN 1x on COCO at
1333x800 (``configs/model/htc_r50_fpn.yaml`` spells them out), so a file
without ``_base_`` extends that model; :func:`describe_config` says which base
a file used, and the trainer prints it. A key the dataclasses do not define is
an error naming the key and the file it is in: a typo must never silently fall
back to a default.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union, get_args, get_origin, get_type_hints

import yaml

# --------------------------------------------------------------------------- model


@dataclass
class DCNConfig:
    # mmdetection's stage_with_dcn: which of layer1..layer4 get deformable 3x3 convs
    # (the model zoo's "dconv c3-c5" is [false, true, true, true]); all false: none.
    stages: List[bool] = field(default_factory=lambda: [False, False, False, False])
    # offset groups of each deformable conv (dcn=dict(type='DCN', deform_groups=1))
    deform_groups: int = 1


@dataclass
class BackboneConfig:
    depth: int = 50
    # Channels of the stem and layer1's bottleneck; 64 is torchvision's ResNet.
    width: int = 64
    # mmdetection semantics: -1 trains everything, 0 freezes the stem, k also layers 1..k.
    frozen_stages: int = 1
    # "frozen": BatchNorm as fixed affine (pretrained statistics, no grad).
    # "batch": ordinary BatchNorm, for training from scratch where no pretrained
    # statistics exist.
    norm: str = "frozen"
    # ResNeXt: grouped 3x3 convs (X-101 32x4d: groups 32, width_per_group 4;
    # 64x4d: 64 and 4). 1 and 64 are plain ResNet.
    groups: int = 1
    width_per_group: int = 64
    # A torchvision ResNet/ResNeXt state dict (.pth) to start the backbone from
    # (relative paths: against the config file's folder, else the working
    # directory). Empty: random initialisation.
    pretrained: str = ""
    # Deformable convolution (htc.dcn), mmdetection's dcn + stage_with_dcn.
    dcn: DCNConfig = field(default_factory=DCNConfig)


@dataclass
class NeckConfig:
    out_channels: int = 256


@dataclass
class RPNConfig:
    anchor_scales: List[float] = field(default_factory=lambda: [8.0])
    anchor_ratios: List[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    anchor_strides: List[int] = field(default_factory=lambda: [4, 8, 16, 32, 64])
    pos_iou_thr: float = 0.7
    neg_iou_thr: float = 0.3
    min_pos_iou: float = 0.3
    num_samples: int = 256
    pos_fraction: float = 0.5
    # Anchors reaching further than this outside the image are not trained on;
    # negative keeps every anchor. mmdetection's HTC config uses 0.
    allowed_border: int = 0
    loss_bbox_beta: float = 1.0 / 9.0
    train_pre_nms: int = 2000
    train_max_proposals: int = 2000
    test_pre_nms: int = 1000
    test_max_proposals: int = 1000
    nms_iou: float = 0.7


@dataclass
class RoIConfig:
    num_stages: int = 3
    stage_loss_weights: List[float] = field(default_factory=lambda: [1.0, 0.5, 0.25])
    iou_thresholds: List[float] = field(default_factory=lambda: [0.5, 0.6, 0.7])
    box_stds: List[List[float]] = field(
        default_factory=lambda: [
            [0.1, 0.1, 0.2, 0.2],
            [0.05, 0.05, 0.1, 0.1],
            [0.033, 0.033, 0.067, 0.067],
        ]
    )
    num_samples: int = 512
    pos_fraction: float = 0.25
    fc_dim: int = 1024
    box_roi_size: int = 7
    mask_roi_size: int = 14
    mask_channels: int = 256
    mask_num_convs: int = 4
    # RoIs smaller than 2 * finest_scale go to P2 (FPN paper's k0 = 4 at 224 px).
    finest_scale: float = 56.0
    box_loss_beta: float = 1.0


@dataclass
class TestConfig:
    score_thr: float = 0.001
    nms_iou: float = 0.5
    max_per_img: int = 100
    mask_thr: float = 0.5


@dataclass
class ModelConfig:
    num_classes: int = 80
    # Semantic layout (what each semantic logit means):
    # "things_stuff": num_classes things (label order) then num_stuff_classes
    #   stuff; the label PNGs use that numbering. The default, so checkpoints
    #   saved before this key keep their meaning.
    # "cocostuff": the 183 channels of mmdetection's HTC: channel i = COCO-stuff
    #   id i+1 (things 1-91 with COCO's 11 gaps, stuff 92-182, 182 = "other");
    #   stuffthingmaps PNG values (id - 1) are the targets as they are.
    #   num_stuff_classes is then ignored (htc.data.cocostuff has the names).
    semantic_classes: str = "things_stuff"
    num_stuff_classes: int = 103
    interleaved: bool = True
    mask_info_flow: bool = True
    semantic: bool = True
    semantic_fusion: List[str] = field(default_factory=lambda: ["bbox", "mask"])
    # The paper's beta = 1 (its Table 6 shows 0.5-3 within 0.2 AP); mmdetection's
    # released configs use 0.2.
    semantic_loss_weight: float = 1.0
    semantic_num_convs: int = 4
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    neck: NeckConfig = field(default_factory=NeckConfig)
    rpn: RPNConfig = field(default_factory=RPNConfig)
    roi: RoIConfig = field(default_factory=RoIConfig)
    test: TestConfig = field(default_factory=TestConfig)

    @property
    def num_semantic_classes(self) -> int:
        if self.semantic_classes == "cocostuff":
            return 183  # htc.data.cocostuff.NUM_COCOSTUFF_CHANNELS
        return self.num_classes + self.num_stuff_classes


# --------------------------------------------------------------------------- data


@dataclass
class DataConfig:
    # "coco": COCO JSON + images (+ stuffthingmaps PNGs for training).
    # "synthetic": the same layout, as written by htc.data.synthetic.
    dataset: str = "coco"
    root: str = "data/coco"
    train_ann: str = "annotations/instances_train2017.json"
    val_ann: str = "annotations/instances_val2017.json"
    train_images: str = "train2017"
    val_images: str = "val2017"
    # COCO-stuff label PNGs named like the images; only the training split needs them.
    semantic_dir: str = "stuffthingmaps/train2017"
    # Synthetic only: how many images per split to generate.
    num_train_images: int = 0
    num_val_images: int = 0
    # [long edge, short edge] upper bounds; one is picked per training image.
    img_scales: List[List[int]] = field(default_factory=lambda: [[1333, 800]])
    # mmdetection's multiscale_mode: "value" picks one of img_scales per image; "range"
    # draws the long and the short edge between two pairs (the DCN row's "mstrain 400-1400":
    # img_scales [[1600, 400], [1600, 1400]]).
    multiscale_mode: str = "value"
    test_scale: List[int] = field(default_factory=lambda: [1333, 800])
    flip_ratio: float = 0.5
    size_divisor: int = 32
    mean: List[float] = field(default_factory=lambda: [123.675, 116.28, 103.53])
    std: List[float] = field(default_factory=lambda: [58.395, 57.12, 57.375])


# --------------------------------------------------------------------------- train


@dataclass
class TrainConfig:
    epochs: int = 12
    # Images per optimiser step; lr is for this batch size.
    batch_size: int = 16
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 500
    warmup_ratio: float = 0.001
    # Epochs after which lr is multiplied by 0.1.
    steps: List[int] = field(default_factory=lambda: [8, 11])
    seed: int = 0
    workers: int = 2
    checkpoint_interval: int = 1
    # Also write latest.pth every this many optimiser steps (mid-epoch; --resume
    # continues from the step after it); 0 = only at the end of each epoch.
    checkpoint_steps: int = 0
    # Max L2 norm of all gradients together; 0 turns clipping off (mmdetection's
    # HTC configs do not clip).
    grad_clip: float = 0.0
    # Box and mask AP on the val split once training ends.
    evaluate: bool = True


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- loading


BASE_KEY = "_base_"
# The presets a config can name in _base_ by their bare name.
PRESETS_DIR = Path(__file__).resolve().parents[2] / "configs" / "model"


def presets() -> List[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_config(path: Union[str, Path]) -> Config:
    """Read a YAML config and its ``_base_`` chain; missing keys take defaults, unknown keys raise ValueError."""
    raw, _ = read_config_file(path)
    return config_from_dict(raw, source=str(path))


def read_config_file(path: Union[str, Path], _seen: Tuple[Path, ...] = ()) -> Tuple[Dict[str, Any], List[Path]]:
    """The raw mapping of a config file with its bases merged in (no ``_base_`` keys
    left), and the chain of files, the first base first and ``path`` last.

    Each file's own keys are checked on their own, so an unknown key or a wrong
    type names the file that holds it; cross-key checks (:func:`validate`)
    need the merged result and are the caller's (:func:`config_from_dict`).
    """
    path = Path(path)
    key = path.resolve()
    if key in _seen:
        raise ValueError(f"{path}: the {BASE_KEY} chain comes back to this file")
    raw = _read_yaml(path)
    base = raw.pop(BASE_KEY, None)
    _build(Config, raw, "", str(path))
    if base is None:
        return raw, [path]
    base_raw, chain = read_config_file(_base_path(base, path), _seen + (key,))
    return merge_configs(base_raw, raw), chain + [path]


def merge_configs(base: Dict[str, Any], over: Dict[str, Any]) -> Dict[str, Any]:
    """``over`` on top of ``base``: mappings merge key by key, other values replace."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_configs(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def describe_config(chain: List[Path]) -> str:
    """Which base a config extends, for the trainer's log: one line."""
    def name(p: Path) -> str:
        return f"preset {p.stem}" if p.resolve().parent == PRESETS_DIR else str(p)

    if len(chain) > 1:
        return f"{chain[-1]} extends {' <- '.join(name(p) for p in reversed(chain[:-1]))}"
    if chain[0].resolve().parent == PRESETS_DIR:
        return f"{name(chain[0])} ({chain[0]})"
    return (f"{chain[0]} has no {BASE_KEY}: the keys it does not set take the built-in defaults, the paper's "
            f"HTC R-50-FPN at 1333x800 (preset htc_r50_fpn); '{BASE_KEY}: htc_tiny' starts from the CPU preset")


def _read_yaml(path: Path) -> Dict[str, Any]:
    with path.open("r", encoding="utf-8") as f:
        try:
            raw = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from e
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: top level must be a mapping with sections model/data/train")
    return raw


def _base_path(value: Any, path: Path) -> Path:
    known = ", ".join(presets())
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{path}: '{BASE_KEY}' must be a preset name ({known}) or the path of a YAML config, "
                         f"got {value!r}")
    v = value.strip()
    if "/" not in v and not v.endswith((".yaml", ".yml")):
        p = PRESETS_DIR / f"{v}.yaml"
        if not p.is_file():
            raise ValueError(f"{path}: '{BASE_KEY}: {v}' is no preset ({known}); give a preset name or a path")
        return p
    p = Path(v).expanduser()
    if not p.is_absolute():
        p = path.parent / p
    if not p.is_file():
        raise ValueError(f"{path}: '{BASE_KEY}': {p} not found (a relative path is relative to the config's folder)")
    return p


def config_from_dict(raw: Dict[str, Any], source: str = "<dict>") -> Config:
    """Build a Config from nested dicts (e.g. a checkpoint's saved config)."""
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: top level must be a mapping with sections model/data/train")
    cfg = _build(Config, raw, "", source)
    validate(cfg, source)
    return cfg


def _build(cls, raw: Any, prefix: str, source: str):
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: '{prefix or 'top level'}' must be a mapping, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            known = ", ".join(sorted(names))
            raise ValueError(f"{source}: unknown key '{dotted}' (known here: {known})")
        kwargs[key] = _convert(hints[key], value, dotted, source)
    return cls(**kwargs)


_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _convert(tp, value: Any, dotted: str, source: str):
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, dotted, source)
    origin = get_origin(tp)
    if origin in (list, List):
        (item_tp,) = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{source}: '{dotted}' must be a list, got {value!r}")
        return [_convert(item_tp, v, f"{dotted}[{i}]", source) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{source}: '{dotted}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{source}: '{dotted}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
            # YAML 1.1 (PyYAML) reads 1e-4 as a string: it wants 1.0e-4
            return float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{source}: '{dotted}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{source}: '{dotted}' must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp} for {dotted}")


def validate(cfg: Config, source: str = "<config>") -> None:
    """Value checks the type conversion cannot express."""
    m = cfg.model

    def fail(key: str, msg: str) -> None:
        raise ValueError(f"{source}: '{key}' {msg}")

    if m.num_classes < 1:
        fail("model.num_classes", "must be >= 1")
    if m.num_stuff_classes < 0:
        fail("model.num_stuff_classes", "must be >= 0")
    if m.semantic_classes not in ("things_stuff", "cocostuff"):
        fail("model.semantic_classes", f"must be 'things_stuff' or 'cocostuff', got {m.semantic_classes!r}")
    if m.backbone.depth not in (18, 34, 50, 101):
        fail("model.backbone.depth", f"must be one of 18, 34, 50, 101, got {m.backbone.depth}")
    if m.backbone.width < 1:
        fail("model.backbone.width", "must be >= 1")
    if not -1 <= m.backbone.frozen_stages <= 4:
        fail("model.backbone.frozen_stages", "must be in -1..4")
    if m.backbone.groups < 1 or m.backbone.width_per_group < 1:
        fail("model.backbone.groups", "and width_per_group must be >= 1")
    if (m.backbone.groups, m.backbone.width_per_group) != (1, 64) and m.backbone.depth < 50:
        fail("model.backbone.groups", f"ResNeXt needs bottleneck blocks (depth 50 or 101), got depth {m.backbone.depth}")
    if len(m.backbone.dcn.stages) != 4:
        fail("model.backbone.dcn.stages", f"want 4 flags (layer1..layer4), got {m.backbone.dcn.stages}")
    if m.backbone.dcn.deform_groups < 1:
        fail("model.backbone.dcn.deform_groups", "must be >= 1")
    if any(m.backbone.dcn.stages) and m.backbone.depth < 50:
        fail("model.backbone.dcn.stages", f"deformable convolution needs bottleneck blocks (depth 50 or 101), got depth {m.backbone.depth}")
    if m.backbone.norm not in ("frozen", "batch"):
        fail("model.backbone.norm", f"must be 'frozen' or 'batch', got {m.backbone.norm!r}")
    bad = [s for s in m.semantic_fusion if s not in ("bbox", "mask")]
    if bad or len(set(m.semantic_fusion)) != len(m.semantic_fusion):
        fail("model.semantic_fusion", f"must be a subset of [bbox, mask], got {m.semantic_fusion}")
    if len(m.rpn.anchor_strides) != 5:
        fail("model.rpn.anchor_strides", "must list 5 strides, one per FPN level P2-P6")
    r = m.roi
    if r.num_stages < 1:
        fail("model.roi.num_stages", "must be >= 1")
    for key in ("stage_loss_weights", "iou_thresholds", "box_stds"):
        if len(getattr(r, key)) != r.num_stages:
            fail(f"model.roi.{key}", f"must have num_stages ({r.num_stages}) entries")
    for i, stds in enumerate(r.box_stds):
        if len(stds) != 4 or min(stds) <= 0:
            fail(f"model.roi.box_stds[{i}]", "must be 4 positive numbers")
    if r.mask_roi_size % r.box_roi_size != 0:
        fail("model.roi.mask_roi_size", "must be a multiple of box_roi_size (the semantic RoI feature is pooled)")
    for key in ("pos_fraction",):
        for sec, obj in (("rpn", m.rpn), ("roi", r)):
            v = getattr(obj, key)
            if not 0.0 < v <= 1.0:
                fail(f"model.{sec}.{key}", "must be in (0, 1]")
    if not math.isfinite(m.semantic_loss_weight) or m.semantic_loss_weight < 0:
        fail("model.semantic_loss_weight", "must be a finite number >= 0")
    d = cfg.data
    if d.dataset not in ("coco", "synthetic"):
        fail("data.dataset", f"must be 'coco' or 'synthetic', got {d.dataset!r}")
    if not d.img_scales or any(len(s) != 2 for s in d.img_scales):
        fail("data.img_scales", "must be a non-empty list of [long, short] pairs")
    if d.multiscale_mode not in ("value", "range"):
        fail("data.multiscale_mode", f"must be 'value' or 'range', got {d.multiscale_mode!r}")
    if d.multiscale_mode == "range" and len(d.img_scales) != 2:
        fail("data.img_scales", f"'range' mode needs exactly two [long, short] pairs, got {len(d.img_scales)}")
    if len(d.test_scale) != 2:
        fail("data.test_scale", "must be a [long, short] pair")
    if len(d.mean) != 3 or len(d.std) != 3:
        fail("data.mean/std", "must have 3 entries (RGB)")
    if d.size_divisor < 1:
        fail("data.size_divisor", "must be >= 1")
    t = cfg.train
    if t.batch_size < 1:
        fail("train.batch_size", "must be >= 1")
    if t.epochs < 1:
        fail("train.epochs", "must be >= 1")
    if not math.isfinite(t.grad_clip) or t.grad_clip < 0:
        fail("train.grad_clip", "must be a finite number >= 0 (0 = no clipping)")
    if t.checkpoint_steps < 0:
        fail("train.checkpoint_steps", "must be >= 0 (0 = only at the end of each epoch)")
