"""Config set-up of training runs, and the checks of their inputs."""
import os

from detectron2.data import MetadataCatalog
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from condseg import config_setup
from condseg.config_setup import build_cfg
from condseg.data import register_datasets_from_cfg

__all__ = ["setup_cfg", "missing_inputs", "check_inputs", "MissingInputsError"]

_REMOTE = ("detectron2://", "http://", "https://", "catalog://", "manifold://", "s3://", "gs://")


def setup_cfg(config_file, opts=(), args=None, freeze: bool = True):
    """:func:`condseg.config_setup.setup_cfg` (the config, its datasets registered); with
    ``args`` (the parsed command line) also detectron2's ``default_setup`` (logging,
    output dir, config dump, seeding) before the datasets are registered."""
    if args is None:
        return config_setup.setup_cfg(config_file, opts, freeze)
    cfg = build_cfg(config_file, opts, freeze)
    default_setup(cfg, args)
    # condseg's own messages (dataset summaries, warnings) go to the same console and log file
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="condseg", abbrev_name="condseg")
    register_datasets_from_cfg(cfg)
    return cfg


class MissingInputsError(FileNotFoundError):
    """A run's datasets or weights are not where its config says."""


def missing_inputs(cfg, eval_only: bool = False) -> list:
    """What a run of ``cfg`` needs but cannot find, one line each naming the path: the
    json file and image folder of every dataset in ``DATASETS.TRAIN`` (unless
    ``eval_only``) and ``DATASETS.TEST`` that has them in its metadata (COCO-format
    datasets: detectron2's built-in COCO and ``DATASETS.COCO``; not the built-in shapes,
    generated at first use), and a local
    ``MODEL.WEIGHTS`` file. Remote weights (``detectron2://``, ``https://``) are not checked.
    """
    names = list(cfg.DATASETS.TEST) + ([] if eval_only else list(cfg.DATASETS.TRAIN))
    problems = []
    for name in dict.fromkeys(names):
        meta = MetadataCatalog.get(name)
        if getattr(meta, "generated_on_demand", False):  # the built-in dataset: generated at first use
            continue
        for attr, kind in (("json_file", "annotation file"), ("image_root", "image folder")):
            path = getattr(meta, attr, None)
            if path and not os.path.exists(path):
                problems.append(f"dataset {name!r}: {kind} {path} does not exist")
    weights = cfg.MODEL.WEIGHTS
    if weights and not weights.startswith(_REMOTE) and not os.path.exists(weights):
        problems.append(f"MODEL.WEIGHTS: {weights} does not exist")
    return problems


def check_inputs(cfg, eval_only: bool = False) -> None:
    """Raise :class:`MissingInputsError` listing :func:`missing_inputs`, with where COCO is looked
    for, before anything slow is built."""
    problems = missing_inputs(cfg, eval_only)
    if problems:
        root = os.environ.get("DETECTRON2_DATASETS", "datasets")
        hint = (
            f"COCO is read from $DETECTRON2_DATASETS/coco/{{train2017,val2017,annotations}} "
            f"($DETECTRON2_DATASETS is {root!r}); weights from MODEL.WEIGHTS (set it to '' to train from scratch)."
        )
        raise MissingInputsError("missing inputs:\n  " + "\n  ".join(problems) + "\n" + hint)
