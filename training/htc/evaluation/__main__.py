"""python -m htc.evaluation --gt ann.json --results res.json --iou-type segm|bbox|both [--out stats.json]"""

from __future__ import annotations

import argparse
import json
import sys

from .cocoeval import evaluate, load_json


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m htc.evaluation", description="COCO box/mask AP of a results file.")
    p.add_argument("--gt", required=True, help="COCO instances JSON (ground truth)")
    p.add_argument("--results", required=True, help="COCO results JSON (list of detections)")
    p.add_argument("--iou-type", choices=("segm", "bbox", "both"), default="both")
    p.add_argument("--out", help="write {iou_type: {stat: value}} here as JSON")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    types = ("bbox", "segm") if args.iou_type == "both" else (args.iou_type,)
    try:
        gt = load_json(args.gt)
        results = load_json(args.results)
        stats = evaluate(gt, results, types, out=sys.stdout)
    except (OSError, ValueError) as e:
        print(f"htc.evaluation: {e}", file=sys.stderr)
        return 2
    except KeyError as e:
        print(f"htc.evaluation: an annotation or result lacks the field {e}", file=sys.stderr)
        return 2
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(stats, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
