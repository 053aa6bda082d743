"""Synthetic COCO generator: layout, determinism, annotation consistency, video."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from htc.data import synthetic as syn
from htc.evaluation import rle

TRAINING = Path(__file__).resolve().parents[1]
C, K = len(syn.THING_CLASSES), len(syn.STUFF_CLASSES)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    syn.write_dataset(root, seed=0, train=6, val=2)
    return root


def _load(root, split):
    with open(root / "annotations" / f"instances_{split}.json") as f:
        return json.load(f)


def test_layout_and_categories(dataset):
    for split, n in (("train", 6), ("val", 2)):
        coco = _load(dataset, split)
        assert [c["id"] for c in coco["categories"]] == list(range(1, C + 1))
        assert [c["name"] for c in coco["categories"]] == list(syn.THING_CLASSES)
        assert coco["stuff_categories"] == list(syn.STUFF_CLASSES)
        assert [im["id"] for im in coco["images"]] == list(range(1, n + 1))
        for im in coco["images"]:
            img = Image.open(dataset / "images" / split / im["file_name"])
            sem = Image.open(dataset / "stuffthingmaps" / split / (Path(im["file_name"]).stem + ".png"))
            assert img.mode == "RGB" and img.size == (im["width"], im["height"]) == (320, 240)
            assert sem.mode == "L" and sem.size == img.size


def test_annotations_match_masks_and_semantic(dataset):
    coco = _load(dataset, "train")
    by_img = {}
    for a in coco["annotations"]:
        by_img.setdefault(a["image_id"], []).append(a)
    n_crowd = 0
    for im in coco["images"]:
        sem = np.asarray(Image.open(dataset / "stuffthingmaps" / "train" / im["file_name"]))
        assert set(np.unique(sem).tolist()) <= set(range(C + K)) | {255}
        union = np.zeros(sem.shape, dtype=bool)
        for a in by_img.get(im["id"], []):
            m = rle.decode(a["segmentation"]).astype(bool)
            assert not (m & union).any(), "visible masks of one image must not overlap"
            union |= m
            assert a["area"] == float(m.sum()) >= syn.MIN_VISIBLE_AREA
            assert a["bbox"] == rle.to_bbox(a["segmentation"]).tolist()
            # semantic id of a thing = its category id - 1, at its visible pixels
            assert (sem[m] == a["category_id"] - 1).all()
            if a["iscrowd"]:
                n_crowd += 1
                assert isinstance(a["segmentation"]["counts"], list)  # COCO's crowd form
            else:
                assert isinstance(a["segmentation"]["counts"], str)
        # outside the annotated things: stuff, or 255 where a dropped object shows
        rest = sem[~union]
        assert ((rest >= C) & (rest < C + K) | (rest == 255)).all()
    # images 2 and 6 (i % 4 == 1) carry a crowd region
    assert n_crowd >= 1


def test_deterministic_and_prefix_stable(dataset, tmp_path):
    syn.write_dataset(tmp_path, seed=0, train=3, val=0)
    a = _load(dataset, "train")
    b = _load(tmp_path, "train")
    ids = {1, 2, 3}
    assert b["annotations"] == [x for x in a["annotations"] if x["image_id"] in ids]
    for name in ("000001.png", "000003.png"):
        assert (tmp_path / "images/train" / name).read_bytes() == (dataset / "images/train" / name).read_bytes()
        assert (tmp_path / "stuffthingmaps/train" / name).read_bytes() == (dataset / "stuffthingmaps/train" / name).read_bytes()
    other = tmp_path / "seed1"
    syn.write_dataset(other, seed=1, train=1, val=0)
    assert (other / "images/train/000001.png").read_bytes() != (dataset / "images/train/000001.png").read_bytes()


def test_sizes_and_stuff_coverage():
    # over a few dozen scenes every COCO size band and every stuff class appears
    areas, stuff = [], set()
    for i in range(30):
        rng = syn.image_rng(0, "train", i)
        bg, objects = syn.random_scene(rng, 240, 320, crowd=False)
        _, semantic, inst = syn.compose(bg, objects)
        areas += [int(m.sum()) for _, m, _ in inst]
        stuff |= set(np.unique(semantic[semantic >= C]).tolist()) - {255}
    areas = np.array(areas)
    assert (areas < 16 * 16).any(), "tiny objects"
    assert ((areas >= 32**2) & (areas < 96**2)).any()
    assert (areas >= 96**2).any(), "large objects"
    assert stuff == set(range(C, C + K))


def _disc(label, cx, cy, d, colour):
    style = syn.Style("solid", np.array(colour, float), np.array(colour, float), 4.0, 0.0, np.zeros((32, 32, 3)))
    return syn.Thing(label=label, cx=cx, cy=cy, diameter=d, angle=0.0, hole=0.5, style=style)


def test_occlusion_keeps_visible_part_and_drops_hidden():
    rng = np.random.default_rng(0)
    bg = syn.Background.random(rng, 60, 80)
    back = _disc(0, 30, 30, 30, (255, 0, 0))  # circle, label 0
    front = _disc(1, 40, 30, 30, (0, 0, 255))  # square, label 1, covers back's right half
    hidden = _disc(0, 40, 30, 8, (0, 255, 0))  # drawn before `front` and fully under it
    img, sem, inst = syn.compose(bg, [back, hidden, front])
    assert [(lbl, crowd) for lbl, _, crowd in inst] == [(0, 0), (1, 0)]
    vis_back, vis_front = inst[0][1], inst[1][1]
    py, px = np.mgrid[0:60, 0:80] + 0.5
    full_back = (px - 30) ** 2 + (py - 30) ** 2 <= 15**2
    assert vis_back.sum() < full_back.sum()
    assert np.array_equal(vis_back, full_back & ~vis_front)
    assert (sem[vis_back] == 0).all() and (sem[vis_front] == 1).all()
    front_px = img[vis_front].astype(int)
    assert (front_px[:, :2] == 0).all() and (front_px[:, 2] > 200).all()  # shaded pure blue
    # the fully hidden object has no annotation and no visible pixels
    img_without, _, _ = syn.compose(bg, [back, front])
    assert np.array_equal(img, img_without)
    # a mostly hidden object is dropped and its visible sliver marked ignore
    # (a disc reaching x = 10..30 under a square covering x >= 10.8: one
    # column of about 6 pixels stays visible)
    sliver = _disc(0, 20, 30, 20, (0, 255, 0))
    img, sem, inst = syn.compose(bg, [sliver, _disc(1, 32, 30, 60, (0, 0, 255))])
    assert len(inst) == 1 and inst[0][0] == 1
    assert (sem == 255).any()


def test_cli_dataset(tmp_path):
    p = subprocess.run([sys.executable, "-m", "htc.data.synthetic", "--out", str(tmp_path / "d"), "--seed", "3",
                        "--train", "2", "--val", "1", "--width", "160", "--height", "120"],
                       cwd=TRAINING, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    coco = _load(tmp_path / "d", "val")
    assert coco["images"][0]["width"] == 160 and coco["images"][0]["height"] == 120
    p = subprocess.run([sys.executable, "-m", "htc.data.synthetic"], cwd=TRAINING, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "--out" in p.stderr


def _ffprobe_frames(path):
    p = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                        "stream=codec_name,width,height,nb_read_frames,pix_fmt,r_frame_rate", "-of", "json", str(path)],
                       capture_output=True, text=True, check=True, timeout=60)
    return json.loads(p.stdout)["streams"][0]


def test_video_matches_its_ground_truth(tmp_path):
    n, w, h = 8, 160, 120
    path = tmp_path / "v.mp4"
    coco = syn.write_video(path, frames=n, fps=5, seed=2, width=w, height=h)
    info = _ffprobe_frames(path)
    assert info["codec_name"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert (info["width"], info["height"], int(info["nb_read_frames"])) == (w, h, n)
    assert info["r_frame_rate"] == "5/1"

    gt = json.loads(path.with_suffix(".json").read_text())
    assert gt == json.loads(json.dumps(coco))
    assert [im["id"] for im in gt["images"]] == list(range(1, n + 1))
    assert gt["images"][3]["file_name"] == "frame_00003.png"
    assert gt["stuff_categories"] == list(syn.STUFF_CLASSES)

    # decoded frames are the rendered ones (lossy, so compare by PSNR) and the
    # ground truth is that of the same frames
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True, timeout=60).stdout
    decoded = np.frombuffer(raw, np.uint8).reshape(n, h, w, 3).astype(np.float64)
    anns = {}
    for a in gt["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    for f, (img, inst) in enumerate(syn.video_frames(n, seed=2, width=w, height=h)):
        # yuv420p halves the chroma resolution, which the noisy textures
        # feel; luma must survive almost intact
        luma = np.array([0.299, 0.587, 0.114])
        mse = np.mean((decoded[f] @ luma - img.astype(np.float64) @ luma) ** 2)
        assert 10 * np.log10(255**2 / mse) > 35, f"frame {f}"
        assert [rle.encode(m)["counts"] for _, m, _ in inst] == [a["segmentation"]["counts"] for a in anns.get(f + 1, [])]

    # objects move: the first and last frames' masks differ
    assert anns[1][0]["segmentation"] != anns[n][0]["segmentation"] or len(anns[1]) != len(anns[n])

    # same seed -> same bytes
    again = tmp_path / "again.mp4"
    syn.write_video(again, frames=n, fps=5, seed=2, width=w, height=h)
    assert again.read_bytes() == path.read_bytes()
    assert again.with_suffix(".json").read_text() == path.with_suffix(".json").read_text().replace("v.mp4", "again.mp4")


def test_video_rejects_odd_size(tmp_path):
    with pytest.raises(ValueError, match="even"):
        syn.write_video(tmp_path / "x.mp4", frames=2, width=161, height=120)


def test_video_reports_ffmpeg_failure(tmp_path):
    with pytest.raises(RuntimeError, match="ffmpeg"):
        syn.write_video(tmp_path / "x.mp4", frames=2, width=64, height=48, ffmpeg=str(tmp_path / "no-ffmpeg"))
