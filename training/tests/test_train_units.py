"""The training loop's pieces: lr schedule, --set overrides, progress display, DDP flags."""

import io
import math

import pytest
import torch

from htc.builders import apply_overrides, check_same_model, load_config_with_overrides
from htc.config import TrainConfig
from htc.model import build_model
from htc.progress import Progress, format_duration, wrap_fields
from htc.train import NonFiniteLossError, check_finite, has_unused_parameters, learning_rate
from model_testutil import make_batch, small_config

torch.set_num_threads(1)


def test_learning_rate_warms_up_linearly_then_steps_down():
    t = TrainConfig(lr=0.02, warmup_iters=500, warmup_ratio=0.001, steps=[8, 11])
    assert learning_rate(t, 0, 0) == pytest.approx(0.02 * 0.001)
    # mmcv: lr * (1 - (1 - i / warmup) * (1 - ratio))
    assert learning_rate(t, 0, 250) == pytest.approx(0.02 * (1 - 0.5 * 0.999))
    assert learning_rate(t, 0, 500) == pytest.approx(0.02)
    assert learning_rate(t, 7, 10_000) == pytest.approx(0.02)
    assert learning_rate(t, 8, 10_000) == pytest.approx(0.002)
    assert learning_rate(t, 11, 10_000) == pytest.approx(0.0002)
    # warmup scales the decayed lr if a step comes first
    assert learning_rate(TrainConfig(lr=1.0, warmup_iters=10, warmup_ratio=0.5, steps=[0]), 0, 0) == pytest.approx(0.05)
    assert learning_rate(TrainConfig(lr=1.0, warmup_iters=0, steps=[]), 0, 0) == 1.0


def test_overrides_are_yaml_typed_and_nested():
    raw = apply_overrides({"train": {"lr": 0.02}}, ["train.lr=0.01", "data.img_scales=[[640, 480]]",
                                                     "model.semantic=false", "data.root=/x=y"])
    assert raw == {"train": {"lr": 0.01}, "data": {"img_scales": [[640, 480]], "root": "/x=y"},
                   "model": {"semantic": False}}
    with pytest.raises(ValueError, match="not a section"):
        apply_overrides({"train": {"lr": 0.02}}, ["train.lr.x=1"])
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides({}, ["train.lr"])


def test_overrides_are_validated_like_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.02\n")
    assert load_config_with_overrides(str(path), ["train.epochs=3"]).train.epochs == 3
    with pytest.raises(ValueError, match=r"'train\.epochs' must be an integer"):
        load_config_with_overrides(str(path), ["train.epochs=three"])
    path.write_text("train: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML") as err:
        load_config_with_overrides(str(path))
    assert "\n" not in str(err.value)


def test_progress_off_a_terminal_writes_only_log_lines():
    buf = io.StringIO()
    p = Progress(buf)
    assert not p.tty
    p.show(["status that would be redrawn"])
    p.log("epoch 1/2 iter 20/40 loss 1.0")
    p.close()
    assert buf.getvalue() == "epoch 1/2 iter 20/40 loss 1.0\n"


def test_progress_on_a_terminal_redraws_in_place():
    buf = io.StringIO()
    p = Progress(buf, tty=True, min_redraw_s=0.0)
    p.show(["head 1", "  a 1"])
    p.show(["head 2", "  a 2"])
    p.log("saved")
    p.close()
    out = buf.getvalue()
    # second block: back to column 0, one line up, clear, redraw
    assert "head 1\n  a 1\r\x1b[1A\x1b[Jhead 2\n  a 2" in out
    assert "\x1b[Jsaved\nhead 2\n  a 2" in out
    assert out.endswith("head 2\n  a 2\n")
    assert "\x1b" not in out.replace("\x1b[1A", "").replace("\x1b[J", "")


def test_progress_disabled_on_other_ranks():
    buf = io.StringIO()
    p = Progress(buf, tty=True, enabled=False)
    p.show(["x"])
    p.log("y")
    p.close()
    assert buf.getvalue() == ""


def test_wrap_fields_and_durations():
    lines = wrap_fields([f"s{i}.loss_cls 0.1234" for i in range(6)], width=50)
    assert all(len(line) <= 50 for line in lines) and len(lines) == 3
    assert " ".join(lines).split() == " ".join(f"s{i}.loss_cls 0.1234" for i in range(6)).split()
    assert format_duration(59.4) == "0:59"
    assert format_duration(3725) == "1:02:05"
    assert format_duration(float("nan")) == "?"


def test_non_finite_message_names_term_and_iteration():
    check_finite(["a", "b"], [1.0, 2.0], 1, 12, 3, 100, 3)
    with pytest.raises(NonFiniteLossError) as err:
        check_finite(["loss_rpn_cls", "s2.loss_bbox"], [0.5, math.inf], 3, 12, 7, 100, 207)
    msg = str(err.value)
    assert "s2.loss_bbox = inf at epoch 3/12, iteration 7/100 (step 207 overall)" in msg
    assert "loss_rpn_cls=0.5" in msg


@pytest.mark.parametrize("overrides", [
    {}, {"semantic_fusion": []}, {"semantic": False}, {"semantic_fusion": ["mask"]}, {"mask_info_flow": False},
])
def test_ddp_unused_parameter_flag_matches_the_model(overrides):
    cfg = small_config(**overrides)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    images, targets = make_batch()
    sum(model.loss(images, targets).values()).backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert has_unused_parameters(cfg) == bool(unused), unused


def test_checkpoint_model_config_must_match_except_test_settings():
    saved = small_config().to_dict()
    check_same_model(saved, small_config(test={"score_thr": 0.3, "max_per_img": 5}), "ckpt.pth")
    with pytest.raises(ValueError, match=r"ckpt\.pth was trained with another model config "
                                         r"\(model\.roi\.fc_dim: 64 -> 128\)"):
        check_same_model(saved, small_config(roi={"fc_dim": 128}), "ckpt.pth")
