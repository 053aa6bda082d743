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

The config may extend a preset or another file (``_base_``, see
:mod:`htc.config`); the run prints which. A relative ``data.root`` is made
absolute first: against the config file's folder when it exists there, else
the working directory (``htcstream train`` runs Python where the user
started it); config.yaml and the checkpoints keep the absolute path.

Written to the work dir (default ``work_dirs/<config name>``) by rank 0 only:
``config.yaml`` (the resolved config), ``latest.pth`` after every epoch and,
with ``train.checkpoint_steps: N``, every N optimiser steps within an epoch,
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
    {"checkpoint": "work_dirs/htc_tiny/latest.pth", "epoch": 2, "epoch_iter": 50, "iters": 128}   (mid-epoch)
    {"interrupted": "SIGINT", "checkpoint": "work_dirs/htc_tiny/latest.pth", "epoch": 2, "epoch_iter": 51, "iters": 128}
    {"eval": {"bbox": {"AP": ..., ...}, "segm": {...}}, "epoch": 12}

Losses in a progress record are averaged over ranks and over the iterations
since the previous record.

SIGINT or SIGTERM during training (Ctrl-C; ``htcstream train`` passes it on,
``htc.torchrun`` hands it to every rank) finishes the step in progress on
every rank, writes ``latest.pth`` there (rank 0; the others wait for it) and
exits with 130. A second signal stops at once. ``--resume`` continues from
a mid-epoch checkpoint at the next step: same step counter and lr schedule,
the epoch's remaining images in the same order (the done ones are skipped),
and the same random state; with ``train.workers: 0`` the continuation repeats
an uninterrupted run exactly, with loader workers their random augmentations
are drawn anew.

Exit status: 0 done, 1 training failed (non-finite loss), 2 bad arguments,
config or data, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import yaml
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from . import dist as dist_mod
from . import pretrained as pretrained_mod
from .builders import (SplitData, build_split, check_same_model, load_config_with_overrides, prepare_data,
                       resolve_data_root)
from .checkpoint_file import save_checkpoint
from .config import Config, TrainConfig, describe_config, read_config_file
from .data import collate
from .dist import DistEnv
from .evaluate_model import evaluate_results, predict_split, summary_line
from .model import build_model
from .progress import Progress, bar, format_duration, wrap_fields

AUTO_RESUME = "latest"
LR_DECAY = 0.1


class NonFiniteLossError(FloatingPointError):
    """A loss term (or the gradient norm) became NaN or infinite."""


class TrainingInterrupted(Exception):
    """Stopped on SIGINT/SIGTERM after a step, with a checkpoint written (exit status 130)."""


class StopRequest:
    """SIGINT/SIGTERM while ``armed`` (the training loop): remember it, so the loop
    finishes its step, checkpoints and stops. Unarmed (data preparation, the
    final evaluation) and on a second signal: KeyboardInterrupt, Python's default.

    A repeat within ``DEBOUNCE_S`` counts as the same request: Ctrl-C on a
    terminal reaches torchrun and its workers both, and torchrun passes it on.
    """

    DEBOUNCE_S = 0.5

    def __init__(self) -> None:
        self.signum = 0
        self.armed = False
        self._at = 0.0
        self._previous: Dict[int, Any] = {}

    def install(self) -> "StopRequest":
        for s in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[s] = signal.signal(s, self._handle)
            except ValueError:  # not the main thread (an embedding caller): keep its handlers
                break
        return self

    def restore(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if self.signum and now - self._at < self.DEBOUNCE_S:
            return
        if self.armed and not self.signum:
            self.signum, self._at = signum, now
            return
        raise KeyboardInterrupt

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""


# --------------------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m htc.train", description="Train the HTC model.")
    p.add_argument("--config", required=True, help="YAML config (configs/model/*.yaml)")
    p.add_argument("--work-dir", help="checkpoints, config.yaml and the training log (default: work_dirs/<config name>); "
                                      "a synthetic set is generated under it only when data.root is empty")
    p.add_argument("--resume", nargs="?", const=AUTO_RESUME, metavar="CKPT",
                   help="continue from CKPT, or from <work dir>/latest.pth when no path is given")
    p.add_argument("--load-from", metavar="CKPT",
                   help="start from this whole model (htc.train or mmdetection HTC checkpoint) to fine-tune; "
                        "class-count layers that differ are re-initialised")
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
    """The config with its bases and overrides, ``data.root`` made absolute."""
    return resolve_config_notes(args)[0]


def resolve_config_notes(args: argparse.Namespace) -> Tuple[Config, List[str]]:
    """:func:`resolve_config` and lines for the log: which base the config
    extends, where data.root was found."""
    overrides = [s for group in args.overrides for s in group]
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    cfg = load_config_with_overrides(args.config, overrides)
    _, chain = read_config_file(args.config)
    notes = [f"config: {describe_config(chain)}"]
    given = cfg.data.root
    cfg.data.root, where = resolve_data_root(given, Path(args.config))
    if given and given != cfg.data.root:
        notes.append(f"data.root {given} -> {cfg.data.root} (from {where})")
    return cfg, notes


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
    if t.checkpoint_steps < 0:
        raise ValueError(f"train.checkpoint_steps must be >= 0 (0 = off), got {t.checkpoint_steps}")
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
    # a terminal's Ctrl-C reaches the whole process group: the trainer decides
    # when to stop and shuts its loader workers down itself
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class SkipSampler(Sampler):
    """``sampler`` without its first ``skip`` indices: the rest of the epoch a
    mid-epoch checkpoint stopped in, in the same order."""

    def __init__(self, sampler: Sampler, skip: int) -> None:
        self.sampler = sampler
        self.skip = max(0, skip)

    def __iter__(self):
        it = iter(self.sampler)
        for _ in range(self.skip):
            if next(it, None) is None:
                return
        yield from it

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


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


def status_line(record: Dict[str, Any]) -> str:
    """A progress record as the log line starts it: ``epoch E/N iter I/M loss X (term value ...) lr Y``,
    terms in the model's order. htcstream train's closing summary (trainStatus) prints the same."""
    terms = " ".join(f"{short_name(n)} {v:.4f}" for n, v in record["loss"].items())
    return (f"epoch {record['epoch']}/{record['epochs']} iter {record['iter']}/{record['iters']} "
            f"loss {record['loss_total']:.4f} ({terms}) lr {record['lr']:.3g}")


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

    def step(self, names: List[str], values: List[float], lr: float, epoch: int, it: int, dt: float,
             last: bool = False) -> None:
        """After iteration ``it`` (1-based) of 1-based ``epoch``; ``last``: the run stops after it, so
        its record is written even between log intervals (a summary names the step it stopped at)."""
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
        if it % self.interval == 0 or it == self.iters or last:
            mean = [sum(col) / len(self.window) for col in zip(*self.window)]
            self.window = []
            record = {
                "epoch": epoch, "epochs": self.total_epochs, "iter": it, "iters": self.iters,
                "loss": dict(zip(names, mean)), "loss_total": sum(mean), "lr": lr,
                "s_per_iter": s_iter, "eta_s": eta,
            }
            self.emit(record)
            if not self.progress.tty:
                self.log(f"{status_line(record)} {s_iter:.2f} s/it ETA {format_duration(eta)}")

    def mid_epoch_checkpoint(self, epoch: int, it: int, checkpoint: Optional[Path]) -> None:
        if checkpoint is None:
            return
        self.log(f"epoch {epoch}/{self.total_epochs} step {it}/{self.iters}: saved {checkpoint}")
        self.emit({"checkpoint": str(checkpoint), "epoch": epoch, "epoch_iter": it, "iters": self.iters})

    def interrupted(self, signame: str, epoch: int, it: int, checkpoint: Optional[Path]) -> str:
        """The record of a stop on a signal; returns the line main() prints."""
        self.progress.close()
        self.emit({"interrupted": signame, "checkpoint": str(checkpoint), "epoch": epoch, "epoch_iter": it,
                   "iters": self.iters})
        return f"{signame}: stopped after epoch {epoch}/{self.total_epochs} step {it}/{self.iters}; saved {checkpoint}"

    def end_epoch(self, epoch: int, seconds: float, checkpoint: Optional[Path]) -> None:
        self.progress.close()
        mean = self.epoch_sum / max(1, self.epoch_n)
        saved = f"; saved {checkpoint}" if checkpoint is not None else ""
        self.log(f"epoch {epoch}/{self.total_epochs} done in {format_duration(seconds)}: mean loss {mean:.4f}{saved}")
        self.epoch_sum, self.epoch_n = 0.0, 0
        self.recent.clear()
        if checkpoint is not None:
            self.emit({"checkpoint": str(checkpoint), "epoch": epoch})


def initial_weights(model: nn.Module, cfg: Config, args: argparse.Namespace) -> List[str]:
    """model.backbone.pretrained, then --load-from (which covers the backbone too)."""
    lines = []
    config_dir = Path(args.config).resolve().parent if args.config else None
    if cfg.model.backbone.pretrained:
        path = pretrained_mod.resolve(cfg.model.backbone.pretrained, config_dir)
        lines.append(pretrained_mod.load_backbone(model.backbone, path))
    if args.load_from:
        lines += pretrained_mod.load_from(model, Path(args.load_from))
    return lines


def train(args: argparse.Namespace, env: DistEnv, stop: Optional[StopRequest] = None) -> TrainResult:
    """One training run; ``stop`` (installed by :func:`main`) turns SIGINT/SIGTERM
    into a checkpoint and :class:`TrainingInterrupted`."""
    stop = stop if stop is not None else StopRequest()
    cfg, notes = resolve_config_notes(args)
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
        for note in notes:
            print(f"htc.train: {note}", file=sys.stderr)

    splits = ("train", "val") if t.evaluate else ("train",)
    root = prepare_data(cfg, work_dir, env, splits)
    train_split = build_split(cfg, root, "train", train=True)
    if cfg.model.semantic and not cfg.data.semantic_dir and env.is_main:
        print("htc.train: data.semantic_dir is empty: no semantic label maps, so the semantic branch runs "
              "without a loss and keeps the weights it starts with", file=sys.stderr)
    val_split: Optional[SplitData] = None
    if t.evaluate and not (cfg.data.dataset == "synthetic" and cfg.data.num_val_images <= 0):
        # built now so a missing val set fails before hours of training, not after
        val_split = build_split(cfg, root, "val", train=False)

    # same seed on every rank: identical initial weights (DDP also broadcasts rank 0's)
    seed_everything(t.seed)
    if args.resume is not None and args.load_from:
        raise ValueError("--load-from starts a new run from other weights, --resume continues this one: give one")
    model = build_model(cfg)
    if args.resume is None:
        for line in initial_weights(model, cfg, args):
            if env.is_main:
                print(f"htc.train: {line}", file=sys.stderr)
    model = model.to(env.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    # per-rank streams from here on, so ranks sample different RoIs and flips
    seed_everything(t.seed + env.rank)

    start_epoch, iteration = 0, 0
    skip_steps = 0  # steps of epoch start_epoch + 1 a mid-epoch checkpoint already took
    if resume_path is not None:
        ckpt = torch.load(resume_path, map_location="cpu")
        check_same_model(ckpt.get("config", {}), cfg, resume_path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        start_epoch, iteration = int(ckpt["epoch"]), int(ckpt["iteration"])
        skip_steps = int(ckpt.get("epoch_iter", 0))
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
    folded = pretrained_mod.freeze_folded_norms(model)
    if folded and env.is_main:
        print(f"htc.train: {len(folded)} BatchNorm layers hold norms folded into their convolutions (a checkpoint "
              f"read back from a bundle): they train in eval mode, as fixed affines with their weight and bias "
              f"learning, so the first step starts from the exported model", file=sys.stderr)

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
        if resume_path and skip_steps:
            resumed = (f", resuming at epoch {start_epoch + 1} step {skip_steps + 1}/{iters} (step {iteration + 1} "
                       f"overall) from {resume_path}")
        reporter.log(f"htc.train: {len(train_split.image_ids)} training images, {iters} iterations/epoch "
                     f"({per_rank} images x {env.world_size} process(es)), {t.epochs} epochs, "
                     f"device {env.device}, work dir {work_dir}{resumed}")
        if start_epoch >= t.epochs:
            reporter.log(f"htc.train: {resume_path} already finished {start_epoch} of {t.epochs} epochs")

    def checkpoint(epochs_done: int, epoch_iter: int) -> Optional[Path]:
        """latest.pth (rank 0) after ``epochs_done`` epochs and ``epoch_iter`` steps of the next one."""
        rng_all = dist_mod.all_gather_objects(rng_state(), env)
        if not env.is_main:
            return None
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": {"type": "warmup_step", "iteration": iteration, "epoch": epochs_done,
                          "epoch_iter": epoch_iter},
            "config": cfg.to_dict(),
            "epoch": epochs_done,
            "epoch_iter": epoch_iter,
            "iteration": iteration,
            "rng": rng_all,
            "meta": {
                "classes": train_split.dataset.class_names,
                "cat_ids": train_split.dataset.cat_ids,
                "stuff_classes": train_split.dataset.stuff_names,
                "world_size": env.world_size,
                "iters_per_epoch": iters,
                "torch": torch.__version__,
            },
        }
        latest = work_dir / "latest.pth"
        save_checkpoint(state, latest)
        return latest

    stop.armed = True
    for epoch0 in range(start_epoch, t.epochs):
        epoch = epoch0 + 1
        sampler.set_epoch(epoch0)
        done = skip_steps if epoch0 == start_epoch else 0
        loader = DataLoader(train_split.dataset, batch_size=per_rank, sampler=SkipSampler(sampler, done * per_rank),
                            num_workers=t.workers,
                            collate_fn=collate_fn, worker_init_fn=seed_worker,
                            generator=loader_generator(t.seed, epoch0, env.rank),
                            pin_memory=env.device.type == "cuda")
        epoch_start = tick = time.monotonic()
        it, stopping = done, False
        for it, (images, targets) in enumerate(loader, done + 1):
            lr = learning_rate(t, epoch0, iteration)
            for group in optimizer.param_groups:
                group["lr"] = lr
            images = images.to(env.device, non_blocking=True)
            losses = net(images, targets_to(targets, env.device))
            names = list(losses)
            # a stop request rides along with the losses: any rank's makes every rank stop after this step
            local = torch.stack([losses[n].detach().float() for n in names]
                                + [losses[names[0]].new_tensor(1.0 if stop.signum else 0.0)])
            # the mean over ranks is both what is shown and what decides to stop,
            # so every rank stops at the same iteration instead of hanging in a collective
            *values, stop_votes = dist_mod.all_reduce_mean(local, env).cpu().tolist()
            stopping = stop_votes > 0
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
            reporter.step(names, values, lr, epoch, it, now - tick, last=stopping)
            tick = now
            if stopping:
                break
            if t.checkpoint_steps and iteration % t.checkpoint_steps == 0 and it < iters:
                reporter.mid_epoch_checkpoint(epoch, it, checkpoint(epoch0, it))

        if it < iters:  # stopped within the epoch
            saved = checkpoint(epoch0, it)
            dist_mod.barrier(env)  # no rank leaves (and makes torchrun end the others) before it is written
            raise TrainingInterrupted(reporter.interrupted(stop.name or "signal", epoch, it, saved))
        latest = saved = checkpoint(epoch, 0)
        if latest is not None and (epoch % t.checkpoint_interval == 0 or epoch == t.epochs):
            saved = work_dir / f"epoch_{epoch}.pth"
            _link_or_copy(latest, saved)
        reporter.end_epoch(epoch, time.monotonic() - epoch_start, saved)
        if stopping:
            dist_mod.barrier(env)
            raise TrainingInterrupted(reporter.interrupted(stop.name or "signal", epoch, iters, latest))
    # a request that came after the last step: every rank must agree before the evaluation's collectives
    late = dist_mod.all_reduce_mean(torch.tensor([1.0 if stop.signum else 0.0], device=env.device), env).item() > 0
    stop.armed = False
    if late:
        raise TrainingInterrupted("stopped on a signal after the last epoch (its checkpoint is written); "
                                  "evaluation skipped")

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
    stop = StopRequest().install()
    try:
        env = dist_mod.setup(args.device)
        train(args, env, stop)
    except (OSError, ValueError) as e:
        _report(env, str(e))
        return 2
    except NonFiniteLossError as e:
        _report(env, str(e))
        return 1
    except TrainingInterrupted as e:
        if env is None or env.is_main:  # every rank stops the same way; one line says so
            _report(env, f"{e}; --resume continues from there")
        return 130
    except KeyboardInterrupt:
        _report(env, "interrupted; --resume continues from the last checkpoint (latest.pth)")
        return 130
    finally:
        stop.restore()
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
