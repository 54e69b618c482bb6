"""A run's config: condseg's defaults, a yaml file and ``KEY VALUE`` overrides, with the
datasets it names registered. Shared by the Predictor and the training set-up
(:func:`condseg.engine.setup.setup_cfg` adds detectron2's ``default_setup`` on top)."""
import logging

import torch
from detectron2.config import CfgNode

from condseg.config import get_condseg_cfg
from condseg.data import register_datasets_from_cfg

__all__ = ["build_cfg", "setup_cfg"]


def build_cfg(config_file, opts=(), freeze: bool = True) -> CfgNode:
    """The config of a yaml file (with ``_BASE_``) or of a copy of a ``CfgNode``, with
    ``KEY VALUE`` overrides; ``MODEL.DEVICE`` falls back to the CPU when CUDA is
    unavailable. Registers nothing."""
    if isinstance(config_file, CfgNode):
        cfg = config_file.clone()
        cfg.defrost()
    else:
        cfg = get_condseg_cfg()
        if config_file:
            cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logging.getLogger("condseg").warning("CUDA is not available: running on the CPU (MODEL.DEVICE cpu)")
        cfg.MODEL.DEVICE = "cpu"
    if freeze:
        cfg.freeze()
    return cfg


def setup_cfg(config_file, opts=(), freeze: bool = True) -> CfgNode:
    """:func:`build_cfg`, then register the datasets the config names (``DATASETS.COCO``
    and the built-in ones), so that their metadata can be read."""
    cfg = build_cfg(config_file, opts, freeze)
    register_datasets_from_cfg(cfg)
    return cfg
