#!/usr/bin/python3
"""Make the fixtures of track's sample-video test (see README.md here).

  sample_detections.json  the bundled model's detections of examples/sample.mp4,
                          trimmed from `htcstream run --detections` JSON lines
  sample_gt_ids.json      the true object identity of every annotation of
                          examples/sample.json, in its order

examples/sample.json has no instance identity, but the synthetic generator that
wrote it is deterministic: replaying it and noting which mover each kept
annotation came from gives exact identities, where linking boxes by IoU would
break them at every occlusion.

Run from the repository root:
  /usr/bin/python3 track/testdata/make_fixtures.py DETECTIONS.jsonl
"""
import json
import sys

HERE = "track/testdata/"


def detections(path):
    frames = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            dets = []
            for d in r["detections"]:
                m = d.get("mask") or {}
                dets.append([round(v, 2) for v in d["box"]] + [round(d["score"], 4), d["class_id"], d["label"],
                                                                 m.get("counts", "")])
            frames.append({"seq": r["seq"], "pts_ms": r["pts_ms"], "dets": dets})
    out = {"width": 320, "height": 240, "frames": frames,
           "columns": ["x1", "y1", "x2", "y2", "score", "class_id", "label", "mask_rle_counts"]}
    with open(HERE + "sample_detections.json", "w", encoding="utf-8") as f:
        json.dump(out, f, separators=(",", ":"))


def gt_ids():
    sys.path.insert(0, "training")
    import numpy as np
    from htc.data import synthetic as S

    info = json.load(open("examples/sample.json", encoding="utf-8"))["info"]
    ids = []
    orig = S.compose

    def compose(bg, objects, t=0.0):
        res = orig(bg, objects, t)
        # the same keep rule as compose, with the object's index
        scratch = res[0].astype(np.float32)
        masks = [o.draw(scratch) for o in objects]
        for i, (o, full, vis) in enumerate(zip(objects, masks, S._visible(masks))):
            n = int(vis.sum())
            crowd = isinstance(o, S.CrowdGroup)
            if n >= S.MIN_VISIBLE_AREA and (crowd or n >= S.MIN_VISIBLE_FRACTION * int(full.sum())):
                ids.append(i + 1)
        return res

    S.compose = compose
    n = sum(len(inst) for _, inst in S.video_frames(info["frames"], info["seed"], 320, 240))
    if n != len(ids):
        raise SystemExit(f"replay kept {len(ids)} objects, compose {n}")
    with open(HERE + "sample_gt_ids.json", "w", encoding="utf-8") as f:
        json.dump({"annotation_object_ids": ids}, f, separators=(",", ":"))


if __name__ == "__main__":
    detections(sys.argv[1])
    gt_ids()
