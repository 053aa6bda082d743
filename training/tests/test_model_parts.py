"""Building blocks: backbone, FPN, anchors, box coding, assignment, RoI extraction, heads, paste."""

import math

import pytest
import torch
import torchvision

from htc.model.backbone import FPN, FrozenBatchNorm2d, ResNet
from htc.model.box_ops import (MAX_LOG_RATIO, assign_max_iou, box_iou, decode_deltas, encode_deltas,
                               sample_random, sample_rois)
from htc.model.heads import BBoxHead, FusedSemanticHead, HTCMaskHead
from htc.model.postprocess import ensemble_scores, multiclass_nms, paste_masks
from htc.model.roi_head import RoIExtractor, mask_targets
from htc.model.rpn import AnchorGenerator

torch.set_num_threads(1)


@pytest.mark.parametrize("depth", [18, 50])
def test_resnet_matches_torchvision_names_and_shapes(depth):
    ours = ResNet(depth=depth).state_dict()
    ref = getattr(torchvision.models, f"resnet{depth}")(weights=None).state_dict()
    ref = {k: v.shape for k, v in ref.items() if not k.startswith("fc.") and "num_batches_tracked" not in k}
    assert {k: v.shape for k, v in ours.items()} == ref


def test_resnet_loads_a_torchvision_checkpoint_and_agrees():
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None).eval()
    for m in tv.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    ours = ResNet(depth=18, norm="frozen")
    state = {k: v for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    ours.load_state_dict(state)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))))))
        assert torch.allclose(ours(x)[-1], ref, rtol=1e-4, atol=1e-4)


def test_resnet_width_strides_and_frozen_stages():
    net = ResNet(depth=18, width=16, frozen_stages=1, norm="frozen")
    outs = net(torch.randn(2, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(2, 16, 16, 24), (2, 32, 8, 12), (2, 64, 4, 6), (2, 128, 2, 3)]
    assert net.out_channels == [16, 32, 64, 128]
    frozen = [n for n, p in net.named_parameters() if not p.requires_grad]
    # the stem (conv1, bn1) and layer1, BatchNorm affine included (norm_eval keeps it trainable elsewhere)
    assert frozen and all(n.startswith(("conv1", "bn1.", "layer1.")) for n in frozen)
    assert all(p.requires_grad for n, p in net.named_parameters() if n.startswith("layer2."))
    assert all(isinstance(m, FrozenBatchNorm2d) for m in net.modules() if "BatchNorm" in type(m).__name__)
    assert ResNet(depth=50).out_channels == [256, 512, 1024, 2048]


def test_trainable_batchnorm_keeps_frozen_stages_in_eval():
    net = ResNet(depth=18, width=8, frozen_stages=1, norm="batch").train()
    assert not net.bn1.training and not net.layer1[0].bn1.training
    assert net.layer2[0].bn1.training


def test_frozen_bn_ignores_num_batches_tracked():
    bn = FrozenBatchNorm2d(4)
    bn.load_state_dict({"weight": torch.ones(4), "bias": torch.zeros(4), "running_mean": torch.zeros(4),
                        "running_var": torch.ones(4), "num_batches_tracked": torch.tensor(3)})


def test_fpn_levels_and_names():
    fpn = FPN(in_channels=[16, 32, 64, 128], out_channels=24)
    feats = [torch.randn(1, c, 32 // 2**i, 40 // 2**i) for i, c in enumerate([16, 32, 64, 128])]
    outs = fpn(feats)
    assert [tuple(o.shape) for o in outs] == [(1, 24, 32, 40), (1, 24, 16, 20), (1, 24, 8, 10),
                                              (1, 24, 4, 5), (1, 24, 2, 3)]
    names = set(fpn.state_dict())
    assert "lateral_convs.0.conv.weight" in names and "fpn_convs.3.conv.bias" in names
    assert torch.equal(outs[4], outs[3][:, :, ::2, ::2])


def test_anchor_conventions():
    gen = AnchorGenerator(strides=[4, 8], scales=[8], ratios=[0.5, 1.0, 2.0])
    base = gen.base_anchors[0]
    h, w = 32 * math.sqrt(0.5), 32 / math.sqrt(0.5)
    assert torch.allclose(base[0], torch.tensor([-w / 2, -h / 2, w / 2, h / 2]))
    assert torch.allclose(base[1], torch.tensor([-16.0, -16.0, 16.0, 16.0]))
    grid = gen.grid([(2, 3), (1, 2)])
    assert grid[0].shape == (2 * 3 * 3, 4)
    # Location (y=1, x=2), ratio 1.0 -> index (1 * 3 + 2) * 3 + 1, centred at (8, 4).
    assert torch.allclose(grid[0][(1 * 3 + 2) * 3 + 1], torch.tensor([8 - 16.0, 4 - 16.0, 8 + 16.0, 4 + 16.0]))
    flags = gen.valid_flags([(4, 4)], (8, 12))
    assert flags[0].view(4, 4, 3)[:, :, 0].tolist() == [[True] * 3 + [False]] * 2 + [[False] * 4] * 2


def test_delta_round_trip_and_clamp():
    boxes = torch.tensor([[10.0, 10.0, 50.0, 30.0], [0.0, 0.0, 8.0, 8.0]])
    targets = torch.tensor([[12.0, 8.0, 60.0, 33.0], [1.0, 2.0, 5.0, 9.0]])
    stds = [0.1, 0.1, 0.2, 0.2]
    deltas = encode_deltas(boxes, targets, stds)
    assert torch.allclose(decode_deltas(boxes, deltas, stds), targets, atol=1e-4)
    huge = torch.tensor([[0.0, 0.0, 100.0, 100.0]])
    decoded = decode_deltas(boxes[:1], huge, [1, 1, 1, 1])
    assert torch.allclose(decoded[0, 2] - decoded[0, 0], 40 * torch.tensor(MAX_LOG_RATIO).exp())
    clipped = decode_deltas(boxes, torch.zeros(2, 4) + torch.tensor([5.0, 0, 0, 0]), [1, 1, 1, 1],
                            torch.tensor([[20.0, 60.0], [20.0, 60.0]]))
    assert clipped[:, [0, 2]].max() <= 60 and clipped[:, [1, 3]].max() <= 20


def test_box_iou_handles_degenerate_boxes():
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 5.0, 5.0]])
    iou = box_iou(a, a)
    assert iou[0, 0] == 1 and iou[1, 1] == 0 and not iou.isnan().any()


def test_max_iou_assigner():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 110.0, 110.0]])
    boxes = torch.tensor([
        [0.0, 0.0, 10.0, 9.0],      # IoU 0.9 with gt0 -> positive
        [0.0, 0.0, 20.0, 20.0],     # 0.25 -> negative
        [5.0, 5.0, 15.0, 15.0],     # 0.14 -> negative
        [100.0, 100.0, 116.0, 116.0],  # 0.39 with gt1: between thresholds, best for gt1
        [50.0, 50.0, 60.0, 60.0],   # 0 -> negative
    ])
    plain = assign_max_iou(boxes, gt, pos_iou=0.7, neg_iou=0.3, min_pos_iou=0.3, match_low_quality=False)
    assert plain.tolist() == [1, 0, 0, -1, 0]
    low = assign_max_iou(boxes, gt, pos_iou=0.7, neg_iou=0.3, min_pos_iou=0.3, match_low_quality=True)
    assert low.tolist() == [1, 0, 0, 2, 0]
    empty = assign_max_iou(boxes, gt[:0], pos_iou=0.7, neg_iou=0.3, min_pos_iou=0.3, match_low_quality=True)
    assert empty.tolist() == [0] * 5


def test_random_sampler_respects_budget():
    torch.manual_seed(0)
    gt_inds = torch.tensor([1] * 50 + [0] * 500 + [-1] * 10)
    pos, neg = sample_random(gt_inds, 64, 0.25)
    assert pos.numel() == 16 and neg.numel() == 48
    assert (gt_inds[pos] > 0).all() and (gt_inds[neg] == 0).all()
    pos, neg = sample_random(torch.tensor([1, 0, 0]), 64, 0.25)
    assert pos.numel() == 1 and neg.numel() == 2


def test_sample_rois_adds_gt_first_and_flags_it():
    gt = torch.tensor([[10.0, 10.0, 40.0, 40.0]])
    props = torch.tensor([[11.0, 10.0, 40.0, 41.0], [60.0, 60.0, 90.0, 90.0]])
    s = sample_rois(props, gt, iou=0.5, num=8, pos_fraction=0.25)
    assert s.num_pos == 2 and s.boxes.shape == (3, 4)
    assert s.pos_gt_inds.tolist() == [0, 0]
    assert sorted(s.pos_is_gt.tolist()) == [False, True]
    assert torch.equal(s.boxes[2], props[1])


def test_sample_rois_matches_low_quality_like_mmdetection_htc():
    # mmdetection 2.x's HTC config leaves MaxIoUAssigner's match_low_quality at
    # its default (True) for the R-CNN stages: a proposal that is gt1's best
    # match goes to gt1 although it overlaps gt0 more.
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 14.0]])
    props = torch.tensor([[0.0, 0.0, 10.0, 11.0]])  # IoU 0.909 with gt0, 0.786 with gt1
    plain = assign_max_iou(props, gt, pos_iou=0.5, neg_iou=0.5, min_pos_iou=0.5, match_low_quality=False)
    assert plain.tolist() == [1]
    s = sample_rois(props, gt, iou=0.5, num=8, pos_fraction=1.0)
    assert s.num_pos == 3
    proposal_row = (~s.pos_is_gt).nonzero().flatten().tolist()
    assert len(proposal_row) == 1 and s.pos_gt_inds[proposal_row[0]].item() == 1


def test_roi_levels_follow_fpn_rule():
    ext = RoIExtractor(out_size=7, finest_scale=56)
    sizes = torch.tensor([20.0, 111.0, 112.0, 223.0, 224.0, 447.0, 448.0, 2000.0])
    rois = torch.stack([torch.zeros(8), torch.zeros(8), torch.zeros(8), sizes, sizes], dim=1)
    assert ext.levels(rois).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_dense_and_sparse_roi_extraction_agree():
    torch.manual_seed(0)
    ext = RoIExtractor(out_size=7, finest_scale=56)
    feats = [torch.randn(2, 4, 64 // 2**i, 64 // 2**i) for i in range(4)]
    xy = torch.rand(30, 2) * 150
    wh = torch.rand(30, 2) ** 2 * 900 + 4
    rois = torch.cat([torch.randint(0, 2, (30, 1)).float(), xy, xy + wh], dim=1)
    sparse = ext(feats, rois, dense=False)
    dense = ext(feats, rois, dense=True)
    assert sparse.shape == (30, 4, 7, 7)
    assert torch.allclose(sparse, dense)
    lvl = ext.levels(rois)
    assert set(lvl.tolist()) == {0, 1, 2, 3}
    i = int(torch.nonzero(lvl == 2)[0])
    ref = torchvision.ops.roi_align(feats[2], rois[i:i + 1], (7, 7), 1 / 16, 0, True)
    assert torch.allclose(sparse[i:i + 1], ref)


def test_head_shapes_and_names():
    box = BBoxHead(in_channels=8, roi_size=7, fc_dim=32, num_classes=3)
    logits, deltas = box(torch.randn(5, 8, 7, 7))
    assert logits.shape == (5, 4) and deltas.shape == (5, 4)
    assert box.shared_fcs[0].weight.shape == (32, 8 * 49)

    first = HTCMaskHead(in_channels=8, channels=6, num_convs=4, num_classes=3, with_conv_res=False)
    later = HTCMaskHead(in_channels=8, channels=6, num_convs=4, num_classes=3, with_conv_res=True)
    x = torch.randn(5, 8, 14, 14)
    logits, feat = first(x)
    assert logits.shape == (5, 3, 28, 28) and feat.shape == (5, 6, 14, 14)
    logits2, _ = later(x, feat)
    assert logits2.shape == (5, 3, 28, 28)
    assert first.conv_res is None and later.conv_res.conv.weight.shape == (8, 6, 1, 1)
    with pytest.raises(ValueError):
        first(x, feat)

    sem = FusedSemanticHead(in_channels=8, num_levels=5, fusion_level=1, num_convs=4, num_classes=7)
    feats = [torch.randn(2, 8, 64 // 2**i, 48 // 2**i) for i in range(5)]
    seg, emb = sem(feats)
    assert seg.shape == (2, 7, 32, 24) and emb.shape == (2, 8, 32, 24)
    assert {"lateral_convs.4.conv.weight", "convs.3.conv.weight", "conv_embedding.conv.weight",
            "conv_logits.weight"} <= set(sem.state_dict())


def test_mask_targets_crop_the_gt_mask():
    masks = torch.zeros(2, 40, 40, dtype=torch.uint8)
    masks[0, 10:30, 10:20] = 1
    masks[1] = 1
    boxes = torch.tensor([[10.0, 10.0, 30.0, 30.0], [0.0, 0.0, 40.0, 40.0]])
    t = mask_targets(masks, boxes, torch.tensor([0, 1]), 28)
    assert t.shape == (2, 28, 28)
    assert t[0, :, :14].all() and not t[0, :, 14:].any()
    assert t[1].all()


def test_multiclass_nms_and_ensemble():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    assert torch.allclose(ensemble_scores(logits), torch.softmax(torch.tensor([[1.0, 0.0, 0.0]]), 1))


def test_ensemble_scores_modes_and_weights_follow_go():
    # cascade.Ensemble: logits = softmax(sum_t w_t z_t / sum w); probs = sum_t w_t softmax(z_t) / sum w
    g = torch.Generator().manual_seed(0)
    z = torch.randn(5, 3, 4, generator=g) * 3
    w = [0.5, 1.0, 2.0]
    wt = torch.tensor(w).view(1, 3, 1)
    assert torch.allclose(ensemble_scores(z, "logits", w), torch.softmax((z * wt).sum(1) / 3.5, 1), atol=1e-6)
    assert torch.allclose(ensemble_scores(z, "probs", w), (torch.softmax(z, 2) * wt).sum(1) / 3.5, atol=1e-6)
    assert torch.allclose(ensemble_scores(z, "probs"), torch.softmax(z, 2).mean(1), atol=1e-6)
    assert torch.allclose(ensemble_scores(z), torch.softmax(z.mean(1), 1), atol=1e-6)
    for bad in ([1.0, 1.0], [0.0, 0.0, 0.0], [-1.0, 1.0, 1.0]):
        with pytest.raises(ValueError):
            ensemble_scores(z, "probs", bad)
    with pytest.raises(ValueError):
        ensemble_scores(z, "mean")
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 9.0], [50.0, 50.0, 60.0, 60.0]])
    scores = torch.tensor([[0.9, 0.05, 0.05], [0.8, 0.15, 0.05], [0.1, 0.7, 0.2]])
    rows, labels, s = multiclass_nms(boxes, scores, score_thr=0.06, iou=0.5, max_num=10)
    got = sorted(zip(rows.tolist(), labels.tolist()))
    # Box 1 is suppressed by box 0 in class 0 but survives in class 1.
    assert got == [(0, 0), (1, 1), (2, 0), (2, 1)]
    assert torch.all(s[:-1] >= s[1:])


def test_paste_masks_fills_the_box():
    probs = torch.ones(1, 28, 28) * 0.9
    out = paste_masks(probs, torch.tensor([[10.0, 20.0, 30.0, 25.0]]), 40, 50, 0.5)
    assert out.dtype == torch.uint8 and out.shape == (1, 40, 50)
    assert out[0, 20:25, 10:30].all() and out.sum() == 5 * 20
