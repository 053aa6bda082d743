"""The HTC detector end to end: losses, training steps, the paper's ablation switches,
mmdetection parameter names, predict() and the export pieces."""

import io
import math

import onnx
import pytest
import torch
from torchvision.ops import roi_align

from htc.config import load_config
from htc.model import build_model
from htc.model.box_ops import decode_deltas
from htc.model.postprocess import ensemble_scores
from model_testutil import CONFIGS, make_batch, near_gt_proposals, small_config

torch.set_num_threads(1)

# Expected while tracing/exporting: torchvision's shape asserts, its note that aligned RoIAlign
# needs opset 16 (which is what we export), and the exporter's shape-inference notice.
EXPORT_WARNINGS = [
    pytest.mark.filterwarnings("ignore:Converting a tensor to a Python boolean"),
    pytest.mark.filterwarnings("ignore:ROIAlign with aligned=True"),
    pytest.mark.filterwarnings("ignore:.*shape inference of prim"),
]

LOSS_KEYS = ["loss_rpn_cls", "loss_rpn_bbox", "loss_semantic_seg"] + [
    f"s{t}.{name}" for t in range(3) for name in ("loss_cls", "loss_bbox", "loss_mask")
]


def build(seed=0, **overrides):
    torch.manual_seed(seed)
    return build_model(small_config(**overrides))


def test_losses_have_contract_keys_and_are_finite():
    model = build().train()
    images, targets = make_batch()
    torch.manual_seed(1)
    losses = model.loss(images, targets)
    assert list(losses) == LOSS_KEYS
    for name, value in losses.items():
        assert value.dim() == 0 and math.isfinite(value.item()), name
    sum(losses.values()).backward()
    assert model.roi_head.bbox_head[2].fc_cls.weight.grad is not None
    assert model.backbone.conv1.weight.grad is not None


# Recorded from this implementation (Debian torch 1.13; model seed 0, sampling seed 1; the same
# with reference BLAS and OpenBLAS). A mismatch means training behaviour changed: update the
# numbers only when that change is intended.
GOLDEN_LOSSES = {
    "loss_rpn_cls": 0.6922, "loss_rpn_bbox": 0.01164, "loss_semantic_seg": 1.6829,
    "s0.loss_cls": 1.27086, "s0.loss_bbox": 0.55299, "s0.loss_mask": 0.72277,
    "s1.loss_cls": 0.79682, "s1.loss_bbox": 0.1242, "s1.loss_mask": 0.3459,
    "s2.loss_cls": 0.36934, "s2.loss_bbox": 0.04524, "s2.loss_mask": 0.17633,
}


def test_golden_losses():
    model = build(seed=0).train()
    images, targets = make_batch()
    torch.manual_seed(1)
    losses = model.loss(images, targets)
    got = {k: round(v.item(), 5) for k, v in losses.items()}
    for key, value in GOLDEN_LOSSES.items():
        assert got[key] == pytest.approx(value, rel=1e-3, abs=1e-5), (key, got)


def test_stage_loss_weights_scale_stage_losses():
    images, targets = make_batch()
    results = []
    for weights in ([1.0, 0.5, 0.25], [2.0, 1.0, 0.5]):
        model = build(roi={"stage_loss_weights": weights}).train()
        torch.manual_seed(1)
        results.append(model.loss(images, targets))
    for key in LOSS_KEYS:
        ratio = 2.0 if key.startswith("s") else 1.0
        assert torch.allclose(results[1][key], results[0][key] * ratio, rtol=1e-4, atol=1e-7), key


def test_empty_ground_truth_gives_zero_box_and_mask_losses():
    model = build().train()
    images, targets = make_batch(shapes=[[], []])
    for t in targets:
        t["semantic"].fill_(255)  # also nothing labelled: the semantic loss must not become NaN
    losses = model.loss(images, targets)
    assert list(losses) == LOSS_KEYS
    for t in range(3):
        assert losses[f"s{t}.loss_bbox"].item() == 0.0
        assert losses[f"s{t}.loss_mask"].item() == 0.0
        assert math.isfinite(losses[f"s{t}.loss_cls"].item()) and losses[f"s{t}.loss_cls"].item() > 0
    assert losses["loss_rpn_bbox"].item() == 0.0
    assert losses["loss_semantic_seg"].item() == 0.0
    sum(losses.values()).backward()


def test_crowd_and_degenerate_targets_are_ignored():
    model = build().train()
    images, targets = make_batch(shapes=[[(8, 10, 48, 60, 0), (60, 20, 120, 70, 1)], []])
    targets[0]["iscrowd"] = torch.tensor([0, 1], dtype=torch.uint8)
    # A degenerate (zero-width) box is dropped like a crowd one instead of producing log(0).
    for k, v in (("boxes", torch.tensor([[30.0, 30.0, 30.0, 50.0]])), ("labels", torch.tensor([2])),
                 ("masks", torch.zeros(1, 128, 128, dtype=torch.uint8)),
                 ("iscrowd", torch.zeros(1, dtype=torch.uint8))):
        targets[0][k] = torch.cat([targets[0][k], v])
    torch.manual_seed(3)
    with_crowd = model.loss(images, targets)
    stripped = [dict(t) for t in targets]
    for k in ("boxes", "labels", "masks"):
        stripped[0][k] = targets[0][k][:1]
    stripped[0]["iscrowd"] = torch.zeros(1, dtype=torch.uint8)
    torch.manual_seed(3)
    without = model.loss(images, stripped)
    for key in LOSS_KEYS:
        assert torch.allclose(with_crowd[key], without[key]), key


def test_bad_targets_raise_clear_errors():
    model = build().train()
    images, targets = make_batch()
    targets[0]["labels"] = targets[0]["labels"] + 5
    with pytest.raises(ValueError, match="labels outside"):
        model.loss(images, targets)
    images, targets = make_batch()
    del targets[1]["semantic"]
    with pytest.raises(ValueError, match="semantic"):
        model.loss(images, targets)
    images, targets = make_batch()
    targets[0]["semantic"][0, 0] = 7  # 3 things + 2 stuff: 7 is neither a class nor 255
    with pytest.raises(ValueError, match=r"outside 0\.\.4"):
        model.loss(images, targets)


def test_sgd_steps_lower_the_loss():
    model = build(seed=0).train()
    images, targets = make_batch()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)

    def total(seed):
        torch.manual_seed(seed)
        return sum(model.loss(images, targets).values())

    with torch.no_grad():
        before = total(123).item()
    for step in range(12):
        opt.zero_grad()
        loss = total(step)
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = total(123).item()
    assert after < 0.8 * before, (before, after)


# ---------------------------------------------------------------- ablation switches


def test_ablation_configs_build_the_intended_modules():
    base = build(interleaved=False, mask_info_flow=False, semantic=False)
    names = set(base.state_dict())
    assert not any(".conv_res." in n for n in names)
    assert not any("semantic_head" in n for n in names)
    assert not base.roi_head.interleaved

    flow = build(interleaved=True, mask_info_flow=True, semantic=False)
    names = set(flow.state_dict())
    assert "roi_head.mask_head.1.conv_res.conv.weight" in names
    assert "roi_head.mask_head.2.conv_res.conv.weight" in names
    assert "roi_head.mask_head.0.conv_res.conv.weight" not in names

    full = build()
    assert "roi_head.semantic_head.conv_logits.weight" in full.state_dict()
    mask_only = build(semantic_fusion=["mask"])
    assert not mask_only.box_cascade().fuse_semantic and mask_only.mask_cascade().fuse_semantic
    box_only = build(semantic_fusion=["bbox"])
    assert box_only.box_cascade().fuse_semantic and not box_only.mask_cascade().fuse_semantic


# The paper's Table 3 ladder: Cascade Mask R-CNN, + interleaved, + mask information flow, + semantic.
ABLATIONS = {
    "cascade_mask_rcnn": dict(interleaved=False, mask_info_flow=False, semantic=False),
    "interleaved": dict(interleaved=True, mask_info_flow=False, semantic=False),
    "mask_info_flow": dict(interleaved=True, mask_info_flow=True, semantic=False),
    "htc": dict(interleaved=True, mask_info_flow=True, semantic=True),
}


@pytest.mark.parametrize("name", list(ABLATIONS))
def test_each_ablation_trains_and_predicts(name):
    model = build(**ABLATIONS[name]).train()
    images, targets = make_batch()
    losses = model.loss(images, targets)
    expected = [k for k in LOSS_KEYS if ABLATIONS[name]["semantic"] or k != "loss_semantic_seg"]
    assert list(losses) == expected
    sum(losses.values()).backward()
    results = model.eval().predict(images, [(128, 128)] * 2, [1.0, 1.0], [(128, 128)] * 2)
    assert len(results) == 2


def _record_stage_inputs(model):
    """Wrap the RoI head's per-stage box and mask forwards to record their RoIs and deltas."""
    head = model.roi_head
    record = {"box": [], "mask": []}
    box_forward, mask_forward = head._box_forward, head._mask_forward_train

    def box(net, t, feats, sem, rois):
        logits, deltas = box_forward(net, t, feats, sem, rois)
        record["box"].append((rois.detach().clone(), deltas.detach().clone()))
        return logits, deltas

    def mask(net, t, feats, sem, rois):
        record["mask"].append(rois.detach().clone())
        return mask_forward(net, t, feats, sem, rois)

    head._box_forward, head._mask_forward_train = box, mask
    return record


def _rows_in(rows, table, atol=1e-4):
    """For each row of ``rows``: is it (approximately) a row of ``table``?"""
    if table.numel() == 0:
        return torch.zeros(rows.shape[0], dtype=torch.bool)
    return ((rows[:, None, :] - table[None, :, :]).abs().max(dim=2).values < atol).any(dim=1)


@pytest.mark.parametrize("interleaved", [True, False])
def test_mask_branch_trains_on_the_boxes_eq1_or_eq2_says(interleaved):
    model = build(interleaved=interleaved)
    images, targets = make_batch()
    near_gt_proposals(model, targets)
    with torch.no_grad():
        # Visible regression so regressed boxes differ from the RoIs they came from.
        for head in model.roi_head.bbox_head:
            head.fc_reg.bias.copy_(torch.tensor([0.3, -0.3, 0.2, 0.1]))
    record = _record_stage_inputs(model.train())
    torch.manual_seed(5)
    model.loss(images, targets)
    assert len(record["box"]) == 3 and len(record["mask"]) == 3
    stds = model.cfg.roi.box_stds
    sizes = torch.tensor([t["img_size"] for t in targets], dtype=torch.float32)
    for t in range(3):
        rois, deltas = record["box"][t]
        mask_rois = record["mask"][t]
        decoded = torch.cat([rois[:, :1], decode_deltas(rois[:, 1:], deltas, stds[t],
                                                        sizes[rois[:, 0].long()])], dim=1)
        gt = torch.cat([torch.cat([torch.full((len(tg["boxes"]), 1), float(i)), tg["boxes"]], 1)
                        for i, tg in enumerate(targets)])
        from_gt = _rows_in(mask_rois, gt)
        regressed = _rows_in(mask_rois, decoded)
        unregressed = _rows_in(mask_rois, rois)
        assert (~from_gt).sum() > 5, "test needs positives that are not ground truth"
        if interleaved:
            # Eq. 2: every non-gt mask RoI is one of the boxes stage t just regressed.
            assert regressed[~from_gt].all()
            assert not unregressed[~from_gt].any()
        else:
            # Eq. 1: the mask branch sees the same RoIs as the stage's box branch.
            assert unregressed.all()
            assert not regressed[~from_gt].any()
        if t > 0:
            # The next stage's proposals are this stage's regressed boxes (gt re-added by sampling).
            prev_rois, prev_deltas = record["box"][t - 1]
            prev_decoded = torch.cat([prev_rois[:, :1], decode_deltas(
                prev_rois[:, 1:], prev_deltas, stds[t - 1], sizes[prev_rois[:, 0].long()])], dim=1)
            not_gt = ~_rows_in(rois, gt)
            assert _rows_in(rois[not_gt], prev_decoded).all()


@pytest.mark.parametrize("info_flow", [True, False])
def test_mask_information_flow_chains_earlier_heads_with_gradient(info_flow):
    model = build(mask_info_flow=info_flow)
    images, targets = make_batch()
    near_gt_proposals(model, targets)
    torch.manual_seed(2)
    losses = model.train().loss(images, targets)
    model.zero_grad()
    losses["s2.loss_mask"].backward()
    heads = model.roi_head.mask_head
    head0_grad = heads[0].convs[0].conv.weight.grad
    head1_grad = heads[1].convs[3].conv.weight.grad
    if info_flow:
        # Eq. 5: stage 2's loss reaches heads 0 and 1 through m_1^- and m_2^-.
        assert head0_grad is not None and head0_grad.abs().sum() > 0
        assert head1_grad is not None and head1_grad.abs().sum() > 0
        assert heads[2].conv_res.conv.weight.grad.abs().sum() > 0
        assert heads[1].conv_logits.weight.grad is None or heads[1].conv_logits.weight.grad.abs().sum() == 0
    else:
        assert head0_grad is None or head0_grad.abs().sum() == 0
        assert head1_grad is None or head1_grad.abs().sum() == 0
        assert all(h.conv_res is None for h in heads)


def test_mask_cascade_feeds_previous_feature_only_with_info_flow():
    images, _ = make_batch()
    for info_flow in (True, False):
        model = build(mask_info_flow=info_flow).eval()
        feats = model.feature_net().features(images)
        rois = torch.tensor([[0.0, 8, 10, 48, 60], [1.0, 30, 30, 100, 100]])
        labels = torch.tensor([0, 1])
        net = model.mask_cascade()
        p = feats.fpn[:4]
        with torch.no_grad():
            probs = net(*p, feats.semantic_feat, rois, labels)
            x = net.roi_features(p, feats.semantic_feat, rois)
            heads = model.roi_head.mask_head
            logits0, f0 = heads[0](x)
            logits1, f1 = heads[1](x, f0 if info_flow else None)
            logits2, _ = heads[2](x, f1 if info_flow else None)
        for t, logits in enumerate((logits0, logits1, logits2)):
            expected = logits[torch.arange(2), labels].sigmoid()
            assert torch.allclose(probs[:, t], expected, atol=1e-6)


@pytest.mark.parametrize("fusion", [["bbox", "mask"], ["mask"], []])
def test_semantic_fusion_adds_semantic_roi_features(fusion):
    semantic = bool(fusion)
    model = build(semantic=semantic, semantic_fusion=fusion or ["bbox", "mask"]).eval()
    images, targets = make_batch()
    feats = model.feature_net().features(images)
    assert (feats.semantic_feat is not None) == semantic
    p = feats.fpn[:4]
    rois = torch.tensor([[0.0, 8, 10, 48, 60], [1.0, 5, 90, 40, 125]])
    box_net, mask_net = model.box_cascade(), model.mask_cascade()
    with torch.no_grad():
        box_plain = model.roi_head.box_extractor(p, rois)
        mask_plain = model.roi_head.mask_extractor(p, rois)
        box_feat = box_net.roi_features(p, feats.semantic_feat, rois)
        mask_feat = mask_net.roi_features(p, feats.semantic_feat, rois)
    if "bbox" in fusion:
        assert torch.allclose(box_feat, box_plain + _pooled_semantic(feats.semantic_feat, rois), atol=1e-6)
    else:
        assert torch.equal(box_feat, box_plain)
    if "mask" in fusion:
        sem = roi_align(feats.semantic_feat, rois, (14, 14), 1 / 8, 0, True)
        assert torch.allclose(mask_feat, mask_plain + sem, atol=1e-6)
    else:
        assert torch.equal(mask_feat, mask_plain)

    # In training too, stage 0's box head sees exactly P(x, r) (+ P(S(x), r) when fused).
    seen = []
    handle = model.roi_head.bbox_head[0].register_forward_pre_hook(lambda m, inp: seen.append(inp[0].detach()))
    record = _record_stage_inputs(model.train())
    losses = model.loss(images, targets)
    handle.remove()
    assert ("loss_semantic_seg" in losses) == semantic
    rois0 = record["box"][0][0]
    with torch.no_grad():
        # Still in train mode: BatchNorm uses the same batch statistics as inside loss().
        f = model.feature_net().features(images)
        expected = model.roi_head.box_extractor(f.fpn[:4], rois0)
        if "bbox" in fusion:
            expected = expected + _pooled_semantic(f.semantic_feat, rois0)
    assert torch.allclose(seen[0], expected, atol=1e-5)


def _pooled_semantic(semantic_feat, rois):
    """mmdetection's box-branch semantic feature: RoIAlign 14x14 at stride 8, average-pooled to 7x7."""
    return torch.nn.functional.adaptive_avg_pool2d(roi_align(semantic_feat, rois, (14, 14), 1 / 8, 0, True), 7)


def test_semantic_loss_weight_and_ignore():
    images, targets = make_batch()
    model = build(semantic_loss_weight=1.0)
    feats = model.feature_net().features(images)
    maps = [t["semantic"] for t in targets]
    base = model.roi_head.semantic_loss(feats.semantic_logits, maps)
    model.roi_head.cfg.semantic_loss_weight = 0.2
    assert torch.allclose(model.roi_head.semantic_loss(feats.semantic_logits, maps), base * 0.2)
    labels = torch.nn.functional.interpolate(torch.stack(maps)[:, None].float(), scale_factor=1 / 8,
                                             mode="nearest")[:, 0].long()
    expected = torch.nn.functional.cross_entropy(feats.semantic_logits, labels)
    model.roi_head.cfg.semantic_loss_weight = 1.0
    assert torch.allclose(base, expected, atol=1e-6)


# ---------------------------------------------------------------- mmdetection names


def test_r50_preset_matches_mmdetection_parameter_names():
    cfg = load_config(CONFIGS / "htc_r50_fpn.yaml")
    torch.manual_seed(0)
    model = build_model(cfg)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = {
        "backbone.conv1.weight": (64, 3, 7, 7),
        "backbone.bn1.running_var": (64,),
        "backbone.layer1.0.conv1.weight": (64, 64, 1, 1),
        "backbone.layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "backbone.layer1.0.downsample.1.weight": (256,),
        "backbone.layer3.5.conv2.weight": (256, 256, 3, 3),
        "backbone.layer4.2.bn3.bias": (2048,),
        "neck.lateral_convs.0.conv.weight": (256, 256, 1, 1),
        "neck.lateral_convs.3.conv.weight": (256, 2048, 1, 1),
        "neck.fpn_convs.3.conv.weight": (256, 256, 3, 3),
        "rpn_head.rpn_conv.weight": (256, 256, 3, 3),
        "rpn_head.rpn_cls.weight": (3, 256, 1, 1),
        "rpn_head.rpn_reg.weight": (12, 256, 1, 1),
        "roi_head.bbox_head.0.shared_fcs.0.weight": (1024, 12544),
        "roi_head.bbox_head.2.shared_fcs.1.weight": (1024, 1024),
        "roi_head.bbox_head.1.fc_cls.weight": (81, 1024),
        "roi_head.bbox_head.2.fc_reg.weight": (4, 1024),
        "roi_head.mask_head.0.convs.3.conv.weight": (256, 256, 3, 3),
        "roi_head.mask_head.0.upsample.weight": (256, 256, 2, 2),
        "roi_head.mask_head.2.conv_logits.weight": (80, 256, 1, 1),
        "roi_head.mask_head.1.conv_res.conv.weight": (256, 256, 1, 1),
        "roi_head.mask_head.2.conv_res.conv.bias": (256,),
        "roi_head.semantic_head.lateral_convs.4.conv.weight": (256, 256, 1, 1),
        "roi_head.semantic_head.convs.3.conv.weight": (256, 256, 3, 3),
        "roi_head.semantic_head.conv_embedding.conv.weight": (256, 256, 1, 1),
        "roi_head.semantic_head.conv_logits.weight": (183, 256, 1, 1),
    }
    for name, shape in expected.items():
        assert shapes.get(name) == shape, name
    assert "roi_head.mask_head.0.conv_res.conv.weight" not in shapes
    prefixes = ("backbone.", "neck.", "rpn_head.", "roi_head.bbox_head.", "roi_head.mask_head.",
                "roi_head.semantic_head.")
    assert all(k.startswith(prefixes) for k in shapes)
    params = sum(p.numel() for p in model.parameters())
    assert 76e6 < params < 82e6, params  # the model zoo's HTC R-50 has about 80 M


# ---------------------------------------------------------------- test time


def test_predict_returns_contract_format():
    model = build().eval()
    images, _ = make_batch()
    orig = [(256, 250), (192, 200)]
    scales = [0.5, 128 / 192]
    results = model.predict(images, [(128, 125), (128, 128)], scales, orig)
    assert len(results) == 2
    for res, (h0, w0) in zip(results, orig):
        k = res["boxes"].shape[0]
        assert 0 < k <= model.cfg.test.max_per_img
        assert res["boxes"].dtype == torch.float32 and res["boxes"].shape == (k, 4)
        assert res["scores"].shape == (k,) and res["labels"].dtype == torch.int64
        assert res["masks"].dtype == torch.uint8 and res["masks"].shape == (k, h0, w0)
        assert (res["labels"] >= 0).all() and (res["labels"] < 3).all()
        assert (res["scores"] > model.cfg.test.score_thr).all()
        assert torch.all(res["scores"][:-1] >= res["scores"][1:])
        b = res["boxes"]
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= w0 + 1e-3).all() and (b[:, 3] <= h0 + 1e-3).all()


def test_predict_divides_boxes_by_per_axis_scales():
    model = build().eval()
    images, _ = make_batch()
    # 256x200 frames resized to 128x125 (x 0.625, y 0.5) and 128x128 (x 0.5, y 0.75)
    sizes, orig = [(128, 125), (128, 128)], [(256, 200), (171, 256)]
    factors = [(125 / 200, 128 / 256), (128 / 256, 128 / 171)]
    raw = model.predict_raw(images, sizes, factors, orig)
    for i, res in enumerate(raw["results"]):
        sel = raw["mask_rois"][:, 0] == i
        sx, sy = factors[i]
        assert len(res["boxes"]) > 0
        assert torch.allclose(res["boxes"] * torch.tensor([sx, sy, sx, sy]), raw["mask_rois"][sel, 1:], atol=1e-4)
        assert res["masks"].shape[1:] == orig[i]
    # mmdetection's [w, h, w, h] form and a tensor give the same; one number scales both axes
    same = model.predict(images, sizes, [torch.tensor(f * 2) for f in factors], orig)
    assert all(torch.equal(a["boxes"], b["boxes"]) for a, b in zip(raw["results"], same))
    assert torch.equal(model.predict(images[1:], sizes[1:], [0.5], orig[1:])[0]["boxes"],
                       model.predict(images[1:], sizes[1:], [(0.5, 0.5)], orig[1:])[0]["boxes"])
    with pytest.raises(ValueError, match="scale factor"):
        model.predict(images, sizes, [(1.0, 1.0, 1.0), 1.0], orig)


def test_predict_equals_the_tta_single_view_at_unequal_axis_scales():
    """A 96x128 frame at (130, 100) becomes 98x130: x 1.0156, y 1.0208. HTC.predict with
    the data transforms' per-axis scale_factor gives exactly the TTA path's single view."""
    import numpy as np

    from htc.data.transforms import resize
    from htc.model.tta import View, predict_aug, prepare_view

    model = build().eval()
    g = np.random.default_rng(1)
    img = (g.random((96, 128, 3)) * 60).astype(np.uint8)
    img[10:40, 12:50] = (220, 40, 40)
    img[50:90, 70:120] = (40, 220, 40)
    view = View((130, 100), False)
    p = prepare_view(img, view)
    assert (p.height, p.width) == (98, 130) and p.scale_x != p.scale_y
    target = {"boxes": torch.zeros((0, 4)), "masks": torch.zeros((0, 96, 128), dtype=torch.uint8),
              "semantic": torch.zeros((96, 128), dtype=torch.int64), "scale_factor": 1.0}
    _, t = resize(torch.from_numpy(img).permute(2, 0, 1).float(), target, (130, 100))
    assert t["img_size"] == (98, 130) and t["scale_factor"] == pytest.approx((p.scale_x, p.scale_y))
    ref = predict_aug(model, img, [view])
    got = model.predict(p.image[None], [t["img_size"]], [t["scale_factor"]], [(96, 128)])[0]
    assert len(ref["boxes"]) > 0
    for key in ("boxes", "scores", "labels", "masks"):
        assert torch.equal(got[key], ref[key]), key


def test_predict_with_no_detections():
    model = build(test={"score_thr": 1.1}).eval()
    images, _ = make_batch()
    results = model.predict(images, [(128, 128)] * 2, [1.0, 1.0], [(128, 128)] * 2)
    for res in results:
        assert res["boxes"].shape == (0, 4) and res["masks"].shape == (0, 128, 128)


def test_predict_follows_the_mmdetection_simple_test():
    model = build().eval()
    images, _ = make_batch()
    sizes, scales, orig = [(128, 128), (120, 128)], [1.0, 0.5], [(128, 128), (240, 256)]
    raw = model.predict_raw(images, sizes, scales, orig)
    rois, logits, boxes = raw["rois"], raw["stage_logits"], raw["stage_boxes"]
    assert logits.shape == (rois.shape[0], 3, 4) and boxes.shape == (rois.shape[0], 3, 4)
    net = model.box_cascade()
    feats = raw["features"]
    p = feats.fpn[:4]
    size_t = torch.tensor(sizes, dtype=torch.float32)
    with torch.no_grad():
        # Stage t runs on stage t-1's decoded, clipped boxes.
        stage_rois = rois
        for t in range(3):
            l, d = net.stage(t, p, feats.semantic_feat, stage_rois)
            decoded = decode_deltas(stage_rois[:, 1:], d, model.cfg.roi.box_stds[t],
                                    size_t[stage_rois[:, 0].long()])
            assert torch.allclose(l, logits[:, t], atol=1e-5)
            assert torch.allclose(decoded, boxes[:, t], atol=1e-4)
            stage_rois = torch.cat([rois[:, :1], decoded], 1)
    assert torch.allclose(raw["scores"], torch.softmax(logits.mean(1), 1))
    # Final boxes: last stage, divided by the scale factor; masks: mean of the stages.
    for i, res in enumerate(raw["results"]):
        sel = raw["mask_rois"][:, 0] == i
        assert torch.allclose(res["boxes"] * scales[i], raw["mask_rois"][sel, 1:], atol=1e-4)
        assert _rows_in(raw["mask_rois"][sel, 1:], boxes[rois[:, 0] == i, 2]).all()
        assert torch.equal(res["labels"], raw["mask_labels"][sel])
    assert raw["stage_mask_probs"].shape == (raw["mask_rois"].shape[0], 3, 28, 28)


@EXPORT_WARNINGS[0]
def test_export_pieces_equal_predict_internals():
    model = build().eval()
    images, _ = make_batch()
    sizes = [(128, 128), (128, 128)]
    raw = model.predict_raw(images, sizes, [1.0, 1.0], sizes)
    feat_net = model.feature_net()
    with torch.no_grad():
        flat = feat_net(images)
    assert len(flat) == len(feat_net.output_names) == 17
    assert all(torch.equal(a, b) for a, b in zip(flat[:5], raw["features"].fpn))
    assert flat[5].shape == (2, 32, 16, 16) and flat[6].shape == (2, 5, 16, 16)
    assert flat[7].shape == (2, 3, 32, 32) and flat[12].shape == (2, 12, 32, 32)

    p = raw["features"].fpn[:4]
    sem = raw["features"].semantic_feat
    size_t = torch.tensor(sizes, dtype=torch.float32)
    box_args = (*p, sem, raw["rois"], size_t)
    mask_args = (*p, sem, raw["mask_rois"], raw["mask_labels"])
    with torch.no_grad():
        logits, boxes = model.box_cascade()(*box_args)
        probs = model.mask_cascade()(*mask_args)
        # Traced graphs take the export path (dense level selection) and must generalise
        # to other RoI counts than the ones they were traced with.
        traced_box = torch.jit.trace(model.box_cascade(), tuple(a[:7] if a is raw["rois"] else a
                                                               for a in box_args), check_trace=False)
        traced_mask = torch.jit.trace(model.mask_cascade(), (*p, sem, raw["mask_rois"][:3],
                                                              raw["mask_labels"][:3]), check_trace=False)
        t_logits, t_boxes = traced_box(*box_args)
        t_probs = traced_mask(*mask_args)
    assert torch.equal(logits, raw["stage_logits"]) and torch.equal(boxes, raw["stage_boxes"])
    assert torch.equal(probs, raw["stage_mask_probs"])
    assert torch.allclose(t_logits, logits, atol=1e-5) and torch.allclose(t_boxes, boxes, atol=1e-4)
    assert torch.allclose(t_probs, probs, atol=1e-5)
    assert torch.allclose(ensemble_scores(t_logits), raw["scores"], atol=1e-5)


@pytest.mark.parametrize("piece", ["feature_net", "box_cascade", "mask_cascade"])
@EXPORT_WARNINGS[0]
@EXPORT_WARNINGS[1]
@EXPORT_WARNINGS[2]
def test_export_pieces_convert_to_onnx_opset16(piece):
    model = build().eval()
    images, _ = make_batch()
    with torch.no_grad():
        feats = model.feature_net().features(images)
    p = feats.fpn[:4]
    rois = torch.tensor([[0.0, 8, 10, 48, 60], [1.0, 5, 90, 40, 125], [1.0, 0, 0, 128, 128]])
    args = {
        "feature_net": (images,),
        "box_cascade": (*p, feats.semantic_feat, rois, torch.tensor([[128.0, 128.0]] * 2)),
        "mask_cascade": (*p, feats.semantic_feat, rois, torch.tensor([0, 2, 1])),
    }[piece]
    buf = io.BytesIO()
    torch.onnx.export(getattr(model, piece)(), args, buf, opset_version=16)
    graph = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(graph)
    ops = {n.op_type for n in graph.graph.node}
    assert "If" not in ops and "Loop" not in ops
    if piece != "feature_net":
        assert "RoiAlign" in ops and "NonZero" not in ops
