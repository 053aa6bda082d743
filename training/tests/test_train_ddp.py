"""A real two-process DistributedDataParallel step (gloo, CPU) through htc.train under torchrun."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from htc.builders import load_config_with_overrides
from htc.model import build_model
from htc.train import seed_everything
from train_testutil import read_log, steps, write_config

torch.set_num_threads(1)

TESTS_DIR = Path(__file__).resolve().parent
TRAINING_DIR = TESTS_DIR.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_step_keeps_ranks_identical(tmp_path):
    # 2 images, 1 per rank: one optimiser step
    cfg = write_config(tmp_path / "tiny.yaml", tmp_path / "data", data={"num_train_images": 2},
                       train={"epochs": 1})
    work = tmp_path / "work"
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, PYTHONPATH=str(TRAINING_DIR), OMP_NUM_THREADS="1")
    # htc.torchrun is torchrun with the Python 3.11 fix (see its docstring); the
    # static rendezvous on an ephemeral port, since --standalone always takes 29400
    cmd = [sys.executable, "-m", "htc.torchrun", "--nnodes=1", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={free_port()}", str(TESTS_DIR / "ddp_driver.py"), str(out),
           "--config", str(cfg), "--work-dir", str(work), "--log-interval", "1", "--progress-json", "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]

    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    p0 = torch.load(out / "rank0.pt")
    p1 = torch.load(out / "rank1.pt")
    seed_everything(0)
    start = dict(build_model(load_config_with_overrides(str(cfg))).named_parameters())
    assert p0.keys() == p1.keys() == start.keys()
    for k in p0:
        assert torch.equal(p0[k], p1[k]), f"ranks disagree on {k}"
    changed = [k for k in p0 if not torch.equal(p0[k], start[k])]
    assert "roi_head.bbox_head.0.fc_cls.weight" in changed and "backbone.conv1.weight" in changed

    # rank 0 alone logs, with the loss terms averaged over the ranks
    records = steps(read_log(work))
    assert len(records) == 1 and (records[0]["iter"], records[0]["iters"]) == (1, 1)
    printed = [json.loads(line) for line in proc.stdout.splitlines()]
    assert steps(printed) == records
    local = [r["losses"] for r in ranks]
    assert [len(x) for x in local] == [1, 1]
    assert local[0][0] != local[1][0]  # different images on the two ranks
    for name, value in records[0]["loss"].items():
        assert value == pytest.approx((local[0][0][name] + local[1][0][name]) / 2, rel=1e-6), name
    assert (work / "epoch_1.pth").is_file()
    assert proc.stderr.count("htc.train: 2 training images") == 1
