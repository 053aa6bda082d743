"""Weights read back from a bundle's graphs (htc.bundle_weights) and the shipped default checkpoint."""

from pathlib import Path

import pytest
import torch

from htc import bundle_weights as bw
from htc import export
from htc.builders import load_config_with_overrides
from htc.evaluate_model import load_checkpoint_config, load_model_from_checkpoint
from htc.model import build_model
from htc.model.backbone import FrozenBatchNorm2d
from model_testutil import small_config

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "examples" / "models" / "htc_tiny_synthetic"
CONFIG = ROOT / "configs" / "model" / "htc_tiny.yaml"
SHIPPED = ROOT / "examples" / "models" / "htc_tiny_synthetic.pth"


@pytest.mark.parametrize("norm", [torch.nn.BatchNorm2d, FrozenBatchNorm2d])
@pytest.mark.parametrize("eps", [1e-5, 1e-3])
def test_identity_norm_adds_the_bias_exactly(norm, eps):
    layer = norm(6, eps=eps).eval()
    bias = torch.randn(6)
    bw.set_identity_norm(layer, bias)
    x = torch.randn(2, 6, 5, 7) * 100
    assert torch.equal(layer(x), x + bias.view(1, -1, 1, 1))


@pytest.mark.parametrize("norm", ["batch", "frozen"])
def test_backbone_round_trip_through_a_folded_graph(tmp_path, norm):
    """A model with non-trivial norm statistics and conv biases, its backbone graph exported
    (BatchNorm folded, anonymous weights), read back into a differently seeded model: same outputs."""
    torch.manual_seed(0)
    cfg = small_config(backbone={"norm": norm})
    src = build_model(cfg).eval()
    with torch.no_grad():
        for m in src.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
            elif isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                m.bias.normal_(0, 0.1)
    export.export_graphs(src, tmp_path, (96, 128), kinds=("backbone",))
    torch.manual_seed(1)
    dst = build_model(cfg).eval()
    state, counts = bw.backbone_state_from_bundle(tmp_path, dst)
    # ResNet-18's 20 norms: BatchNorm folded into the convs, FrozenBatchNorm2d kept as Mul + Add;
    # the RPN head's 3 convs run on 5 levels
    assert (counts["folded"], counts["kept"]) == ((20, 0) if norm == "batch" else (0, 20))
    assert counts["shared"] == 12
    dst.load_state_dict(state, strict=False)
    image = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        want, got = src.feature_net()(image), dst.feature_net()(image)
    assert len(want) == len(got)
    for a, b in zip(want, got):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4), float((a - b).abs().max())


def test_a_config_the_bundle_was_not_exported_from_is_refused():
    cfg = load_config_with_overrides(str(CONFIG), ["model.neck.out_channels=32"])
    with pytest.raises(ValueError, match="pass the config"):
        bw.checkpoint_from_bundle(BUNDLE, cfg)
    cfg = load_config_with_overrides(str(CONFIG), ["model.test.score_thr=0.05"])
    with pytest.raises(ValueError, match="manifest.yaml differs"):
        bw.checkpoint_from_bundle(BUNDLE, cfg)


def test_a_quantised_bundle_is_refused(tmp_path):
    import yaml

    man = yaml.safe_load((BUNDLE / "manifest.yaml").read_text())
    man["quantization"] = {"mode": "int8"}
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump(man))
    with pytest.raises(ValueError, match="quantised"):
        bw.check_manifest(tmp_path, load_config_with_overrides(str(CONFIG)))


def test_shipped_checkpoint_reproduces_the_bundle_fixture():
    """examples/models/htc_tiny_synthetic.pth through the training module's own loaders: PyTorch
    gives the bundle's fixture detections (single view) to float rounding."""
    assert SHIPPED.is_file(), f"{SHIPPED} is missing: python3 -m htc.bundle_weights writes it"
    cfg, ckpt = load_checkpoint_config(SHIPPED, None)
    assert set(ckpt) == {"model", "config", "meta"}  # weights only: no optimizer, scheduler or rng
    assert ckpt["meta"]["classes"] == ["circle", "square", "triangle", "star", "ring"]
    assert ckpt["meta"]["stuff_classes"] == ["sky", "grass", "water", "wall"]
    model = load_model_from_checkpoint(cfg, ckpt, torch.device("cpu"))
    diffs = bw.fixture_differences(model, cfg, BUNDLE, "single")
    assert diffs["detections"] == 0 and diffs["labels"] == 0 and diffs["mask_pixels"] == 0, diffs
    assert diffs["boxes"] <= 1e-3 and diffs["scores"] <= 1e-4 and diffs["stage_scores"] <= 1e-4, diffs
    assert {k for k, v in diffs.items() if not v <= bw.TOLERANCES[k]} == set(), diffs


def test_shipped_checkpoint_is_what_the_bundle_gives(tmp_path):
    """The shipped file is the bundle's weights, bit for bit (a re-exported bundle needs a new .pth)."""
    cfg = load_config_with_overrides(str(CONFIG))
    out = tmp_path / "w.pth"
    assert bw.main(["--bundle", str(BUNDLE), "--config", str(CONFIG), "--out", str(out), "--no-check"]) == 0
    fresh = torch.load(out, map_location="cpu")
    shipped = torch.load(SHIPPED, map_location="cpu")
    assert fresh["config"] == shipped["config"] == cfg.to_dict()
    assert list(fresh["model"]) == list(shipped["model"])
    assert all(torch.equal(fresh["model"][k], shipped["model"][k]) for k in fresh["model"])


def test_shipped_checkpoint_folds_back_to_the_bundles_backbone(tmp_path):
    """Exported again (BatchNorm folded by torch.onnx), the identity norms give back the
    bundle's backbone Conv weights and biases bit for bit."""
    import onnx
    from onnx import numpy_helper

    cfg, ckpt = load_checkpoint_config(SHIPPED, None)
    model = load_model_from_checkpoint(cfg, ckpt, torch.device("cpu"))
    export.export_graphs(model, tmp_path, (320, 320), kinds=("backbone",))

    def conv_params(path):
        graph = onnx.load(str(path)).graph
        inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        return [inits[i] for n in graph.node if n.op_type == "Conv" for i in n.input[1:]]

    want, got = conv_params(BUNDLE / "backbone.onnx"), conv_params(tmp_path / "backbone.onnx")
    assert len(want) == len(got) == 108  # 54 Conv nodes, weight and bias each
    assert all(a.shape == b.shape and (a == b).all() for a, b in zip(want, got))
