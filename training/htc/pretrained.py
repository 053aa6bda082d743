"""Where a training run's first weights come from, other than random initialisation.

* ``model.backbone.pretrained: PATH``: a torchvision ResNet/ResNeXt state
  dict (``resnet50-0676ba61.pth``, ``resnext101_32x8d-8ba56ff5.pth``...), or
  an mmdetection backbone checkpoint (``{state_dict}``, names with or without
  ``backbone.``). The classifier (``fc.*``) is dropped; every other tensor
  must fit the configured backbone.
* ``--load-from CKPT``: a whole model, from htc.train or a released
  mmdetection HTC checkpoint (:mod:`htc.mmdet_checkpoint`), to fine-tune.
  Every tensor must fit, except the class-count-dependent layers (the box
  classifiers, mask logits, semantic logits): when those differ (another
  dataset) they keep their fresh initialisation and the run says so.

Unlike ``--resume`` neither restores the optimiser, the schedule or the epoch.

A checkpoint read back from a bundle (``examples/models/htc_tiny_synthetic.pth``, by
issue 14's ``htc.bundle_weights``, retired since) has its BatchNorm folded into the
convolutions: each norm is an identity (running mean 0, running variance 1 - eps) plus a bias.
Trained with batch statistics, such a norm would normalise away the scale and
shift the folding put into the conv, and the fine-tune would start from a
different, worse network and spend its steps relearning it (mask AP on the
sample video 0.516 -> 0.480 after 45 steps). :func:`freeze_folded_norms` keeps
those norms in eval mode instead: a fixed affine whose weight and bias still
train, so the first step starts from the exported model's exact function.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch import Tensor, nn

from . import mmdet_checkpoint
from .mmdet_checkpoint import CheckpointError, compare_state, read_file

# layers whose shape follows the class count: re-initialised on a mismatch
_CLASS_LAYERS = re.compile(r"^roi_head\.(bbox_head\.\d+\.fc_cls|mask_head\.\d+\.conv_logits|semantic_head\.conv_logits)\.")


def resolve(path: str, config_dir: Optional[Path]) -> Path:
    """A relative path against the config file's folder when it is there, else the working directory."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    if config_dir is not None and (config_dir / p).exists():
        return config_dir / p
    return p


def load_backbone(backbone: nn.Module, path: Path) -> str:
    """torchvision-named backbone weights into ``backbone``, strictly; returns a line for the log."""
    obj = read_file(path)
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: model.backbone.pretrained wants a state dict of tensors "
                              "(torchvision's resnet50-*.pth, say)")
    for prefix in ("module.", "backbone."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    dropped = [k for k in sd if k.startswith("fc.")]
    sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    own = backbone.state_dict()
    extra, missing, misshapen = compare_state(own, sd)
    if extra or missing:
        what = f"tensor {extra[0]} has no place in" if extra else f"tensor {missing[0]} is missing for"
        raise CheckpointError(f"{path}: {what} the configured backbone (model.backbone depth/groups/"
                              "width_per_group must match the pretrained network)")
    if misshapen:
        k = misshapen[0]
        raise CheckpointError(f"{path}: backbone tensor {k} has shape {list(sd[k].shape)}, "
                              f"the configured backbone expects {list(own[k].shape)}")
    backbone.load_state_dict(sd, strict=False)
    return f"backbone weights from {path} ({len(sd)} tensors{', classifier dropped' if dropped else ''})"


def load_from(model: nn.Module, path: Path) -> List[str]:
    """A whole checkpoint's weights into ``model`` for fine-tuning; returns lines for the log."""
    obj = read_file(path)
    if mmdet_checkpoint.is_mmdet(obj):
        _, ckpt = mmdet_checkpoint.load(path, obj=obj)
        source = ckpt["meta"]["source"]
    elif isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        ckpt, source = obj, f"htc.train checkpoint {path.name}"
    else:
        raise CheckpointError(f"{path}: --load-from wants an htc.train or mmdetection checkpoint")
    sd: Dict[str, Tensor] = ckpt["model"]
    own = model.state_dict()
    lines = [f"weights from {source}"]
    semantic = "roi_head.semantic_head."
    unused = [k for k in sd if k.startswith(semantic)]
    if unused and not any(k.startswith(semantic) for k in own):
        # fine-tuning with the semantic branch off (model.semantic: false) drops it
        sd = {k: v for k, v in sd.items() if not k.startswith(semantic)}
        lines.append(f"model.semantic is off: the {len(unused)} semantic_head tensors of {path.name} are not used")
    extra, missing, reinit = compare_state(own, sd)
    if extra or missing:
        what = f"tensor {extra[0]} has no place in" if extra else f"tensor {missing[0]} is missing for"
        raise CheckpointError(f"{path}: {what} the configured model; --load-from needs the same architecture "
                              "(backbone, stages, heads), only the class counts may differ")
    for k in reinit:
        if not _CLASS_LAYERS.match(k):
            raise CheckpointError(f"{path}: tensor {k} has shape {list(sd[k].shape)}, the configured model "
                                  f"expects {list(own[k].shape)}")
    model.load_state_dict({k: v for k, v in sd.items() if k not in set(reinit)}, strict=False)
    if reinit:
        layers = sorted({k.rsplit(".", 1)[0] for k in reinit})
        lines.append(f"class counts differ from {path.name}: {', '.join(layers)} keep their fresh initialisation")
    return lines


class FoldedBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d that stays in eval mode: its statistics are a folded norm's
    identity and are never replaced by batch statistics; weight and bias train.
    Same parameters, buffers and state-dict names as nn.BatchNorm2d, so its
    checkpoints load, export and resume as the configured model's."""

    def train(self, mode: bool = True) -> "FoldedBatchNorm2d":
        return super().train(False)


def is_folded(norm: nn.Module) -> bool:
    """Whether a BatchNorm holds a folded norm: mean 0 and var + eps exactly 1 in float32 on
    every channel (the shipped checkpoint holds that; training never does, a fresh norm has var 1)."""
    if not isinstance(norm, nn.BatchNorm2d) or norm.running_mean is None or norm.running_var is None:
        return False
    return bool((norm.running_mean == 0).all()) and bool((norm.running_var + norm.eps == 1.0).all())


def freeze_folded_norms(model: nn.Module) -> List[str]:
    """Every folded BatchNorm of ``model`` becomes a :class:`FoldedBatchNorm2d` (eval mode
    for good), keeping its Parameter objects, so an optimiser already built keeps working.
    Returns the layers' names."""
    names = []
    for name, mod in list(model.named_modules()):
        if type(mod) is not nn.BatchNorm2d or not is_folded(mod):
            continue
        frozen = FoldedBatchNorm2d(mod.num_features, eps=mod.eps, momentum=mod.momentum).to(mod.running_mean.device)
        frozen.weight, frozen.bias = mod.weight, mod.bias
        for buf in ("running_mean", "running_var", "num_batches_tracked"):
            setattr(frozen, buf, getattr(mod, buf))
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, frozen.train(mod.training))
        names.append(name)
    return names
