"""COCO dataset, transforms and collate."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from htc.data import (
    CocoDataset,
    RandomFlip,
    Resize,
    build_transforms,
    collate,
    hflip,
    resize,
    synthetic_split,
)
from htc.data import synthetic as syn
from htc.data.transforms import DEFAULT_MEAN, DEFAULT_STD, rescale_size
from htc.evaluation import rle

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("coco")
    syn.write_dataset(r, seed=0, train=4, val=0)
    return r


def _denorm(image):
    mean = torch.tensor(DEFAULT_MEAN)[:, None, None]
    std = torch.tensor(DEFAULT_STD)[:, None, None]
    return image * std + mean


def test_round_trip_matches_files(root):
    ds = synthetic_split(root, "train")
    coco = json.loads((root / "annotations/instances_train.json").read_text())
    assert len(ds) == 4
    assert ds.class_names == list(syn.THING_CLASSES) and ds.stuff_names == list(syn.STUFF_CLASSES)
    assert ds.num_semantic_classes == 9
    saw_crowd = False
    for idx in range(len(ds)):
        image, t = ds[idx]
        im = coco["images"][idx]
        png = np.array(Image.open(root / "images/train" / im["file_name"]))
        assert image.dtype == torch.float32 and image.shape == (3, 240, 320)
        assert torch.allclose(_denorm(image), torch.from_numpy(png).permute(2, 0, 1).float(), atol=1e-3)
        anns = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
        n = len(anns)
        assert t["boxes"].shape == (n, 4) and t["boxes"].dtype == torch.float32
        assert t["labels"].dtype == torch.int64 and t["masks"].dtype == torch.uint8
        assert t["semantic"].dtype == torch.int64 and t["iscrowd"].dtype == torch.uint8
        for i, a in enumerate(anns):
            x, y, w, h = a["bbox"]
            assert t["boxes"][i].tolist() == [x, y, x + w, y + h]
            assert t["labels"][i].item() == a["category_id"] - 1
            assert np.array_equal(t["masks"][i].numpy(), rle.decode(a["segmentation"]))
            assert t["iscrowd"][i].item() == a["iscrowd"]
            saw_crowd |= bool(a["iscrowd"])
        sem = np.asarray(Image.open(root / "stuffthingmaps/train" / im["file_name"]))
        assert np.array_equal(t["semantic"].numpy(), sem.astype(np.int64))
        assert t["image_id"] == im["id"]
        assert t["orig_size"] == t["img_size"] == (240, 320)
        assert t["scale_factor"] == 1.0 and t["flip"] is False
    assert saw_crowd


def test_polygons_rle_filtering_and_category_mapping(tmp_path):
    h, w = 40, 50
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(tmp_path / "a.png")
    m = np.zeros((h, w), np.uint8)
    m[5:15, 20:30] = 1
    counts = rle.encode_counts(m).tolist()
    coco = {
        "images": [{"id": 7, "file_name": "a.png", "height": h, "width": w}],
        "categories": [{"id": 9, "name": "b"}, {"id": 3, "name": "a"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 10, 20, 10], "area": 200, "iscrowd": 0,
             "segmentation": [[10, 10, 30, 10, 30, 20, 10, 20]]},
            {"id": 2, "image_id": 7, "category_id": 9, "bbox": [20, 5, 10, 10], "area": 100, "iscrowd": 1,
             "segmentation": {"size": [h, w], "counts": counts}},
            {"id": 3, "image_id": 7, "category_id": 9, "bbox": [0, 0, 10, 10], "area": 25, "iscrowd": 0,
             "segmentation": rle.fr_bbox([0, 0, 5, 5], h, w)},  # compressed RLE
            # dropped: width below one pixel; box entirely outside the image; unknown category
            {"id": 4, "image_id": 7, "category_id": 3, "bbox": [1, 1, 0.5, 5], "area": 2, "iscrowd": 0,
             "segmentation": [[1, 1, 1.5, 1, 1.5, 6, 1, 6]]},
            {"id": 5, "image_id": 7, "category_id": 3, "bbox": [60, 0, 5, 5], "area": 25, "iscrowd": 0,
             "segmentation": [[60, 0, 65, 0, 65, 5, 60, 5]]},
            {"id": 6, "image_id": 7, "category_id": 4, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 0,
             "segmentation": [[0, 0, 5, 0, 5, 5, 0, 5]]},
        ],
    }
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    ds = CocoDataset(tmp_path / "ann.json", tmp_path)
    assert ds.cat_ids == [3, 9] and ds.class_names == ["a", "b"]
    _, t = ds[0]
    # category 3 -> label 0, 9 -> label 1 (sorted ids)
    assert t["labels"].tolist() == [0, 1, 1]
    assert t["iscrowd"].tolist() == [0, 1, 0]
    assert t["masks"][0].sum().item() == 200 and t["masks"][0][10:20, 10:30].all()
    assert np.array_equal(t["masks"][1].numpy(), m)
    assert t["masks"][2].sum().item() == 25
    assert (t["semantic"] == 255).all()  # no label maps given


def test_missing_semantic_map_is_a_clear_error(root, tmp_path):
    ds = CocoDataset(root / "annotations/instances_train.json", root / "images/train", tmp_path)
    with pytest.raises(FileNotFoundError, match="semantic label map"):
        ds[0]


def test_flip_moves_boxes_masks_and_semantic_together(root):
    ds = synthetic_split(root, "train")
    image, t = ds[1]
    fimage, ft = hflip(image, t)
    w = image.shape[-1]
    assert torch.equal(fimage, image.flip(-1))
    assert torch.equal(ft["semantic"], t["semantic"].flip(-1))
    assert torch.equal(ft["masks"], t["masks"].flip(-1))
    assert ft["flip"] is True and torch.equal(ft["iscrowd"], t["iscrowd"])
    for box, mask in zip(ft["boxes"], ft["masks"]):
        ys, xs = np.nonzero(mask.numpy())
        # boxes are the masks' tight boxes (pixel edges), before and after
        assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    assert torch.allclose(ft["boxes"][:, [0, 2]], w - t["boxes"][:, [2, 0]])
    # twice is the identity
    bimage, bt = hflip(fimage, ft)
    assert torch.equal(bimage, image) and torch.equal(bt["boxes"], t["boxes"]) and bt["flip"] is False
    # RandomFlip respects its ratio
    assert RandomFlip(1.0)(image, t)[1]["flip"] is True
    assert RandomFlip(0.0)(image, t)[1]["flip"] is False
    g = torch.Generator().manual_seed(0)
    flips = [RandomFlip(0.5, g)(image, t)[1]["flip"] for _ in range(200)]
    assert 60 < sum(flips) < 140


def test_rescale_size_is_mmcv_keep_ratio():
    # 320x240 into (1333, 800): min(1333/320, 800/240) = 3.333 -> 800 x 1067
    assert rescale_size(240, 320, (1333, 800)) == (800, 1067, 800 / 240)
    # order of the pair does not matter; a wide image is bound by its long edge
    assert rescale_size(100, 1000, (800, 1333))[:2] == (133, 1333)


def test_resize_scales_boxes_masks_and_semantic(root):
    ds = synthetic_split(root, "train")
    image, t = ds[0]
    # exactly 2x: nearest upsampling quadruples every mask area
    big, bt = resize(image, t, (640, 480))
    assert big.shape == (3, 480, 640) and bt["img_size"] == (480, 640)
    assert bt["scale_factor"] == pytest.approx((2.0, 2.0))
    assert torch.allclose(bt["boxes"], t["boxes"] * 2)
    assert bt["masks"].shape == (len(t["labels"]), 480, 640)
    assert torch.equal(bt["masks"].sum((1, 2)), t["masks"].sum((1, 2)) * 4)
    assert torch.equal(bt["semantic"][::2, ::2], t["semantic"])
    assert torch.equal(bt["iscrowd"], t["iscrowd"]) and torch.equal(bt["labels"], t["labels"])
    assert bt["orig_size"] == (240, 320)

    # 0.625x: areas shrink by ~0.39, boxes follow the masks
    small, st = resize(image, t, (200, 150))
    assert small.shape == (3, 150, 200) and st["scale_factor"] == pytest.approx((0.625, 0.625))
    assert torch.allclose(st["boxes"], t["boxes"] * 0.625)
    for m0, m1, box in zip(t["masks"], st["masks"], st["boxes"]):
        a0, a1 = m0.sum().item(), m1.sum().item()
        if a0 > 400:
            assert a1 / a0 == pytest.approx(0.625**2, rel=0.15)
        if a1 > 0:
            ys, xs = np.nonzero(m1.numpy())
            assert abs(xs.min() - box[0].item()) <= 1.5 and abs(xs.max() + 1 - box[2].item()) <= 1.5
    assert set(st["semantic"].unique().tolist()) <= set(t["semantic"].unique().tolist())


def test_multiscale_resize_and_pipeline(root):
    ds = synthetic_split(root, "train")
    image, t = ds[0]
    g = torch.Generator().manual_seed(1)
    r = Resize([(400, 200), (640, 480)], "range", g)
    for _ in range(20):
        long_edge, short_edge = r.sample_scale()
        assert 400 <= long_edge <= 640 and 200 <= short_edge <= 480
    v = Resize([(400, 200), (640, 480)], "value", g)
    assert {v.sample_scale() for _ in range(30)} == {(400, 200), (640, 480)}
    out, ot = r(image, t)
    assert out.shape[1:] == ot["semantic"].shape == ot["masks"].shape[1:] == ot["img_size"]
    # the dataset normalises after the geometric transforms
    ds_aug = synthetic_split(root, "train", transforms=build_transforms(True, [(400, 200), (640, 480)], flip_ratio=1.0))
    aimg, at = ds_aug[0]
    assert at["flip"] is True and aimg.shape[1:] == at["img_size"]
    assert -3 < aimg.mean().item() < 3
    with pytest.raises(ValueError, match="single scale"):
        build_transforms(False, [(400, 200), (640, 480)])
    assert build_transforms(False, (1333, 800)).transforms[0].scales == [(1333, 800)]


def test_collate_pads_to_32(root):
    ds = synthetic_split(root, "train")
    a = ds[0]
    b = resize(*ds[1], (200, 150))
    images, targets = collate([a, b])
    assert images.shape == (2, 3, 256, 320)
    assert torch.equal(images[1, :, :150, :200], b[0])
    assert (images[1, :, 150:, :] == 0).all() and (images[1, :, :, 200:] == 0).all()
    assert targets[1]["img_size"] == (150, 200) and targets[0] is a[1]
    loader = torch.utils.data.DataLoader(ds, batch_size=2, collate_fn=collate)
    imgs, tg = next(iter(loader))
    assert imgs.shape == (2, 3, 256, 320) and len(tg) == 2
    with pytest.raises(ValueError):
        collate([])


def test_filter_empty_drops_images_without_objects(tmp_path):
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "e.png")
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(tmp_path / "f.png")
    coco = {
        "images": [{"id": 1, "file_name": "e.png", "height": 10, "width": 10},
                   {"id": 2, "file_name": "f.png", "height": 10, "width": 10}],
        "categories": [{"id": 1, "name": "x"}],
        "annotations": [{"id": 1, "image_id": 2, "category_id": 1, "bbox": [0, 0, 4, 4], "area": 16,
                         "iscrowd": 0, "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]]}],
    }
    (tmp_path / "a.json").write_text(json.dumps(coco))
    assert len(CocoDataset(tmp_path / "a.json", tmp_path)) == 2
    ds = CocoDataset(tmp_path / "a.json", tmp_path, filter_empty=True)
    assert ds.img_ids == [2]
    _, t = CocoDataset(tmp_path / "a.json", tmp_path)[0]
    assert t["boxes"].shape == (0, 4) and t["masks"].shape == (0, 10, 10)
    # an empty target survives resize and flip
    img, t2 = resize(torch.zeros(3, 10, 10), t, (20, 20))
    img, t2 = hflip(img, t2)
    assert t2["masks"].shape == (0, 20, 20) and t2["boxes"].shape == (0, 4)
