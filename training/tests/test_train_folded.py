"""--load-from a checkpoint whose BatchNorm is folded into its convolutions (a bundle's
weights read back, examples/models/htc_tiny_synthetic.pth): the folded norms train in
eval mode, so training starts from the exported model's function."""

import copy

import numpy as np
import torch
from torch import nn

from htc import pretrained, train
from htc.config import config_from_dict
from htc.model import build_model
from train_testutil import TINY, write_config

torch.set_num_threads(1)


def identity_var(eps: float) -> float:
    """A float32 running variance v with float32(v + eps) == 1.0 exactly (so 1/sqrt(v + eps) == 1)."""
    one = np.float32(1.0)
    v = np.float32(1.0 - eps)
    for _ in range(4):
        s = np.float32(v + np.float32(eps))
        if s == one:
            return float(v)
        v = np.nextafter(v, np.float32(0.0) if s > one else np.float32(2.0), dtype=np.float32)
    raise ValueError(f"no float32 running_var makes var + {eps} exactly 1")


def conv_before(norm_name: str) -> str:
    """The convolution a backbone norm follows, by mmdetection's ResNet names: convK -> bnK,
    downsample.0 -> downsample.1."""
    if norm_name.endswith("downsample.1"):
        return norm_name[:-1] + "0"
    head, _, last = norm_name.rpartition(".")
    return f"{head}.conv{last[len('bn'):]}"


def folded_model(seed: int = 3):
    """A tiny HTC with non-trivial norms, then folded as the shipped checkpoint's are (each
    norm an identity plus the folded bias: weight 1, mean 0, var + eps exactly 1)."""
    torch.manual_seed(seed)
    cfg = config_from_dict(copy.deepcopy(TINY))
    model = build_model(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
    image = torch.rand(1, 3, 64, 64, generator=g)
    with torch.no_grad():
        before = model.backbone(image)[-1]
    modules = dict(model.named_modules())
    with torch.no_grad():
        for norm_name, norm in list(modules.items()):
            if not isinstance(norm, nn.BatchNorm2d):
                continue
            conv = modules[conv_before(norm_name)]
            scale = norm.weight / (norm.running_var + norm.eps).sqrt()
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            norm.bias.copy_(norm.bias - norm.running_mean * scale)
            norm.weight.fill_(1.0)
            norm.running_mean.zero_()
            norm.running_var.fill_(identity_var(norm.eps))
        after = model.backbone(image)[-1]
    assert torch.allclose(before, after, atol=1e-4)  # folding keeps the eval function
    return model, cfg, image


def test_folded_norms_stay_in_eval_mode_with_the_same_parameters():
    model, _, image = folded_model()
    params = dict(model.named_parameters())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    names = pretrained.freeze_folded_norms(model)
    assert names and all(n.startswith("backbone.") for n in names)
    assert len(names) == sum(1 for m in build_model(config_from_dict(copy.deepcopy(TINY))).modules()
                             if isinstance(m, nn.BatchNorm2d))
    assert dict(model.named_parameters()) == params  # the same Parameter objects: the optimiser still holds them
    with torch.no_grad():
        want = model.backbone(image)[-1]
    model.train()
    assert not any(m.training for m in model.modules() if isinstance(m, pretrained.FoldedBatchNorm2d))
    out = model.backbone(image)[-1]
    assert torch.equal(out, want)  # train mode computes the exported function, not batch statistics
    out.mean().backward()
    norm = dict(model.named_modules())[names[0]]
    assert norm.weight.grad is not None and norm.bias.grad is not None
    optimizer.step()
    assert torch.equal(norm.running_mean, torch.zeros_like(norm.running_mean))
    # a model trained from scratch has ordinary norms: nothing to freeze
    assert pretrained.freeze_folded_norms(build_model(config_from_dict(copy.deepcopy(TINY)))) == []


def test_load_from_a_folded_checkpoint_keeps_its_norms_through_training_and_resume(tmp_path, capsys):
    model, cfg, _ = folded_model()
    ckpt = tmp_path / "folded.pth"
    torch.save({"model": model.state_dict(), "config": cfg.to_dict()}, ckpt)
    config = write_config(tmp_path / "tiny.yaml", tmp_path / "data", data={"num_val_images": 0})
    work = tmp_path / "work"
    args = ["--config", str(config), "--work-dir", str(work), "--set", "train.lr=1e-12"]
    assert train.main(args + ["--epochs", "1", "--load-from", str(ckpt)]) == 0
    start = model.state_dict()
    for name in ("epoch_1.pth", "epoch_2.pth"):
        if name == "epoch_2.pth":
            assert train.main(args + ["--epochs", "2", "--resume"]) == 0
        err = capsys.readouterr().err
        got = torch.load(work / name, map_location="cpu")["model"]
        assert got.keys() == start.keys()  # the configured model's names: export and evaluate read it
        for k, v in start.items():
            if k.endswith(("running_mean", "running_var")):
                # batch statistics never replaced the folded identity
                assert torch.equal(got[k], v), (name, k)
            elif v.is_floating_point():
                assert torch.allclose(got[k], v, atol=1e-6), (name, k)
        strict = build_model(cfg)
        strict.load_state_dict(got, strict=True)
        assert "20 BatchNorm layers hold norms folded into their convolutions" in err
