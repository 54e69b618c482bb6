#!/usr/bin/env python
"""Train and evaluate condseg models (detectron2-style command line).

  python tools/train_net.py --config-file configs/quickstart/fcos_R18_shapes.yaml
  python tools/train_net.py --config-file CFG --num-gpus 8 SOLVER.IMS_PER_BATCH 16
  python tools/train_net.py --config-file CFG --resume            # continue a stopped run exactly
  python tools/train_net.py --config-file CFG --eval-only MODEL.WEIGHTS output/model_final.pth
  python tools/train_net.py --config-file CFG --check-data        # read every image once, list the broken ones
  torchrun --nproc_per_node 4 tools/train_net.py --config-file CFG   # or srun ... under SLURM

``--num-gpus N`` starts N processes per machine (DDP: NCCL on GPUs, gloo on the CPU);
``--num-machines``/``--machine-rank``/``--dist-url`` span several machines; under torchrun
or srun the launcher starts the processes (``condseg.engine.launch``). Trailing
``KEY VALUE`` pairs override the config; options may also come after them.

Exit status: 0 done; 1 an error, said in one line (missing inputs, a config that does not
fit the data, an unreadable image under ``DATALOADER.BAD_IMAGES stop``, a non-finite loss,
a checkpoint that cannot be written); 2 a bad command line; 128 + N stopped by signal N
(SIGINT 130, SIGUSR1 138, SIGTERM 143) after saving a checkpoint that ``--resume`` continues.
See docs/RELIABILITY.md.
"""
import logging
import os
import shlex
import sys

import condseg  # noqa: F401  (first: registers condseg's components and keeps detectron2's import quiet)
import torch
from detectron2.engine import default_argument_parser
from detectron2.evaluation import verify_results
from detectron2.utils import comm

from condseg.checkpoint import load_checkpoint_state_dict
from condseg.data.check_images import check_images
from condseg.engine import Trainer
from condseg.engine.checkpointer import AtomicCheckpointer, CheckpointWriteError, NoIntactCheckpointError
from condseg.engine.checks import ClassCountError, classes_in_state_dict
from condseg.engine.launch import launch
from condseg.engine.setup import MissingInputsError, check_inputs, setup_cfg
from condseg.engine.signals import TrainingStopped
from condseg.engine.step import BadDataError, NonFiniteLoss
from condseg.inference.predictor import WeightsMismatchError, load_weights_strict
from condseg.layers import fold_batch_norms
from condseg.modeling.model_keys import num_classes_key

logger = logging.getLogger("condseg")
ERRORS = (MissingInputsError, ClassCountError, WeightsMismatchError, NoIntactCheckpointError, CheckpointWriteError,
          NonFiniteLoss, BadDataError, FileNotFoundError)


def build_parser():
    parser = default_argument_parser()
    parser.add_argument("--check-data", action="store_true",
                        help="read every image of DATASETS.TRAIN and DATASETS.TEST once, list the unreadable ones, exit")
    return parser


def parse_args(argv=None):
    """detectron2's arguments; options written after the ``KEY VALUE`` overrides (which
    detectron2 would take for overrides) are moved before them."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    actions = parser._option_string_actions
    rest, moved, i = [], [], 0
    while i < len(args.opts):
        token = args.opts[i]
        if token in actions:
            n = actions[token].nargs
            n = 1 if n is None else (n if isinstance(n, int) else 0)
            moved += args.opts[i : i + 1 + n]
            i += 1 + n
        else:
            rest.append(token)
            i += 1
    if moved:
        head = argv[: len(argv) - len(args.opts)]
        args = parser.parse_args(head + moved + rest)
    if len(args.opts) % 2:
        parser.error(f"the config overrides must be KEY VALUE pairs, got an odd number: {' '.join(args.opts)}")
    return args


def resume_command(args) -> str:
    argv = [a for a in sys.argv if a != "--resume"]
    return " ".join(shlex.quote(a) for a in ["python", *argv[:1], "--resume", *argv[1:]])


def load_eval_weights(cfg, model, resume: bool) -> None:
    """``--eval-only`` weights: the newest intact checkpoint with ``--resume``, else
    ``MODEL.WEIGHTS`` loaded strictly (a file of another class count is refused)."""
    if resume:
        AtomicCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=True)
        return
    try:
        load_weights_strict(model, cfg.MODEL.WEIGHTS, "the config")
    except WeightsMismatchError as e:
        state = load_checkpoint_state_dict(cfg.MODEL.WEIGHTS)
        theirs, key = classes_in_state_dict(state, cfg), num_classes_key(cfg)
        ours = classes_in_state_dict(model.state_dict(), cfg)
        if theirs is not None and ours is not None and theirs != ours:
            raise ClassCountError(
                f"{cfg.MODEL.WEIGHTS} was trained for {theirs} classes but {key} is {ours}: set {key} {theirs} "
                "(or use the config the weights came with)"
            ) from e
        raise


def run_check_data(cfg) -> int:
    names = list(dict.fromkeys([*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST]))
    total, problems = check_images(names, cfg.INPUT.FORMAT, workers=max(1, cfg.DATALOADER.NUM_WORKERS))
    for name, file_name, reason in problems:
        print(f"{name}: {file_name}: {reason}")
    print(f"{total} images of {', '.join(names)} read: " + (f"{len(problems)} cannot be read" if problems else "all fine"))
    return 1 if problems else 0


def main(args):
    cfg = setup_cfg(args.config_file, args.opts, args)
    if args.check_data:
        return run_check_data(cfg) if comm.is_main_process() else 0
    check_inputs(cfg, eval_only=args.eval_only)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        load_eval_weights(cfg, model, args.resume)
        if cfg.TEST.FOLD_BATCH_NORMS:  # this model only evaluates
            fold_batch_norms(model.eval())
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
    for dataset, tasks in (results or {}).items():
        if not isinstance(tasks, dict) or not all(isinstance(v, dict) for v in tasks.values()):
            tasks = {dataset: tasks}
            dataset = cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else ""
        for task, metrics in tasks.items():
            if isinstance(metrics, dict) and "AP" in metrics:
                logger.info("%s %s: AP %.2f  AP50 %.2f  AP75 %.2f", dataset, task, metrics["AP"], metrics["AP50"], metrics["AP75"])
    logger.info("Outputs (checkpoints, metrics.json, TensorBoard events) are in %s", os.path.abspath(cfg.OUTPUT_DIR))


def guarded_main(args):
    """``main`` with the documented exit statuses: one line instead of a traceback."""
    try:
        code = main(args)
    except TrainingStopped as e:
        if comm.is_main_process():
            print(f"{e}: saved {e.checkpoint}; continue it with: {resume_command(args)}", file=sys.stderr, flush=True)
        sys.exit(e.status)
    except ERRORS as e:
        if comm.is_main_process():
            extra = f" (the last completed iteration is saved in {e.checkpoint}: fix the data and --resume)" \
                if getattr(e, "checkpoint", None) else ""
            print(f"error: {e}{extra}", file=sys.stderr, flush=True)
        sys.exit(1)
    if args.check_data and code:
        sys.exit(code)


if __name__ == "__main__":
    args = parse_args()
    logger.info("Command line arguments: %s", args)
    try:
        launch(guarded_main, args, device="cuda" if torch.cuda.is_available() else "cpu")
    except torch.multiprocessing.ProcessExitedException as e:
        if not e.exit_code or e.exit_code < 0:  # killed by a signal; a rank that exits with a status said why
            print(f"error: {e}; the other processes were stopped", file=sys.stderr, flush=True)
        sys.exit(e.exit_code if e.exit_code and e.exit_code > 0 else 1)
