"""The COCO loader with COCO-stuff label maps: PNG values are semantic channels as they are."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from htc.data import CocoDataset
from htc.data import cocostuff as cs

torch.set_num_threads(1)

H, W = 6, 8


def _square(x, y, s):
    return [[x, y, x + s, y, x + s, y + s, x, y + s]]


@pytest.fixture
def tree(tmp_path):
    """A one-image COCO tree: a person (id 1) and a stop sign (id 13), the 80 COCO
    categories, and a stuffthingmaps PNG with thing, stuff and unlabeled pixels."""
    (tmp_path / "images").mkdir()
    (tmp_path / "maps").mkdir()
    Image.fromarray(np.full((H, W, 3), 90, np.uint8), mode="RGB").save(tmp_path / "images" / "000001.jpg")
    cats = [{"id": i, "name": n, "supercategory": "x"} for i, n in zip(cs.COCO_THING_IDS, cs.COCO_THING_NAMES)]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 3, 3], "area": 9, "iscrowd": 0,
         "segmentation": _square(0, 0, 3)},
        {"id": 2, "image_id": 1, "category_id": 13, "bbox": [4, 2, 3, 3], "area": 9, "iscrowd": 0,
         "segmentation": _square(4, 2, 3)},
    ]
    coco = {"images": [{"id": 1, "file_name": "000001.jpg", "height": H, "width": W}],
            "annotations": anns, "categories": cats}
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    # stuffthingmaps values: COCO-stuff id - 1
    sem = np.full((H, W), 255, np.uint8)                          # unlabeled
    sem[0:3, 0:3] = cs.cocostuff_channel(1)                        # person -> 0
    sem[2:5, 4:7] = cs.cocostuff_channel(13)                       # stop sign -> 12
    sem[5, :] = cs.cocostuff_channel(157)                          # sky-other -> 156
    sem[0, 7] = cs.cocostuff_channel(182)                          # wood -> 181
    Image.fromarray(sem, mode="L").save(tmp_path / "maps" / "000001.png")
    return tmp_path, sem


def test_cocostuff_maps_are_channels_and_instance_labels_stay_contiguous(tree):
    root, sem = tree
    ds = CocoDataset(root / "ann.json", root / "images", root / "maps", semantic_layout="cocostuff")
    assert ds.num_classes == 80 and ds.num_semantic_classes == 183
    assert ds.semantic_names[12] == "stop sign" and ds.semantic_names[156] == "sky-other"
    t = ds.raw_target(0)
    # instance labels: sorted category ids -> 0..79 (stop sign, id 13, is label 11)
    assert t["labels"].tolist() == [0, 11]
    assert ds.class_names[11] == "stop sign"
    # semantic target: the PNG's values, untouched (stop sign is channel 12)
    assert t["semantic"].dtype == torch.int64
    assert torch.equal(t["semantic"], torch.from_numpy(sem.astype(np.int64)))
    assert t["semantic"][3, 5].item() == 12 and cs.COCOSTUFF_NAMES[12] == "stop sign"
    assert t["semantic"][5, 0].item() == 156 and cs.is_stuff_channel(156)
    assert t["semantic"][0, 7].item() == 181 and cs.COCOSTUFF_NAMES[181] == "wood"
    assert t["semantic"][4, 0].item() == 255
    # through the normalising item path as well
    _, item = ds[0]
    assert torch.equal(item["semantic"], t["semantic"])


def test_a_value_that_is_no_cocostuff_channel_is_an_error(tree):
    root, sem = tree
    sem = sem.copy()
    sem[1, 6] = 200
    Image.fromarray(sem, mode="L").save(root / "maps" / "000001.png")
    ds = CocoDataset(root / "ann.json", root / "images", root / "maps", semantic_layout="cocostuff")
    with pytest.raises(ValueError, match="000001.png: value 200 is no COCO-stuff channel"):
        ds.raw_target(0)
    # the old layout does not know the model's channel count and takes values as they are
    old = CocoDataset(root / "ann.json", root / "images", root / "maps")
    assert old.raw_target(0)["semantic"][1, 6].item() == 200
    assert old.num_semantic_classes == 80  # things, no stuff_categories in the file


def test_unknown_layout_is_an_error(tree):
    root, _ = tree
    with pytest.raises(ValueError, match="semantic_layout"):
        CocoDataset(root / "ann.json", root / "images", root / "maps", semantic_layout="coco")


def test_build_split_passes_the_models_semantic_layout(tree):
    from htc.builders import build_split
    from htc.config import config_from_dict

    root, _ = tree
    cfg = config_from_dict({"model": {"semantic_classes": "cocostuff"},
                            "data": {"dataset": "coco", "root": str(root), "train_ann": "ann.json",
                                     "train_images": "images", "semantic_dir": "maps"}})
    split = build_split(cfg, root, "train", True)
    assert split.dataset.semantic_layout == "cocostuff" and split.dataset.num_semantic_classes == 183
