"""The manifest's semantic section for a COCO-stuff semantic head (docs/model-bundle.md)."""

import onnx
import pytest
import torch
import yaml

from htc import export
from htc.data import cocostuff as cs
from htc.model import build_model
from model_testutil import small_config

torch.set_num_threads(1)

THINGS = ["circle", "square", "star"]


def test_cocostuff_manifest_names_every_channel_and_the_stuff_ones():
    cfg = small_config(semantic_classes="cocostuff")
    assert cfg.model.num_semantic_classes == 183
    man = export.build_manifest(cfg, name="t", things=THINGS, stuff=[])
    assert "stuff" not in man
    sem = man["semantic"]
    assert sem["layout"] == "cocostuff"
    assert sem["classes"] == list(cs.COCOSTUFF_NAMES)
    assert sem["classes"][0] == "person" and sem["classes"][91] == "banner" and sem["classes"][182] == "other"
    assert sem["stuff"] == list(range(91, 183))
    assert man["things"] == THINGS
    # the key order of the contract page: semantic where stuff would be
    assert list(man)[:4] == ["contract", "name", "things", "semantic"]
    # what is written reads back the same
    assert yaml.safe_load(export.dump_yaml(man))["semantic"] == sem


def test_cocostuff_manifest_accepts_the_stuff_channel_names_and_rejects_others():
    cfg = small_config(semantic_classes="cocostuff")
    names = [cs.COCOSTUFF_NAMES[c] for c in range(91, 183)]
    assert export.build_manifest(cfg, name="t", things=THINGS, stuff=names)["semantic"]["stuff"][0] == 91
    with pytest.raises(ValueError, match="cocostuff"):
        export.build_manifest(cfg, name="t", things=THINGS, stuff=["sky", "grass"])


def test_things_stuff_manifest_is_unchanged():
    cfg = small_config(num_stuff_classes=2)
    man = export.build_manifest(cfg, name="t", things=THINGS, stuff=["sky", "grass"])
    assert man["stuff"] == ["sky", "grass"] and "semantic" not in man
    with pytest.raises(ValueError, match="num_stuff_classes"):
        export.build_manifest(cfg, name="t", things=THINGS, stuff=["sky"])


def test_class_names_of_a_cocostuff_checkpoint(tmp_path):
    cfg = small_config(semantic_classes="cocostuff")
    things, stuff = export.class_names(cfg, {"meta": {"classes": THINGS}}, tmp_path)
    assert things == THINGS and stuff == []
    cfg80 = small_config(semantic_classes="cocostuff", num_classes=80)
    things, stuff = export.class_names(cfg80, {"meta": {"semantic_names": list(cs.COCOSTUFF_NAMES)}}, tmp_path)
    assert things == list(cs.COCO_THING_NAMES) and stuff == []
    with pytest.raises(ValueError, match="semantic_names"):
        export.class_names(cfg, {"meta": {"classes": THINGS, "semantic_names": ["a"]}}, tmp_path)


def test_cocostuff_model_exports_183_semantic_channels(tmp_path):
    torch.manual_seed(0)
    cfg = small_config(semantic_classes="cocostuff")
    cfg.data.test_scale = [128, 128]
    model = build_model(cfg).eval()
    man = export.export_bundle(model, cfg, tmp_path, name="t", things=THINGS, stuff=[], fixture_image=None,
                               tta_scales=None)
    graph = onnx.load(str(tmp_path / "backbone.onnx"))
    dims = {o.name: o.type.tensor_type.shape.dim for o in graph.graph.output}
    assert dims["semantic_logits"][1].dim_value == len(man["semantic"]["classes"]) == 183
    assert yaml.safe_load((tmp_path / "manifest.yaml").read_text())["semantic"]["stuff"] == list(range(91, 183))
