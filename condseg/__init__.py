"""condseg: CondInst instance segmentation on FCOS as a Detectron2 project.

Importing this package registers every condseg component with detectron2's
registries (backbones, proposal generators, meta-architectures) and the
built-in datasets with ``DatasetCatalog``.
"""
import warnings

with warnings.catch_warnings():
    # detectron2 (box_regression.py) and fvcore.nn (focal_loss.py) call torch.jit.script
    # when imported, which torch warns is deprecated: silence exactly that warning, for
    # those imports only (a script imports condseg before detectron2 to stay quiet)
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
    import detectron2.modeling  # noqa: F401
    import fvcore.nn  # noqa: F401

from . import data, layers, modeling  # noqa: E402, F401  (registration side effects)
from .config import add_condseg_config, get_condseg_cfg  # noqa: E402, F401
from .inference import Predictor  # noqa: E402, F401

__version__ = "0.1.0"
