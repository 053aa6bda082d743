"""Turn model predictions into the COCO results format the evaluator reads."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from . import rle as rle_mod


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def predictions_to_coco(
    predictions: Sequence[Mapping],
    image_ids: Sequence[int],
    label_to_cat_id: Sequence[int],
    with_masks: bool = True,
) -> list[dict]:
    """COCO results for per-image predictions.

    ``predictions[i]`` is the detector's output for image ``image_ids[i]``:
    boxes [K,4] xyxy in original-image pixels, scores [K], labels [K] (0..C-1),
    and, if ``with_masks``, masks uint8 [K,H0,W0]. Boxes become [x, y, w, h];
    masks become compressed RLE with a str ``counts``.
    """
    if len(predictions) != len(image_ids):
        raise ValueError(f"{len(predictions)} predictions for {len(image_ids)} image ids")
    out: list[dict] = []
    for pred, img_id in zip(predictions, image_ids):
        boxes = _np(pred["boxes"]).reshape(-1, 4).astype(np.float64)
        scores = _np(pred["scores"]).reshape(-1).astype(np.float64)
        labels = _np(pred["labels"]).reshape(-1).astype(np.int64)
        masks = _np(pred["masks"]) if with_masks else None
        for k in range(len(scores)):
            x1, y1, x2, y2 = (float(v) for v in boxes[k])
            res = {
                "image_id": int(img_id),
                "category_id": int(label_to_cat_id[int(labels[k])]),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                # unrounded: rounding could tie scores and reorder detections
                "score": float(scores[k]),
            }
            if masks is not None:
                res["segmentation"] = rle_mod.encode(masks[k] != 0)
            out.append(res)
    return out
