"""The exporter's command line (``python3 -m htc.export``): a checkpoint, or ``--from-bundle``
an existing bundle, to a bundle folder."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ..builders import data_root
from ..checkpoint_file import epoch_label
from ..config import Config
from ..evaluate_model import load_checkpoint_config, load_model_from_checkpoint
from ..model.detector import HTC
from .contract import CONTRACT
from .fixture import default_tta_scales, first_val_image, parse_scales, write_fixture
from .from_bundle import rebuild_bundle_heads
from .graphs import export_graphs, remove_box_graphs, trace_size
from .manifest import build_manifest, dump_yaml


def class_names(cfg: Config, ckpt: Dict[str, Any], work_dir: Path) -> Tuple[List[str], List[str]]:
    meta = ckpt.get("meta") or {}
    things = list(meta.get("classes") or [])
    stuff = list(meta.get("stuff_classes") or [])
    if not things:
        root = data_root(cfg, work_dir)
        for ann in (root / cfg.data.val_ann, root / cfg.data.train_ann):
            if ann.is_file():
                with open(ann, "r", encoding="utf-8") as f:
                    coco = json.load(f)
                cats = sorted(coco.get("categories", []), key=lambda c: int(c["id"]))
                things = [str(c.get("name", c["id"])) for c in cats]
                stuff = [s if isinstance(s, str) else str(s.get("name")) for s in coco.get("stuff_categories", [])]
                break
    m = cfg.model
    if m.semantic_classes == "cocostuff":
        # the semantic channels are COCO-stuff's (the manifest's semantic section)
        from ..data.cocostuff import COCO_THING_NAMES, NUM_COCOSTUFF_CHANNELS

        named = meta.get("semantic_names")
        if named is not None and len(named) != NUM_COCOSTUFF_CHANNELS:
            raise ValueError(f"the checkpoint's meta.semantic_names has {len(named)} names, "
                             f"model.semantic_classes cocostuff has {NUM_COCOSTUFF_CHANNELS} channels")
        if not things and m.num_classes == len(COCO_THING_NAMES):
            things = list(COCO_THING_NAMES)
        if len(things) != m.num_classes:
            raise ValueError(f"the checkpoint names {len(things)} thing classes but model.num_classes is {m.num_classes}")
        return things, []
    if not things:
        things = [f"class_{i}" for i in range(m.num_classes)]
    if len(things) != m.num_classes:
        raise ValueError(f"the checkpoint names {len(things)} thing classes but model.num_classes is {m.num_classes}")
    if len(stuff) > m.num_stuff_classes:
        raise ValueError(f"{len(stuff)} stuff class names but model.num_stuff_classes is {m.num_stuff_classes}")
    stuff += [f"stuff_{i}" for i in range(len(stuff), m.num_stuff_classes)]
    return things, stuff


def load_checkpoint(path: Path, config: Optional[str], overrides: Sequence[str] = ()) -> Tuple[HTC, Config, dict]:
    cfg, ckpt = load_checkpoint_config(path, config, overrides)
    return load_model_from_checkpoint(cfg, ckpt, torch.device("cpu")), cfg, ckpt


def export_bundle(model: HTC, cfg: Config, out: Path, *, name: str, things: Sequence[str], stuff: Sequence[str],
                  fixture_image: Optional[Path], tta_scales: Optional[Sequence[Sequence[int]]]) -> Dict[str, Any]:
    """Write a complete bundle into ``out`` (created; existing bundle files and fixture replaced)."""
    manifest = build_manifest(cfg, name=name, things=things, stuff=stuff)
    out.mkdir(parents=True, exist_ok=True)
    remove_box_graphs(out)
    export_graphs(model, out, trace_size(cfg))
    (out / "manifest.yaml").write_text(dump_yaml(manifest), encoding="utf-8")
    # a fixture from an earlier export would not match these graphs
    shutil.rmtree(out / "fixture", ignore_errors=True)
    if fixture_image is not None:
        write_fixture(model, cfg, out, fixture_image, tta_scales or default_tta_scales(cfg.data.test_scale))
    return manifest


def build_parser() -> argparse.ArgumentParser:
    from . import __doc__ as doc

    p = argparse.ArgumentParser(prog="python3 -m htc.export", description=doc.split("\n")[0])
    p.add_argument("--checkpoint",
                   help="a .pth written by htc.train, or a released mmdetection HTC checkpoint (htc.mmdet_checkpoint)")
    p.add_argument("--from-bundle", metavar="BUNDLE",
                   help="instead of --checkpoint: re-export BUNDLE's head graphs from the weights in those graphs "
                        "(a contract-1 bundle becomes contract 2), copying its backbone, manifest and fixture; "
                        "needs --config")
    p.add_argument("--config", help="YAML config (default: the one saved in the checkpoint)")
    p.add_argument("--set", dest="overrides", action="append", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set model.test.max_per_img=50")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--name", help="manifest name (default: <checkpoint folder>_epoch<N>, _epoch<N>_step<S> within an epoch)")
    p.add_argument("--fixture-image", help="fixture input image (default: the first image of the val split)")
    p.add_argument("--tta-scales", help="the fixture's TTA plan scales, LONGxSHORT,LONGxSHORT "
                                        "(default: the test scale and 1.3x it, e.g. 320x320,416x416)")
    p.add_argument("--no-fixture", action="store_true", help="write no reference fixture")
    p.add_argument("--work-dir", help="where a synthetic set without data.root lives "
                                      "(default: the checkpoint's folder)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.checkpoint is None) == (args.from_bundle is None):
        parser.error("give exactly one of --checkpoint and --from-bundle")
    if args.from_bundle is not None and args.config is None:
        parser.error("--from-bundle needs --config (the model config the bundle was trained with)")
    t0 = time.monotonic()
    if args.from_bundle is not None:
        try:
            from ..builders import load_config_with_overrides

            cfg = load_config_with_overrides(args.config, [s for group in args.overrides for s in group])
            out = Path(args.out)
            rebuild_bundle_heads(Path(args.from_bundle), out, cfg)
        except (OSError, ValueError) as e:
            print(f"htc.export: {e}", file=sys.stderr)
            return 2
        print(f"htc.export: wrote {out} (head graphs of {args.from_bundle}, {CONTRACT}) "
              f"in {time.monotonic() - t0:.1f} s")
        return 0
    try:
        ckpt_path = Path(args.checkpoint)
        overrides = [s for group in args.overrides for s in group]
        model, cfg, ckpt = load_checkpoint(ckpt_path, args.config, overrides)
        work_dir = Path(args.work_dir) if args.work_dir else ckpt_path.parent
        things, stuff = class_names(cfg, ckpt, work_dir)
        label = epoch_label(ckpt)
        name = args.name or (f"{ckpt_path.resolve().parent.name}_{label}" if label else ckpt_path.stem)
        tta = parse_scales(args.tta_scales) if args.tta_scales else None
        image = None
        imported = str((ckpt.get("meta") or {}).get("source", "")).startswith("mmdetection")
        if imported and not args.no_fixture and not args.fixture_image:
            # a released model comes without its dataset: no image to make the fixture from
            print("htc.export: no reference fixture (pass --fixture-image IMG to write one)", file=sys.stderr)
        elif args.fixture_image:
            image = Path(args.fixture_image)
            if not image.is_file():
                raise FileNotFoundError(f"fixture image {image} not found")
        elif not args.no_fixture:
            try:
                image = first_val_image(cfg, work_dir)
                if not image.is_file():
                    raise FileNotFoundError(f"{image} not found")
            except FileNotFoundError as e:
                # The fixture is the parity tests' reference, not part of what
                # a run needs: a checkpoint handed on without its dataset still
                # exports, as a released one does.
                print(f"htc.export: no reference fixture: {e} (pass --fixture-image IMG to write one)",
                      file=sys.stderr)
                image = None
        out = Path(args.out)
        export_bundle(model, cfg, out, name=name, things=things, stuff=stuff, fixture_image=image, tta_scales=tta)
    except (OSError, ValueError) as e:
        print(f"htc.export: {e}", file=sys.stderr)
        return 2
    sizes = ", ".join(f"{p.name} {p.stat().st_size / 1e6:.1f} MB" for p in sorted(out.glob("*.onnx")))
    print(f"htc.export: wrote {out} ({name}; {sizes}{'; fixture' if image else ''}) "
          f"in {time.monotonic() - t0:.1f} s")
    return 0
