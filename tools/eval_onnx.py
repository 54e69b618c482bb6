"""Evaluate a model exported by tools/export_model.py on registered datasets, with the
COCOEvaluator that tools/train_net.py uses, so that its AP can be compared with the
PyTorch model's.

    .venv/bin/python tools/eval_onnx.py --model output/quickstart/model.onnx
    .venv/bin/python tools/eval_onnx.py --model model.onnx DATASETS.TEST "('my_val',)" \\
        DATASETS.COCO "(('my_val', 'val.json', 'images/'),)"

The datasets are the exported config's ``DATASETS.TEST`` unless overridden; other
``KEY VALUE`` overrides change only the data side (the graph holds the model and its
thresholds). Results go to ``--output`` (default: beside the model file).
"""
import argparse
import os
import sys

import condseg  # noqa: F401  (first: registers condseg's components and keeps detectron2's import quiet)
from detectron2.utils.logger import setup_logger

from condseg.data import register_datasets_from_cfg
from condseg.engine import Trainer
from condseg.inference.onnx_backend import OnnxRunner


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--model", required=True, metavar="FILE.onnx", help="a file of tools/export_model.py")
    parser.add_argument("--output", metavar="DIR", help="evaluation folder (default: <model>_eval beside it)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE", help="data-side config overrides")
    args = parser.parse_args(argv)
    setup_logger(name="condseg")
    setup_logger(name="detectron2")
    try:
        evaluate(args.model, args.output or os.path.splitext(args.model)[0] + "_eval", args.opts, args.threads)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def evaluate(model: str, output_dir: str, opts=(), threads=None):
    """The evaluation results (``{task: {metric: value}}``) of the exported ``model`` on
    its config's ``DATASETS.TEST`` (after ``opts``), written under ``output_dir``."""
    runner = OnnxRunner(model, threads=threads)
    cfg = runner.cfg.clone()
    cfg.defrost()
    cfg.merge_from_list(list(opts))
    cfg.OUTPUT_DIR = output_dir
    cfg.freeze()
    register_datasets_from_cfg(cfg)
    return Trainer.test(cfg, runner)  # the loader, the checks and the evaluator of tools/train_net.py --eval-only


if __name__ == "__main__":
    sys.exit(main())
