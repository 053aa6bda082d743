"""Configs extend a preset or another file (``_base_``), and a relative data.root
resolves against the config file's folder or the working directory."""

import argparse
from pathlib import Path

import pytest

from htc import train
from htc.builders import load_config_with_overrides, resolve_data_root
from htc.config import PRESETS_DIR, describe_config, load_config, read_config_file
from model_testutil import CONFIGS


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_presets_dir_is_the_projects():
    assert PRESETS_DIR == CONFIGS.resolve()


def test_a_minimal_config_extends_its_preset_key_by_key(tmp_path):
    cfg_path = write(tmp_path / "mine.yaml", "_base_: htc_tiny\nmodel:\n  num_classes: 3\n  rpn:\n    train_pre_nms: 200\n"
                                             "data:\n  img_scales: [[256, 192]]\n")
    cfg = load_config(cfg_path)
    tiny = load_config(CONFIGS / "htc_tiny.yaml")
    # the user's keys win ...
    assert cfg.model.num_classes == 3 and cfg.model.rpn.train_pre_nms == 200
    assert cfg.data.img_scales == [[256, 192]]  # lists replace, they do not merge
    # ... everything else is the preset's, not the 1333x800 R-50 defaults
    assert cfg.model.backbone == tiny.model.backbone and cfg.model.backbone.depth == 18
    assert cfg.model.rpn.anchor_scales == [4.0] and cfg.model.rpn.train_max_proposals == 1000
    assert cfg.data.test_scale == [320, 320] and cfg.train == tiny.train
    _, chain = read_config_file(cfg_path)
    assert chain == [CONFIGS.resolve() / "htc_tiny.yaml", cfg_path]
    assert describe_config(chain) == f"{cfg_path} extends preset htc_tiny"


def test_bases_by_path_chain_and_overrides_still_apply(tmp_path):
    write(tmp_path / "base" / "common.yaml", f"_base_: {CONFIGS.resolve() / 'htc_tiny.yaml'}\ntrain:\n  lr: 0.005\n")
    mine = write(tmp_path / "exp" / "mine.yaml", "_base_: ../base/common.yaml\ntrain:\n  epochs: 3\n")
    cfg = load_config_with_overrides(str(mine), ["train.epochs=4"])
    assert (cfg.train.lr, cfg.train.epochs, cfg.model.backbone.depth) == (0.005, 4, 18)
    _, chain = read_config_file(mine)
    assert describe_config(chain) == f"{mine} extends {tmp_path / 'exp' / '../base/common.yaml'} <- preset htc_tiny"


def test_unknown_key_names_the_file_that_has_it(tmp_path):
    write(tmp_path / "base.yaml", "_base_: htc_tiny\nmodel:\n  rpn:\n    anchor_scale: [2]\n")
    mine = write(tmp_path / "mine.yaml", "_base_: base.yaml\n")
    with pytest.raises(ValueError) as err:
        load_config(mine)
    assert "unknown key 'model.rpn.anchor_scale'" in str(err.value) and str(tmp_path / "base.yaml") in str(err.value)
    with pytest.raises(ValueError, match=r"mine2\.yaml: unknown key 'data\.rooot'"):
        load_config(write(tmp_path / "mine2.yaml", "_base_: htc_tiny\ndata:\n  rooot: x\n"))


@pytest.mark.parametrize("text, says", [
    ("_base_: htc_huge\n", "is no preset (htc_r101_fpn_20e, htc_r50_fpn, htc_r50_fpn_20e, htc_tiny"),
    ("_base_: nothere.yaml\n", "nothere.yaml not found"),
    ("_base_: [htc_tiny]\n", "'_base_' must be a preset name"),
    ("_base_: loop.yaml\n", "comes back to this file"),
])
def test_bad_bases_are_one_clear_error(tmp_path, text, says):
    path = write(tmp_path / "loop.yaml", text)
    with pytest.raises(ValueError, match=says.replace("(", r"\(").replace(".", r"\.")):
        load_config(path)


def test_without_a_base_the_defaults_are_the_paper_model_and_the_trainer_says_so(tmp_path):
    path = write(tmp_path / "plain.yaml", "model:\n  num_classes: 3\n")
    cfg = load_config(path)
    assert cfg.model.backbone.depth == 50 and cfg.data.img_scales == [[1333, 800]]
    _, chain = read_config_file(path)
    line = describe_config(chain)
    assert "has no _base_" in line and "R-50-FPN at 1333x800" in line and "_base_: htc_tiny" in line
    _, chain = read_config_file(CONFIGS / "htc_tiny.yaml")
    assert describe_config(chain).startswith("preset htc_tiny (")


def test_relative_data_root_resolution(tmp_path, monkeypatch):
    cfg_dir = tmp_path / "cfgs"
    cwd = tmp_path / "cwd"
    (cfg_dir / "beside").mkdir(parents=True)
    (cwd / "here").mkdir(parents=True)
    monkeypatch.chdir(cwd)
    cfg = cfg_dir / "x.yaml"
    # found beside the config file
    assert resolve_data_root("beside", cfg) == (str(cfg_dir / "beside"), "the config file's folder")
    # not there: the working directory, also for data that does not exist yet
    assert resolve_data_root("here", cfg) == (str(cwd / "here"), "the working directory")
    assert resolve_data_root("data/new", cfg) == (str(cwd / "data/new"), "the working directory")
    # absolute as given, empty (synthetic under the work dir) untouched
    assert resolve_data_root(str(tmp_path / "abs"), cfg)[0] == str(tmp_path / "abs")
    assert resolve_data_root("", cfg)[0] == ""


def test_the_trainer_stores_data_root_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "c" / "x.yaml", "_base_: htc_tiny\ndata:\n  root: data/synthetic\n")
    args = argparse.Namespace(config=str(path), overrides=[], epochs=None)
    cfg, notes = train.resolve_config_notes(args)
    assert cfg.data.root == str(tmp_path / "data" / "synthetic")
    assert notes == [f"config: {path} extends preset htc_tiny",
                     f"data.root data/synthetic -> {tmp_path / 'data' / 'synthetic'} (from the working directory)"]
