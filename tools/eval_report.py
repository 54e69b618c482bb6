#!/usr/bin/env python
"""Write the evaluation report (per-category AP, precision-recall curves, confusion matrix,
COCO error breakdown, score histograms and best-F1 thresholds, a gallery of the worst
images; an index.html with PNGs and csvs) from a saved COCO results json.

    .venv/bin/python tools/eval_report.py \\
        --results output/quickstart/inference/condseg_shapes_val/coco_instances_results.json \\
        --dataset condseg_shapes_val --config-file configs/quickstart/condinst_R18_shapes.yaml
    .venv/bin/python tools/eval_report.py --results results.json --gt-json val.json --image-root images/ \\
        --output report/ --overview report.png TEST.REPORT.SCORE_THRESHOLD 0.5

The results are what detectron2's COCOEvaluator writes (``coco_instances_results.json``
in the evaluation folder; ``tools/train_net.py`` writes the same report there itself).
The ground truth is a registered dataset (``--dataset``: the built-in ones, or those of
``DATASETS.COCO``; default the config's first ``DATASETS.TEST``), or a COCO json
(``--gt-json``, images under ``--image-root``). Trailing ``KEY VALUE`` pairs override the
config (``TEST.REPORT.*``, ``TEST.DETECTIONS_PER_IMAGE``, ``DATASETS.*``). The report goes
to ``--output`` (default: ``report/`` beside the results json); ``--overview`` also writes
one picture of it (precision-recall curves and confusion matrix over a gallery image).

Exit status: 0 written; 1 an error, said in one line (a missing or malformed file, ids the
ground truth does not have); 2 a bad command line.
"""
import argparse
import logging
import os
import sys

import condseg  # noqa: F401  (first: registers condseg's components and keeps detectron2's import quiet)
from detectron2.utils.logger import setup_logger

from condseg.config_setup import setup_cfg
from condseg.report import write_report
from condseg.report.inputs import (check_results, ground_truth_of_dataset, ground_truth_of_json, image_finder,
                                   load_results)
from condseg.report.overview import compose_overview


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--results", required=True, metavar="FILE.json", help="COCO results json")
    parser.add_argument("--dataset", metavar="NAME",
                        help="a registered dataset (default: the config's DATASETS.TEST[0])")
    parser.add_argument("--gt-json", metavar="FILE.json", help="ground truth as a COCO json, instead of --dataset")
    parser.add_argument("--image-root", default="", metavar="DIR", help="folder of the --gt-json images")
    parser.add_argument("--config-file", default="", metavar="FILE.yaml", help="config (datasets, TEST.REPORT.*)")
    parser.add_argument("--output", metavar="DIR", help="report folder (default: report/ beside --results)")
    parser.add_argument("--overview", metavar="FILE.png",
                        help="also one picture of the report: PR curves and confusion matrix over a gallery image")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE", help="config overrides")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if len(args.opts) % 2:
        parser.error(f"the config overrides must be KEY VALUE pairs, got an odd number: {' '.join(args.opts)}")
    if args.gt_json and args.dataset:
        parser.error("give --dataset or --gt-json, not both")
    try:
        index = run(args)
        print(f"Evaluation report of {args.dataset or args.gt_json}: {index}")
        if args.overview:
            folder = os.path.dirname(index)
            iou_type = "segm" if os.path.isfile(os.path.join(folder, "segm_pr_curves.png")) else "bbox"
            print(f"Overview picture ({iou_type}): {compose_overview(folder, args.overview, iou_type)}")
    except (FileNotFoundError, FileExistsError, KeyError, ValueError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 1
    return 0


def run(args) -> str:
    """Write the report the parsed command line asks for; the path of its index.html."""
    cfg = setup_cfg(args.config_file or None, args.opts)
    if args.gt_json:
        coco_gt, gt_source = ground_truth_of_json(args.gt_json), args.gt_json
        image_root = args.image_root
    else:
        if not args.dataset:
            if not cfg.DATASETS.TEST:
                raise ValueError("no ground truth: give --dataset, --gt-json, or a config with DATASETS.TEST")
            args.dataset = cfg.DATASETS.TEST[0]
        coco_gt, image_root = ground_truth_of_dataset(args.dataset)
        gt_source = f"dataset {args.dataset!r}"
    results = load_results(args.results)
    check_results(results, coco_gt, args.results, gt_source)
    output = args.output or os.path.join(os.path.dirname(os.path.abspath(args.results)), "report")
    logging.getLogger("condseg").info("writing the report of %d detections against %s into %s", len(results),
                                      gt_source, output)
    return write_report(cfg, coco_gt=coco_gt, results=results, output_dir=output,
                        title=f"Evaluation report of {args.dataset or os.path.basename(args.gt_json)}",
                        source=args.results, image_path=image_finder(coco_gt, image_root))


if __name__ == "__main__":
    # here, not in main(): detectron2's setup_logger binds its handler to the sys.stdout of
    # its first call (and caches it), so a caller of main() in the same process keeps its own
    setup_logger(name="condseg")
    sys.exit(main())
