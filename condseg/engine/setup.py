"""Config set-up shared by the command-line tools."""
import logging

import torch
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from condseg.config import get_condseg_cfg
from condseg.data import register_datasets_from_cfg

__all__ = ["setup_cfg"]


def setup_cfg(config_file: str, opts=(), args=None, freeze: bool = True):
    """Build the config from a yaml file (with ``_BASE_``) and ``KEY VALUE`` overrides,
    register the datasets it names, and fall back to the CPU when CUDA is unavailable.
    With ``args`` (the parsed command line), also runs detectron2's ``default_setup``
    (logging, output dir, config dump, seeding)."""
    cfg = get_condseg_cfg()
    if config_file:
        cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger("condseg").warning("CUDA is not available: running on the CPU (MODEL.DEVICE cpu)")
        cfg.MODEL.DEVICE = "cpu"
    if freeze:
        cfg.freeze()
    if args is not None:
        default_setup(cfg, args)
        # condseg's own messages (dataset summaries, warnings) go to the same console and log file
        setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="condseg", abbrev_name="condseg")
    register_datasets_from_cfg(cfg)
    return cfg
