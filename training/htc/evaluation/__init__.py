"""COCO-style evaluation: RLE masks (rle), AP/AR (cocoeval), results conversion."""

from .cocoeval import COCOEval, Params, STAT_NAMES, evaluate
from .results import predictions_to_coco

__all__ = ["COCOEval", "Params", "STAT_NAMES", "evaluate", "predictions_to_coco"]
