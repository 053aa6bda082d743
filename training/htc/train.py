"""Train HTC on a COCO-format dataset (or the synthetic one it generates).

    cd training
    /usr/bin/python3 -m htc.train --config ../configs/model/htc_tiny.yaml \\
        [--work-dir DIR] [--resume [CKPT]] [--epochs N] [--set key=value ...] \\
        [--progress-json] [--log-interval N] [--device auto|cpu|cuda]
    torchrun --nproc_per_node=2 -m htc.train --config ...     # DDP (gloo on CPU, nccl on CUDA)

Debian's torchrun (PyTorch 1.13) fails to start on Python 3.11 unless given
``--redirects 1 --tee 1`` (or 2 and 2, keeping stdout clean);
``python3 -m htc.torchrun`` takes torchrun's arguments and needs neither.

The schedule is mmdetection's: SGD with momentum and weight decay, linear
warmup over ``train.warmup_iters`` iterations from ``warmup_ratio`` x lr, then
lr x 0.1 after each epoch listed in ``train.steps``. ``train.batch_size`` is
images per optimiser step over all processes.

Written to the work dir (default ``work_dirs/<config name>``) by rank 0 only:
``config.yaml`` (the resolved config), ``latest.pth`` after every epoch,
``epoch_N.pth`` every ``checkpoint_interval`` epochs and after the last,
``train_log.jsonl`` (the progress records below), ``eval_val.json`` (box and
mask AP, when ``train.evaluate``) and, for ``data.dataset: synthetic`` without
``data.root``, the generated data under ``data/``.

Progress goes to stderr: a redrawn status block on a terminal, else one line
every ``--log-interval`` iterations. With ``--progress-json`` stdout carries
one JSON object per line and nothing else (the COCO tables then go to stderr):

    {"epoch": 1, "epochs": 12, "iter": 20, "iters": 128, "loss": {"loss_rpn_cls": 0.69, ...},
     "loss_total": 5.1, "lr": 0.002, "s_per_iter": 0.9, "eta_s": 1380.0}
    {"checkpoint": "work_dirs/htc_tiny/epoch_1.pth", "epoch": 1}
    {"eval": {"bbox": {"AP": ..., ...}, "segm": {...}}, "epoch": 12}

Losses in a progress record are averaged over ranks and over the iterations
since the previous record. Exit status: 0 done, 1 training failed (non-finite
loss), 2 bad arguments, config or data, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional, Sequence

import numpy as np
import torch
import yaml
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from . import dist as dist_mod
from .builders import SplitData, build_split, check_same_model, load_config_with_overrides, prepare_data
from .config import Config, TrainConfig
from .data import collate
from .dist import DistEnv
from .evaluate_model import evaluate_results, predict_split, summary_line
from .model import build_model
from .progress import Progress, bar, format_duration, wrap_fields

AUTO_RESUME = "latest"
LR_DECAY = 0.1


class NonFiniteLossError(FloatingPointError):
    """A loss term (or the gradient norm) became NaN or infinite."""


# --------------------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m htc.train", description="Train the HTC model.")
    p.add_argument("--config", required=True, help="YAML config (configs/model/*.yaml)")
    p.add_argument("--work-dir", help="checkpoints, logs and generated data (default: work_dirs/<config name>)")
    p.add_argument("--resume", nargs="?", const=AUTO_RESUME, metavar="CKPT",
                   help="continue from CKPT, or from <work dir>/latest.pth when no path is given")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--set", dest="overrides", action="append", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override config values, e.g. --set train.lr=0.01 data.img_scales=[[640,480]]")
    p.add_argument("--progress-json", action="store_true",
                   help="print one JSON progress object per logged step on stdout")
    p.add_argument("--log-interval", type=int, default=20,
                   help="iterations between log lines / JSON records (default 20)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda")
    return p


def resolve_config(args: argparse.Namespace) -> Config:
    overrides = [s for group in args.overrides for s in group]
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    return load_config_with_overrides(args.config, overrides)


def check_train_config(t: TrainConfig, world_size: int) -> None:
    """Checks of train values the schedule and sampler rely on."""
    if t.lr <= 0 or not math.isfinite(t.lr):
        raise ValueError(f"train.lr must be a positive number, got {t.lr}")
    if t.warmup_iters < 0:
        raise ValueError(f"train.warmup_iters must be >= 0, got {t.warmup_iters}")
    if not 0.0 < t.warmup_ratio <= 1.0:
        raise ValueError(f"train.warmup_ratio must be in (0, 1], got {t.warmup_ratio}")
    if t.workers < 0:
        raise ValueError(f"train.workers must be >= 0, got {t.workers}")
    if t.checkpoint_interval < 1:
        raise ValueError(f"train.checkpoint_interval must be >= 1, got {t.checkpoint_interval}")
    if t.batch_size % world_size != 0:
        raise ValueError(f"train.batch_size ({t.batch_size}) must be divisible by the number of processes "
                         f"({world_size}): it is the batch of one optimiser step over all of them")


# --------------------------------------------------------------------------- schedule


def learning_rate(t: TrainConfig, epoch: int, iteration: int) -> float:
    """lr for the step taken at 0-based ``epoch`` after ``iteration`` steps in total.

    Step decay (x0.1 once ``epoch`` reaches each of ``t.steps``) then mmcv's
    linear warmup: the first ``warmup_iters`` steps ramp from
    ``warmup_ratio`` x lr to lr.
    """
    lr = t.lr * LR_DECAY ** sum(1 for s in t.steps if epoch >= s)
    if iteration < t.warmup_iters:
        k = (1.0 - iteration / t.warmup_iters) * (1.0 - t.warmup_ratio)
        lr *= 1.0 - k
    return lr


# --------------------------------------------------------------------------- randomness


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    # torch seeds each worker with base_seed + worker_id; numpy and random would
    # otherwise be forked copies, identical in every worker
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def rng_state() -> Dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def loader_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    """Generator for one epoch's DataLoader: worker seeds depend on (seed, epoch, rank) only,
    so a resumed run draws the same augmentations."""
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + epoch * 10_007 + rank) % 2**63)
    return g


# --------------------------------------------------------------------------- model plumbing


class LossModule(nn.Module):
    """forward = model.loss: DistributedDataParallel only hooks ``forward``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor, targets: Sequence[Dict[str, Any]]) -> Dict[str, Tensor]:
        return self.model.loss(images, targets)


def has_unused_parameters(cfg: Config) -> bool:
    """Whether some trainable parameters never reach the loss, which DDP must be told.

    Only the semantic-branch-without-fusion ablation does that (its embedding
    conv feeds nothing); saying so for every config would cost an autograd
    traversal per step and a warning per rank.
    """
    return cfg.model.semantic and not cfg.model.semantic_fusion


def targets_to(targets: List[Dict[str, Any]], device: torch.device) -> List[Dict[str, Any]]:
    if device.type == "cpu":
        return targets
    return [{k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in t.items()}
            for t in targets]


def short_name(name: str) -> str:
    """loss_rpn_cls -> rpn_cls, s0.loss_mask -> s0.mask (for the status line)."""
    return name.replace("loss_", "")


def check_finite(names: Sequence[str], values: Sequence[float], epoch: int, epochs: int, it: int, iters: int,
                 step: int) -> None:
    bad = [(n, v) for n, v in zip(names, values) if not math.isfinite(v)]
    if not bad:
        return
    what = ", ".join(f"{n} = {v}" for n, v in bad)
    others = ", ".join(f"{n}={v:.4g}" for n, v in zip(names, values) if math.isfinite(v))
    raise NonFiniteLossError(
        f"non-finite loss {what} at epoch {epoch}/{epochs}, iteration {it}/{iters} (step {step} overall); "
        f"stopping. Other terms: {others or 'none'}. Lower train.lr, set train.grad_clip, or check the data.")


# --------------------------------------------------------------------------- checkpoints


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _link_or_copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    if tmp.exists():
        tmp.unlink()
    try:
        # latest.pth is replaced (not rewritten) next epoch, so a hard link is a safe, free copy
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


# --------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    work_dir: Path
    epoch: int                      # epochs completed
    iteration: int                  # optimiser steps taken in total
    records: List[Dict[str, Any]] = field(default_factory=list)  # progress records of this run
    eval_stats: Optional[Dict[str, Dict[str, float]]] = None
    model: Optional[nn.Module] = None


class _Reporter:
    """Progress block / log lines on stderr, JSON records on stdout and in train_log.jsonl (rank 0)."""

    def __init__(self, env: DistEnv, work_dir: Path, json_stdout: bool, interval: int, total_epochs: int,
                 iters: int) -> None:
        self.env = env
        self.json_stdout = json_stdout and env.is_main
        self.interval = max(1, interval)
        self.progress = Progress(sys.stderr, enabled=env.is_main)
        self.log_path = work_dir / "train_log.jsonl"
        self.total_epochs = total_epochs
        self.iters = iters
        self.total_iters = total_epochs * iters
        self.records: List[Dict[str, Any]] = []
        self.times: Deque[float] = deque(maxlen=20)
        self.recent: Deque[List[float]] = deque(maxlen=self.interval)
        self.window: List[List[float]] = []
        self.epoch_sum = 0.0
        self.epoch_n = 0

    def emit(self, record: Dict[str, Any]) -> None:
        self.records.append(record)
        if not self.env.is_main:
            return
        line = json.dumps(record)
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        if self.json_stdout:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def log(self, text: str) -> None:
        self.progress.log(text)

    def step(self, names: List[str], values: List[float], lr: float, epoch: int, it: int, dt: float) -> None:
        """After iteration ``it`` (1-based) of 1-based ``epoch``."""
        self.times.append(dt)
        self.recent.append(values)
        self.window.append(values)
        self.epoch_sum += sum(values)
        self.epoch_n += 1
        s_iter = sum(self.times) / len(self.times)
        remaining = self.total_iters - ((epoch - 1) * self.iters + it)
        eta = s_iter * remaining
        if self.progress.tty:
            smooth = [sum(col) / len(self.recent) for col in zip(*self.recent)]
            head = (f"epoch {epoch}/{self.total_epochs} {bar(it, self.iters)} {it}/{self.iters}  "
                    f"loss {sum(smooth):.4f}  lr {lr:.3g}  {s_iter:.2f} s/it  ETA {format_duration(eta)}")
            fields = [f"{short_name(n)} {v:.4f}" for n, v in zip(names, smooth)]
            self.progress.show([head] + wrap_fields(fields, self.progress.width()), force=it == self.iters)
        if it % self.interval == 0 or it == self.iters:
            mean = [sum(col) / len(self.window) for col in zip(*self.window)]
            self.window = []
            record = {
                "epoch": epoch, "epochs": self.total_epochs, "iter": it, "iters": self.iters,
                "loss": dict(zip(names, mean)), "loss_total": sum(mean), "lr": lr,
                "s_per_iter": s_iter, "eta_s": eta,
            }
            self.emit(record)
            if not self.progress.tty:
                terms = " ".join(f"{short_name(n)} {v:.4f}" for n, v in zip(names, mean))
                self.log(f"epoch {epoch}/{self.total_epochs} iter {it}/{self.iters} loss {sum(mean):.4f} "
                         f"({terms}) lr {lr:.3g} {s_iter:.2f} s/it ETA {format_duration(eta)}")

    def end_epoch(self, epoch: int, seconds: float, checkpoint: Optional[Path]) -> None:
        self.progress.close()
        mean = self.epoch_sum / max(1, self.epoch_n)
        saved = f"; saved {checkpoint}" if checkpoint is not None else ""
        self.log(f"epoch {epoch}/{self.total_epochs} done in {format_duration(seconds)}: mean loss {mean:.4f}{saved}")
        self.epoch_sum, self.epoch_n = 0.0, 0
        self.recent.clear()
        if checkpoint is not None:
            self.emit({"checkpoint": str(checkpoint), "epoch": epoch})


def train(args: argparse.Namespace, env: DistEnv) -> TrainResult:
    cfg = resolve_config(args)
    t = cfg.train
    check_train_config(t, env.world_size)
    if args.log_interval < 1:
        raise ValueError(f"--log-interval must be >= 1, got {args.log_interval}")
    work_dir = Path(args.work_dir) if args.work_dir else Path("work_dirs") / Path(args.config).stem
    resume_path: Optional[Path] = None
    if args.resume is not None:
        resume_path = work_dir / "latest.pth" if args.resume == AUTO_RESUME else Path(args.resume)
        if not resume_path.is_file():
            raise FileNotFoundError(f"--resume: checkpoint {resume_path} not found")
    if env.is_main:
        work_dir.mkdir(parents=True, exist_ok=True)
        with open(work_dir / "config.yaml", "w", encoding="utf-8") as f:
            yaml.safe_dump(cfg.to_dict(), f, sort_keys=False)
        if resume_path is None:
            # a fresh run's log must not continue an older run's in the same folder
            (work_dir / "train_log.jsonl").unlink(missing_ok=True)

    splits = ("train", "val") if t.evaluate else ("train",)
    root = prepare_data(cfg, work_dir, env, splits)
    train_split = build_split(cfg, root, "train", train=True)
    val_split: Optional[SplitData] = None
    if t.evaluate and not (cfg.data.dataset == "synthetic" and cfg.data.num_val_images <= 0):
        # built now so a missing val set fails before hours of training, not after
        val_split = build_split(cfg, root, "val", train=False)

    # same seed on every rank: identical initial weights (DDP also broadcasts rank 0's)
    seed_everything(t.seed)
    model = build_model(cfg).to(env.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    # per-rank streams from here on, so ranks sample different RoIs and flips
    seed_everything(t.seed + env.rank)

    start_epoch, iteration = 0, 0
    if resume_path is not None:
        ckpt = torch.load(resume_path, map_location="cpu")
        check_same_model(ckpt.get("config", {}), cfg, resume_path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, iteration = int(ckpt["epoch"]), int(ckpt["iteration"])
        states = ckpt.get("rng")
        if isinstance(states, list) and len(states) == env.world_size:
            set_rng_state(states[env.rank])
        else:
            if env.is_main:
                print(f"htc.train: {resume_path} holds random states of {len(states or [])} process(es), this "
                      f"run has {env.world_size}; the continuation will not repeat a run of the same length",
                      file=sys.stderr)
            seed_everything(t.seed + env.rank + 1_000 * start_epoch)
        del ckpt

    net: nn.Module = LossModule(model)
    if env.distributed:
        net = DistributedDataParallel(net, device_ids=[env.device] if env.device.type == "cuda" else None,
                                      find_unused_parameters=has_unused_parameters(cfg))
    net.train()

    sampler = DistributedSampler(train_split.dataset, num_replicas=env.world_size, rank=env.rank, shuffle=True,
                                 seed=t.seed, drop_last=False)
    per_rank = t.batch_size // env.world_size
    collate_fn = partial(collate, size_divisor=cfg.data.size_divisor)
    iters = math.ceil(len(sampler) / per_rank)
    reporter = _Reporter(env, work_dir, args.progress_json, args.log_interval, t.epochs, iters)
    if env.is_main:
        resumed = f", resuming after epoch {start_epoch} from {resume_path}" if resume_path else ""
        reporter.log(f"htc.train: {len(train_split.image_ids)} training images, {iters} iterations/epoch "
                     f"({per_rank} images x {env.world_size} process(es)), {t.epochs} epochs, "
                     f"device {env.device}, work dir {work_dir}{resumed}")
        if start_epoch >= t.epochs:
            reporter.log(f"htc.train: {resume_path} already finished {start_epoch} of {t.epochs} epochs")

    for epoch0 in range(start_epoch, t.epochs):
        epoch = epoch0 + 1
        sampler.set_epoch(epoch0)
        loader = DataLoader(train_split.dataset, batch_size=per_rank, sampler=sampler, num_workers=t.workers,
                            collate_fn=collate_fn, worker_init_fn=seed_worker,
                            generator=loader_generator(t.seed, epoch0, env.rank),
                            pin_memory=env.device.type == "cuda")
        epoch_start = tick = time.monotonic()
        for it, (images, targets) in enumerate(loader, 1):
            lr = learning_rate(t, epoch0, iteration)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images = images.to(env.device, non_blocking=True)
            losses = net(images, targets_to(targets, env.device))
            names = list(losses)
            local = torch.stack([losses[n].detach().float() for n in names])
            # the mean over ranks is both what is shown and what decides to stop,
            # so every rank stops at the same iteration instead of hanging in a collective
            values = dist_mod.all_reduce_mean(local, env).cpu().tolist()
            check_finite(names, values, epoch, t.epochs, it, iters, iteration + 1)
            optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            if t.grad_clip > 0:
                norm = float(torch.nn.utils.clip_grad_norm_(params, t.grad_clip))
                if not math.isfinite(norm):
                    raise NonFiniteLossError(
                        f"non-finite gradient norm ({norm}) at epoch {epoch}/{t.epochs}, iteration {it}/{iters} "
                        f"(step {iteration + 1} overall); stopping")
            optimizer.step()
            iteration += 1
            now = time.monotonic()
            reporter.step(names, values, lr, epoch, it, now - tick)
            tick = now

        rng_all = dist_mod.all_gather_objects(rng_state(), env)
        saved: Optional[Path] = None
        if env.is_main:
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": {"type": "warmup_step", "iteration": iteration, "epoch": epoch},
                "config": cfg.to_dict(),
                "epoch": epoch,
                "iteration": iteration,
                "rng": rng_all,
                "meta": {
                    "classes": train_split.dataset.class_names,
                    "cat_ids": train_split.dataset.cat_ids,
                    "stuff_classes": train_split.dataset.stuff_names,
                    "world_size": env.world_size,
                    "torch": torch.__version__,
                },
            }
            latest = work_dir / "latest.pth"
            _atomic_save(state, latest)
            saved = latest
            if epoch % t.checkpoint_interval == 0 or epoch == t.epochs:
                saved = work_dir / f"epoch_{epoch}.pth"
                _link_or_copy(latest, saved)
        reporter.end_epoch(epoch, time.monotonic() - epoch_start, saved)

    result = TrainResult(work_dir=work_dir, epoch=max(start_epoch, t.epochs), iteration=iteration,
                         records=reporter.records, model=model)
    if val_split is not None:
        reporter.log(f"htc.train: evaluating on val ({len(val_split.image_ids)} images)")
        results = predict_split(model, val_split, cfg, env, progress=reporter.progress,
                                log_interval=args.log_interval)
        if env.is_main:
            tables = sys.stderr if args.progress_json else sys.stdout
            stats = evaluate_results(val_split, results, tables)
            with open(work_dir / "eval_val.json", "w", encoding="utf-8") as f:
                json.dump(stats, f, indent=2)
            reporter.log(f"htc.train: epoch {result.epoch} on val: {summary_line(stats)}")
            reporter.emit({"eval": stats, "epoch": result.epoch})
            result.eval_stats = stats
        model.train()
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    env: Optional[DistEnv] = None
    try:
        env = dist_mod.setup(args.device)
        train(args, env)
    except (OSError, ValueError) as e:
        _report(env, str(e))
        return 2
    except NonFiniteLossError as e:
        _report(env, str(e))
        return 1
    except KeyboardInterrupt:
        _report(env, "interrupted; --resume continues from the last saved epoch (latest.pth)")
        return 130
    finally:
        if env is not None:
            dist_mod.cleanup(env)
    return 0


def _report(env: Optional[DistEnv], message: str) -> None:
    prefix = f"[rank {env.rank}] " if env is not None and env.distributed else ""
    sys.stderr.write(f"\nhtc.train: {prefix}{message}\n" if _stderr_tty() else f"htc.train: {prefix}{message}\n")
    sys.stderr.flush()


def _stderr_tty() -> bool:
    return bool(getattr(sys.stderr, "isatty", None) and sys.stderr.isatty())


if __name__ == "__main__":
    sys.exit(main())
