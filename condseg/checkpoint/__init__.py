"""Checkpoint converters: other code bases' weights -> condseg's key names.

One module per source (:mod:`.adelaidet` for AdelaiDet CondInst, :mod:`.torchvision_resnet`
for torchvision's ImageNet ResNets, :mod:`.odconv` for the official OD-ResNets); each has a
pure ``state_dict -> (state_dict, report)`` conversion and a ``convert_file(path, model=None)``.
:mod:`.resnet` holds the ResNet key mapping and checks that the two backbone converters
share. :mod:`.common` reads checkpoints, checks a result against a model and writes ``.pth``
files that ``DetectionCheckpointer`` loads as is. ``tools/convert_checkpoint.py`` is the
command line.
"""
from . import adelaidet, odconv, resnet, torchvision_resnet
from .adelaidet import convert_adelaidet_condinst
from .common import ConversionReport, check_against_model, load_checkpoint_state_dict, save_checkpoint
from .odconv import convert_odconv_resnet, official_to_condseg_key
from .resnet import DETECTOR_PREFIX
from .torchvision_resnet import convert_torchvision_resnet, torchvision_to_condseg_key

__all__ = [
    "adelaidet", "convert_adelaidet_condinst",
    "resnet", "DETECTOR_PREFIX",
    "torchvision_resnet", "convert_torchvision_resnet", "torchvision_to_condseg_key",
    "odconv", "convert_odconv_resnet", "official_to_condseg_key",
    "ConversionReport", "check_against_model", "load_checkpoint_state_dict", "save_checkpoint",
]
