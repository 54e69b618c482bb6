"""Checkpoint converters: other code bases' weights -> condseg's key names.

One module per source (:mod:`.adelaidet` for AdelaiDet CondInst, :mod:`.torchvision_resnet`
for torchvision's ImageNet ResNets, :mod:`.odconv` for the official OD-ResNets); each has a
pure ``state_dict -> (state_dict, report)`` conversion and a ``convert_file(path, model=None)``.
:mod:`.common` reads checkpoints, checks a result against a model and writes ``.pth``
files that ``DetectionCheckpointer`` loads as is. ``tools/convert_checkpoint.py`` is the
command line.
"""
from . import adelaidet, odconv, torchvision_resnet
from .adelaidet import convert_adelaidet_condinst
from .common import ConversionReport, check_against_model, load_checkpoint_state_dict, save_checkpoint
from .odconv import convert_odconv_resnet, official_to_condseg_key
from .torchvision_resnet import DETECTOR_PREFIX, convert_torchvision_resnet, torchvision_to_condseg_key

__all__ = [
    "adelaidet", "convert_adelaidet_condinst",
    "torchvision_resnet", "convert_torchvision_resnet", "torchvision_to_condseg_key", "DETECTOR_PREFIX",
    "odconv", "convert_odconv_resnet", "official_to_condseg_key",
    "ConversionReport", "check_against_model", "load_checkpoint_state_dict", "save_checkpoint",
]
