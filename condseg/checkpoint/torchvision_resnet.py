"""torchvision ResNet ImageNet checkpoints -> condseg's ResNet (detectron2's layout).

torchvision's names map one to one onto those of condseg's ResNet
(:func:`condseg.modeling.backbone.build_resnet`, detectron2's blocks):

==========================================  ================================================
torchvision                                 condseg / detectron2
==========================================  ================================================
``conv1.weight``                            ``stem.conv1.weight``
``bn1.*``                                   ``stem.conv1.norm.*``
``layerS.J.convK.weight``                   ``res{S+1}.J.convK.weight``
``layerS.J.bnK.*``                          ``res{S+1}.J.convK.norm.*``
``layerS.J.downsample.0.weight``            ``res{S+1}.J.shortcut.weight``
``layerS.J.downsample.1.*``                 ``res{S+1}.J.shortcut.norm.*``
``fc.*``                                    dropped (the ImageNet classifier)
==========================================  ================================================

The tensors themselves are carried over unchanged. A DDP ``module.`` prefix on every key
is stripped. A detector's ``MODEL.WEIGHTS`` file has the keys under
``prefix=DETECTOR_PREFIX`` (``"backbone.bottom_up."``); :mod:`condseg.checkpoint.resnet`
says why, and holds the mapping and the checks that this module and the OD-ResNet
converter share.

**What the model config needs.** The converted weights only compute what they did in
torchvision when the model is configured as torchvision's ResNets were trained:

* ``MODEL.RESNETS.STRIDE_IN_1X1 False``: torchvision's bottleneck blocks (ResNet-50 and
  deeper, "ResNet v1.5") put the stride on the 3x3 conv, detectron2's default (from
  the MSRA Caffe models) on the first 1x1. Basic blocks (ResNet-18/34) are not affected.
* RGB input scaled like torchvision's ``Normalize(mean=(0.485, 0.456, 0.406),
  std=(0.229, 0.224, 0.225))`` on [0, 1] images: detectron2 feeds 0-255 pixels, so
  ``INPUT.FORMAT "RGB"``, ``MODEL.PIXEL_MEAN [123.675, 116.280, 103.530]``,
  ``MODEL.PIXEL_STD [58.395, 57.120, 57.375]`` (detectron2's defaults are BGR,
  ``PIXEL_MEAN [103.530, 116.280, 123.675]``, ``PIXEL_STD [1.0, 1.0, 1.0]``).
* the depth and widths of the checkpoint (``MODEL.RESNETS.DEPTH``, and for ResNet-18/34
  ``RES2_OUT_CHANNELS 64``); wide ResNets and ResNeXts also need ``NUM_GROUPS`` /
  ``WIDTH_PER_GROUP``.

The report lists exactly these settings (:attr:`ResNetReport.config`, as ``KEY VALUE``
pairs for ``--opts``); :func:`fit_to_model` refuses a model that puts the stride on the
1x1 conv, and :func:`check_input_config` warns about a config whose input format or
normalisation differs.
"""
from typing import List, Optional, Tuple

from torch import nn

from .common import StateDict, load_checkpoint_state_dict, preview
# check_input_config, config_opts and DETECTOR_PREFIX are also this converter's interface
from .resnet import (  # noqa: F401
    DETECTOR_PREFIX, INPUT_CONFIG, ResNetReport, check_input_config, config_opts, fit_to_model, normalize_prefix,
    rename, resnet_key, resnet_structure, strip_ddp_prefix,
)

__all__ = [
    "DETECTOR_PREFIX", "INPUT_CONFIG", "ResNetReport", "torchvision_to_condseg_key", "convert_torchvision_resnet",
    "fit_to_model", "check_input_config", "config_opts", "convert_file",
]


def torchvision_to_condseg_key(key: str) -> Optional[str]:
    """condseg's ResNet name of a torchvision ResNet key (without any prefix), e.g.
    ``layer1.0.bn2.running_var`` -> ``res2.0.conv2.norm.running_var``; None for the
    classifier (``fc.weight``, ``fc.bias``), which condseg's backbone has no use for.
    Raises ``ValueError`` for a key that is not a torchvision ResNet key."""
    return resnet_key(key)


def _looks_like_odconv(state_dict: StateDict) -> List[str]:
    """Keys that only an ODConv (OD-ResNet) checkpoint has: attention branches and stacked
    (5-D) conv weights."""
    return [k for k, v in state_dict.items() if ".attention." in k or (k.endswith(".weight") and v.dim() == 5)]


def convert_torchvision_resnet(
    state_dict: StateDict, source: str = "checkpoint", prefix: str = ""
) -> Tuple[StateDict, ResNetReport]:
    """Rename a torchvision ResNet state dict (``torchvision.models.resnet*`` /
    ``wide_resnet*`` / ``resnext*``, optionally with DDP's ``module.`` prefix) to condseg's
    ResNet names, each with ``prefix`` in front (``DETECTOR_PREFIX`` for a detector's
    ``MODEL.WEIGHTS``; "" for the ResNet itself). The classifier ``fc.*`` is dropped.
    ``source`` names the checkpoint in messages.

    Raises ``ValueError`` naming the offending keys if the state dict is not a complete
    torchvision ResNet of a depth condseg builds (18, 34, 50, 101, 152).
    """
    prefix = normalize_prefix(prefix)
    report = ResNetReport(source=source, num_input=len(state_dict), prefix=prefix)
    state_dict, had_ddp_prefix = strip_ddp_prefix(state_dict)
    odconv = _looks_like_odconv(state_dict)
    if odconv:
        raise ValueError(
            f"{source}: an ODConv (OD-ResNet) checkpoint, not a torchvision ResNet ({preview(odconv, 3)}): "
            "convert it with odconv-resnet (condseg.checkpoint.odconv)"
        )
    structure = resnet_structure(state_dict, source)
    report.architecture = "torchvision " + structure.name()
    report.config = {**structure.config(), **INPUT_CONFIG}
    converted = rename(state_dict, report, had_ddp_prefix=had_ddp_prefix)
    return converted, report


def convert_file(path: str, model: Optional[nn.Module] = None, prefix: str = "") -> Tuple[StateDict, ResNetReport]:
    """Read a torchvision ResNet checkpoint (a bare state dict as torchvision distributes
    them, or one under ``"model"`` / ``"state_dict"``) and convert it with ``prefix``;
    checked with :func:`fit_to_model` when a ``model`` is given."""
    state_dict, report = convert_torchvision_resnet(load_checkpoint_state_dict(path), source=path, prefix=prefix)
    if model is not None:
        state_dict = fit_to_model(state_dict, model, report)
    return state_dict, report
