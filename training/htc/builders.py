"""Config loading with ``--set`` overrides, and datasets from a config's ``data``
section; shared by training and evaluation.

Both dataset kinds read ``root/train_ann`` + ``root/train_images`` (+
``root/semantic_dir`` label maps when the model has a semantic branch) and
``root/val_ann`` + ``root/val_images``. The trainer makes a relative root
absolute before anything uses it (:func:`resolve_data_root`): against the
config file's folder when it exists there, else against the working
directory (the user's: ``htcstream train`` runs Python where it was started).

``data.dataset: synthetic`` first generates what is missing with
:mod:`htc.data.synthetic` (``train.seed``, ``num_train_images``,
``num_val_images``) under ``root``, or ``<work dir>/data`` when ``root`` is
empty; the paths must then name that layout (``annotations/instances_train.json``,
``images/train``, ``stuffthingmaps/train``, as configs/model/htc_tiny.yaml
does). A set already there from another seed or size is an error rather than
silently reused. Under a multi-node run each machine that lacks the set
generates its own copy (same seed, same images).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml
from .config import Config, config_from_dict, read_config_file
from .data import CocoDataset, build_transforms
from .data import synthetic as synthetic_mod
from .dist import DistEnv, all_gather_objects, barrier, broadcast_object
from .progress import Progress, bar, format_duration

SPLITS = ("train", "val")
# The generator's default image size; data.img_scales resizes from there.
SYNTHETIC_WIDTH, SYNTHETIC_HEIGHT = 320, 240
SYNTHETIC_LOG_EVERY = 100  # images between progress lines when stderr is not a terminal


# --------------------------------------------------------------------------- config


def parse_overrides(items: Sequence[str]) -> List[tuple]:
    """``a.b.c=value`` strings to (["a", "b", "c"], value) with YAML-typed values."""
    out = []
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected key=value, e.g. train.lr=0.01")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"--set {item!r}: value is not valid YAML: {' '.join(str(e).split())}") from e
        out.append((key.strip().split("."), value))
    return out


def apply_overrides(raw: Dict[str, Any], items: Sequence[str]) -> Dict[str, Any]:
    for path, value in parse_overrides(items):
        node = raw
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ValueError(f"--set {'.'.join(path)}: '{'.'.join(path[: i + 1])}' is not a section")
            node = child
        node[path[-1]] = value
    return raw


def load_config_with_overrides(path: Optional[str], overrides: Sequence[str] = (),
                               base: Optional[Dict[str, Any]] = None) -> Config:
    """Config from a YAML file (or ``base``, e.g. a checkpoint's) plus ``--set`` overrides.

    Overrides are applied to the raw mapping before validation, so an unknown
    key in ``--set`` is the same one-line error as in the file.
    """
    if path is not None:
        source = str(path)
        raw, _ = read_config_file(path)  # with its _base_ chain merged in
    else:
        raw = json.loads(json.dumps(base or {}))  # deep copy of plain data
        source = "<checkpoint config>"
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: top level must be a mapping with sections model/data/train")
    return config_from_dict(apply_overrides(raw, overrides), source=source)


def _flatten(d: Any, prefix: str = "") -> Dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: Dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def check_same_model(saved: Dict[str, Any], cfg: Config, path: Path) -> None:
    """``saved`` (a checkpoint's config dict) must describe the same model as ``cfg``.

    ``model.test`` (score threshold, NMS, detections per image) and
    ``model.backbone.pretrained`` shape no weights and may differ. A key the saved config
    lacks (added after it was written) counts as its default.
    """
    a = _flatten(saved.get("model", {}), "model")
    b = _flatten(cfg.to_dict()["model"], "model")
    # a key the checkpoint predates (such as model.backbone.dcn) had its default's meaning then
    defaults = _flatten(Config().to_dict()["model"], "model")
    a.update({k: defaults[k] for k in defaults if k not in a})
    # where the backbone's first weights came from does not change the model either
    free = ("model.test.", "model.backbone.pretrained")
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and not k.startswith(free))
    if diff:
        shown = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in diff[:5])
        raise ValueError(f"{path} was trained with another model config ({shown}"
                         f"{', ...' if len(diff) > 5 else ''}); its weights do not fit this model")


@dataclass
class SplitData:
    """One split, ready for a DataLoader and for COCO evaluation."""

    dataset: CocoDataset       # items per the data contract; class names, category ids
    image_ids: List[int]       # COCO image id of each dataset index
    gt: Dict[str, Any]         # COCO dict of exactly these images, for the evaluator

    @property
    def label_to_cat_id(self) -> List[int]:
        return list(self.dataset.cat_ids)


def resolve_data_root(root: str, config_path: Optional[Path]) -> Tuple[str, str]:
    """A relative ``data.root`` made absolute, and where it was found, for the log.

    Against the config file's folder when the root exists there, else against
    the working directory (also when it exists nowhere yet: a synthetic set is
    generated there, and a missing COCO set is reported there). Absolute paths
    and an empty root (synthetic data under the work dir) stay as they are.
    """
    if not root:
        return root, "the work dir's data/"
    p = Path(root).expanduser()
    if p.is_absolute():
        return str(p), "as given"
    if config_path is not None:
        beside = Path(config_path).resolve().parent / p
        if beside.exists():
            return str(beside), "the config file's folder"
    return str(Path.cwd() / p), "the working directory"


def data_root(cfg: Config, work_dir: Path) -> Path:
    if cfg.data.dataset == "synthetic" and not cfg.data.root:
        return Path(work_dir) / "data"
    return Path(cfg.data.root)


def _split_count(cfg: Config, split: str) -> int:
    return cfg.data.num_train_images if split == "train" else cfg.data.num_val_images


def _check_synthetic(ann: Path, seed: int, count: int) -> None:
    with open(ann, "r", encoding="utf-8") as f:
        coco = json.load(f)
    info = coco.get("info", {})
    have_seed, have_count = info.get("seed"), len(coco.get("images", []))
    if have_seed != seed or have_count != count:
        raise ValueError(
            f"{ann} holds {have_count} images generated with seed {have_seed}, but the config asks for "
            f"{count} with seed {seed}; delete {ann.parent.parent} or point data.root elsewhere")


def prepare_synthetic(cfg: Config, root: Path, splits: Sequence[str], progress: Optional[Progress] = None) -> None:
    """Generate (or check) the synthetic splits this run needs. Single process.

    Generating the default 500 images takes most of a minute: it is announced
    and shown as it goes (``progress``: a bar on a terminal, else a line every
    100 images)."""
    seed = cfg.train.seed
    todo = []
    for split in splits:
        count = _split_count(cfg, split)
        if count <= 0:
            continue
        ann = root / "annotations" / f"instances_{split}.json"
        if ann.exists():
            _check_synthetic(ann, seed, count)
        else:
            todo.append((split, count))
    if not todo:
        return
    show = progress if progress is not None else Progress(sys.stderr)
    total = sum(n for _, n in todo)
    what = " + ".join(f"{n} {split}" for split, n in todo)
    show.log(f"htc.data.synthetic: generating the synthetic set ({what} images, seed {seed}) in {root} ...")
    t0 = time.monotonic()
    done = 0
    for split, count in todo:
        def on_image(n: int, split: str = split, count: int = count) -> None:
            nonlocal done
            done += 1
            line = f"  generating {split} {bar(n, count)} {n}/{count}  ({done}/{total} images)"
            show.show([line], force=n == count)
            if not show.tty and (done % SYNTHETIC_LOG_EVERY == 0 and done < total):
                show.log(line)
        synthetic_mod.generate_split(root, split, count, seed, SYNTHETIC_WIDTH, SYNTHETIC_HEIGHT, on_image=on_image)
    show.close()
    show.log(f"htc.data.synthetic: {total} images generated in {format_duration(time.monotonic() - t0)}")


def prepare_data(cfg: Config, work_dir: Path, env: DistEnv, splits: Sequence[str] = SPLITS,
                 progress: Optional[Progress] = None) -> Path:
    """Make sure the data exists: rank 0 generates synthetic sets while the others
    wait; then the first process of every other machine checks its own copy and
    generates it if it has none (nodes that share no file system)."""
    root = data_root(cfg, work_dir)
    if cfg.data.dataset != "synthetic":
        return root
    if cfg.data.num_train_images <= 0 and "train" in splits:
        raise ValueError("data.num_train_images must be > 0 for the synthetic dataset (it is how many to generate)")
    error: Optional[str] = None
    if env.is_main:
        try:
            prepare_synthetic(cfg, root, splits, progress)
        except (OSError, ValueError) as e:
            error = str(e)
    # Every rank must learn of a failure, or the others would wait for data forever.
    error = broadcast_object(error, env)
    barrier(env)
    if error is None and env.distributed:
        # On a shared file system this finds rank 0's set and only checks it; the same
        # seed makes another machine's copy the same images.
        if env.local_rank == 0 and not env.is_main:
            try:
                prepare_synthetic(cfg, root, splits, Progress(sys.stderr))
            except (OSError, ValueError) as e:
                error = f"rank {env.rank}: {e}"
        error = next((e for e in all_gather_objects(error, env) if e is not None), None)
    if error is not None:
        raise ValueError(error)
    return root


def _paths(cfg: Config, root: Path, split: str):
    d = cfg.data
    if split == "train":
        seg = root / d.semantic_dir if d.semantic_dir else None
        return root / d.train_ann, root / d.train_images, seg
    return root / d.val_ann, root / d.val_images, None


def build_split(cfg: Config, root: Path, split: str, train: bool) -> SplitData:
    """The dataset of ``split``; ``train`` selects augmentation, label maps and empty-image filtering."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    d = cfg.data
    ann, img_dir, seg_dir = _paths(cfg, root, split)
    key = "train" if split == "train" else "val"
    hint = ""
    if d.dataset == "synthetic":
        hint = (f"; htc.data.synthetic writes annotations/instances_{split}.json, images/{split} and "
                f"stuffthingmaps/{split} under data.root")
    if not ann.is_file():
        raise FileNotFoundError(f"annotation file {ann} (data.{key}_ann) not found{hint}")
    if not img_dir.is_dir():
        raise FileNotFoundError(f"image folder {img_dir} (data.{key}_images) not found{hint}")
    # An empty data.semantic_dir: no label maps (a dataset of instances only).
    # The semantic branch still runs and fuses, but gets no loss, so weights
    # it was given (--load-from a released HTC) stay as they are.
    use_semantic = train and cfg.model.semantic and bool(d.semantic_dir)
    if use_semantic:
        if seg_dir is None or not seg_dir.is_dir():
            raise FileNotFoundError(
                f"semantic label maps {seg_dir} (data.semantic_dir) not found; the model's semantic branch "
                f"needs them (or set model.semantic: false){hint}")
    else:
        seg_dir = None
    if train:
        transforms = build_transforms(True, d.img_scales, d.multiscale_mode, d.flip_ratio)
    else:
        transforms = build_transforms(False, d.test_scale)
    coco = CocoDataset(ann, img_dir, seg_dir, transforms=transforms, mean=d.mean, std=d.std, filter_empty=train,
                       semantic_layout=cfg.model.semantic_classes)
    check_classes(cfg, coco, use_semantic)

    if len(coco) == 0:
        raise ValueError(f"{ann}: no usable images in the {split} split")
    image_ids = list(coco.img_ids)
    keep = set(image_ids)
    raw = coco.coco
    gt = {
        "images": [im for im in raw["images"] if int(im["id"]) in keep],
        "annotations": [a for a in raw["annotations"] if int(a["image_id"]) in keep],
        "categories": raw["categories"],
    }
    return SplitData(dataset=coco, image_ids=image_ids, gt=gt)


def check_classes(cfg: Config, coco: CocoDataset, semantic: bool) -> None:
    """The data's classes must fit the model's heads; a mismatch otherwise surfaces as
    an index error deep inside a loss, or as silently wrong category ids."""
    m = cfg.model
    if coco.num_classes != m.num_classes:
        raise ValueError(f"{coco.ann_file} has {coco.num_classes} categories but model.num_classes is "
                         f"{m.num_classes}")
    if semantic and coco.stuff_names and coco.num_semantic_classes > m.num_semantic_classes:
        raise ValueError(
            f"{coco.ann_file} has {coco.num_classes} thing + {len(coco.stuff_names)} stuff classes but the "
            f"model predicts {m.num_classes} + {m.num_stuff_classes} (model.num_stuff_classes); set "
            f"model.num_stuff_classes: {len(coco.stuff_names)}")
