"""Evaluate a model exported by tools/export_model.py on registered datasets, with the
COCOEvaluator that tools/train_net.py uses, so that its AP can be compared with the
PyTorch model's.

    .venv/bin/python tools/eval_onnx.py --model output/quickstart/model.onnx
    .venv/bin/python tools/eval_onnx.py --model output/quickstart/model.onnx \
        --compare output/quickstart/model_final.pth   # and the PyTorch model's AP beside it
    .venv/bin/python tools/eval_onnx.py --model model.onnx DATASETS.TEST "('my_val',)" \\
        DATASETS.COCO "(('my_val', 'val.json', 'images/'),)"

The datasets are the exported config's ``DATASETS.TEST`` unless overridden; other
``KEY VALUE`` overrides change only the data side (the graph holds the model and its
thresholds). Results go to ``--output`` (default: beside the model file). ``--compare
WEIGHTS`` also evaluates the PyTorch model of the exported config with those weights on
the same data and prints both APs and their differences; the exit status is 3 when one
differs by more than ``--tolerance``.
"""
import argparse
import os
import sys

import condseg  # noqa: F401  (first: registers condseg's components and keeps detectron2's import quiet)
from detectron2.utils.logger import setup_logger
from tabulate import tabulate

from condseg.data import register_datasets_from_cfg
from condseg.engine import Trainer
from condseg.inference.onnx_backend import OnnxRunner


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--model", required=True, metavar="FILE.onnx", help="a file of tools/export_model.py")
    parser.add_argument("--output", metavar="DIR", help="evaluation folder (default: <model>_eval beside it)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    parser.add_argument("--compare", metavar="WEIGHTS.pth",
                        help="also evaluate the PyTorch model with these weights and print the differences")
    parser.add_argument("--tolerance", type=float, default=0.1, help="largest AP difference --compare accepts")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE", help="data-side config overrides")
    args = parser.parse_args(argv)
    output = args.output or os.path.splitext(args.model)[0] + "_eval"
    try:
        runner = OnnxRunner(args.model, threads=args.threads)
        got = evaluate(args.model, output, args.opts, runner=runner)
        if args.compare:  # the same exported config, not a second session to read it
            expected = evaluate_pytorch(runner.cfg, args.compare, os.path.join(output, "pytorch"), args.opts)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if not args.compare:
        return 0
    rows = differences(expected, got)
    print(tabulate(rows, headers=["task", "metric", "PyTorch", "ONNX Runtime", "difference"], floatfmt=".3f",
                   tablefmt="pipe"))
    worst = max((abs(r[4]) for r in rows if r[4] == r[4]), default=0.0)
    print(f"largest difference {worst:.3f} AP ({'within' if worst <= args.tolerance else 'over'} "
          f"--tolerance {args.tolerance})")
    return 0 if worst <= args.tolerance else 3


def data_cfg(exported_cfg, output_dir: str, opts=()):
    """The exported config with the data-side ``opts`` and ``OUTPUT_DIR``, its datasets registered."""
    cfg = exported_cfg.clone()
    cfg.defrost()
    cfg.merge_from_list(list(opts))
    cfg.OUTPUT_DIR = output_dir
    cfg.freeze()
    register_datasets_from_cfg(cfg)
    return cfg


def evaluate(model: str, output_dir: str, opts=(), threads=None, runner=None):
    """The evaluation results (``{task: {metric: value}}``) of the exported ``model`` (or of
    its already opened ``runner``) on its config's ``DATASETS.TEST`` (after ``opts``),
    written under ``output_dir``."""
    runner = runner or OnnxRunner(model, threads=threads)
    cfg = data_cfg(runner.cfg, output_dir, opts)
    return Trainer.test(cfg, runner)  # the loader, the checks and the evaluator of tools/train_net.py --eval-only


def evaluate_pytorch(exported_cfg, weights: str, output_dir: str, opts=()):
    """The evaluation results of the PyTorch model of the exported config ``exported_cfg``
    (an :class:`OnnxRunner`'s ``cfg``) with ``weights`` (loaded strictly), on the same
    datasets as :func:`evaluate`."""
    from detectron2.modeling import build_model

    from condseg.inference.predictor import load_weights_strict

    if not os.path.isfile(weights):
        raise FileNotFoundError(f"--compare: no such checkpoint: {weights}")
    cfg = data_cfg(exported_cfg, output_dir, opts)
    net = build_model(cfg).eval()
    load_weights_strict(net, weights)
    return Trainer.test(cfg, net)


def differences(expected, got):
    """``[task, metric, expected, got, got - expected]`` for every metric both results
    have (NaN, the AP of a class without instances, stays NaN)."""
    return [[task, metric, value, got[task][metric], got[task][metric] - value]
            for task in expected if task in got for metric, value in expected[task].items()
            if isinstance(value, float) and metric in got[task]]


if __name__ == "__main__":
    # here, not in main(): detectron2's setup_logger binds its handler to the sys.stdout of
    # its first call (and caches it), so a caller of main() in the same process keeps its own
    setup_logger(name="condseg")
    setup_logger(name="detectron2")
    sys.exit(main())
