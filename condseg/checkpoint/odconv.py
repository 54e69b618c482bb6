"""Official ODConv OD-ResNet checkpoints (``OSVAI/ODConv``, ``od_resnet18/50``) -> condseg's
OD-ResNet (detectron2's ResNet layout with ODConv block convs).

The official OD-ResNet names its modules like torchvision's ResNet, and condseg's like
detectron2's, so the mapping is that of torchvision ResNets (:mod:`condseg.checkpoint.resnet`:
the stem ``conv1``/``bn1`` and the ``downsample`` branches are ordinary convs and BatchNorms)
plus ODConv's own tensors, which keep their names under the conv:

=============================================  =============================================
official                                       condseg
=============================================  =============================================
``conv1.weight``, ``bn1.*``                    ``stem.conv1.weight``, ``stem.conv1.norm.*``
``layerS.J.convK.weight`` (``[n, O, I, k, k]``)  ``res{S+1}.J.convK.weight`` (same shape)
``layerS.J.convK.attention.<rest>``            ``res{S+1}.J.convK.attention.<rest>``
``layerS.J.bnK.*``                             ``res{S+1}.J.convK.norm.*``
``layerS.J.downsample.0.weight`` / ``.1.*``    ``res{S+1}.J.shortcut.weight`` / ``.norm.*``
``fc.*``                                       dropped (the ImageNet classifier)
=============================================  =============================================

``<rest>`` is ``fc.weight``, ``bn.*``, ``channel_fc.*``, ``filter_fc.*``, ``spatial_fc.*``
(3x3 convs only) or ``kernel_fc.*`` (``kernel_num`` > 1 only). Checkpoints of the official
training script keep the weights under ``checkpoint["state_dict"]`` with DDP's ``module.``
prefix on every key: both are undone (the first by :func:`load_checkpoint_state_dict`).

:func:`official_to_condseg_key` is the mapping of one key (a pure function);
:func:`convert_odconv_resnet` renames a whole state dict after checking that it is a
complete OD-ResNet whose ODConvs all have the same ``kernel_num`` (the first dimension of
the stacked weights) and complete attention branches. The ``prefix`` of the converted keys
works as for torchvision ResNets (see :mod:`~condseg.checkpoint.resnet`:
``"backbone.bottom_up."`` for a detector's ``MODEL.WEIGHTS``, the command line's default).

The report's ``config`` lists what condseg's model needs: ``MODEL.RESNETS.DEPTH``,
``MODEL.RESNETS.STRIDE_IN_1X1 False`` (the stride is on the 3x3 conv), for ResNet-18
``RES2_OUT_CHANNELS 64``, ``MODEL.ODCONV.ON_PER_STAGE``, ``KERNEL_NUM`` and ``REDUCTION``
(from the attention widths), and the official models' input: RGB with torchvision's
ImageNet normalisation (``INPUT.FORMAT RGB``, ``MODEL.PIXEL_MEAN [123.675, 116.28,
103.53]``, ``MODEL.PIXEL_STD [58.395, 57.12, 57.375]``). The attention temperature is not
saved in checkpoints; the pretrained weights compute what they did at temperature 1
(``MODEL.ODCONV.TEMPERATURE_INIT 1.0``).
"""
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from torch import nn

from .common import StateDict, load_checkpoint_state_dict, preview
from .resnet import (
    BN_PARAMS, INPUT_CONFIG, ResNetReport, ResNetStructure, fit_to_model, normalize_prefix, rename, resnet_key,
    resnet_structure, strip_ddp_prefix,
)

__all__ = [
    "ODConvReport", "official_to_condseg_key", "convert_odconv_resnet", "odconv_layers", "fit_to_model",
    "convert_file",
]

MIN_ATTENTION_CHANNELS = 16  # ODConv's attention width is max(int(C_in * reduction), 16)
DEFAULT_REDUCTION = 0.0625
_BLOCK_CONV = re.compile(r"layer([1-4])\.(\d+)\.conv([1-3])\.weight")


def official_to_condseg_key(key: str) -> Optional[str]:
    """condseg's OD-ResNet name of an official OD-ResNet key (no ``module.`` prefix, none
    added), e.g. ``layer2.0.conv1.attention.kernel_fc.bias`` ->
    ``res3.0.conv1.attention.kernel_fc.bias``, ``layer1.1.bn2.running_var`` ->
    ``res2.1.conv2.norm.running_var``; None for the classifier (``fc.weight``,
    ``fc.bias``), which condseg's backbone has no use for. Raises ``ValueError`` for a key
    that is not an OD-ResNet key. Plain ResNet keys map as with
    :func:`~condseg.checkpoint.torchvision_resnet.torchvision_to_condseg_key`."""
    return resnet_key(key, attention=True)


@dataclass
class ODConvReport(ResNetReport):
    """:class:`ResNetReport` plus the checkpoint's ODConv ``kernel_num`` (the same in every
    ODConv) and ``reduction`` (None if the attention widths fit no single value)."""

    kernel_num: int = 0
    reduction: Optional[float] = None


def odconv_layers(state_dict: StateDict) -> Dict[str, int]:
    """``{"layerS.J.convK": kernel_num}`` for each block conv of an official state dict (no
    prefix) whose weight is stacked (5-D); plain (4-D) block convs are left out."""
    layers = {}
    for key, value in state_dict.items():
        if _BLOCK_CONV.fullmatch(key) and value.dim() == 5:
            layers[key[: -len(".weight")]] = int(value.shape[0])
    return layers


def _attention_problems(state_dict: StateDict, layers: Dict[str, int]) -> List[str]:
    """Missing and unexpected attention keys: each ODConv needs ``fc``, ``bn``,
    ``channel_fc`` and ``filter_fc``, ``spatial_fc`` if its kernel is larger than 1x1 and
    ``kernel_fc`` (with ``kernel_num`` outputs) if ``kernel_num`` > 1; plain convs have none."""
    required = []
    for conv, n in layers.items():
        k = int(state_dict[conv + ".weight"].shape[-1])
        heads = ["channel_fc", "filter_fc"] + (["spatial_fc"] if k > 1 else []) + (["kernel_fc"] if n > 1 else [])
        required += [f"{conv}.attention.fc.weight"] + [f"{conv}.attention.bn.{p}" for p in BN_PARAMS]
        required += [f"{conv}.attention.{h}.{p}" for h in heads for p in ("weight", "bias")]
    allowed = set(required) | {f"{conv}.attention.bn.num_batches_tracked" for conv in layers}
    missing = [k for k in required if k not in state_dict]
    unexpected = [k for k in state_dict if ".attention." in k and k not in allowed]
    wrong_n = [
        f"{conv}.attention.kernel_fc.weight has {int(state_dict[key].shape[0])} outputs, kernel_num is {n}"
        for conv, n in layers.items()
        for key in [f"{conv}.attention.kernel_fc.weight"]
        if key in state_dict and int(state_dict[key].shape[0]) != n
    ]
    problems = [f"attention keys missing: {preview(missing)}"] if missing else []
    problems += [f"attention keys that ODConv does not have there: {preview(unexpected)}"] if unexpected else []
    return problems + wrong_n


def _reduction(state_dict: StateDict, layers: Dict[str, int]) -> Optional[float]:
    """The ``reduction`` r that gives every attention width A from its input channels C
    (A = max(int(C * r), 16)): the official default 1/16 if it fits, else the first ratio
    A / C that fits all layers; None if none does."""
    widths = [tuple(int(d) for d in state_dict[f"{conv}.attention.fc.weight"].shape[:2]) for conv in layers]
    candidates = [DEFAULT_REDUCTION] + sorted({a / c for a, c in widths if a > MIN_ATTENTION_CHANNELS})
    for r in candidates:
        if all(a == max(int(c * r), MIN_ATTENTION_CHANNELS) for a, c in widths):
            return r
    return None


def _odconv_config(structure: ResNetStructure, stages: List[bool], kernel_num: int, reduction: Optional[float]):
    config = structure.config()  # with STRIDE_IN_1X1 False for bottlenecks: the stride is on the 3x3 conv
    config["MODEL.ODCONV.ON_PER_STAGE"] = stages
    config["MODEL.ODCONV.KERNEL_NUM"] = kernel_num
    if reduction is not None:
        config["MODEL.ODCONV.REDUCTION"] = reduction
    config.update(INPUT_CONFIG)
    return config


def convert_odconv_resnet(
    state_dict: StateDict, source: str = "checkpoint", prefix: str = ""
) -> Tuple[StateDict, ODConvReport]:
    """Rename an official OD-ResNet state dict (optionally with DDP's ``module.`` prefix on
    every key) to condseg's names, each with ``prefix`` in front (``"backbone.bottom_up."``
    for a detector's ``MODEL.WEIGHTS``; "" for the ResNet itself). The classifier ``fc.*``
    is dropped; the tensors are carried over, not copied. ``source`` names the checkpoint
    in messages.

    Raises ``ValueError`` naming the offending keys if the state dict is not a complete
    OD-ResNet: unknown keys, incomplete blocks or attention branches, block convs that are
    not ODConvs in part of a stage (or in none: a plain ResNet), or ODConvs whose
    ``kernel_num`` differs.
    """
    prefix = normalize_prefix(prefix)
    report = ODConvReport(source=source, num_input=len(state_dict), prefix=prefix)
    state_dict, had_ddp_prefix = strip_ddp_prefix(state_dict)
    structure = resnet_structure(state_dict, source, attention=True)

    layers = odconv_layers(state_dict)
    convs = [k[: -len(".weight")] for k in state_dict if _BLOCK_CONV.fullmatch(k)]
    if not layers:
        raise ValueError(
            f"{source}: no ODConv (no stacked 5-D block conv weights, no attention branches): a plain "
            "ResNet? Convert it with torchvision-resnet (condseg.checkpoint.torchvision_resnet)"
        )
    stages, mixed = [], []
    for s in (1, 2, 3, 4):
        in_stage = [c for c in convs if c.startswith(f"layer{s}.")]
        od = [c for c in in_stage if c in layers]
        stages.append(bool(od))
        if od and len(od) != len(in_stage):
            mixed += [c for c in in_stage if c not in layers]
    by_kernel_num = defaultdict(list)
    for conv, n in layers.items():
        by_kernel_num[n].append(conv)
    problems = [f"plain (4-D) convs in an ODConv stage: {preview(mixed)}"] if mixed else []
    if len(by_kernel_num) > 1:
        problems.append(
            "ODConvs with different kernel_num: "
            + "; ".join(f"{n} in {preview(c, 3)}" for n, c in sorted(by_kernel_num.items()))
        )
    problems += _attention_problems(state_dict, layers)
    if problems:
        raise ValueError(f"{source}: not a consistent OD-ResNet: " + "; ".join(problems))

    kernel_num = next(iter(by_kernel_num))
    report.kernel_num = kernel_num
    report.reduction = _reduction(state_dict, layers)
    which = "" if all(stages) else " in " + ", ".join(f"res{s + 2}" for s, on in enumerate(stages) if on)
    report.architecture = f"OD-{structure.name()}, ODConv {kernel_num}x{which}"
    report.config = _odconv_config(structure, stages, kernel_num, report.reduction)
    report.checks.append(f"kernel_num {kernel_num} in all {len(layers)} ODConvs, attention branches complete")
    if report.reduction is None:
        report.warnings.append(
            "the attention widths fit no single reduction (max(int(C_in * r), 16)): set MODEL.ODCONV.REDUCTION by hand"
        )
    converted = rename(state_dict, report, attention=True, had_ddp_prefix=had_ddp_prefix)
    return converted, report


def convert_file(path: str, model: Optional[nn.Module] = None, prefix: str = "") -> Tuple[StateDict, ODConvReport]:
    """Read an official OD-ResNet checkpoint (the training script's, weights under
    ``"state_dict"`` with ``module.`` prefixes, or a bare state dict) and convert it with
    ``prefix``; checked with :func:`fit_to_model` when a ``model`` is given (condseg's
    OD-ResNet, or a detector on it when ``prefix`` is ``"backbone.bottom_up."``)."""
    state_dict, report = convert_odconv_resnet(load_checkpoint_state_dict(path), source=path, prefix=prefix)
    if model is not None:
        state_dict = fit_to_model(state_dict, model, report)
    return state_dict, report
