"""Importing mmdetection's released HTC checkpoints, and starting training from other weights.

The checkpoints are built by mmdet_testutil from mmdetection's names and
shapes with random weights (nothing is downloaded).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from htc import mmdet_checkpoint as mc
from htc import pretrained
from htc.config import Config, config_from_dict
from htc.data.cocostuff import COCO_THING_NAMES
from htc.evaluate_model import load_checkpoint_config
from htc.model import build_model
from htc.model.backbone import FrozenBatchNorm2d, ResNet

from mmdet_testutil import COCO_CLASSES, mmdet_htc_checkpoint

TRAINING = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def v2():
    return mmdet_htc_checkpoint()


def _save(tmp_path: Path, obj, name="htc.pth") -> Path:
    p = tmp_path / name
    torch.save(obj, p)
    return p


def test_v2_r50_loads_strictly_with_its_weights(v2):
    cfg, ck = mc.load(Path("htc_r50.pth"), obj=v2)
    m = cfg.model
    assert (m.backbone.depth, m.backbone.groups, m.backbone.width_per_group) == (50, 1, 64)
    assert (m.num_classes, m.num_semantic_classes, m.roi.num_stages, m.roi.fc_dim) == (80, 183, 3, 1024)
    assert m.mask_info_flow and m.semantic and m.semantic_loss_weight == 0.2
    sd = ck["model"]
    src = v2["state_dict"]
    for k in ("backbone.layer3.5.conv2.weight", "roi_head.bbox_head.2.fc_cls.weight",
              "roi_head.mask_head.1.conv_res.conv.weight", "roi_head.semantic_head.conv_logits.bias"):
        assert torch.equal(sd[k], src[k]), k
    assert ck["meta"]["classes"] == list(COCO_CLASSES)
    # the model built from the returned config takes the state dict as it is
    build_model(cfg).load_state_dict(sd)


def _v2_to_v1(ck):
    """mmdetection v1's layout of the same weights, written from v1's conventions."""
    out = {}
    for k, v in ck["state_dict"].items():
        k1 = k[len("roi_head."):] if k.startswith("roi_head.") else k
        if ".fc_cls." in k1:  # background first
            v = torch.cat([v[-1:], v[:-1]], dim=0)
        if ".conv_logits." in k1 and k1.startswith("mask_head."):  # a background logit map first
            v = torch.cat([torch.full_like(v[:1], 7.0), v], dim=0)
        out[k1] = v
    # v1 builds conv_res on the first mask head too; it never runs
    out["mask_head.0.conv_res.conv.weight"] = torch.zeros(256, 256, 1, 1)
    out["mask_head.0.conv_res.conv.bias"] = torch.zeros(256)
    return {"meta": {"CLASSES": COCO_CLASSES}, "state_dict": out}


def test_v1_layout_converts_to_the_same_model(v2):
    _, a = mc.load(Path("v2.pth"), obj=v2)
    _, b = mc.load(Path("v1.pth"), obj=_v2_to_v1(v2))
    assert a["meta"]["source"].startswith("mmdetection 2.x") and b["meta"]["source"].startswith("mmdetection v1")
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_the_generated_v1_layout_is_detected(v2):
    v1 = mmdet_htc_checkpoint(layout="v1")
    cfg, ck = mc.load(Path("v1.pth"), obj=v1)
    assert cfg.model.num_classes == 80
    assert ck["model"]["roi_head.mask_head.0.conv_logits.weight"].shape[0] == 80
    # background row 0 of v1 is the last row here
    assert torch.equal(ck["model"]["roi_head.bbox_head.0.fc_cls.weight"][-1], v1["state_dict"]["bbox_head.0.fc_cls.weight"][0])


@pytest.mark.parametrize("depth,groups,wpg", [(101, 1, 64), (101, 32, 4), (101, 64, 4)])
def test_r101_and_x101_layouts_load_strictly(depth, groups, wpg):
    ck = mmdet_htc_checkpoint(depth=depth, groups=groups, width_per_group=wpg)
    cfg, out = mc.load(Path(f"x{depth}.pth"), obj=ck)
    b = cfg.model.backbone
    assert (b.depth, b.groups, b.width_per_group) == (depth, groups, wpg)
    key = "backbone.layer4.2.conv2.weight"
    assert torch.equal(out["model"][key], ck["state_dict"][key])


def test_class_names_from_meta_else_coco():
    assert mc.class_names({"CLASSES": ("a", "b")}, 2) == ["a", "b"]
    assert mc.class_names({}, 80) == list(COCO_THING_NAMES) == list(COCO_CLASSES)
    assert mc.class_names({"CLASSES": ("a",)}, 3) == ["class_0", "class_1", "class_2"]


def test_unknown_missing_and_misshapen_tensors_are_named(v2):
    sd = dict(v2["state_dict"])
    sd["roi_head.bbox_head.0.fc_extra.weight"] = torch.zeros(3)
    with pytest.raises(mc.CheckpointError, match=r"roi_head\.bbox_head\.0\.fc_extra\.weight has no place"):
        mc.load(Path("x.pth"), obj={"state_dict": sd})
    sd = dict(v2["state_dict"])
    del sd["rpn_head.rpn_reg.bias"]
    with pytest.raises(mc.CheckpointError, match=r"missing tensor rpn_head\.rpn_reg\.bias"):
        mc.load(Path("x.pth"), obj={"state_dict": sd})
    sd = dict(v2["state_dict"])
    sd["roi_head.mask_head.2.upsample.weight"] = torch.zeros(256, 256, 3, 3)
    with pytest.raises(mc.CheckpointError, match=r"roi_head\.mask_head\.2\.upsample\.weight has shape \[256, 256, 3, 3\]"):
        mc.load(Path("x.pth"), obj={"state_dict": sd})


def test_v1_errors_use_v1_names():
    v1 = mmdet_htc_checkpoint(layout="v1")
    del v1["state_dict"]["semantic_head.convs.2.conv.bias"]
    with pytest.raises(mc.CheckpointError, match=r"missing tensor semantic_head\.convs\.2\.conv\.bias"):
        mc.load(Path("x.pth"), obj=v1)


def test_x101_64x4d_dcn_layout_loads_strictly():
    """The strongest released HTC's layout (X-101-64x4d, DCN in c3-c5): stages and offset
    groups read from the tensors, every tensor placed, offsets in conv2.conv_offset."""
    ck = mmdet_htc_checkpoint(depth=101, groups=64, width_per_group=4, dcn=True)
    cfg, out = mc.load(Path("htc_x101_64x4d_fpn_dconv_c3-c5_mstrain_400_1400_16x1_20e_coco.pth"), obj=ck)
    b = cfg.model.backbone
    assert (b.depth, b.groups, b.width_per_group) == (101, 64, 4)
    assert (b.dcn.stages, b.dcn.deform_groups) == ([False, True, True, True], 1)
    for key in ("backbone.layer3.22.conv2.conv_offset.weight", "backbone.layer4.2.conv2.conv_offset.bias",
                "backbone.layer2.0.conv2.weight"):
        assert torch.equal(out["model"][key], ck["state_dict"][key])
    assert not any("conv_offset" in k for k in out["model"] if k.startswith("backbone.layer1."))


def test_v1_dcn_offsets_convert_and_errors_use_v1_names():
    v1 = mmdet_htc_checkpoint(layout="v1", dcn=True)
    assert "backbone.layer2.0.conv2_offset.weight" in v1["state_dict"]
    cfg, out = mc.load(Path("v1.pth"), obj=v1)
    assert cfg.model.backbone.dcn.stages == [False, True, True, True]
    assert torch.equal(out["model"]["backbone.layer2.0.conv2.conv_offset.weight"],
                       v1["state_dict"]["backbone.layer2.0.conv2_offset.weight"])
    del v1["state_dict"]["backbone.layer3.1.conv2_offset.bias"]
    with pytest.raises(mc.CheckpointError, match=r"missing tensor backbone\.layer3\.1\.conv2_offset\.bias"):
        mc.load(Path("v1.pth"), obj=v1)


def test_modulated_dcn_is_refused_by_layer_name():
    ck = mmdet_htc_checkpoint(dcn=True)
    sd = ck["state_dict"]
    for k in [k for k in sd if ".conv2.conv_offset." in k]:
        sd[k] = torch.zeros((27,) + tuple(sd[k].shape[1:]))  # mdconv: dy, dx and a mask per tap
    with pytest.raises(mc.CheckpointError, match=r"backbone\.layer2\.0\.conv2\.conv_offset\.weight has 27 offset "
                                                 r"channels: modulated deformable convolution"):
        mc.load(Path("x.pth"), obj=ck)


def test_not_htc_and_not_a_checkpoint(tmp_path):
    with pytest.raises(mc.CheckpointError, match="not an HTC checkpoint"):
        mc.load(Path("x.pth"), obj={"state_dict": {"backbone.conv1.weight": torch.zeros(1)}})
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(mc.CheckpointError, match="not a readable PyTorch checkpoint"):
        mc.read_file(bad)


def test_config_overrides_what_the_shapes_say(tmp_path, v2):
    cfgfile = tmp_path / "small.yaml"
    cfgfile.write_text("data:\n  test_scale: [800, 480]\nmodel:\n  rpn:\n    test_max_proposals: 300\n")
    cfg, _ = mc.load(Path("x.pth"), str(cfgfile), ["model.test.max_per_img=50"], obj=v2)
    assert cfg.data.test_scale == [800, 480] and cfg.model.rpn.test_max_proposals == 300
    assert cfg.model.test.max_per_img == 50 and cfg.model.backbone.depth == 50


def test_export_path_reads_an_mmdet_file(tmp_path, v2):
    path = _save(tmp_path, v2)
    cfg, ck = load_checkpoint_config(path, None)
    assert cfg.model.num_classes == 80 and "model" in ck


def _run(*args, cwd=TRAINING):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_cli_import_writes_a_training_checkpoint_and_fails_in_one_line(tmp_path, v2):
    src = _save(tmp_path, v2)
    out = tmp_path / "ours.pth"
    r = _run("-m", "htc.mmdet_checkpoint", "--checkpoint", str(src), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "ResNet-50" in r.stdout and "80 classes" in r.stdout
    ck = torch.load(out, map_location="cpu")
    assert {"model", "config", "meta"} <= set(ck)
    cfg = config_from_dict(ck["config"])
    build_model(cfg).load_state_dict(ck["model"])
    # truncated: one clear line, exit 2
    cut = tmp_path / "cut.pth"
    cut.write_bytes(src.read_bytes()[: 1 << 20])
    r = _run("-m", "htc.mmdet_checkpoint", "--checkpoint", str(cut), "--out", str(tmp_path / "o.pth"))
    assert r.returncode == 2
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "cut.pth" in lines[0] and "not a readable PyTorch checkpoint" in lines[0], r.stderr


# --------------------------------------------------------------------------- starting weights


@pytest.mark.parametrize("ctor,groups,wpg", [(torchvision.models.resnet50, 1, 64),
                                             (torchvision.models.resnext50_32x4d, 32, 4)])
def test_torchvision_backbone_state_dict_loads(tmp_path, ctor, groups, wpg):
    tv = ctor()
    path = _save(tmp_path, tv.state_dict(), "tv.pth")
    ours = ResNet(depth=50, groups=groups, width_per_group=wpg)
    line = pretrained.load_backbone(ours, path)
    assert "classifier dropped" in line
    assert torch.equal(ours.layer3[2].conv2.weight, tv.layer3[2].conv2.weight)
    assert torch.equal(ours.layer1[0].bn1.running_var, tv.layer1[0].bn1.running_var)
    # the same features as torchvision's network up to layer4
    tv.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))))
        got = ours(x)[-1]
    assert torch.allclose(got, want, atol=1e-4)


def test_torchvision_backbone_of_another_depth_is_refused(tmp_path):
    path = _save(tmp_path, torchvision.models.resnet101().state_dict(), "r101.pth")
    with pytest.raises(mc.CheckpointError, match=r"tensor layer3\.\d+\.\S+ has no place"):
        pretrained.load_backbone(ResNet(depth=50), path)


def _tiny(num_classes: int) -> Config:
    return config_from_dict({"model": {"num_classes": num_classes, "num_stuff_classes": 2,
                                       "backbone": {"depth": 18, "width": 8, "frozen_stages": -1, "norm": "batch"},
                                       "neck": {"out_channels": 16}, "roi": {"fc_dim": 32, "mask_channels": 16}}})


def test_load_from_reinitialises_only_class_layers(tmp_path):
    torch.manual_seed(0)
    src = build_model(_tiny(5))
    path = _save(tmp_path, {"model": src.state_dict(), "config": _tiny(5).to_dict()}, "five.pth")
    dst = build_model(_tiny(3))
    fresh = dst.roi_head.bbox_head[0].fc_cls.weight.detach().clone()
    lines = pretrained.load_from(dst, path)
    assert "class counts differ" in lines[-1] and "roi_head.bbox_head.0.fc_cls" in lines[-1]
    # things + stuff = the semantic head's classes: 7 -> 5
    assert "roi_head.mask_head.2.conv_logits" in lines[-1] and "roi_head.semantic_head.conv_logits" in lines[-1]
    assert torch.equal(dst.roi_head.bbox_head[0].fc_cls.weight, fresh)
    assert torch.equal(dst.roi_head.bbox_head[0].shared_fcs[0].weight, src.roi_head.bbox_head[0].shared_fcs[0].weight)
    assert torch.equal(dst.backbone.conv1.weight, src.backbone.conv1.weight)
    # same classes: everything loads, nothing said about classes
    same = build_model(_tiny(5))
    assert len(pretrained.load_from(same, path)) == 1
    # another architecture is an error naming a tensor
    other = _tiny(5)
    other.model.roi.fc_dim = 64
    with pytest.raises(mc.CheckpointError, match=r"shared_fcs\.0\.weight has shape"):
        pretrained.load_from(build_model(other), path)


def test_load_from_an_mmdet_checkpoint(tmp_path, v2):
    path = _save(tmp_path, v2)
    cfg, _ = mc.load(path, obj=v2)
    model = build_model(cfg)
    lines = pretrained.load_from(model, path)
    assert lines[0].startswith("weights from mmdetection 2.x checkpoint")
    assert torch.equal(model.rpn_head.rpn_conv.weight, v2["state_dict"]["rpn_head.rpn_conv.weight"])


def test_fine_tune_config_of_a_released_model(tmp_path, v2):
    """The walkthrough's config: the R-50 preset with 3 classes and the semantic branch off."""
    path = _save(tmp_path, v2)
    cfg = config_from_dict({"model": {"num_classes": 3, "semantic": False, "semantic_fusion": []}})
    model = build_model(cfg.model)
    lines = pretrained.load_from(model, path)
    assert "semantic_head tensors of htc.pth are not used" in lines[1]
    assert "roi_head.bbox_head.0.fc_cls" in lines[2] and "roi_head.mask_head.0.conv_logits" in lines[2]
    key = "roi_head.mask_head.1.conv_res.conv.weight"
    assert torch.equal(model.state_dict()[key], v2["state_dict"][key])


def test_frozen_batchnorm_affine_trains_outside_frozen_stages():
    net = ResNet(depth=50, frozen_stages=1, norm="frozen")
    assert isinstance(net.layer2[0].bn1, FrozenBatchNorm2d)
    assert net.layer2[0].bn1.weight.requires_grad and net.layer2[0].bn1.bias.requires_grad
    assert not net.layer1[0].bn1.weight.requires_grad and not net.bn1.weight.requires_grad
    before = net.layer2[0].bn1.running_mean.clone()
    net.train()
    net(torch.randn(2, 3, 64, 64))[-1].sum().backward()
    assert net.layer2[0].bn1.weight.grad is not None
    assert torch.equal(net.layer2[0].bn1.running_mean, before)


@pytest.mark.parametrize("preset,depth,groups,wpg", [
    ("htc_r50_fpn", 50, 1, 64), ("htc_r50_fpn_20e", 50, 1, 64), ("htc_r101_fpn_20e", 101, 1, 64),
    ("htc_x101_32x4d_fpn_20e", 101, 32, 4), ("htc_x101_64x4d_fpn_20e", 101, 64, 4),
    ("htc_x101_64x4d_fpn_dconv_c3-c5_mstrain_400_1400_20e", 101, 64, 4)])
def test_each_model_zoo_preset_takes_its_released_weights(preset, depth, groups, wpg):
    """Every preset of a model-zoo row builds the model its released checkpoint fills, strictly."""
    from htc.config import load_config

    cfg = load_config(TRAINING.parent / "configs" / "model" / f"{preset}.yaml")
    ck = mmdet_htc_checkpoint(depth=depth, groups=groups, width_per_group=wpg, dcn="dconv" in preset)
    sd = mc.to_v2_names(mc.state_dict_of(ck, Path("x.pth")), mc.V2)
    mc.load_strict(build_model(cfg.model), sd, mc.V2, Path(f"{preset}.pth"))
