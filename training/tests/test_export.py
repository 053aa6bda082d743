"""The model bundle exporter (docs/model-bundle.md) and the TTA test procedure behind its fixture."""

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from PIL import Image

from htc import export
from htc.evaluation import rle
from htc.model import build_model
from htc.model.tta import View, predict_aug, prepare_view, resize_uint8
from model_testutil import small_config

torch.set_num_threads(1)

DOC = Path(__file__).resolve().parents[2] / "docs" / "model-bundle.md"
T = 3
THINGS = ["circle", "square", "star"]
STUFF = ["sky", "grass"]


def contract_manifest() -> dict:
    """The example manifest.yaml of the contract page."""
    text = DOC.read_text(encoding="utf-8")
    block = re.search(r"## manifest.yaml\s+```yaml\n(.*?)```", text, re.S).group(1)
    return yaml.safe_load(block)


def key_tree(d):
    return {k: key_tree(v) if isinstance(v, dict) else None for k, v in d.items()}


def build(seed=0, **overrides):
    torch.manual_seed(seed)
    cfg = small_config(**overrides)
    cfg.data.test_scale = [160, 160]
    return build_model(cfg).eval(), cfg


def frame(h=96, w=128, seed=1) -> np.ndarray:
    """An RGB frame with a few flat shapes on noise, uint8 [H, W, 3]."""
    g = np.random.default_rng(seed)
    img = (g.random((h, w, 3)) * 60).astype(np.uint8)
    img[10:40, 12:50] = (220, 40, 40)
    img[50:90, 70:120] = (40, 220, 40)
    yy, xx = np.mgrid[:h, :w]
    img[(yy - 30) ** 2 + (xx - 95) ** 2 < 15 ** 2] = (40, 40, 220)
    return img


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    model, cfg = build()
    out = tmp_path_factory.mktemp("bundle")
    image = out / "frame.png"
    Image.fromarray(frame(), mode="RGB").save(image)
    export.export_bundle(model, cfg, out, name="test", things=THINGS, stuff=STUFF, fixture_image=image,
                         tta_scales=[[160, 160], [208, 208]])
    return out, cfg


# --------------------------------------------------------------------------- graphs and manifest


def _ports(values):
    return [(v.name, len(v.type.tensor_type.shape.dim), v.type.tensor_type.elem_type) for v in values]


def test_graphs_have_the_contract_signatures(bundle):
    out, _ = bundle
    F, I64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64
    feats = [(n, 4, F) for n in ("p2", "p3", "p4", "p5", "semantic_feat")]
    want = {
        "backbone.onnx": ([("image", 4, F)],
                          [(f"p{i}", 4, F) for i in range(2, 7)] + [("semantic_feat", 4, F), ("semantic_logits", 4, F)]
                          + [(f"rpn_cls_{i}", 4, F) for i in range(2, 7)]
                          + [(f"rpn_reg_{i}", 4, F) for i in range(2, 7)]),
        "mask_heads.onnx": (feats + [("rois", 2, F), ("labels", 1, I64)], [("stage_masks", 4, F)]),
    }
    for t in range(T):
        want[f"bbox_stage{t + 1}.onnx"] = ([("roi_feats", 2, F), ("rois", 2, F), ("image_sizes", 2, F)],
                                           [("logits", 2, F), ("boxes", 2, F)])
    assert not (out / "bbox_heads.onnx").exists()
    for name, (ins, outs) in want.items():
        graph = onnx.load(str(out / name))
        onnx.checker.check_model(graph)
        assert {o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")} == {16}
        assert _ports(graph.graph.input) == ins, name
        assert _ports(graph.graph.output) == outs, name
        dims = {v.name: v.type.tensor_type.shape.dim for v in list(graph.graph.input) + list(graph.graph.output)}
        # batch, sizes and RoI counts are dynamic; channel counts are not
        for v, axes in (("image", (0, 2, 3)), ("p2", (0, 2, 3)), ("rois", (0,)), ("stage_masks", (0,)),
                        ("roi_feats", (0,)), ("logits", (0,)), ("boxes", (0,)), ("image_sizes", (0,)),
                        ("labels", (0,))):
            if v in dims:
                assert all(dims[v][a].dim_param for a in axes), (name, v)
        if "stage_masks" in dims:
            assert [d.dim_value for d in dims["stage_masks"]][1:] == [T, 28, 28]
        if "logits" in dims:
            assert [d.dim_value for d in dims["logits"]][1:] == [len(THINGS) + 1]
            assert [d.dim_value for d in dims["roi_feats"]][1:] == [7 * 7 * 32]


def test_manifest_has_exactly_the_contract_keys_and_the_config_values(bundle):
    out, cfg = bundle
    man = yaml.safe_load((out / "manifest.yaml").read_text())
    assert key_tree(man) == key_tree(contract_manifest())
    assert man["contract"] == "htcstream-bundle/2"
    assert man["things"] == THINGS and man["stuff"] == STUFF and man["num_stages"] == T
    assert man["input"] == {"color": "RGB", "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375],
                            "size_divisor": 32, "test_scales": [[160, 160]]}
    assert man["anchors"] == {"strides": [4, 8, 16, 32, 64], "scales": [8.0], "ratios": [0.5, 1.0, 2.0]}
    assert man["rpn"] == {"nms_pre": 200, "nms_iou": 0.7, "max_proposals": 200, "min_box_size": 0,
                          "delta_clip": pytest.approx(np.log(1000 / 16))}
    assert man["rcnn"] == {"box_stds": cfg.model.roi.box_stds, "score_threshold": 0.001, "nms_iou": 0.5,
                           "max_per_image": 20, "mask_size": 28, "mask_threshold": 0.5}
    assert man["graphs"] == {"backbone": "backbone.onnx", "mask_heads": "mask_heads.onnx",
                             "bbox_stages": [f"bbox_stage{t + 1}.onnx" for t in range(T)]}
    assert man["roi"] == {"size": 7, "sampling_ratio": 0, "finest_scale": 56.0, "strides": [4, 8, 16, 32],
                          "channels": cfg.model.neck.out_channels, "semantic_size": 14, "semantic_stride": 8}


def test_model_without_semantic_branch_still_exports_the_contract(tmp_path):
    model, _ = build(semantic=False)
    export.export_graphs(model, tmp_path, (128, 128))  # checks names, ranks and types itself
    graph = onnx.load(str(tmp_path / "mask_heads.onnx"))
    assert [i.name for i in graph.graph.input][4] == "semantic_feat"
    man = export.build_manifest(build(semantic=False)[1], name="t", things=THINGS, stuff=STUFF)
    assert man["roi"]["semantic_size"] == 0
    assert not model.training and not any(m.training for m in model.modules())


# --------------------------------------------------------------------------- fixture


def test_fixture_files_exist_and_parse(bundle):
    out, cfg = bundle
    fx = out / "fixture"
    doc = yaml.safe_load((fx / "fixture.yaml").read_text())
    assert doc["image"] == "image.png"
    image = np.asarray(Image.open(fx / doc["image"]))
    assert image.shape == (96, 128, 3) and np.array_equal(image, frame())
    assert [p["name"] for p in doc["plans"]] == ["single", "tta", "tta_probs"]
    assert doc["plans"][0]["views"] == [{"scale": [160, 160], "flip": False}]
    assert doc["plans"][1]["views"] == [{"scale": s, "flip": f} for s in ([160, 160], [208, 208])
                                        for f in (False, True)]
    assert doc["plans"][2]["views"] == doc["plans"][1]["views"]
    assert "ensemble" not in doc["plans"][0] and "ensemble" not in doc["plans"][1]
    assert doc["plans"][2]["ensemble"] == {"mode": "probs", "weights": [0.5, 1.0, 2.0]}
    for plan in doc["plans"]:
        res = json.loads((fx / plan["detections"]).read_text())
        assert set(res) == {"proposals", "detections"}
        props = np.array(res["proposals"])
        assert props.ndim == 2 and props.shape[1] == 5 and 0 < len(props) <= 200
        dets = res["detections"]
        assert 0 < len(dets) <= cfg.model.test.max_per_img
        scores = [d["score"] for d in dets]
        assert scores == sorted(scores, reverse=True) and min(scores) > 0.001
        for d in dets:
            assert set(d) == {"box", "score", "label", "stage_scores", "mask"}
            assert len(d["box"]) == 4 and 0 <= d["label"] < len(THINGS) and len(d["stage_scores"]) == T
            assert d["mask"]["size"] == [96, 128] and isinstance(d["mask"]["counts"], str)
            assert rle.decode(d["mask"]).shape == (96, 128)
    tensors = yaml.safe_load((fx / "tensors.yaml").read_text())
    view = tensors["single"]["views"][0]
    logits = np.fromfile(fx / view["stage_logits"]["file"], dtype="<f4").reshape(view["stage_logits"]["shape"])
    assert logits.shape[1:] == (T, len(THINGS) + 1)
    assert len(tensors["tta"]["views"]) == 4
    for plan in ("single", "tta", "tta_probs"):
        for view in tensors[plan]["views"]:
            k = view["mask_labels"]["shape"][0]
            assert view["stage_masks"]["shape"] == [k, T, 28, 28]
    # the probs plan scores the same proposals differently: same graph outputs, other detections
    a = np.fromfile(fx / tensors["tta"]["views"][1]["stage_logits"]["file"], dtype="<f4")
    b = np.fromfile(fx / tensors["tta_probs"]["views"][1]["stage_logits"]["file"], dtype="<f4")
    assert np.array_equal(a, b)


def test_fixture_probs_plan_is_predict_aug_with_probs_and_stage_weights(bundle):
    out, _ = bundle
    model, _ = build()
    views = [View(tuple(s), f) for s in ([160, 160], [208, 208]) for f in (False, True)]
    res = predict_aug(model, frame(), views, ensemble="probs", stage_weights=[0.5, 1.0, 2.0])
    dets = json.loads((out / "fixture" / "tta_probs.json").read_text())["detections"]
    assert len(dets) == len(res["boxes"])
    assert np.allclose([d["score"] for d in dets], res["scores"].numpy(), atol=1e-6)
    # the ensemble is what reaches the scores: per view, the weighted mean of the stage softmaxes
    logits = torch.stack([vo["stage_logits"] for vo in res["view_outputs"]])  # [V, R, T, C+1]
    w = torch.tensor([0.5, 1.0, 2.0]).view(1, 1, 3, 1)
    want = ((torch.softmax(logits, 3) * w).sum(2) / 3.5).mean(0)
    rows, labels = res["rows"], res["labels"]
    assert torch.allclose(want[rows, labels], res["scores"], atol=1e-6)


def test_fixture_detections_are_what_predict_aug_returns(bundle):
    out, cfg = bundle
    model, _ = build()
    res = predict_aug(model, frame(), [View((160, 160), False)])
    dets = json.loads((out / "fixture" / "single.json").read_text())["detections"]
    assert len(dets) == len(res["boxes"])
    assert np.allclose([d["box"] for d in dets], res["boxes"].numpy(), atol=1e-4)
    assert np.array_equal([d["label"] for d in dets], res["labels"].numpy())
    assert np.array_equal(rle.decode(dets[0]["mask"]), res["masks"][0].numpy())


# --------------------------------------------------------------------------- TTA


# cv2.resize(INTER_LINEAR) of TINY to (w, h), red and blue channels, as gocv (OpenCV 4.6) gives them.
TINY = (np.arange(6 * 4 * 3).reshape(4, 6, 3) * 37 % 256).astype(np.uint8)
OPENCV_GOLDEN = {
    (9, 5): ([[0, 55, 129, 203, 149, 95, 169, 115, 43], [108, 74, 58, 132, 168, 173, 128, 134, 151],
              [103, 95, 83, 72, 125, 177, 166, 155, 146], [98, 115, 121, 76, 81, 117, 191, 175, 141],
              [206, 133, 79, 153, 99, 45, 119, 193, 249]],
             [[74, 129, 161, 64, 95, 127, 30, 61, 117], [182, 148, 119, 142, 114, 85, 108, 80, 46],
              [177, 169, 157, 146, 135, 123, 112, 101, 92], [95, 151, 195, 149, 155, 161, 116, 121, 138],
              [24, 79, 153, 227, 173, 119, 193, 139, 67]]),
    (3, 2): ([[69, 163, 129], [121, 87, 181]], [[143, 109, 75], [131, 161, 127]]),
    (4, 7): ([[28, 194, 105, 79], [60, 158, 137, 111], [111, 99, 188, 163], [99, 73, 176, 150],
              [86, 61, 149, 138], [137, 112, 91, 189], [170, 144, 55, 221]],
             [[102, 76, 115, 89], [134, 108, 101, 76], [185, 160, 79, 54], [173, 147, 122, 96],
              [146, 135, 164, 138], [88, 186, 142, 117], [52, 218, 129, 103]]),
}


@pytest.mark.parametrize("size", sorted(OPENCV_GOLDEN))
def test_resize_is_bit_exact_with_opencv(size):
    w, h = size
    out = resize_uint8(torch.from_numpy(TINY).permute(2, 0, 1).contiguous(), h, w)
    red, blue = OPENCV_GOLDEN[size]
    assert out[0].tolist() == red and out[2].tolist() == blue


def test_resize_float_method_rounds_and_identity_is_skipped():
    img = torch.tensor([[[0, 255], [10, 21]]], dtype=torch.uint8)
    assert resize_uint8(img, 2, 2) is img and resize_uint8(img, 2, 2, "float") is img
    up = resize_uint8(img, 2, 4, "float")
    ref = torch.nn.functional.interpolate(img[None].float(), size=(2, 4), mode="bilinear", align_corners=False)[0]
    assert up.dtype == torch.uint8 and torch.equal(up, torch.floor(ref + 0.5).to(torch.uint8))
    p = prepare_view(np.zeros((100, 50, 3), np.uint8), View((160, 100), True))
    assert (p.height, p.width, p.image.shape) == (160, 80, (3, 160, 96))
    assert (p.scale_x, p.scale_y) == (1.6, 1.6)


@pytest.mark.parametrize("scale,factor", [((128, 96), 1.0), ((256, 192), 2.0)])
def test_single_view_equals_predict(scale, factor):
    model, _ = build()
    img = frame()
    res = predict_aug(model, img, [View(scale, False)])
    p = prepare_view(img, View(scale, False))
    assert (p.scale_x, p.scale_y) == (factor, factor)
    ref = model.predict(p.image[None], [(p.height, p.width)], [factor], [(96, 128)])[0]
    assert len(ref["boxes"]) > 0
    for key in ("boxes", "scores", "labels", "masks"):
        assert torch.equal(res[key], ref[key]), key
    raw = model.predict_raw(p.image[None], [(p.height, p.width)], [factor], [(96, 128)])
    assert torch.equal(res["proposals"][:, :4] * factor, raw["rois"][:, 1:])


def _match(a, b, atol):
    """Index of the detection in b that a's box corresponds to (same label), or -1."""
    for j in range(len(b["boxes"])):
        if b["labels"][j] == a[1] and torch.allclose(b["boxes"][j], a[0], atol=atol):
            return j
    return -1


@pytest.mark.parametrize("scale", [(130, 100), (260, 200)])
def test_flipped_view_undoes_its_flip(scale):
    """A mirrored view of the frame must give the mirror image of the unmirrored view of the
    mirrored frame: same network input, so proposals, boxes, scores and masks all mirror.
    Sizes are not multiples of 32, so un-flipping in the padded width would show. (At 2x the
    bilinear resize commutes with the mirror exactly; at other factors rounding ties may not.)"""
    model, _ = build()
    img = frame(100, 130)
    w = img.shape[1]
    a = predict_aug(model, img, [View(scale, True)])
    b = predict_aug(model, img[:, ::-1], [View(scale, False)])
    assert torch.equal(a["views"][0].image, b["views"][0].image)
    mirrored = torch.stack([w - b["proposals"][:, 2], b["proposals"][:, 1], w - b["proposals"][:, 0],
                            b["proposals"][:, 3], b["proposals"][:, 4]], dim=1)
    assert torch.allclose(a["proposals"], mirrored, atol=1e-4)
    assert len(a["boxes"]) == len(b["boxes"]) > 0
    mb = {"boxes": torch.stack([w - b["boxes"][:, 2], b["boxes"][:, 1], w - b["boxes"][:, 0], b["boxes"][:, 3]], 1),
          "labels": b["labels"]}
    ious = []
    for i in range(len(a["boxes"])):
        j = _match((a["boxes"][i], a["labels"][i]), mb, atol=1e-3)
        assert j >= 0, f"detection {i} has no mirrored counterpart"
        assert abs(float(a["scores"][i] - b["scores"][j])) < 1e-5
        assert torch.allclose(a["stage_scores"][i], b["stage_scores"][j], atol=1e-5)
        ma, mbm = a["masks"][i].bool(), b["masks"][j].flip(-1).bool()
        union = int((ma | mbm).sum())
        ious.append(1.0 if union == 0 else int((ma & mbm).sum()) / union)
    assert min(ious) > 0.98 and np.mean(ious) > 0.999


def test_tta_averages_views():
    """Two identical views average to the single view's scores for the shared proposals,
    and a flip + scale plan runs end to end with the merged proposal count bounded."""
    model, cfg = build()
    img = frame()
    views = [View((128, 96), False), View((128, 96), True), View((192, 144), False), View((192, 144), True)]
    res = predict_aug(model, img, views)
    assert len(res["proposals"]) <= cfg.model.rpn.test_max_proposals
    assert res["masks"].shape[1:] == (96, 128)
    assert res["stage_scores"].shape == (len(res["boxes"]), T)
    assert len(res["view_outputs"]) == 4
    # every view scored the same shared proposals
    for p, vo in zip(res["views"], res["view_outputs"]):
        assert torch.allclose(p.to_frame(vo["rois"][:, 1:]), res["proposals"][:, :4], atol=1e-3)
    # the average of the two flip views' boxes is what the two-view plan selects from
    two = predict_aug(model, img, views[:2])
    boxes = sum(p.to_frame(vo["stage_boxes"][:, -1]) for p, vo in zip(two["views"], two["view_outputs"])) / 2
    assert torch.allclose(two["boxes"], boxes[two["rows"]], atol=1e-5)


# --------------------------------------------------------------------------- CLI


def test_cli_exports_a_checkpoint(tmp_path):
    model, cfg = build()
    ckpt = tmp_path / "work" / "latest.pth"
    ckpt.parent.mkdir()
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "epoch": 3,
                "meta": {"classes": THINGS, "stuff_classes": STUFF}}, ckpt)
    image = tmp_path / "frame.png"
    Image.fromarray(frame(), mode="RGB").save(image)
    out = tmp_path / "bundle"
    rc = export.main(["--checkpoint", str(ckpt), "--out", str(out), "--fixture-image", str(image),
                      "--tta-scales", "160x160,192x192"])
    assert rc == 0
    man = yaml.safe_load((out / "manifest.yaml").read_text())
    assert man["name"] == "work_epoch3" and man["things"] == THINGS
    plans = yaml.safe_load((out / "fixture" / "fixture.yaml").read_text())["plans"]
    assert plans[1]["views"][2] == {"scale": [192, 192], "flip": False}
    assert export.main(["--checkpoint", str(tmp_path / "missing.pth"), "--out", str(out)]) == 2


def test_cli_exports_a_checkpoint_handed_on_without_its_dataset(tmp_path, capsys):
    """The fixture is the parity tests' reference: a checkpoint whose val split is not on
    this machine still exports, without it and saying so; a fixture image asked for and
    missing is still an error."""
    model, cfg = build()
    cfg.data.root = str(tmp_path / "gone")  # where it was trained, not here
    ckpt = tmp_path / "latest.pth"
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "meta": {"classes": THINGS}}, ckpt)
    out = tmp_path / "bundle"
    assert export.main(["--checkpoint", str(ckpt), "--out", str(out)]) == 0
    assert (out / "manifest.yaml").is_file() and not (out / "fixture").exists()
    assert "no reference fixture: the val split's" in capsys.readouterr().err
    assert export.main(["--checkpoint", str(ckpt), "--out", str(out),
                        "--fixture-image", str(tmp_path / "none.png")]) == 2


def test_parse_scales():
    assert export.parse_scales("320x320,416x416") == [[320, 320], [416, 416]]
    assert export.parse_scales("800x1333, 1000x1600") == [[1333, 800], [1600, 1000]]
    assert export.default_tta_scales([320, 320]) == [[320, 320], [416, 416]]
    with pytest.raises(ValueError):
        export.parse_scales("320")
    with pytest.raises(ValueError):
        export.parse_scales("320x320")


def test_predict_aug_stagewise_uses_the_chosen_stages_scores_and_masks():
    model, _ = build()
    img = frame()
    views = [View((160, 160), False), View((160, 160), True)]
    base = predict_aug(model, img, views)
    same = predict_aug(model, img, views, stages=[1, 2, 3])
    assert torch.equal(base["scores"], same["scores"]) and torch.equal(base["masks"], same["masks"])
    last = predict_aug(model, img, views, stages=[3])
    # stage 3 alone: per view the softmax of its logits, averaged over views
    probs = sum(torch.softmax(vo["stage_logits"][:, 2], 1) for vo in last["view_outputs"]) / 2
    assert torch.allclose(probs[last["rows"], last["labels"]], last["scores"], atol=1e-6)
    for bad in ([], [0], [4], [2, 2]):
        with pytest.raises(ValueError):
            predict_aug(model, img, views, stages=bad)


# --------------------------------------------------------------------------- the default bundle

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BUNDLE = ROOT / "examples" / "models" / "htc_tiny_synthetic"
SHIPPED = ROOT / "examples" / "models" / "htc_tiny_synthetic.pth"


def test_shipped_checkpoint_exports_the_default_bundle(tmp_path):
    """examples/models/htc_tiny_synthetic.pth holds the default bundle's weights (BatchNorm
    folded into the backbone's convolutions, as the graphs store them): exported, it gives the
    bundle's manifest and every graph byte for byte, so the bundle can be written again by
    ``htc.export --checkpoint`` after an exporter change."""
    from htc.evaluate_model import load_checkpoint_config, load_model_from_checkpoint

    cfg, ckpt = load_checkpoint_config(SHIPPED, None)
    assert set(ckpt) == {"model", "config", "meta"}  # weights only: no optimizer, scheduler or rng
    model = load_model_from_checkpoint(cfg, ckpt, torch.device("cpu"))
    man = export.build_manifest(cfg, name="htc_tiny_synthetic", things=ckpt["meta"]["classes"],
                                stuff=ckpt["meta"]["stuff_classes"])
    assert export.dump_yaml(man) == (DEFAULT_BUNDLE / "manifest.yaml").read_text()
    paths = export.export_graphs(model, tmp_path, export.trace_size(cfg))
    assert sorted(paths) == sorted(p.name for p in DEFAULT_BUNDLE.glob("*.onnx"))
    for name, path in paths.items():
        assert path.read_bytes() == (DEFAULT_BUNDLE / name).read_bytes(), name
