"""condseg: CondInst instance segmentation on FCOS as a Detectron2 project.

Importing this package registers every condseg component with detectron2's
registries (backbones, proposal generators, meta-architectures) and the
built-in datasets with ``DatasetCatalog``.
"""
from . import data, layers, modeling  # noqa: F401  (registration side effects)
from .config import add_condseg_config, get_condseg_cfg  # noqa: F401
from .inference import Predictor  # noqa: F401

__version__ = "0.1.0"
