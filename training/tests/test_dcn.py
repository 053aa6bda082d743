"""htc.dcn: the deformable conv, its ONNX symbolic and the opset lift to 19."""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from htc import dcn  # noqa: E402
from htc.model.backbone import ResNet  # noqa: E402


def test_fresh_deformable_conv_is_the_plain_conv():
    """mmcv zero-initialises conv_offset: before training the layer is its plain conv."""
    torch.manual_seed(0)
    layer = dcn.DeformConv2dPack(8, 8, 3, stride=2, padding=1, groups=2)
    x = torch.randn(1, 8, 11, 13)
    want = F.conv2d(x, layer.weight, stride=2, padding=1, groups=2)
    assert torch.allclose(layer(x), want, atol=1e-5)
    with torch.no_grad():
        layer.conv_offset.bias.fill_(0.5)  # every tap half a pixel down and right
    assert not torch.allclose(layer(x), want, atol=1e-3)


def test_resnet_puts_dcn_on_the_stages_asked_for():
    net = ResNet(depth=50, width=8, dcn_stages=[False, True, True, True], deform_groups=2)
    names = [k for k in net.state_dict() if "conv_offset" in k]
    assert "layer2.0.conv2.conv_offset.weight" in names and "layer4.2.conv2.conv_offset.bias" in names
    assert not any(k.startswith("layer1.") for k in names)
    assert net.layer3[0].conv2.conv_offset.weight.shape[0] == 2 * 2 * 9
    with pytest.raises(ValueError, match="bottleneck"):
        ResNet(depth=18, dcn_stages=[False, True, True, True])


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dcn = dcn.DeformConv2dPack(4, 6, 3, padding=1, deform_groups=2)

    def forward(self, x):
        y = self.dcn(x)
        return y, y.mean(dim=1, keepdim=True)  # ReduceMean: axes an attribute before opset 18


def test_export_lifts_to_opset_19(tmp_path):
    path = tmp_path / "d.onnx"
    dcn.register_symbolic(16)
    torch.onnx.export(_Net().eval(), (torch.randn(1, 4, 9, 9),), str(path), opset_version=16,
                      input_names=["x"], output_names=["y", "m"])
    assert dcn.raise_opset(path, 16)
    m = onnx.load(str(path))
    assert [(o.domain, o.version) for o in m.opset_import] == [("", 19)]
    (deform,) = [n for n in m.graph.node if n.op_type == "DeformConv"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in deform.attribute}
    assert deform.domain == "" and attrs["offset_group"] == 2 and attrs["group"] == 1
    assert list(attrs["kernel_shape"]) == [3, 3] and list(attrs["pads"]) == [1, 1, 1, 1]
    (mean,) = [n for n in m.graph.node if n.op_type == "ReduceMean"]
    assert len(mean.input) == 2 and not any(a.name == "axes" for a in mean.attribute)
    dcn.check_lifted(path)
    assert not dcn.raise_opset(path, 16)  # nothing left to lift


def test_lift_refuses_what_it_does_not_check(tmp_path):
    path = tmp_path / "d.onnx"
    dcn.register_symbolic(16)
    torch.onnx.export(_Net().eval(), (torch.randn(1, 4, 9, 9),), str(path), opset_version=16)
    with pytest.raises(ValueError, match="from 16 and 17 only"):
        dcn.raise_opset(path, 13)
