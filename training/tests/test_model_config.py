"""Config loading: presets, defaults, and clear errors for bad keys and values."""

import pytest

from htc.config import Config, config_from_dict, load_config
from model_testutil import CONFIGS


def test_r50_preset_is_the_paper_configuration():
    cfg = load_config(CONFIGS / "htc_r50_fpn.yaml")
    m = cfg.model
    assert (m.num_classes, m.num_semantic_classes) == (80, 183)
    assert m.interleaved and m.mask_info_flow and m.semantic
    assert m.semantic_fusion == ["bbox", "mask"]
    assert (m.backbone.depth, m.backbone.width, m.backbone.frozen_stages, m.backbone.norm) == (50, 64, 1, "frozen")
    assert m.roi.iou_thresholds == [0.5, 0.6, 0.7]
    assert m.roi.stage_loss_weights == [1.0, 0.5, 0.25]
    assert m.roi.box_stds[2] == [0.033, 0.033, 0.067, 0.067]
    assert (m.rpn.test_pre_nms, m.rpn.test_max_proposals, m.rpn.nms_iou) == (1000, 1000, 0.7)
    assert cfg.data.img_scales == [[1333, 800]]
    assert (cfg.train.lr, cfg.train.steps, cfg.train.epochs) == (0.02, [8, 11], 12)
    # The file spells out the defaults: loading it equals the built-in defaults,
    # but for the semantic layout (the default keeps older checkpoints' meaning).
    assert m.semantic_classes == "cocostuff"
    assert cfg == config_from_dict({"model": {"semantic_classes": "cocostuff"}})


def test_tiny_preset_loads():
    cfg = load_config(CONFIGS / "htc_tiny.yaml")
    m = cfg.model
    assert (m.num_classes, m.num_stuff_classes) == (5, 4)  # htc.data.synthetic's classes
    assert m.backbone.depth == 18 and 16 <= m.backbone.width <= 32
    assert m.neck.out_channels == 64 and m.roi.fc_dim == 256 and m.roi.mask_channels == 64
    assert max(max(s) for s in cfg.data.img_scales) <= 320
    assert cfg.data.dataset == "synthetic"


def test_unknown_key_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  roi:\n    fc_dims: 512\n")
    with pytest.raises(ValueError) as err:
        load_config(path)
    assert "model.roi.fc_dims" in str(err.value)
    assert str(path) in str(err.value)


def test_unknown_section_is_rejected(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("modle:\n  num_classes: 3\n")
    with pytest.raises(ValueError, match="'modle'"):
        load_config(path)


@pytest.mark.parametrize("text, key", [
    ("model:\n  interleaved: 1\n", "model.interleaved"),
    ("model:\n  num_classes: 3.5\n", "model.num_classes"),
    ("model:\n  backbone:\n    depth: 42\n", "model.backbone.depth"),
    ("model:\n  semantic_fusion: [bbox, boxes]\n", "model.semantic_fusion"),
    ("model:\n  roi:\n    iou_thresholds: [0.5, 0.6]\n", "model.roi.iou_thresholds"),
    ("train:\n  steps: 8\n", "train.steps"),
    ("data:\n  multiscale_mode: ranges\n", "data.multiscale_mode"),
    # range draws between two corners: three pairs have no meaning there
    ("data:\n  multiscale_mode: range\n  img_scales: [[1333, 400], [1333, 800], [1333, 1200]]\n", "data.img_scales"),
])
def test_bad_values_name_the_key(tmp_path, text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        load_config(path)


def test_empty_file_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path) == Config()


def test_round_trip_through_dict():
    cfg = load_config(CONFIGS / "htc_tiny.yaml")
    assert config_from_dict(cfg.to_dict()) == cfg


def test_exponent_numbers_without_a_dot_are_numbers():
    # PyYAML (YAML 1.1) leaves 1e-4 a string; --set train.lr=1e-4 is what users type
    from htc.config import config_from_dict
    cfg = config_from_dict({"train": {"lr": "1e-4", "weight_decay": "5E-4"}})
    assert cfg.train.lr == 1e-4 and cfg.train.weight_decay == 5e-4
    with pytest.raises(ValueError, match="'train.lr' must be a number"):
        config_from_dict({"train": {"lr": "1e-4x"}})


def test_the_best_dcn_row_trains_over_mmdetections_range():
    """X-101-64x4d dconv mstrain 400-1400: the long edge fixed at 1600 and the
    short edge drawn from 400 to 1400, as mmdetection's img_scale
    [(1600, 400), (1600, 1400)] with multiscale_mode='range'."""
    from htc.data.transforms import Resize
    import torch
    cfg = load_config(CONFIGS / "htc_x101_64x4d_fpn_dconv_c3-c5_mstrain_400_1400_20e.yaml")
    assert cfg.data.multiscale_mode == "range"
    assert sorted(map(tuple, cfg.data.img_scales)) == [(1600, 400), (1600, 1400)]
    r = Resize(cfg.data.img_scales, cfg.data.multiscale_mode, torch.Generator().manual_seed(0))
    shorts = {r.sample_scale()[1] for _ in range(200)}
    assert min(shorts) >= 400 and max(shorts) <= 1400 and len(shorts) > 50
