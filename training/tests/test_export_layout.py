"""The ``sorted`` head-graph layout (htc.export) computes what the ``legacy`` one does."""

import onnx
import yaml
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from htc import export
from htc.model import build_model
from model_testutil import small_config

torch.set_num_threads(1)


def random_rois(n, h, w, batch, seed):
    """Boxes of every size class: tiny, P2..P5, larger than the image, partly outside it,
    thin (non-square sampling grids), and a few empty ones; random image index."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w, h]) - 10
    wh = torch.rand(n, 2, generator=g) ** 2 * torch.tensor([w * 1.5, h * 1.5])
    rois = torch.cat([torch.randint(0, batch, (n, 1), generator=g).float(), xy, xy + wh], 1)
    rois[:4, 3:] = rois[:4, 1:3]
    rois[4:8, 3] = rois[4:8, 1] + 300.0  # wide and short
    return rois


def inputs(cfg, batch=2, h=96, w=128, n=300, seed=1):
    torch.manual_seed(seed)
    c = cfg.model.neck.out_channels
    feats = [torch.randn(batch, c, h // s, w // s) for s in (4, 8, 16, 32)]
    sem = torch.randn(batch, c, h // 8, w // 8)
    rois = random_rois(n, h, w, batch, seed)
    sizes = torch.tensor([[h, w], [h - 10, w - 20]], dtype=torch.float32)[:batch]
    labels = torch.randint(0, cfg.model.num_classes, (n,), generator=torch.Generator().manual_seed(seed))
    return feats, sem, rois, sizes, labels


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = small_config()
    return build_model(cfg).eval(), cfg


def test_semantic_box_pooling_equals_roialign_14_then_average():
    torch.manual_seed(0)
    sem = torch.randn(2, 8, 20, 24)
    rois = random_rois(400, 160, 192, 2, seed=3)
    want = F.avg_pool2d(roi_align(sem, rois, (14, 14), 1 / 8, 0, True), 2, 2)
    got = export.semantic_box_features(sem, rois, 14, 7)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()


def test_pool_by_level_pools_each_roi_once_on_its_level(model):
    m, cfg = model
    feats, _, rois, _, _ = inputs(cfg)
    ext = m.roi_head.box_extractor
    pooled, order = export.pool_by_level(ext, feats, rois)
    assert sorted(order.tolist()) == list(range(rois.shape[0]))
    want = ext(feats, rois, dense=False)  # the training path: each RoI on its own level
    assert torch.equal(pooled, want[order])
    dense = ext(feats, rois, dense=True)  # the legacy graph's path: every level, then where
    assert torch.allclose(pooled, dense[order], atol=1e-6, rtol=0)


@pytest.mark.parametrize("layout", ["sorted", "stages"])
def test_layout_equals_legacy_on_random_rois(model, layout):
    m, cfg = model
    feats, sem, rois, sizes, labels = inputs(cfg)
    legacy_box, legacy_mask = export.head_graphs(m, "legacy")
    box, mask = export.head_graphs(m, layout)
    with torch.no_grad():
        for got, want in zip(box(*feats, sem, rois, sizes), legacy_box(*feats, sem, rois, sizes)):
            assert got.shape == want.shape
            assert torch.allclose(got, want, atol=1e-4, rtol=1e-5), (got - want).abs().max()
        got, want = mask(*feats, sem, rois, labels), legacy_mask(*feats, sem, rois, labels)
        assert got.shape == want.shape == (rois.shape[0], cfg.model.roi.num_stages, 28, 28)
        assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()


def test_sorted_layout_with_a_level_left_empty(model):
    m, cfg = model
    feats, sem, _, sizes, labels = inputs(cfg)
    rois = torch.tensor([[0, 4.0, 4.0, 20.0, 18.0], [1, 10.0, 12.0, 40.0, 30.0]])  # all on P2
    box, mask = export.head_graphs(m, "sorted")
    legacy_box, legacy_mask = export.head_graphs(m, "legacy")
    with torch.no_grad():
        for got, want in zip(box(*feats, sem, rois, sizes), legacy_box(*feats, sem, rois, sizes)):
            assert torch.allclose(got, want, atol=1e-4, rtol=1e-5)
        assert torch.allclose(mask(*feats, sem, rois, labels[:2]), legacy_mask(*feats, sem, rois, labels[:2]),
                              atol=1e-5, rtol=0)


def _ops(path):
    g = onnx.load(str(path)).graph
    ops = {}
    for n in g.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return ops


def test_exported_sorted_graphs_pool_once_per_level_without_where(model, tmp_path):
    m, cfg = model
    export.export_graphs(m, tmp_path, (96, 128), layout="sorted", kinds=("bbox_heads", "mask_heads"))
    box, mask = _ops(tmp_path / "bbox_heads.onnx"), _ops(tmp_path / "mask_heads.onnx")
    t = cfg.model.roi.num_stages
    # per stage: 4 levels + the semantic feature in 3 groups (g = 1, g = 2, the rest)
    assert box["RoiAlign"] == t * (4 + 3)
    assert "Where" not in box and "AveragePool" not in box
    assert mask["RoiAlign"] == 4 + 1 and "ConvTranspose" not in mask and mask["DepthToSpace"] == 1
    for kind in ("bbox_heads", "mask_heads"):
        export.check_graph(tmp_path / f"{kind}.onnx", kind)


def distinct_weights_model():
    """A small model whose tensors are all different: the exporter shares equal initializers
    (fresh zero biases) under one name, which recovery could not tell apart."""
    torch.manual_seed(0)
    cfg = small_config()
    m = build_model(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    return m, cfg


def test_heads_rebuilt_from_a_bundle_keep_the_weights(tmp_path):
    m, cfg = distinct_weights_model()
    src = tmp_path / "src"
    export.export_bundle(m, cfg, src, name="t", things=["a", "b", "c"], stuff=["s", "t"], fixture_image=None,
                         tta_scales=None, layout="legacy")
    state = export.heads_state_from_bundle(src)
    own = m.state_dict()
    heads = {k for k in own if k.startswith(("roi_head.bbox_head.", "roi_head.mask_head."))}
    assert set(state) == heads
    for k in heads:
        assert torch.equal(state[k], own[k]), k
    out = tmp_path / "out"
    export.rebuild_bundle_heads(src, out, cfg, layout="sorted")
    assert (out / "manifest.yaml").read_bytes() == (src / "manifest.yaml").read_bytes()
    assert (out / "backbone.onnx").read_bytes() == (src / "backbone.onnx").read_bytes()
    assert "Where" not in _ops(out / "bbox_heads.onnx")
    with pytest.raises(ValueError, match="another folder"):
        export.rebuild_bundle_heads(src, src, cfg)


def test_stage_graph_takes_channels_last_features(model):
    m, cfg = model
    feats, sem, rois, sizes, _ = inputs(cfg, n=40)
    cascade = m.box_cascade()
    stage = export.BoxStageGraph(cascade, 1)
    with torch.no_grad():
        x = cascade.roi_features(feats, sem, rois)  # [R, C, S, S]
        want = cascade.heads[1](x)
        got = stage.head(export.pooled_channels_last(cascade, feats, sem, rois))
    for g, w in zip(got, want):
        assert torch.allclose(g, w, atol=1e-5, rtol=1e-5), (g - w).abs().max()
    w = cascade.heads[1].shared_fcs[0].weight
    c = cfg.model.neck.out_channels
    assert torch.equal(export.channels_first_columns(export.channels_last_columns(w, c, 7), c, 7), w)


def test_exported_stage_graphs_have_no_roialign(model, tmp_path):
    m, cfg = model
    paths = export.export_graphs(m, tmp_path, (96, 128), layout="stages", kinds=("bbox_heads", "mask_heads"))
    t = cfg.model.roi.num_stages
    assert sorted(paths) == sorted([f"bbox_stage{i + 1}.onnx" for i in range(t)] + ["mask_heads.onnx"])
    for i in range(t):
        ops = _ops(tmp_path / f"bbox_stage{i + 1}.onnx")
        assert "RoiAlign" not in ops and "Where" not in ops and "Transpose" not in ops, ops
        export.check_graph(tmp_path / f"bbox_stage{i + 1}.onnx", "bbox_stage")


def test_stages_bundle_rebuilt_both_ways_keeps_the_weights(tmp_path):
    m, cfg = distinct_weights_model()
    own = m.state_dict()
    heads = {k for k in own if k.startswith(("roi_head.bbox_head.", "roi_head.mask_head."))}
    src = tmp_path / "v1"
    export.export_bundle(m, cfg, src, name="t", things=["a", "b", "c"], stuff=["s", "t"], fixture_image=None,
                         tta_scales=None, layout="legacy")
    v2 = tmp_path / "v2"
    export.rebuild_bundle_heads(src, v2, cfg, layout="stages")
    man = yaml.safe_load((v2 / "manifest.yaml").read_text())
    assert man["contract"] == "htcstream-bundle/2" and man["graphs"]["bbox_stages"][2] == "bbox_stage3.onnx"
    assert list(man)[:2] == ["contract", "name"] and "roi" in man
    assert not (v2 / "bbox_heads.onnx").exists()
    state = export.heads_state_from_bundle(v2)
    assert set(state) == heads
    for k in heads:
        assert torch.equal(state[k], own[k]), k
    back = tmp_path / "back"
    export.rebuild_bundle_heads(v2, back, cfg, layout="legacy")
    assert (back / "manifest.yaml").read_bytes() == (src / "manifest.yaml").read_bytes()
    assert not list(back.glob("bbox_stage*.onnx"))
