"""Checkpoint converters: other code bases' weights -> condseg's key names.

One module per source (:mod:`.adelaidet` for AdelaiDet CondInst); each has a pure
``state_dict -> (state_dict, report)`` conversion and a ``convert_file(path, model=None)``.
:mod:`.common` reads checkpoints, checks a result against a model and writes ``.pth``
files that ``DetectionCheckpointer`` loads as is. ``tools/convert_checkpoint.py`` is the
command line.
"""
from . import adelaidet
from .adelaidet import convert_adelaidet_condinst
from .common import ConversionReport, check_against_model, load_checkpoint_state_dict, save_checkpoint

__all__ = [
    "adelaidet", "convert_adelaidet_condinst",
    "ConversionReport", "check_against_model", "load_checkpoint_state_dict", "save_checkpoint",
]
