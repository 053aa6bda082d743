"""What the trainer tells its user: the synthetic set's generation as it goes, the
step a stop really happened at, the bundle name of a mid-epoch checkpoint, what
--work-dir holds, and the data paths docs/training.md's commands use."""

import io
import re
import shlex
from pathlib import Path

import yaml

from htc import builders, export, train
from htc.builders import load_config_with_overrides, resolve_data_root
from htc.checkpoint_file import epoch_label
from htc.progress import Progress
from train_testutil import read_log, steps, write_config
from test_train_interrupt import signal_at_call

PROJECT = Path(__file__).resolve().parents[2]


def test_generating_the_synthetic_set_is_announced_with_progress(tmp_path, monkeypatch):
    monkeypatch.setattr(builders, "SYNTHETIC_LOG_EVERY", 2)
    cfg = load_config_with_overrides(str(write_config(tmp_path / "t.yaml", tmp_path / "d")),
                                     ["data.num_train_images=4", "data.num_val_images=2"])
    out = io.StringIO()
    builders.prepare_synthetic(cfg, tmp_path / "d", ("train", "val"), Progress(out, tty=False))
    lines = out.getvalue().splitlines()
    assert lines[0] == (f"htc.data.synthetic: generating the synthetic set (4 train + 2 val images, seed 0) "
                        f"in {tmp_path / 'd'} ...")
    assert [re.sub(r"\s+", " ", l).strip() for l in lines[1:-1]] == [
        "generating train [##########..........] 2/4 (2/6 images)",
        "generating train [####################] 4/4 (4/6 images)"]
    assert re.fullmatch(r"htc\.data\.synthetic: 6 images generated in \d+:\d\d", lines[-1])
    # there now: checked, not generated again, nothing said
    out = io.StringIO()
    builders.prepare_synthetic(cfg, tmp_path / "d", ("train", "val"), Progress(out, tty=False))
    assert out.getvalue() == ""


def test_a_stop_between_log_lines_reports_its_true_step_and_exports_as_its_epoch(tmp_path, monkeypatch, capsys):
    # 8 images, batch 2: 4 steps an epoch; logged every 20, stopped during step 3
    cfg = write_config(tmp_path / "tiny.yaml", tmp_path / "data", data={"num_train_images": 8})
    work = tmp_path / "work"
    signal_at_call(monkeypatch, 3)
    assert train.main(["--config", str(cfg), "--work-dir", str(work), "--progress-json"]) == 130
    out, err = capsys.readouterr()
    monkeypatch.undo()
    recs = steps(read_log(work))
    assert [(r["epoch"], r["iter"], r["iters"]) for r in recs] == [(1, 3, 4)]
    assert "SIGINT: stopped after epoch 1/2 step 3/4" in err
    # the checkpoint is named once in the trainer's text, once in its JSON
    latest = str(work / "latest.pth")
    assert err.count(latest) == 1 and out.count(latest) == 1

    assert epoch_label(__import__("torch").load(work / "latest.pth")) == "epoch1_step3"
    bundle = tmp_path / "bundle"
    assert export.main(["--checkpoint", str(work / "latest.pth"), "--out", str(bundle), "--no-fixture"]) == 0
    assert yaml.safe_load((bundle / "manifest.yaml").read_text())["name"] == "work_epoch1_step3"


def test_epoch_labels():
    assert epoch_label({"epoch": 3, "epoch_iter": 0}) == "epoch3"
    assert epoch_label({"epoch": 1}) == "epoch1"
    assert epoch_label({"epoch": 0, "epoch_iter": 45}) == "epoch1_step45"
    assert epoch_label({"model": {}}) is None


def test_work_dir_holds_data_only_without_a_data_root(tmp_path, capsys):
    text = train.build_parser().format_help()
    assert "generated under it only when data.root is empty" in " ".join(text.split())
    cfg = write_config(tmp_path / "t.yaml", tmp_path / "data", data={"num_train_images": 2, "num_val_images": 0})
    assert train.main(["--config", str(cfg), "--work-dir", str(tmp_path / "a"), "--epochs", "1"]) == 0
    assert (tmp_path / "data" / "annotations" / "instances_train.json").is_file()
    assert not (tmp_path / "a" / "data").exists()
    empty = write_config(tmp_path / "e.yaml", tmp_path / "unused", data={"num_train_images": 2, "num_val_images": 0,
                                                                         "root": ""})
    assert train.main(["--config", str(empty), "--work-dir", str(tmp_path / "b"), "--epochs", "1"]) == 0
    assert (tmp_path / "b" / "data" / "annotations" / "instances_train.json").is_file()
    assert "generating the synthetic set" in capsys.readouterr().err


def test_training_md_commands_use_the_data_htcstream_train_writes(monkeypatch):
    """The project folder's commands (bin/htcstream ...) must name the synthetic set
    where `bin/htcstream train --config configs/model/htc_tiny.yaml` run there puts it."""
    monkeypatch.chdir(PROJECT)
    config = PROJECT / "configs" / "model" / "htc_tiny.yaml"
    root, _ = resolve_data_root(load_config_with_overrides(str(config)).data.root, config)
    want = Path(root).relative_to(PROJECT)
    doc = (PROJECT / "docs" / "training.md").read_text()
    uses = []
    for line in doc.splitlines():
        if "instances_val.json" not in line:
            continue
        words = shlex.split(line.replace("`", " "), comments=True)
        uses += [Path(w).parents[1] for w in words if w.endswith("annotations/instances_val.json")]
    for line in doc.splitlines():
        # the generator run from the project folder in a subshell: (cd training && ... --out DIR)
        if line.startswith("(cd training &&") and "htc.data.synthetic" in line:
            words = shlex.split(line.strip("()"))
            out = PROJECT / "training" / words[words.index("--out") + 1]
            uses.append(out.resolve().relative_to(PROJECT))
    assert len(uses) >= 3 and all(u == want for u in uses), (want, uses)
