"""Box and mask AP of a trained checkpoint on a COCO-format split.

    python3 -m htc.evaluate_model --checkpoint work_dirs/htc_tiny/latest.pth \\
        [--config CFG] [--split val] [--out stats.json] [--detections dets.json] [--threads N]

Runs ``model.predict`` (the mmdetection simple test) over the split, prints
the standard COCO bbox and segm tables and writes ``{iou_type: {stat: value}}``
to ``--out``. Without ``--config`` the config saved in the checkpoint is used;
the data root of a synthetic set defaults to the checkpoint's work dir. Under
torchrun each rank predicts a share of the images and rank 0 evaluates.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial
from pathlib import Path
from typing import IO, Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import DataLoader, Subset

from . import dist as dist_mod
from . import mmdet_checkpoint
from .builders import SplitData, build_split, check_same_model, load_config_with_overrides, prepare_data
from .config import Config
from .data import collate
from .dist import DistEnv
from .evaluation import evaluate, predictions_to_coco
from .model import build_model
from .progress import Progress, bar, format_duration

IOU_TYPES = ("bbox", "segm")


# --------------------------------------------------------------------------- prediction


def _shard(n: int, env: DistEnv) -> List[int]:
    # strided rather than DistributedSampler: no padding duplicates to drop afterwards
    return list(range(env.rank, n, env.world_size))


@torch.no_grad()
def predict_split(model: torch.nn.Module, split: SplitData, cfg: Config, env: DistEnv, *, batch_size: int = 1,
                  workers: int = 0, progress: Optional[Progress] = None, log_interval: int = 20) -> List[dict]:
    """COCO results for every image of ``split`` on rank 0 (other ranks get [])."""
    was_training = model.training
    model.eval()
    indices = _shard(len(split.dataset), env)
    loader = DataLoader(Subset(split.dataset, indices), batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=partial(collate, size_divisor=cfg.data.size_divisor))
    results: List[dict] = []
    total = len(loader)
    t0 = time.monotonic()
    for i, (images, targets) in enumerate(loader, 1):
        preds = model.predict(images.to(env.device), [t["img_size"] for t in targets],
                              [t["scale_factor"] for t in targets], [t["orig_size"] for t in targets])
        results += predictions_to_coco(preds, [t["image_id"] for t in targets], split.label_to_cat_id)
        if progress is not None:
            per = (time.monotonic() - t0) / i
            line = f"predict {bar(i, total)} {i}/{total}  {per:.2f} s/batch  ETA {format_duration(per * (total - i))}"
            progress.show([line])
            if not progress.tty and (i % log_interval == 0 or i == total):
                progress.log(line)
    if progress is not None:
        progress.close()
    model.train(was_training)
    gathered = dist_mod.all_gather_objects(results, env)
    if not env.is_main:
        return []
    merged = [r for part in gathered for r in part]
    # rank interleaving must not change the order the evaluator breaks score ties in
    order = {img_id: k for k, img_id in enumerate(split.image_ids)}
    merged.sort(key=lambda r: order[r["image_id"]])
    return merged


def evaluate_results(split: SplitData, results: List[dict], out: Optional[IO[str]]) -> Dict[str, Dict[str, float]]:
    return evaluate(split.gt, results, IOU_TYPES, out=out)


def summary_line(stats: Dict[str, Dict[str, float]]) -> str:
    return f"box AP {stats['bbox']['AP']:.4f}  mask AP {stats['segm']['AP']:.4f}"


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m htc.evaluate_model", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="a .pth written by htc.train")
    p.add_argument("--config", help="YAML config (default: the one saved in the checkpoint)")
    p.add_argument("--set", dest="overrides", action="append", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set model.test.score_thr=0.05")
    p.add_argument("--split", choices=("val", "train"), default="val")
    p.add_argument("--work-dir", help="where a synthetic set without data.root lives (default: the checkpoint's folder)")
    p.add_argument("--out", help="write the stats {bbox: {...}, segm: {...}} here as JSON")
    p.add_argument("--detections", help="also write the COCO results (detections) JSON here")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--threads", type=int, default=0,
                   help="intra-op CPU threads (torch.set_num_threads; default: torch's own, which is 1 in some builds)")
    return p


def load_checkpoint_config(path: Path, config: Optional[str],
                           overrides: Sequence[str] = ()) -> Tuple[Config, Dict[str, Any]]:
    """A checkpoint written by htc.train and its config: ``config`` if given,
    else the one it carries, with ``overrides``; a config that changes the
    model the checkpoint holds is an error. An mmdetection checkpoint is
    converted (:mod:`htc.mmdet_checkpoint`)."""
    ckpt = mmdet_checkpoint.read_file(path)
    if mmdet_checkpoint.is_mmdet(ckpt):
        # a released mmdetection model: its architecture comes from its weights' shapes
        return mmdet_checkpoint.load(path, config, overrides, obj=ckpt)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"{path} has no 'model' state dict; was it written by htc.train or mmdetection?")
    if config is None and "config" not in ckpt:
        raise ValueError(f"{path} carries no config; pass --config")
    cfg = load_config_with_overrides(config, overrides, base=ckpt.get("config"))
    if "config" in ckpt:
        check_same_model(ckpt["config"], cfg, path)
    return cfg, ckpt


def load_model_from_checkpoint(cfg: Config, ckpt: Dict[str, Any], device: torch.device) -> torch.nn.Module:
    model = build_model(cfg)
    if "model" not in ckpt:
        raise ValueError("checkpoint has no 'model' state dict; was it written by htc.train?")
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        # the first line only says "Error(s) in loading state_dict"; the next names a tensor
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        raise ValueError(f"the checkpoint's weights do not fit the config's model: {lines[min(1, len(lines) - 1)]}"
                         " (use the config it was trained with)") from e
    return model.to(device).eval()


def run(args: argparse.Namespace, env: DistEnv) -> Dict[str, Dict[str, float]]:
    ckpt_path = Path(args.checkpoint)
    cfg, ckpt = load_checkpoint_config(ckpt_path, args.config, [s for group in args.overrides for s in group])
    if args.batch_size < 1:
        raise ValueError("--batch-size must be >= 1")
    work_dir = Path(args.work_dir) if args.work_dir else ckpt_path.parent
    root = prepare_data(cfg, work_dir, env, splits=(args.split,))
    split = build_split(cfg, root, args.split, train=False)
    model = load_model_from_checkpoint(cfg, ckpt, env.device)
    progress = Progress(sys.stderr, enabled=env.is_main)
    results = predict_split(model, split, cfg, env, batch_size=args.batch_size, workers=args.workers,
                            progress=progress)
    if not env.is_main:
        return {}
    if args.detections:
        with open(args.detections, "w", encoding="utf-8") as f:
            json.dump(results, f)
    stats = evaluate_results(split, results, sys.stdout)
    print(f"{ckpt_path} ({args.split}, {len(split.image_ids)} images): {summary_line(stats)}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(stats, f, indent=2)
    return stats


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    env: Optional[DistEnv] = None
    if args.threads < 0:
        print("htc.evaluate_model: --threads must be >= 0", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        env = dist_mod.setup(args.device)
        run(args, env)
    except (OSError, ValueError) as e:
        print(f"htc.evaluate_model: {e}", file=sys.stderr)
        return 2
    finally:
        if env is not None:
            dist_mod.cleanup(env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
