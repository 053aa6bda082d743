"""The INT8 post-export pass (htc.quantize): its QDQ graph rewrite, and a small random-weight
model's bundle quantised end to end (calibrated and compared through ONNX Runtime, via
the Go helper internal/ortrun)."""

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from htc import export, quantize
from htc.model import build_model
from model_testutil import small_config

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[2]
ORT_LIB = REPO / "third_party" / "onnxruntime" / "lib" / "libonnxruntime.so.1"


def _ops(model):
    out = {}
    for n in model.graph.node:
        out[n.op_type] = out.get(n.op_type, 0) + 1
    return out


def tiny_graph():
    """x -> Conv -> Relu -> Conv -> y (graph output, also read by a Gemm over a Flatten), Gemm
    -> Relu -> Gemm -> z."""
    g = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(g.normal(size=(4, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(g.normal(size=(4,)).astype(np.float32), "b1"),
        numpy_helper.from_array(g.normal(size=(2, 4, 1, 1)).astype(np.float32), "w2"),
        numpy_helper.from_array(g.normal(size=(5, 32)).astype(np.float32), "w3"),
        numpy_helper.from_array(g.normal(size=(5,)).astype(np.float32), "b3"),
        numpy_helper.from_array(g.normal(size=(3, 5)).astype(np.float32), "w4"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["y"]),
        helper.make_node("Flatten", ["y"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["g1"], transB=1),
        helper.make_node("Relu", ["g1"], ["r2"]),
        helper.make_node("Gemm", ["r2", "w4"], ["z"], transB=1),
    ]
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4]),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 3])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)])


def test_plan_and_rewrite_of_a_tiny_graph():
    model = tiny_graph()
    plan = quantize.Plan(model)
    assert [n.op_type for n in plan.nodes] == ["Conv", "Conv", "Gemm", "Gemm"]
    # the first Conv's and Gemm's Relus fold into their output Q; y is a graph output (no Relu);
    # the last Gemm's output stays float
    assert plan.tensors() == ["x", "r1", "y", "f", "r2"]
    ranges = quantize.Ranges()
    for t, (lo, hi) in {"x": (-2, 2), "r1": (0, 6), "y": (-5, 4), "f": (-5, 4), "r2": (0, 3)}.items():
        ranges.lo[t], ranges.hi[t] = lo, hi
    q, stats = quantize.quantize_model(model, ranges)
    assert stats == {"quantized_conv": 2, "quantized_gemm": 2, "relu_absorbed": 2, "activations": 5}
    ops = _ops(q)
    assert "Relu" not in ops
    assert ops["QuantizeLinear"] == 5
    # one DQ per reader: x, r1, y (Flatten + the graph output), f, r2; 4 weights; 2 biases
    assert ops["DequantizeLinear"] == 6 + 4 + 2
    inits = {i.name: i for i in q.graph.initializer}
    assert not {"w1", "w2", "w3", "w4", "b1", "b3"} & set(inits)
    assert inits["w1__i8"].data_type == TensorProto.INT8
    assert list(inits["w1__wscale"].dims) == [4]        # Conv: per output channel
    assert list(inits["w3__wscale"].dims) == []         # Gemm: per tensor
    bias = numpy_helper.to_array(inits["b1__i32__1"])
    scale = numpy_helper.to_array(inits["b1__i32__1__scale"])   # x scale x the channel's weight scale
    assert bias.dtype == np.int32
    w1 = numpy_helper.to_array(inits["w1__wscale"])
    assert np.allclose(scale, (4 / 255) * w1, rtol=1e-6)
    # relu output range [0, 6]: zero point 0, so the Q clamps as the Relu did
    assert numpy_helper.to_array(inits["r1__zp"]) == 0
    assert [o.name for o in q.graph.output] == ["y", "z"]
    # y's producer writes a float tensor that only its Q reads
    conv2 = [n for n in q.graph.node if n.op_type == "Conv"][1]
    assert conv2.output[0] == "y__f"
    readers = [n for n in q.graph.node if "y__f" in n.input]
    assert [n.op_type for n in readers] == ["QuantizeLinear"]


def test_activation_and_weight_parameters():
    s, z = quantize.activation_qparams(0.5, 10.0)      # 0 stays representable
    assert z == 0 and s == pytest.approx(10 / 255)
    s, z = quantize.activation_qparams(-1.0, 3.0)
    assert z == round(1 / (4 / 255)) and s == pytest.approx(4 / 255)
    w = np.array([[1.0, -0.5], [0.0, 0.0], [0.25, 2.0]], np.float32)
    q, scale = quantize.weight_qparams(w, per_channel=True)
    assert q.dtype == np.int8 and list(q[0]) == [127, -64] and list(q[1]) == [0, 0]
    assert np.allclose(scale, [1 / 127, 1.0, 2 / 127])


# ---------------------------------------------------------------------------- a bundle, through ONNX Runtime

def _have_runtime() -> str:
    if not ORT_LIB.exists():
        return f"{ORT_LIB} missing (scripts/setup)"
    if not (shutil.which("go") or Path("/usr/local/go/bin/go").exists()):
        return "no Go toolchain to build internal/ortrun"
    return ""


def frame(seed: int, h: int = 120, w: int = 160) -> np.ndarray:
    g = np.random.default_rng(seed)
    img = (g.random((h, w, 3)) * 60).astype(np.uint8)
    for _ in range(3):
        y, x = g.integers(0, h - 40), g.integers(0, w - 40)
        img[y:y + g.integers(15, 40), x:x + g.integers(15, 40)] = g.integers(80, 255, 3)
    return img


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A random-weight model exported and its bundle quantised: (float bundle, INT8 bundle,
    stats); and the model and the runner."""
    why = _have_runtime()
    if why:
        # make test installs both first: a missing one is a broken setup, not a reason to pass
        pytest.fail(why)
    torch.manual_seed(0)
    cfg = small_config()
    cfg.data.test_scale = [160, 160]
    model = build_model(cfg).eval()
    root = tmp_path_factory.mktemp("quant")
    calib = root / "calib"
    calib.mkdir()
    for i in range(4):
        Image.fromarray(frame(i)).save(calib / f"{i}.png")
    runner = quantize.Runner(threads=1)
    src = root / "float"
    export.export_bundle(model, cfg, src, name="t", things=["circle", "square", "star"], stuff=["sky", "grass"],
                         fixture_image=None, tta_scales=None)
    dst = root / "int8"
    stats = quantize.quantize_bundle(src, dst, calib, num_images=4, runner=runner, log=lambda *_: None)
    return (src, dst, stats), model, runner


@pytest.fixture
def bundles(made):
    (src, dst, stats), _, runner = made
    return src, dst, runner, stats


def _graph_kinds(man):
    """(group, file, check_graph kind) of every graph of a bundle."""
    for group in quantize.GRAPHS:
        for f in quantize.graph_files(man, group):
            yield group, f, "bbox_stage" if group == "bbox_stages" else group


def test_quantised_bundle_has_qdq_graphs_and_says_so(bundles):
    src, out, _, stats = bundles
    man = yaml.safe_load((out / "manifest.yaml").read_text())
    assert man["quantization"]["scheme"] == "qdq-u8s8"
    assert man["quantization"]["graphs"] == ["backbone", "bbox_stages", "mask_heads"]
    assert man["graphs"]["bbox_stages"] == ["bbox_stage1.onnx", "bbox_stage2.onnx", "bbox_stage3.onnx"]
    del man["quantization"]
    assert man == yaml.safe_load((src / "manifest.yaml").read_text())
    kinds = list(_graph_kinds(man))
    assert sorted(stats) == sorted(Path(f).stem for _, f, _ in kinds)
    for _, file, kind in kinds:
        f, q = onnx.load(str(src / file)), onnx.load(str(out / file))
        ops, fops = _ops(q), _ops(f)
        assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0, file
        assert ops.get("Conv", 0) == fops.get("Conv", 0) and ops.get("Gemm", 0) == fops.get("Gemm", 0)
        st = stats[Path(file).stem]
        assert st["quantized_conv"] + st["quantized_gemm"] == fops.get("Conv", 0) + fops.get("Gemm", 0) > 0, file
        # every Conv/Gemm weight is an int8 initializer behind a DQ
        producers = {o: nd for nd in q.graph.node for o in nd.output}
        inits = {i.name: i for i in q.graph.initializer}
        for nd in q.graph.node:
            if nd.op_type in ("Conv", "Gemm"):
                dq = producers[nd.input[1]]
                assert dq.op_type == "DequantizeLinear" and inits[dq.input[0]].data_type == TensorProto.INT8
        # the contract's signature is unchanged
        for side in ("input", "output"):
            assert [v.name for v in getattr(q.graph, side)] == [v.name for v in getattr(f.graph, side)]
        export.check_graph(out / file, kind)
    assert sorted(p.name for p in out.iterdir()) == sorted(["manifest.yaml"] + [f for _, f, _ in kinds])
    assert (out / "backbone.onnx").stat().st_size < 0.5 * (src / "backbone.onnx").stat().st_size


def test_pooling_is_the_contracts(made):
    """The stage graphs' calibration inputs are pooled as the runtime pools them: the
    exporter's own reference (pooled_channels_last of the model's box cascade)."""
    (src, _, _), model, _ = made
    man = yaml.safe_load((src / "manifest.yaml").read_text())
    g = torch.Generator().manual_seed(3)
    c = man["roi"]["channels"]
    feats = {f"p{i}": torch.randn(1, c, 40 // 2 ** (i - 2), 40 // 2 ** (i - 2), generator=g) for i in range(2, 6)}
    feats["semantic_feat"] = torch.randn(1, c, 20, 20, generator=g)
    xy = torch.rand(300, 2, generator=g) * 150
    wh = torch.rand(300, 2, generator=g) ** 2 * 150 + 0.5
    rois = torch.cat([torch.zeros(300, 1), xy, xy + wh], dim=1)
    rois[-1, 1:] = torch.tensor([10.0, 10.0, 10.0, 10.0])  # an empty box
    assert man["roi"]["semantic_size"] > 0
    want = export.pooled_channels_last(model.box_cascade(), [feats[f"p{i}"] for i in range(2, 6)],
                                       feats["semantic_feat"], rois).numpy()
    got = quantize.pool_roi_feats({k: v.numpy() for k, v in feats.items()}, rois.numpy(), man["roi"])
    assert got.shape == want.shape == (300, 49 * c)
    assert np.abs(got - want).max() < 1e-5


def _rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-12))


def test_quantised_graphs_run_close_to_float(bundles):
    src, out, runner, _ = bundles
    man = yaml.safe_load((src / "manifest.yaml").read_text())
    (x, size), = quantize.network_inputs([frame(7)], man)
    fb, qb = (next(runner.run(d / "backbone.onnx", [{"image": x}])) for d in (src, out))
    for name in ("p2", "p3", "p4", "p5", "p6", "semantic_feat", "semantic_logits", "rpn_cls_2", "rpn_reg_2"):
        assert qb[name].shape == fb[name].shape
        assert _rel(fb[name], qb[name]) < 0.1, name
    # heads on the same (float) features and proposals
    feats = {f: fb[f] for f in quantize.FEATS}
    rois = quantize.proposals(fb, size, man)[:200]
    sizes = np.array([size], np.float32)
    # each stage on the float cascade's RoIs of that stage, pooled as Go pools them
    fl, fbx = [], []
    for t, file in enumerate(man["graphs"]["bbox_stages"]):
        feed = {"roi_feats": quantize.pool_roi_feats(feats, rois, man["roi"]), "rois": rois, "image_sizes": sizes}
        fs, qs = (next(runner.run(d / file, [feed])) for d in (src, out))
        assert fs["logits"].shape == qs["logits"].shape == (len(rois), 4)
        assert _rel(fs["logits"], qs["logits"]) < 0.1, file
        assert np.abs(fs["boxes"] - qs["boxes"]).mean() < 1.0, file  # px, boxes of ~10-100 px
        fl.append(fs["logits"])
        fbx.append(fs["boxes"])
        rois = np.concatenate([rois[:, :1], fs["boxes"]], axis=1)
    fh = {"stage_logits": np.stack(fl, axis=1), "stage_boxes": np.stack(fbx, axis=1)}
    mrois, labels = quantize.mask_rois(fh, max_dets=20)
    mfeed = dict(feats, rois=mrois, labels=labels)
    fm, qm = (next(runner.run(d / "mask_heads.onnx", [mfeed])) for d in (src, out))
    assert np.abs(fm["stage_masks"] - qm["stage_masks"]).mean() < 0.05


def test_refuses_a_quantised_bundle_its_own_folder_contract_1_and_unknown_graphs(made, tmp_path):
    (src, dst, _), _, runner = made
    with pytest.raises(ValueError, match="already quantised"):
        quantize.quantize_bundle(dst, tmp_path / "again", tmp_path, runner=runner)
    with pytest.raises(ValueError, match="another folder"):
        quantize.quantize_bundle(src, src, tmp_path, runner=runner)
    with pytest.raises(ValueError, match=r"'bbox_heads' \(want some of backbone, bbox_stages, mask_heads\)"):
        quantize.quantize_bundle(src, tmp_path / "x", tmp_path, graphs=["backbone", "bbox_heads"], runner=runner)
    v1 = tmp_path / "v1"
    v1.mkdir()
    man = yaml.safe_load((src / "manifest.yaml").read_text())
    man["contract"] = "htcstream-bundle/1"
    (v1 / "manifest.yaml").write_text(yaml.safe_dump(man))
    with pytest.raises(ValueError, match="contract htcstream-bundle/1, want htcstream-bundle/2; re-export it first"):
        quantize.quantize_bundle(v1, tmp_path / "x", tmp_path, runner=runner)


# ---------------------------------------------------------------------------- a DCN bundle

def test_dcn_bundle_quantises_all_but_deformconv(tmp_path):
    """A random-weight model with deformable convs in layer2-4 (opset 19 after the exporter's
    lift, which python3-onnx 1.12's checker does not know): every Conv is QDQ, the DeformConv
    nodes stay float (ONNX has no integer DeformConv), and the INT8 backbone runs through ONNX
    Runtime within the same tolerance as the plain model's."""
    why = _have_runtime()
    if why:
        pytest.fail(why)
    from parity_testutil import frame as parity_frame, random_model

    image = parity_frame(h=160, w=200)
    model, cfg = random_model(image, dcn=True)
    cfg.data.test_scale = [160, 160]
    src, dst, calib = tmp_path / "float", tmp_path / "int8", tmp_path / "calib"
    calib.mkdir()
    for i in range(3):  # footage like the test frame's (calibrated on what it will see)
        Image.fromarray(parity_frame(h=160, w=200, seed=10 + i)).save(calib / f"{i}.png")
    export.export_bundle(model, cfg, src, name="t", things=["circle", "square", "star"], stuff=["sky", "grass"],
                         fixture_image=None, tta_scales=None)
    runner = quantize.Runner(threads=1)
    stats = quantize.quantize_bundle(src, dst, calib, num_images=3, runner=runner, log=lambda *_: None)
    f, q = onnx.load(str(src / "backbone.onnx")), onnx.load(str(dst / "backbone.onnx"))
    assert max(o.version for o in f.opset_import if o.domain in ("", "ai.onnx")) == 19
    fops = _ops(f)
    assert fops["DeformConv"] == 13  # ResNet-50's layer2-4 3x3 convs: 4 + 6 + 3
    assert stats["backbone"]["quantized_conv"] == fops["Conv"]  # the offset convs among them
    assert stats["backbone"]["float_deformconv"] == fops["DeformConv"]
    producers = {o: nd for nd in q.graph.node for o in nd.output}
    inits = {i.name: i for i in q.graph.initializer}
    for nd in q.graph.node:
        w = producers.get(nd.input[1]) if len(nd.input) > 1 else None
        if nd.op_type == "Conv":
            assert w is not None and w.op_type == "DequantizeLinear" and inits[w.input[0]].data_type == TensorProto.INT8
            assert producers[nd.input[0]].op_type == "DequantizeLinear", nd.name
        elif nd.op_type == "DeformConv":
            # float weights, read straight from an initializer
            assert nd.input[1] in inits and inits[nd.input[1]].data_type == TensorProto.FLOAT, nd.name
    man = yaml.safe_load((src / "manifest.yaml").read_text())
    for _, file, kind in _graph_kinds(man):
        export.check_graph(dst / file, kind)
    (x, _), = quantize.network_inputs([image], man)
    fb, qb = (next(runner.run(d / "backbone.onnx", [{"image": x}])) for d in (src, dst))
    for name in ("p2", "p3", "p4", "p5", "p6", "semantic_feat", "semantic_logits", "rpn_cls_2", "rpn_reg_2"):
        assert qb[name].shape == fb[name].shape
        assert _rel(fb[name], qb[name]) < 0.1, name
