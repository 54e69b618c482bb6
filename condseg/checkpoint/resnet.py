"""torchvision-style ResNet state dicts -> condseg's ResNet (detectron2's layout): the key
mapping, the structure checks, the renaming and the checks against a model, shared by the
torchvision converter (:mod:`condseg.checkpoint.torchvision_resnet`, which has the table of
names) and the OD-ResNet one (:mod:`condseg.checkpoint.odconv`, the same names plus ODConv's).

**Where the keys go** (``prefix``). The converters return the ResNet's own names
(``prefix=""``), which load with ``load_state_dict`` into the ResNet module itself. A
detector's ``MODEL.WEIGHTS`` file must name the backbone as the detector does: condseg's
(and detectron2's) FPN detectors keep the ResNet at ``backbone.bottom_up``, so the backbone
subcommands of ``tools/convert_checkpoint.py`` write the keys with
``prefix=DETECTOR_PREFIX`` (``"backbone.bottom_up."``). Such a ``.pth`` file loads with
exact names (``DetectionCheckpointer`` reads a ``.pth`` file's names as they are): every
backbone tensor lands, shapes are checked, and the log lists the detector's other weights
(FPN, heads) as not found in the checkpoint, which is expected for an ImageNet
initialisation. A file with the bare names (``--prefix ""``) matches nothing in a
detector by exact names: the detector would silently start from random weights, with
every backbone key reported as unused, unless it is loaded with detectron2's suffix
matching, ``MODEL.WEIGHTS "file.pth?matching_heuristics=True"`` (which also skips
tensors of the wrong shape with only a log warning). Hence the prefixed default.
"""
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from .common import ConversionReport, StateDict, check_against_model, preview, strip_common_suffix

__all__ = [
    "DETECTOR_PREFIX", "INPUT_CONFIG", "ResNetReport", "ResNetStructure", "resnet_key", "resnet_structure",
    "rename", "strip_ddp_prefix", "normalize_prefix", "fit_to_model", "check_input_config", "config_opts",
]

DETECTOR_PREFIX = "backbone.bottom_up."  # where condseg's FPN detectors keep their ResNet
CLASSIFIER = "fc."
DDP_PREFIX = "module."
BN_PARAMS = ("weight", "bias", "running_mean", "running_var")  # plus the optional num_batches_tracked
NUM_BATCHES_TRACKED = "num_batches_tracked"
# torchvision's ImageNet preprocessing in detectron2's terms (0-255 pixels); the official
# OD-ResNets were trained with it too
INPUT_CONFIG = {
    "INPUT.FORMAT": "RGB",
    "MODEL.PIXEL_MEAN": [123.675, 116.28, 103.53],
    "MODEL.PIXEL_STD": [58.395, 57.12, 57.375],
}
# (bottleneck, blocks per stage) -> MODEL.RESNETS.DEPTH, for the depths condseg builds
DEPTHS = {
    (False, (2, 2, 2, 2)): 18,
    (False, (3, 4, 6, 3)): 34,
    (True, (3, 4, 6, 3)): 50,
    (True, (3, 4, 23, 3)): 101,
    (True, (3, 8, 36, 3)): 152,
}
# detectron2's defaults of the MODEL.RESNETS keys the report may set
RESNETS_DEFAULTS = {"STEM_OUT_CHANNELS": 64, "RES2_OUT_CHANNELS": 256, "NUM_GROUPS": 1, "WIDTH_PER_GROUP": 64}

_BN = r"(?:weight|bias|running_mean|running_var|num_batches_tracked)"
_STEM = [
    (re.compile(r"conv1\.weight"), "stem.conv1.weight"),
    (re.compile(rf"bn1\.({_BN})"), r"stem.conv1.norm.\1"),
]
_BLOCK = re.compile(r"layer([1-4])\.(\d+)\.(.+)")
_IN_BLOCK = [
    (re.compile(r"conv([1-3])\.weight"), r"conv\1.weight"),
    (re.compile(rf"bn([1-3])\.({_BN})"), r"conv\1.norm.\2"),
    (re.compile(r"downsample\.0\.weight"), "shortcut.weight"),
    (re.compile(rf"downsample\.1\.({_BN})"), r"shortcut.norm.\1"),
]
# ODConv's attention branch, kept as is under the conv (see condseg.checkpoint.odconv)
ATTENTION = re.compile(
    rf"conv([1-3])\.attention\.(fc\.weight|bn\.{_BN}|(?:channel|filter|spatial|kernel)_fc\.(?:weight|bias))"
)


def resnet_key(key: str, attention: bool = False) -> Optional[str]:
    """condseg's name of a torchvision-style ResNet key (no prefix): None for the classifier
    ``fc.*``; with ``attention``, ODConv's ``layerS.J.convK.attention.*`` keys too. Raises
    ``ValueError`` for any other key."""
    if key.startswith(CLASSIFIER) and key[len(CLASSIFIER):] in ("weight", "bias"):
        return None
    for pattern, name in _STEM:
        if pattern.fullmatch(key):
            return pattern.sub(name, key)
    block = _BLOCK.fullmatch(key)
    if block:
        stage, index, rest = block.groups()
        head = f"res{int(stage) + 1}.{int(index)}."
        rules = _IN_BLOCK + ([(ATTENTION, r"conv\1.attention.\2")] if attention else [])
        for pattern, name in rules:
            if pattern.fullmatch(rest):
                return head + pattern.sub(name, rest)
    what = "an OD-ResNet" if attention else "a torchvision ResNet"
    raise ValueError(f"{key}: not a key of {what} state dict")


def config_opts(config: Dict[str, Any]) -> List[str]:
    """``config`` as ``KEY VALUE`` strings for ``--opts`` / ``cfg.merge_from_list`` (lists
    without spaces, so that each value is one shell word)."""
    def value(v):
        if isinstance(v, (list, tuple)):
            return "[" + ",".join(value(x) for x in v) + "]"
        return str(v)

    return [s for k, v in config.items() for s in (k, value(v))]


@dataclass
class ResNetReport(ConversionReport):
    """:class:`ConversionReport` plus what the checkpoint is (``architecture``), the
    ``prefix`` of the converted keys and the ``config`` settings (``KEY: value``) the model
    needs to compute what the checkpoint did."""

    architecture: str = ""
    prefix: str = ""
    config: Dict[str, Any] = field(default_factory=dict)

    def rename_summary(self) -> List[str]:
        """The renames as patterns over stages (S), blocks (J) and convs (K)."""
        patterns = defaultdict(int)
        for old, new in self.renamed.items():
            core_old = old[len(DDP_PREFIX):] if old.startswith(DDP_PREFIX) else old
            core_new = new[len(self.prefix):]
            block = _BLOCK.fullmatch(core_old)
            if block:
                tail_old = re.sub(r"^(conv|bn)[1-3]\.", r"\1K.", block.group(3))
                tail_new = re.sub(r"^conv[1-3]\.", "convK.", core_new.split(".", 2)[2])
                tail_old, tail_new = strip_common_suffix(tail_old, tail_new)
                core_old, core_new = f"layerS.J.{tail_old}", f"res{{S+1}}.J.{tail_new}"
            else:
                core_old, core_new = strip_common_suffix(core_old, core_new)
            mod = DDP_PREFIX if old.startswith(DDP_PREFIX) else ""
            patterns[f"{mod}{core_old} -> {self.prefix}{core_new}"] += 1
        return [f"  renamed  {pattern} ({n})" for pattern, n in patterns.items()]

    def summary(self, num_output: int) -> str:
        lines = [line for line in super().summary(num_output).split("\n") if not line.startswith("  renamed  ")]
        where = f"keys under {self.prefix}" if self.prefix else "bare ResNet keys (no prefix)"
        extra = self.rename_summary() + [f"  layout   {self.architecture}, {where}"]
        if self.config:
            extra.append(f"  config   the model needs: {' '.join(config_opts(self.config))}")
        return "\n".join(lines[:1] + extra + lines[1:])

    def usage(self, path: str) -> str:
        """How to load the written file ``path``."""
        if self.prefix == DETECTOR_PREFIX:
            return f"load it with MODEL.WEIGHTS {path} and the config settings above"
        if self.prefix:
            return f"its keys start with {self.prefix}: load it into a model that has the ResNet there"
        return (
            f"bare ResNet keys: load it into condseg's ResNet itself, or into a detector with "
            f"MODEL.WEIGHTS \"{path}?matching_heuristics=True\""
        )


def strip_ddp_prefix(state_dict: StateDict) -> Tuple[StateDict, bool]:
    """``state_dict`` without DDP's ``module.`` prefix if every key has it, and whether it had."""
    if state_dict and all(k.startswith(DDP_PREFIX) for k in state_dict):
        return {k[len(DDP_PREFIX):]: v for k, v in state_dict.items()}, True
    return state_dict, False


def normalize_prefix(prefix: str) -> str:
    """``prefix`` ending with a dot (``"backbone.bottom_up"`` -> ``"backbone.bottom_up."``)."""
    return prefix + "." if prefix and not prefix.endswith(".") else prefix


@dataclass
class ResNetStructure:
    """What a torchvision-style state dict holds: blocks per stage, block type, and widths."""

    blocks: Tuple[int, ...]
    bottleneck: bool
    depth: int
    stem_channels: int
    res2_channels: int
    bottleneck_channels: int  # NUM_GROUPS * WIDTH_PER_GROUP (bottlenecks only)
    groups: int

    def name(self) -> str:
        """The architecture's name: "ResNet-50", "ResNeXt-50 (32x4d)", "Wide ResNet-50 (width 128)", ..."""
        width = self.bottleneck_channels // self.groups
        if self.bottleneck and self.groups > 1:
            return f"ResNeXt-{self.depth} ({self.groups}x{width}d)"
        if self.bottleneck and width != 64:
            return f"Wide ResNet-{self.depth} (width {width})"
        return f"ResNet-{self.depth}"

    def config(self) -> Dict[str, Any]:
        """The ``MODEL.RESNETS`` settings condseg's ResNet needs for these weights (those
        that differ from detectron2's defaults, and the stride placement)."""
        values = {"STEM_OUT_CHANNELS": self.stem_channels, "RES2_OUT_CHANNELS": self.res2_channels}
        if self.bottleneck:
            values.update(NUM_GROUPS=self.groups, WIDTH_PER_GROUP=self.bottleneck_channels // self.groups)
        config = {"MODEL.RESNETS.DEPTH": self.depth}
        config.update({f"MODEL.RESNETS.{k}": v for k, v in values.items() if v != RESNETS_DEFAULTS[k]})
        if self.bottleneck:
            config["MODEL.RESNETS.STRIDE_IN_1X1"] = False
        return config


def _conv_shape(weight: torch.Tensor) -> Tuple[int, int, int]:
    """(out channels, in channels per group, kernel size) of a conv weight, stacked
    (ODConv, ``[n, C_out, C_in, k, k]``) or not."""
    return int(weight.shape[-4]), int(weight.shape[-3]), int(weight.shape[-1])


def resnet_structure(state_dict: StateDict, source: str = "checkpoint", attention: bool = False) -> ResNetStructure:
    """The structure of a torchvision-style ResNet state dict (official key names, no
    prefix): every key must map (:func:`resnet_key`), the stages must hold complete blocks
    (convs, their BatchNorms, complete downsample branches) and the block counts a depth
    that condseg builds. Raises ``ValueError`` naming ``source`` and the offending keys."""
    unknown = []
    for key in state_dict:
        try:
            resnet_key(key, attention)
        except ValueError:
            unknown.append(key)
    if unknown:
        what = "an OD-ResNet" if attention else "a torchvision ResNet"
        raise ValueError(f"{source}: keys with no condseg ResNet name (not {what} checkpoint?): {preview(unknown)}")

    blocks = defaultdict(set)
    for key in state_dict:
        m = _BLOCK.fullmatch(key)
        if m:
            blocks[int(m.group(1))].add(int(m.group(2)))
    absent = ([] if "conv1.weight" in state_dict else ["conv1.weight"]) + [
        f"layer{s}.*" for s in (1, 2, 3, 4) if s not in blocks
    ]
    if absent:
        raise ValueError(f"{source}: not a complete ResNet: no {', '.join(absent)}")
    gaps = [f"layer{s}.{j}" for s, idx in blocks.items() for j in range(max(idx) + 1) if j not in idx]
    if gaps:
        raise ValueError(f"{source}: blocks missing inside a stage: {preview(gaps)}")
    bottleneck = "layer1.0.conv3.weight" in state_dict
    counts = tuple(max(blocks[s]) + 1 for s in (1, 2, 3, 4))
    convs = (1, 2, 3) if bottleneck else (1, 2)

    required = ["conv1.weight"] + [f"bn1.{p}" for p in BN_PARAMS]
    for s in (1, 2, 3, 4):
        for j in range(counts[s - 1]):
            head = f"layer{s}.{j}."
            for k in convs:
                required += [f"{head}conv{k}.weight"] + [f"{head}bn{k}.{p}" for p in BN_PARAMS]
            if any(key.startswith(head + "downsample.") for key in state_dict):
                required += [f"{head}downsample.0.weight"] + [f"{head}downsample.1.{p}" for p in BN_PARAMS]
    missing = [k for k in required if k not in state_dict]
    extra_convs = [k for k in state_dict if not bottleneck and re.search(r"\.(conv|bn)3\.", k)]
    if missing or extra_convs:
        problems = [f"missing {preview(missing)}"] if missing else []
        problems += [f"a third conv in basic blocks: {preview(extra_convs)}"] if extra_convs else []
        raise ValueError(f"{source}: incomplete ResNet: " + "; ".join(problems))

    depth = DEPTHS.get((bottleneck, counts))
    if depth is None:
        kind = "bottleneck" if bottleneck else "basic"
        known = ", ".join(f"{d}: {list(c)}" for (b, c), d in DEPTHS.items() if b == bottleneck)
        raise ValueError(
            f"{source}: {list(counts)} {kind} blocks per stage is no ResNet depth condseg builds ({known})"
        )
    last = f"layer1.{counts[0] - 1}.conv{convs[-1]}.weight"
    width_out, width_in, _ = _conv_shape(state_dict["layer1.0.conv2.weight"])
    return ResNetStructure(
        blocks=counts,
        bottleneck=bottleneck,
        depth=depth,
        stem_channels=int(state_dict["conv1.weight"].shape[0]),
        res2_channels=_conv_shape(state_dict[last])[0],
        bottleneck_channels=width_out,
        groups=max(1, width_out // max(1, width_in)) if bottleneck else 1,
    )


def rename(
    state_dict: StateDict, report: ResNetReport, attention: bool = False, had_ddp_prefix: bool = False
) -> StateDict:
    """Rename a checked torchvision-style state dict (no DDP prefix) to condseg's names plus
    ``report.prefix``, recording renames (under the checkpoint's own names) and the dropped
    classifier in ``report``. Tensors are carried over, not copied."""
    converted = {}
    for key, value in state_dict.items():
        original = DDP_PREFIX + key if had_ddp_prefix else key
        name = resnet_key(key, attention)
        if name is None:
            report.dropped[original] = "ImageNet classifier, not part of the backbone"
            continue
        name = report.prefix + name
        converted[name] = value
        if name != original:
            report.renamed[original] = name
    return converted


def _stride_in_1x1_blocks(backbone: nn.Module) -> List[str]:
    """Names of the bottleneck blocks (``conv1``, ``conv2``, ``conv3``) of ``backbone``
    whose first 1x1 conv has a stride above 1."""
    found = []
    for name, module in backbone.named_modules():
        if all(hasattr(module, c) for c in ("conv1", "conv2", "conv3")):
            stride = getattr(module.conv1, "stride", 1)
            if max(stride if isinstance(stride, (tuple, list)) else (stride,)) > 1:
                found.append(name)
    return found


def fit_to_model(state_dict: StateDict, model: nn.Module, report: ResNetReport) -> StateDict:
    """Check a converted state dict against the ``model`` its file will be loaded into: a
    detector when the keys have ``report.prefix`` (only the model's keys under the prefix
    count), else the ResNet itself. Before the key check, ``num_batches_tracked`` buffers
    the model lacks (``FrozenBN``) are dropped, and those the checkpoint lacks (files saved
    before PyTorch 0.4.1) are added as 0, as ``BatchNorm`` does when loading such a file.
    Raises ``ValueError`` if keys or shapes differ, or if the model puts the stride of its
    bottleneck blocks on the 1x1 conv. Returns the (new) state dict."""
    state_dict = dict(state_dict)
    expected = {k: v for k, v in model.state_dict().items() if k.startswith(report.prefix)}
    frozen = [k for k in state_dict if k.endswith(NUM_BATCHES_TRACKED) and k not in expected
              and k[: -len(NUM_BATCHES_TRACKED)] + "running_mean" in expected]
    for key in frozen:
        report.drop(state_dict, key, "the model's norm keeps no batch count (FrozenBN)")
    added = [k for k in expected if k.endswith(NUM_BATCHES_TRACKED) and k not in state_dict
             and k[: -len(NUM_BATCHES_TRACKED)] + "running_mean" in state_dict]
    for key in added:
        state_dict[key] = torch.zeros((), dtype=torch.int64)
    if added:
        report.checks.append(f"{len(added)} num_batches_tracked absent from the checkpoint: added as 0")
    check_against_model(state_dict, model, report, prefix=report.prefix)

    backbone = model
    if report.prefix:
        backbone = model.get_submodule(report.prefix.rstrip("."))
    strided = _stride_in_1x1_blocks(backbone)
    if strided:
        raise ValueError(
            f"{report.source}: the model puts the stride of its bottleneck blocks on the first 1x1 conv "
            f"({preview(strided, 3)}), the checkpoint's on the 3x3 conv: set MODEL.RESNETS.STRIDE_IN_1X1 False"
        )
    if report.config.get("MODEL.RESNETS.STRIDE_IN_1X1") is False:
        report.checks.append("the model puts the stride on the 3x3 conv (MODEL.RESNETS.STRIDE_IN_1X1 False)")
    return state_dict


def check_input_config(cfg, report: ConversionReport, needed: Optional[Dict[str, Any]] = None) -> None:
    """Warn (in ``report.warnings``) if ``cfg``'s ``INPUT.FORMAT``, ``MODEL.PIXEL_MEAN`` or
    ``MODEL.PIXEL_STD`` differ from ``needed`` (torchvision's preprocessing,
    :data:`INPUT_CONFIG`, by default): the weights would see differently scaled input."""
    needed = INPUT_CONFIG if needed is None else needed
    wrong = []
    for key, want in needed.items():
        have = cfg
        for part in key.split("."):
            have = have[part]
        if isinstance(want, list):
            same = len(have) == len(want) and all(abs(float(h) - w) < 1e-3 for h, w in zip(have, want))
        else:
            same = have == want
        if not same:
            wrong.append((key, have, want))
    if wrong:
        report.warnings.append(
            "the config's input differs from the checkpoint's training input: "
            + ", ".join(f"{k} is {h}" for k, h, _ in wrong)
            + "; set " + " ".join(config_opts({k: w for k, _, w in wrong}))
        )
    else:
        report.checks.append("input format and normalisation: " + " ".join(config_opts(needed)))
