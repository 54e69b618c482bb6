#!/usr/bin/env python
"""Train and evaluate condseg models (detectron2-style command line).

  python tools/train_net.py --config-file configs/quickstart/fcos_R18_shapes.yaml
  python tools/train_net.py --config-file CFG --num-gpus 8 SOLVER.IMS_PER_BATCH 16
  python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS output/model_final.pth

``--num-gpus N`` starts N processes per machine (DDP: NCCL on GPUs, gloo on the CPU);
``--num-machines``/``--machine-rank``/``--dist-url`` span several machines. Trailing
``KEY VALUE`` pairs override the config.
"""
import logging
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from detectron2.checkpoint import DetectionCheckpointer  # noqa: E402
from detectron2.engine import default_argument_parser, launch  # noqa: E402
from detectron2.evaluation import verify_results  # noqa: E402
from detectron2.utils import comm  # noqa: E402

import condseg  # noqa: E402,F401  (registers components)
from condseg.engine import Trainer  # noqa: E402
from condseg.engine.setup import MissingInputsError, check_inputs, setup_cfg  # noqa: E402


def main(args):
    cfg = setup_cfg(args.config_file, args.opts, args)
    check_inputs(cfg, eval_only=args.eval_only)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    trainer.train()
    # detectron2's trainer keeps the results of its last evaluation (the final one) here
    results = getattr(trainer, "_last_eval_results", None)
    if comm.is_main_process():
        print_summary(cfg, results)
    return results


def print_summary(cfg, results):
    """One line per evaluated dataset and task with the headline numbers, then where
    the outputs are, so the end of a long log says what happened."""
    logger = logging.getLogger("condseg")
    for dataset, tasks in (results or {}).items():
        if not isinstance(tasks, dict) or not all(isinstance(v, dict) for v in tasks.values()):
            tasks = {dataset: tasks}
            dataset = cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else ""
        for task, metrics in tasks.items():
            if isinstance(metrics, dict) and "AP" in metrics:
                logger.info("%s %s: AP %.2f  AP50 %.2f  AP75 %.2f", dataset, task, metrics["AP"], metrics["AP50"], metrics["AP75"])
    logger.info("Outputs (checkpoints, metrics.json, TensorBoard events) are in %s", os.path.abspath(cfg.OUTPUT_DIR))


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    logging.getLogger("condseg").info("Command line arguments: %s", args)
    try:
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except MissingInputsError as e:  # missing data or weights: the message says which, no traceback
        sys.exit(f"error: {e}")
