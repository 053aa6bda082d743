"""COCO AP/AR on hand-computed cases.

AP is the mean over 10 IoU thresholds of precision read at 101 recall points
r = 0, 0.01, ..., 1: at each r, the precision envelope (best precision at any
recall >= r) of the first detection whose recall reaches r, 0 if none does.
"""

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from htc.evaluation import COCOEval, STAT_NAMES, evaluate, rle
from htc.evaluation.__main__ import main as cli_main

TRAINING = Path(__file__).resolve().parents[1]
H, W = 300, 400


def make_gt(boxes_per_image, cats=(1, 2), iscrowd=None):
    """GT with one image per entry of boxes_per_image: list of (cat, [x,y,w,h])."""
    images, anns = [], []
    aid = 1
    for i, boxes in enumerate(boxes_per_image):
        images.append({"id": i + 1, "file_name": f"{i + 1}.png", "height": H, "width": W})
        for j, (cat, bb) in enumerate(boxes):
            crowd = int(bool(iscrowd and iscrowd.get((i, j))))
            anns.append({
                "id": aid, "image_id": i + 1, "category_id": cat, "bbox": [float(v) for v in bb],
                "area": float(bb[2] * bb[3]), "iscrowd": crowd,
                # crowd regions as uncompressed RLE, others as polygons, like COCO
                "segmentation": ({"size": [H, W], "counts": rle.encode_counts(rle.decode(rle.fr_bbox(bb, H, W))).tolist()}
                                 if crowd else [[bb[0], bb[1], bb[0] + bb[2], bb[1], bb[0] + bb[2], bb[1] + bb[3], bb[0], bb[1] + bb[3]]]),
            })
            aid += 1
    return {"images": images, "annotations": anns, "categories": [{"id": c, "name": f"c{c}"} for c in cats]}


def det(image_id, cat, bb, score, with_mask=True):
    d = {"image_id": image_id, "category_id": cat, "bbox": [float(v) for v in bb], "score": score}
    if with_mask:
        d["segmentation"] = rle.fr_bbox(bb, H, W)
    return d


def run(gt, res, iou_type="bbox"):
    e = COCOEval(gt, res, iou_type)
    return e.run(out=io.StringIO())


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_perfect_detections_score_one(iou_type):
    gt = make_gt([
        [(1, [10, 10, 20, 20]), (2, [50, 50, 60, 60])],
        [(1, [100, 100, 150, 150]), (2, [5, 200, 30, 25])],
    ])
    res = [det(a["image_id"], a["category_id"], a["bbox"], 0.9) for a in gt["annotations"]]
    s = run(gt, res, iou_type)
    for k in STAT_NAMES:
        assert s[k] == pytest.approx(1.0), k


def test_empty_results_give_zero():
    gt = make_gt([[(1, [10, 10, 20, 20])], [(2, [100, 100, 150, 150])]])
    s = run(gt, [], "segm")
    assert s["AP"] == 0.0 and s["AR100"] == 0.0
    # there is no medium ground truth at all -> -1
    assert s["APm"] == -1.0 and s["ARm"] == -1.0


def test_duplicate_detection_is_a_false_positive():
    # Two gts A, B; dets by score: A (TP), A again (FP: A is taken), B (TP).
    #   tp cumsum [1,1,2], fp cumsum [0,1,1], recall [.5,.5,1], precision [1,.5,2/3]
    #   envelope [1, 2/3, 2/3]; r in 0..0.50 (51 points) -> 1, r in .51..1 (50 points) -> 2/3
    #   AP = (51 + 50 * 2/3) / 101, the same at every IoU threshold (exact boxes).
    gt = make_gt([[(1, [0, 0, 50, 50]), (1, [100, 100, 50, 50])]])
    res = [det(1, 1, [0, 0, 50, 50], 0.9), det(1, 1, [0, 0, 50, 50], 0.8), det(1, 1, [100, 100, 50, 50], 0.7)]
    expect = (51 + 50 * 2 / 3) / 101
    for t in ("bbox", "segm"):
        s = run(gt, res, t)
        assert s["AP"] == pytest.approx(expect)
        assert s["AP50"] == pytest.approx(expect)
        assert s["AR100"] == pytest.approx(1.0)
        assert s["AR1"] == pytest.approx(0.5)


def test_duplicate_with_lower_score_does_not_hurt():
    # One gt; TP (0.9) then duplicate (0.8): recall [1,1], precision [1,.5],
    # envelope [1,.5]; every r is reached by the first det -> AP 1.
    gt = make_gt([[(1, [0, 0, 50, 50])]])
    s = run(gt, [det(1, 1, [0, 0, 50, 50], 0.9), det(1, 1, [0, 0, 50, 50], 0.8)])
    assert s["AP"] == pytest.approx(1.0)


def test_false_positive_first_gives_half():
    # One gt; FP (0.9) then TP (0.8): recall [0,1], precision [0,.5],
    # envelope [.5,.5] -> every r reads 0.5 -> AP = 0.5.
    gt = make_gt([[(1, [0, 0, 50, 50])]])
    s = run(gt, [det(1, 1, [200, 200, 50, 50], 0.9), det(1, 1, [0, 0, 50, 50], 0.8)])
    assert s["AP"] == pytest.approx(0.5)


def test_interpolation_with_fp_between_tps():
    # Two gts; dets TP, FP, FP, TP: recall [.5,.5,.5,1], precision [1,.5,1/3,.5]
    # envelope [1,.5,.5,.5]; r <= .5 (51 points) -> 1, r > .5 (50 points) -> .5
    # AP = (51 + 25) / 101.
    gt = make_gt([[(1, [0, 0, 50, 50]), (1, [100, 100, 50, 50])]])
    res = [det(1, 1, [0, 0, 50, 50], 0.9), det(1, 1, [300, 0, 50, 50], 0.8),
           det(1, 1, [300, 200, 50, 50], 0.7), det(1, 1, [100, 100, 50, 50], 0.6)]
    assert run(gt, res)["AP"] == pytest.approx(76 / 101)


def test_miss_caps_recall():
    # Two gts, one TP det: recall [.5], precision [1] -> r <= .5 read 1, beyond 0:
    # AP = 51 / 101.
    gt = make_gt([[(1, [0, 0, 50, 50]), (1, [100, 100, 50, 50])]])
    assert run(gt, [det(1, 1, [0, 0, 50, 50], 0.9)])["AP"] == pytest.approx(51 / 101)


def test_iou_thresholds():
    # box IoU 0.72 = (100*72) / (100*100): a TP at thresholds .50,.55,.60,.65,.70
    # (5 of 10), a miss above -> AP = 0.5, AP50 = 1, AP75 = 0.
    gt = make_gt([[(1, [0, 0, 100, 100])]])
    s = run(gt, [det(1, 1, [0, 0, 100, 72], 0.9)])
    assert (s["AP"], s["AP50"], s["AP75"]) == pytest.approx((0.5, 1.0, 0.0))
    # mask IoU 81/100 (9x9 inside 10x10): TP at .50 .. .80 (7 of 10) -> 0.7
    gt = make_gt([[(1, [10, 10, 10, 10])]])
    m = np.zeros((H, W), dtype=np.uint8)
    m[10:19, 10:19] = 1
    s = run(gt, [{"image_id": 1, "category_id": 1, "segmentation": rle.encode(m), "score": 0.5}], "segm")
    assert s["AP"] == pytest.approx(0.7)


def test_crowd_region_absorbs_detections():
    # gt 0 is a normal object, gt 1 a crowd region. Two dets inside the crowd
    # (higher scores) match it (IoU = inter / area(dt) = 1) and are ignored,
    # not false positives -> the only counted det is the TP -> AP 1.
    boxes = [[(1, [0, 0, 50, 50]), (1, [200, 100, 150, 150])]]
    res = [det(1, 1, [210, 110, 20, 20], 0.95), det(1, 1, [260, 160, 30, 30], 0.93), det(1, 1, [0, 0, 50, 50], 0.9)]
    for t in ("bbox", "segm"):
        s = run(make_gt(boxes, iscrowd={(0, 1): True}), res, t)
        assert s["AP"] == pytest.approx(1.0)
        assert s["AR100"] == pytest.approx(1.0)
    # The same region not marked crowd: the two dets are FPs (IoU < .5 with it):
    # tp [0,0,1], fp [1,2,2]; 2 gts -> recall [0,0,.5], precision [0,0,1/3]
    # envelope 1/3 up to r = .5 -> AP = 51 * (1/3) / 101.
    s = run(make_gt(boxes), res)
    assert s["AP"] == pytest.approx(51 / 3 / 101)


def test_area_ranges():
    # gts: small 20x20 (400), medium 50x50 (2500), large 120x120 (14400).
    # dets: FP 10x10 (0.99), TP on small (0.9), TP on large (0.8); medium missed.
    gt = make_gt([[(1, [0, 0, 20, 20]), (1, [100, 0, 50, 50]), (1, [200, 100, 120, 120])]])
    res = [det(1, 1, [50, 250, 10, 10], 0.99), det(1, 1, [0, 0, 20, 20], 0.9), det(1, 1, [200, 100, 120, 120], 0.8)]
    s = run(gt, res)
    # all: tp [0,1,2] fp [1,1,1], recall [0,1/3,2/3], precision [0,.5,2/3],
    # envelope 2/3 up to r = .66 (67 points) -> 67 * 2/3 / 101
    assert s["AP"] == pytest.approx(67 * 2 / 3 / 101)
    # small: only the small gt counts; the large-gt det matches an ignored gt
    # (ignored); FP (area 100, in range) then TP -> envelope .5 -> AP .5
    assert s["APs"] == pytest.approx(0.5)
    # medium: FP is outside the range and unmatched -> ignored; nothing found -> 0
    assert s["APm"] == pytest.approx(0.0)
    # large: FP ignored (area 100 < 96^2), small-gt det ignored -> AP 1
    assert s["APl"] == pytest.approx(1.0)
    # recall: maxDets 1 keeps only the FP -> 0; 10/100 -> 2 of 3
    assert s["AR1"] == pytest.approx(0.0)
    assert s["AR10"] == pytest.approx(2 / 3)
    assert (s["ARs"], s["ARm"], s["ARl"]) == pytest.approx((1.0, 0.0, 1.0))


def test_categories_are_averaged_and_missing_ones_skipped():
    # category 1 perfect (AP 1), category 2 present in gt but only an FP-first
    # case (AP .5), category 3 has no gt at all (-1, left out of the mean).
    gt = make_gt([[(1, [0, 0, 50, 50]), (2, [100, 100, 50, 50])]], cats=(1, 2, 3))
    res = [det(1, 1, [0, 0, 50, 50], 0.9), det(1, 2, [300, 200, 40, 40], 0.9),
           det(1, 2, [100, 100, 50, 50], 0.8), det(1, 3, [0, 0, 10, 10], 0.7)]
    s = run(gt, res)
    assert s["AP"] == pytest.approx(0.75)
    # a category id not in the gt is dropped, as pycocotools does
    s2 = run(gt, res + [det(1, 99, [0, 0, 50, 50], 1.0)])
    assert s2["AP"] == pytest.approx(0.75)


def test_segm_detection_area_is_mask_area():
    # For segm, a detection's size range follows its mask even when the
    # result carries a box (mmdetection drops the box before loadRes for
    # this reason); for bbox it is the box's w*h.
    gt = make_gt([[(1, [0, 0, 50, 50])]])
    m = np.zeros((H, W), dtype=np.uint8)
    m[0:5, 0:5] = 1
    with_box = {"image_id": 1, "category_id": 1, "bbox": [0, 0, 50, 50], "segmentation": rle.encode(m), "score": 0.5}
    no_box = {"image_id": 1, "category_id": 1, "segmentation": rle.encode(m), "score": 0.4}
    e = COCOEval(gt, [with_box, no_box], "segm")
    assert sorted(d["area"] for d in e._dts[(1, 1)]) == [25.0, 25.0]
    assert e._dts[(1, 1)][1]["bbox"] == [0.0, 0.0, 5.0, 5.0]
    e = COCOEval(gt, [with_box], "bbox")
    assert [d["area"] for d in e._dts[(1, 1)]] == [2500.0]


def test_bad_inputs_raise_clear_errors():
    gt = make_gt([[(1, [0, 0, 50, 50])]])
    with pytest.raises(ValueError, match="not in the ground truth"):
        COCOEval(gt, [det(7, 1, [0, 0, 5, 5], 0.5)], "bbox")
    with pytest.raises(ValueError, match="no 'segmentation'"):
        COCOEval(gt, [det(1, 1, [0, 0, 5, 5], 0.5, with_mask=False)], "segm")
    with pytest.raises(ValueError, match="iou_type"):
        COCOEval(gt, [], "keypoints")


def test_summary_table_format():
    gt = make_gt([[(1, [0, 0, 50, 50])]])
    buf = io.StringIO()
    COCOEval(gt, [det(1, 1, [0, 0, 50, 50], 0.9)], "bbox").run(out=buf)
    lines = buf.getvalue().splitlines()
    assert lines[0] == "Evaluate annotation type *bbox*"
    assert lines[1] == " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 1.000"
    assert lines[2] == " Average Precision  (AP) @[ IoU=0.50      | area=   all | maxDets=100 ] = 1.000"
    assert lines[4] == " Average Precision  (AP) @[ IoU=0.50:0.95 | area= small | maxDets=100 ] = -1.000"
    assert lines[7] == " Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=  1 ] = 1.000"
    assert len(lines) == 13


def test_cli_writes_stats(tmp_path, capsys):
    gt = make_gt([[(1, [0, 0, 50, 50]), (1, [100, 100, 50, 50])]])
    res = [det(1, 1, [0, 0, 50, 50], 0.9), det(1, 1, [0, 0, 50, 50], 0.8), det(1, 1, [100, 100, 50, 50], 0.7)]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(res))
    out = tmp_path / "stats.json"
    rc = cli_main(["--gt", str(tmp_path / "gt.json"), "--results", str(tmp_path / "res.json"),
                   "--iou-type", "both", "--out", str(out)])
    assert rc == 0
    stats = json.loads(out.read_text())
    assert set(stats) == {"bbox", "segm"}
    assert stats["segm"]["AP"] == pytest.approx((51 + 50 * 2 / 3) / 101)
    assert "Evaluate annotation type *segm*" in capsys.readouterr().out
    # a missing file is one error line and exit code 2
    assert cli_main(["--gt", str(tmp_path / "nope.json"), "--results", str(tmp_path / "res.json")]) == 2


def test_cli_as_module(tmp_path):
    gt = make_gt([[(1, [0, 0, 50, 50])]])
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps([det(1, 1, [0, 0, 50, 50], 0.9)]))
    p = subprocess.run([sys.executable, "-m", "htc.evaluation", "--gt", str(tmp_path / "gt.json"),
                        "--results", str(tmp_path / "res.json"), "--iou-type", "segm"],
                       cwd=TRAINING, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "maxDets=100 ] = 1.000" in p.stdout


def test_evaluate_function_both_types():
    gt = make_gt([[(1, [0, 0, 50, 50])]])
    out = evaluate(gt, [det(1, 1, [0, 0, 50, 50], 0.9)], ("bbox", "segm"), out=None)
    assert out["bbox"]["AP"] == pytest.approx(1.0) and out["segm"]["AP"] == pytest.approx(1.0)


def test_synthetic_ground_truth_as_predictions_scores_one(tmp_path):
    # End to end through the dataset's targets and predictions_to_coco:
    # ground truth fed back as predictions (crowd regions left out, as the
    # model never predicts them) must score 1 on every populated stat.
    import torch

    from htc.data import synthetic as syn
    from htc.data import synthetic_split
    from htc.evaluation import predictions_to_coco

    syn.write_dataset(tmp_path, seed=5, train=0, val=4)
    ds = synthetic_split(tmp_path, "val")
    preds = []
    for i in range(len(ds)):
        _, t = ds[i]
        keep = t["iscrowd"] == 0
        preds.append({"boxes": t["boxes"][keep], "scores": torch.linspace(1.0, 0.5, int(keep.sum())),
                      "labels": t["labels"][keep], "masks": t["masks"][keep]})
    res = predictions_to_coco(preds, ds.img_ids, ds.cat_ids)
    assert all(isinstance(r["segmentation"]["counts"], str) for r in res)
    json.dumps(res)  # JSON-serialisable as it is
    out = evaluate(ds.coco, res, ("bbox", "segm"), out=None)
    for t in ("bbox", "segm"):
        for k, v in out[t].items():
            if k == "AR1":
                continue  # maxDets applies per image and category: two circles in one image cap it
            assert v == pytest.approx(1.0) or v == -1.0, (t, k, v)
        assert out[t]["AP"] == pytest.approx(1.0)
