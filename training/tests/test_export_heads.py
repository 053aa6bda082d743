"""The head graphs (htc.export: one graph per box stage, the mask heads) compute what the
model's cascades do, and ``--from-bundle`` reads their weights back, from either contract."""

import onnx
import yaml
import pytest
import torch

from htc import export
from htc.export import contract
from htc.export.mask_heads import KeepInput
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


def _check_heads(m, feats, sem, rois, sizes, labels):
    box, mask = export.head_graphs(m)
    with torch.no_grad():
        for got, want in zip(box(*feats, sem, rois, sizes), m.box_cascade()(*feats, sem, rois, sizes)):
            assert got.shape == want.shape
            assert torch.allclose(got, want, atol=1e-4, rtol=1e-5), (got - want).abs().max()
        got, want = mask(*feats, sem, rois, labels), m.mask_cascade()(*feats, sem, rois, labels)
        assert got.shape == want.shape == (rois.shape[0], m.cfg.roi.num_stages, 28, 28)
        assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()


def test_head_graphs_equal_the_models_cascades_on_random_rois(model):
    m, cfg = model
    feats, sem, rois, sizes, labels = inputs(cfg)
    _check_heads(m, feats, sem, rois, sizes, labels)


def test_head_graphs_with_a_level_left_empty(model):
    m, cfg = model
    feats, sem, _, sizes, labels = inputs(cfg)
    rois = torch.tensor([[0, 4.0, 4.0, 20.0, 18.0], [1, 10.0, 12.0, 40.0, 30.0]])  # all on P2
    _check_heads(m, feats, sem, rois, sizes, labels[:2])


def _ops(path):
    g = onnx.load(str(path)).graph
    ops = {}
    for n in g.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return ops


def test_exported_mask_graph_pools_once_per_level_at_14x14(model, tmp_path):
    m, cfg = model
    export.export_graphs(m, tmp_path, (96, 128), kinds=("mask_heads",))
    mask = _ops(tmp_path / "mask_heads.onnx")
    # 4 levels + the semantic feature; upsampling as 1x1 convs and one DepthToSpace
    assert mask["RoiAlign"] == 4 + 1 and "ConvTranspose" not in mask
    assert mask["DepthToSpace"] == 1
    export.check_graph(tmp_path / "mask_heads.onnx", "mask_heads")


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


def _heads(own):
    return {k for k in own if k.startswith(("roi_head.bbox_head.", "roi_head.mask_head."))}


def test_heads_rebuilt_from_a_bundle_keep_the_weights(tmp_path):
    m, cfg = distinct_weights_model()
    src = tmp_path / "src"
    export.export_bundle(m, cfg, src, name="t", things=["a", "b", "c"], stuff=["s", "t"], fixture_image=None,
                         tta_scales=None)
    state = export.heads_state_from_bundle(src)
    own = m.state_dict()
    assert set(state) == _heads(own)
    for k in _heads(own):
        assert torch.equal(state[k], own[k]), k
    out = tmp_path / "out"
    export.rebuild_bundle_heads(src, out, cfg)
    # the same weights export to the same graphs
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in src.iterdir())
    for p in src.iterdir():
        assert (out / p.name).read_bytes() == p.read_bytes(), p.name
    with pytest.raises(ValueError, match="another folder"):
        export.rebuild_bundle_heads(src, src, cfg)


def contract_1_bundle(m, cfg, out):
    """A bundle as htc.export wrote it before contract 2 (its ``legacy`` layout, the first
    exports): manifest without ``roi``, and the model's own box and mask cascades traced as
    they are, RoIAlign inside, in one ``bbox_heads.onnx`` and ``mask_heads.onnx``."""
    export.export_bundle(m, cfg, out, name="t", things=["a", "b", "c"], stuff=["s", "t"], fixture_image=None,
                         tta_scales=None)
    for p in out.glob("bbox_stage*.onnx"):
        p.unlink()
    h, w = export.trace_size(cfg)
    with torch.no_grad():
        named = dict(zip(contract.names("backbone"), export.BackboneGraph(m)(torch.randn(1, 3, h, w))))
    feats = tuple(named[n] for n in ("p2", "p3", "p4", "p5", "semantic_feat"))
    rois = torch.tensor([[0.0, 4.0, 6.0, 60.0, 50.0], [0.0, 10.0, 20.0, 100.0, 90.0]])
    axes = {"rois": {0: "rois"}}
    names = ["p2", "p3", "p4", "p5", "semantic_feat", "rois"]
    for file, cascade, extra, outputs in (
            ("bbox_heads.onnx", m.box_cascade(), ("image_sizes", torch.tensor([[float(h), float(w)]])),
             ["stage_logits", "stage_boxes"]),
            ("mask_heads.onnx", m.mask_cascade(), ("labels", torch.tensor([0, 2])), ["stage_masks"])):
        module = KeepInput(cascade, True).eval()
        torch.onnx.export(module, (*feats, rois, extra[1]), str(out / file), opset_version=16,
                          input_names=names + [extra[0]], output_names=outputs, dynamic_axes=axes)
    man = yaml.safe_load((out / "manifest.yaml").read_text())
    del man["roi"]
    man["contract"] = "htcstream-bundle/1"
    man["graphs"] = {"backbone": "backbone.onnx", "bbox_heads": "bbox_heads.onnx", "mask_heads": "mask_heads.onnx"}
    (out / "manifest.yaml").write_text(export.dump_yaml(man))


def test_contract_1_bundle_becomes_the_contract_2_bundle_of_its_weights(tmp_path):
    """--from-bundle of a contract-1 bundle gives, file for file, the bundle htc.export writes
    from the same weights today: the retired graphs' weights are read back exactly."""
    m, cfg = distinct_weights_model()
    v1, v2, direct = tmp_path / "v1", tmp_path / "v2", tmp_path / "direct"
    contract_1_bundle(m, cfg, v1)
    state = export.heads_state_from_bundle(v1)
    own = m.state_dict()
    assert set(state) == _heads(own)
    assert all(torch.equal(state[k], own[k]) for k in _heads(own))
    export.rebuild_bundle_heads(v1, v2, cfg)
    export.export_bundle(m, cfg, direct, name="t", things=["a", "b", "c"], stuff=["s", "t"], fixture_image=None,
                         tta_scales=None)
    assert sorted(p.name for p in v2.iterdir()) == sorted(p.name for p in direct.iterdir())
    assert not (v2 / "bbox_heads.onnx").exists()
    for p in direct.iterdir():
        assert (v2 / p.name).read_bytes() == p.read_bytes(), p.name
    man = yaml.safe_load((v2 / "manifest.yaml").read_text())
    assert man["contract"] == "htcstream-bundle/2" and list(man)[:2] == ["contract", "name"]


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
    paths = export.export_graphs(m, tmp_path, (96, 128), kinds=("bbox_stages", "mask_heads"))
    t = cfg.model.roi.num_stages
    assert sorted(paths) == sorted([f"bbox_stage{i + 1}.onnx" for i in range(t)] + ["mask_heads.onnx"])
    for i in range(t):
        ops = _ops(tmp_path / f"bbox_stage{i + 1}.onnx")
        assert "RoiAlign" not in ops and "Where" not in ops and "Transpose" not in ops, ops
        export.check_graph(tmp_path / f"bbox_stage{i + 1}.onnx", "bbox_stage")
