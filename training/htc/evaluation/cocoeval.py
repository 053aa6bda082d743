"""COCO detection and instance-segmentation evaluation (box AP, mask AP).

This re-implements pycocotools' ``COCOeval`` (evaluate / accumulate /
summarize) with the same definitions, so the 12 numbers it prints are the ones
published for HTC: detections of an image and category are matched greedily by
score at each IoU threshold 0.50:0.05:0.95; precision is made monotone and read
at 101 recall points; crowd ground truths and ground truths outside the area
range are ignored, as are detections matched to them and unmatched detections
outside the range; a category/area with no ground truth gives -1 and is left
out of the means.

Results are read the way ``COCO.loadRes`` reads them: ids are the 1-based
position in the list, ``iscrowd`` is 0, and ``area`` is the box area when a
result carries a box (even for mask evaluation) and the mask area otherwise.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import IO, Any, Mapping, Sequence

import numpy as np

from . import rle as rle_mod

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
IOU_TYPES = ("bbox", "segm")


def _default_iou_thrs() -> np.ndarray:
    # Written exactly as pycocotools does, so the thresholds are the same
    # doubles and ties at a threshold resolve identically.
    return np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)


def _default_rec_thrs() -> np.ndarray:
    return np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)


@dataclass
class Params:
    """Evaluation parameters; the defaults are COCO's."""

    iou_thrs: np.ndarray = field(default_factory=_default_iou_thrs)
    rec_thrs: np.ndarray = field(default_factory=_default_rec_thrs)
    max_dets: tuple = (1, 10, 100)
    area_rngs: tuple = ((0.0, 1e5**2), (0.0, 32.0**2), (32.0**2, 96.0**2), (96.0**2, 1e5**2))
    area_lbls: tuple = ("all", "small", "medium", "large")


def load_json(obj: Any) -> Any:
    """A parsed JSON object, or the JSON file at a path."""
    if isinstance(obj, (str, os.PathLike)):
        with open(obj, "r", encoding="utf-8") as f:
            return json.load(f)
    return obj


class COCOEval:
    """One evaluation of ``results`` against ground truth ``gt``.

    ``gt``: COCO instances dict or path. ``results``: list of result dicts or
    path to a results JSON. ``iou_type``: "bbox" or "segm".
    """

    def __init__(self, gt: Any, results: Any, iou_type: str = "segm", params: Params | None = None):
        if iou_type not in IOU_TYPES:
            raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
        self.iou_type = iou_type
        self.params = params or Params()
        self.params.max_dets = tuple(sorted(self.params.max_dets))
        gt = load_json(gt)
        results = load_json(results)
        if not isinstance(results, list):
            raise ValueError("results must be a list of detections (COCO results format)")
        for key in ("images", "annotations", "categories"):
            if key not in gt:
                raise ValueError(f"ground truth has no '{key}' list; is it a COCO instances file?")
        self.images = {int(im["id"]): im for im in gt["images"]}
        self.img_ids = sorted(self.images)
        self.cat_ids = sorted(int(c["id"]) for c in gt["categories"])
        self._gts: dict[tuple[int, int], list[dict]] = {}
        self._dts: dict[tuple[int, int], list[dict]] = {}
        self._prepare(gt["annotations"], results)
        self.eval_imgs: list[dict | None] = []
        self.precision: np.ndarray | None = None
        self.recall: np.ndarray | None = None
        self.stats: np.ndarray | None = None

    # ------------------------------------------------------------------
    def _segm_runs(self, segm: Any, image_id: int, what: str):
        im = self.images[image_id]
        h, w = int(im["height"]), int(im["width"])
        rle = rle_mod.fr_segmentation(segm, h, w)
        if [int(v) for v in rle["size"]] != [h, w]:
            raise ValueError(
                f"{what} on image {image_id}: mask size {rle['size']} differs from the image size {[h, w]}"
            )
        return rle_mod._runs_of(rle)

    def _prepare(self, gt_anns: Sequence[Mapping], results: Sequence[Mapping]) -> None:
        cat_set = set(self.cat_ids)
        for ann in gt_anns:
            img_id, cat_id = int(ann["image_id"]), int(ann["category_id"])
            if img_id not in self.images or cat_id not in cat_set:
                continue
            g = {
                "id": int(ann["id"]),
                "area": float(ann["area"]),
                "iscrowd": int(ann.get("iscrowd", 0)),
                "bbox": [float(v) for v in ann["bbox"]],
            }
            # pycocotools overwrites any 'ignore' field with iscrowd.
            g["ignore"] = bool(g["iscrowd"])
            if self.iou_type == "segm":
                if "segmentation" not in ann:
                    raise ValueError(f"ground-truth annotation {g['id']} has no segmentation")
                g["runs"] = self._segm_runs(ann["segmentation"], img_id, f"ground truth {g['id']}")
            self._gts.setdefault((img_id, cat_id), []).append(g)

        for i, res in enumerate(results):
            img_id = int(res["image_id"])
            if img_id not in self.images:
                raise ValueError(
                    f"result {i} is for image_id {img_id}, which is not in the ground truth; "
                    "results do not correspond to this annotation file"
                )
            cat_id = int(res["category_id"])
            has_box = "bbox" in res and len(res["bbox"]) > 0
            has_seg = "segmentation" in res and res["segmentation"] is not None
            if not has_box and not has_seg:
                raise ValueError(f"result {i} has neither 'bbox' nor 'segmentation'")
            d = {"id": i + 1, "score": float(res["score"]), "iscrowd": 0}
            if has_seg:
                seg = res["segmentation"]
                if not isinstance(seg, dict):
                    raise ValueError(f"result {i}: segmentation must be an RLE dict (COCO results format)")
            if has_box:
                bb = [float(v) for v in res["bbox"]]
                d["bbox"] = bb
                d["area"] = bb[2] * bb[3]
            else:
                d["bbox"] = rle_mod.to_bbox(seg).tolist()
                d["area"] = float(rle_mod.area(seg))
            if self.iou_type == "segm" and has_seg:
                # A detection's size range is its mask's area for segm, as
                # mmdetection and detectron2 evaluate (they drop the box
                # before pycocotools' loadRes, which would use the box area
                # and shift APs/APm/APl).
                d["area"] = float(rle_mod.area(seg))
            if self.iou_type == "segm":
                if not has_seg:
                    raise ValueError(f"result {i} has no 'segmentation' but segm evaluation was asked for")
                d["runs"] = self._segm_runs(seg, img_id, f"result {i}")
            if cat_id not in cat_set:
                continue
            self._dts.setdefault((img_id, cat_id), []).append(d)

        # Highest score first, ties in input order (pycocotools' mergesort);
        # only the top max_dets[-1] can ever be used.
        max_det = self.params.max_dets[-1]
        for key, dts in self._dts.items():
            order = np.argsort([-d["score"] for d in dts], kind="mergesort")
            self._dts[key] = [dts[j] for j in order[:max_det]]

    # ------------------------------------------------------------------
    def compute_iou(self, img_id: int, cat_id: int) -> np.ndarray:
        gts = self._gts.get((img_id, cat_id), [])
        dts = self._dts.get((img_id, cat_id), [])
        if not gts or not dts:
            return np.zeros((len(dts), len(gts)))
        crowd = [g["iscrowd"] for g in gts]
        if self.iou_type == "segm":
            return rle_mod.iou([d["runs"] for d in dts], [g["runs"] for g in gts], crowd)
        return rle_mod.box_iou([d["bbox"] for d in dts], [g["bbox"] for g in gts], crowd)

    def evaluate_img(self, ious: np.ndarray, img_id: int, cat_id: int, a_rng, max_det: int) -> dict | None:
        gts = self._gts.get((img_id, cat_id), [])
        dts = self._dts.get((img_id, cat_id), [])[:max_det]
        if not gts and not dts:
            return None
        lo, hi = a_rng
        g_ig_raw = [bool(g["ignore"] or g["area"] < lo or g["area"] > hi) for g in gts]
        # Non-ignored ground truths first, so a detection prefers them.
        gt_order = np.argsort(np.asarray(g_ig_raw, dtype=np.int64), kind="mergesort")
        g_ig = [g_ig_raw[j] for j in gt_order]
        crowd = [bool(gts[j]["iscrowd"]) for j in gt_order]
        iou_rows = ious[: len(dts)][:, gt_order].tolist() if ious.size else []

        thrs = self.params.iou_thrs
        T, G, D = len(thrs), len(gts), len(dts)
        gtm = np.zeros((T, G), dtype=bool)
        dtm = np.zeros((T, D), dtype=bool)
        dt_ig = np.zeros((T, D), dtype=bool)
        if iou_rows:
            for ti, t in enumerate(thrs):
                matched = [False] * G
                for di in range(D):
                    best = min(float(t), 1 - 1e-10)
                    m = -1
                    row = iou_rows[di]
                    for gi in range(G):
                        # a crowd region may absorb any number of detections
                        if matched[gi] and not crowd[gi]:
                            continue
                        # once matched to a real gt, never fall back to an ignored one
                        if m > -1 and not g_ig[m] and g_ig[gi]:
                            break
                        if row[gi] < best:
                            continue
                        best = row[gi]
                        m = gi
                    if m == -1:
                        continue
                    dt_ig[ti, di] = g_ig[m]
                    dtm[ti, di] = True
                    matched[m] = True
                gtm[ti] = matched
        d_out = np.array([d["area"] < lo or d["area"] > hi for d in dts], dtype=bool)
        dt_ig |= (~dtm) & d_out[None, :]
        return {
            "image_id": img_id,
            "category_id": cat_id,
            "dt_scores": np.array([d["score"] for d in dts], dtype=np.float64),
            "dt_matched": dtm,
            "dt_ignore": dt_ig,
            "gt_ignore": np.asarray(g_ig, dtype=bool),
        }

    def evaluate(self) -> None:
        """Match detections to ground truth per image, category and area range."""
        p = self.params
        ious = {(i, c): self.compute_iou(i, c) for i in self.img_ids for c in self.cat_ids}
        max_det = p.max_dets[-1]
        # Layout [category][area][image], as accumulate reads it.
        self.eval_imgs = [
            self.evaluate_img(ious[(i, c)], i, c, a_rng, max_det)
            for c in self.cat_ids
            for a_rng in p.area_rngs
            for i in self.img_ids
        ]

    def accumulate(self) -> None:
        """Precision at 101 recall points and recall, per threshold/category/area/maxDets."""
        p = self.params
        T, R, K, A, M = len(p.iou_thrs), len(p.rec_thrs), len(self.cat_ids), len(p.area_rngs), len(p.max_dets)
        precision = -np.ones((T, R, K, A, M))
        recall = -np.ones((T, K, A, M))
        n_img = len(self.img_ids)
        for k in range(K):
            for a in range(A):
                base = (k * A + a) * n_img
                E = [e for e in self.eval_imgs[base : base + n_img] if e is not None]
                if not E:
                    continue
                for m, max_det in enumerate(p.max_dets):
                    scores = np.concatenate([e["dt_scores"][:max_det] for e in E])
                    order = np.argsort(-scores, kind="mergesort")
                    dtm = np.concatenate([e["dt_matched"][:, :max_det] for e in E], axis=1)[:, order]
                    dt_ig = np.concatenate([e["dt_ignore"][:, :max_det] for e in E], axis=1)[:, order]
                    gt_ig = np.concatenate([e["gt_ignore"] for e in E])
                    npig = int(np.count_nonzero(~gt_ig))
                    if npig == 0:
                        continue
                    tps = dtm & ~dt_ig
                    fps = ~dtm & ~dt_ig
                    tp_sum = np.cumsum(tps, axis=1).astype(np.float64)
                    fp_sum = np.cumsum(fps, axis=1).astype(np.float64)
                    for t in range(T):
                        tp, fp = tp_sum[t], fp_sum[t]
                        nd = len(tp)
                        rc = tp / npig
                        pr = tp / (fp + tp + np.spacing(1))
                        recall[t, k, a, m] = rc[-1] if nd else 0.0
                        # precision envelope: best precision at any higher recall
                        pr = np.maximum.accumulate(pr[::-1])[::-1]
                        inds = np.searchsorted(rc, p.rec_thrs, side="left")
                        q = np.zeros(R)
                        ok = inds < nd
                        q[ok] = pr[inds[ok]]
                        precision[t, :, k, a, m] = q
        self.precision = precision
        self.recall = recall

    def _summarize_one(self, ap: bool, iou_thr: float | None, area: str, max_dets: int, out: IO | None) -> float:
        p = self.params
        a = p.area_lbls.index(area)
        m = p.max_dets.index(max_dets)
        s = self.precision if ap else self.recall
        if iou_thr is not None:
            t = np.flatnonzero(np.isclose(p.iou_thrs, iou_thr))
            s = s[t]
        s = s[:, :, :, a, m] if ap else s[:, :, a, m]
        valid = s[s > -1]
        mean = float(np.mean(valid)) if valid.size else -1.0
        if out is not None:
            title = "Average Precision" if ap else "Average Recall"
            kind = "(AP)" if ap else "(AR)"
            iou_str = f"{p.iou_thrs[0]:0.2f}:{p.iou_thrs[-1]:0.2f}" if iou_thr is None else f"{iou_thr:0.2f}"
            out.write(
                " {:<18} {} @[ IoU={:<9} | area={:>6s} | maxDets={:>3d} ] = {:0.3f}\n".format(
                    title, kind, iou_str, area, max_dets, mean
                )
            )
        return mean

    def summarize(self, out: IO | None = sys.stdout) -> np.ndarray:
        """The 12 COCO numbers (see STAT_NAMES); prints the usual table to ``out``."""
        if self.precision is None:
            raise RuntimeError("summarize() needs evaluate() and accumulate() first")
        md = self.params.max_dets
        big = md[-1]
        spec = [
            (True, None, "all", big),
            (True, 0.5, "all", big),
            (True, 0.75, "all", big),
            (True, None, "small", big),
            (True, None, "medium", big),
            (True, None, "large", big),
            (False, None, "all", md[0]),
            (False, None, "all", md[1] if len(md) > 1 else big),
            (False, None, "all", big),
            (False, None, "small", big),
            (False, None, "medium", big),
            (False, None, "large", big),
        ]
        self.stats = np.array([self._summarize_one(*s, out) for s in spec])
        return self.stats

    def run(self, out: IO | None = sys.stdout) -> dict[str, float]:
        """evaluate + accumulate + summarize; returns {stat name: value}."""
        if out is not None:
            out.write(f"Evaluate annotation type *{self.iou_type}*\n")
        self.evaluate()
        self.accumulate()
        stats = self.summarize(out)
        return dict(zip(STAT_NAMES, (float(v) for v in stats)))


def evaluate(gt: Any, results: Any, iou_types: Sequence[str] = ("bbox", "segm"), out: IO | None = sys.stdout) -> dict:
    """Evaluate results for each IoU type: {iou_type: {stat name: value}}."""
    gt = load_json(gt)
    results = load_json(results)
    return {t: COCOEval(gt, results, t).run(out) for t in iou_types}
