"""AdelaiDet CondInst checkpoints -> condseg.

AdelaiDet's names differ from condseg's in three places:

* the FCOS head is ``proposal_generator.fcos_head``, condseg's ``proposal_generator.head``;
* the mask branch's 1x1 output conv is the last entry of its tower, ``mask_branch.tower.{N}``
  (N = ``MODEL.CONDINST.MASK_BRANCH.NUM_CONVS``), condseg's ``mask_branch.predictor``;
* the dynamic mask head saves two buffers: ``mask_head._iter`` (a training step counter)
  and ``mask_head.sizes_of_interest``, which condseg derives from
  ``MODEL.FCOS.SIZES_OF_INTEREST`` (a non-persistent buffer). Both are dropped; the sizes
  are checked against the model.

Everything else keeps its name: the backbone, the controller, the rest of the mask branch,
and the semantic head of ``MASK_BRANCH.SEMANTIC_LOSS_ON`` (``mask_branch.seg_head``,
``mask_branch.logits``), which is used in training only.

:func:`convert_adelaidet_condinst` renames (no model needed); :func:`fit_to_model` checks
the result against the condseg model it is for; :func:`convert_file` does both for a file.
"""
import re
from dataclasses import dataclass
from typing import List, Optional, Tuple

from torch import nn

from .common import ConversionReport, StateDict, check_against_model, load_checkpoint_state_dict, preview

__all__ = [
    "CondInstReport", "convert_adelaidet_condinst", "mask_branch_output_index", "check_sizes_of_interest",
    "drop_unused_semantic_head", "fit_to_model", "convert_file",
]

FCOS_HEAD = ("proposal_generator.fcos_head.", "proposal_generator.head.")
PREDICTOR = "mask_branch.predictor."
SEMANTIC_HEAD = ("mask_branch.seg_head.", "mask_branch.logits.")
UNCHANGED = ("backbone.", "controller.", "mask_branch.refine.", "mask_branch.tower.") + SEMANTIC_HEAD
ITER = "mask_head._iter"
SIZES_OF_INTEREST = "mask_head.sizes_of_interest"
_TOWER_ENTRY = re.compile(r"mask_branch\.tower\.(\d+)\.")


@dataclass
class CondInstReport(ConversionReport):
    """:class:`ConversionReport` plus the checkpoint's ``mask_head.sizes_of_interest``
    (None if it has none)."""

    sizes_of_interest: Optional[List[int]] = None


def mask_branch_output_index(state_dict: StateDict, source: str = "checkpoint") -> int:
    """N of the mask branch's output conv ``mask_branch.tower.{N}``: the last tower entry,
    which must be a plain conv (``weight`` without a sub-index) with a 1x1 kernel."""
    indices = [int(m.group(1)) for m in map(_TOWER_ENTRY.match, state_dict) if m]
    if not indices:
        raise ValueError(f"{source}: no mask branch (mask_branch.tower.*): not a CondInst checkpoint")
    last = max(indices)
    weight = state_dict.get(f"mask_branch.tower.{last}.weight")
    if weight is None or weight.dim() != 4 or tuple(weight.shape[2:]) != (1, 1):
        found = "missing" if weight is None else f"shape {list(weight.shape)}"
        raise ValueError(
            f"{source}: mask_branch.tower.{last}.weight, the last mask branch tower entry, should be "
            f"the 1x1 output conv, but is {found}"
        )
    return last


def _condseg_name(key: str, renames: List[Tuple[str, str]]) -> Optional[str]:
    """condseg's name for an AdelaiDet key: by the first matching ``(old prefix, new prefix)``
    rule, else unchanged if it is one of the known unchanged parts, else None."""
    for old, new in renames:
        if key.startswith(old):
            return new + key[len(old):]
    return key if key.startswith(UNCHANGED) else None


def _drop_mask_head_buffer(report: CondInstReport, key: str, value) -> None:
    """Record ``mask_head._iter`` / ``mask_head.sizes_of_interest`` as dropped, keeping the
    sizes for :func:`check_sizes_of_interest`."""
    if key == SIZES_OF_INTEREST:
        report.sizes_of_interest = [int(v) for v in value.flatten().tolist()]
        report.dropped[key] = "condseg derives it from MODEL.FCOS.SIZES_OF_INTEREST"
    else:
        step = f" ({int(value.flatten()[0].item())})" if value.numel() else ""
        report.dropped[key] = "training step counter" + step


def convert_adelaidet_condinst(state_dict: StateDict, source: str = "checkpoint") -> Tuple[StateDict, CondInstReport]:
    """Rename an AdelaiDet CondInst state dict to condseg's names (the tensors themselves
    are not copied). ``source`` names the checkpoint in messages.

    Raises ``ValueError`` naming the keys that have no known condseg name.
    """
    report = CondInstReport(source=source, num_input=len(state_dict))
    renames = [FCOS_HEAD, (f"mask_branch.tower.{mask_branch_output_index(state_dict, source)}.", PREDICTOR)]
    converted, unknown = {}, []
    for key, value in state_dict.items():
        if key in (ITER, SIZES_OF_INTEREST):
            _drop_mask_head_buffer(report, key, value)
            continue
        name = _condseg_name(key, renames)
        if name is None:
            unknown.append(key)
            continue
        converted[name] = value
        if name != key:
            report.renamed[key] = name
    if unknown:
        raise ValueError(f"{source}: keys with no known condseg name (not AdelaiDet CondInst?): {preview(unknown)}")
    return converted, report


def check_sizes_of_interest(report: CondInstReport, model: nn.Module) -> None:
    """Raise ``ValueError`` if the checkpoint's ``mask_head.sizes_of_interest`` differ from
    the model's (``MODEL.FCOS.SIZES_OF_INTEREST`` plus twice its last value)."""
    ours = getattr(model, "sizes_of_interest", None)
    if report.sizes_of_interest is None or ours is None:
        report.warnings.append(f"{SIZES_OF_INTEREST} not checked (not in the checkpoint, or not in the model)")
        return
    theirs = report.sizes_of_interest
    ours = [int(v) if v == int(v) else v for v in ours.tolist()]
    if theirs != ours:
        raise ValueError(
            f"{report.source}: {SIZES_OF_INTEREST} is {theirs}, but the model's is {ours} "
            f"(MODEL.FCOS.SIZES_OF_INTEREST {ours[:-1]} and twice the last value): set "
            f"MODEL.FCOS.SIZES_OF_INTEREST to {theirs[:-1]}"
        )
    report.checks.append(f"{SIZES_OF_INTEREST} {theirs} equal the model's (MODEL.FCOS.SIZES_OF_INTEREST)")


def drop_unused_semantic_head(state_dict: StateDict, model: nn.Module, report: ConversionReport) -> None:
    """Drop the checkpoint's semantic head (training only) when the model has none, with a
    warning."""
    model_keys = model.state_dict().keys()
    if any(k.startswith(SEMANTIC_HEAD) for k in model_keys):
        return
    unused = [k for k in state_dict if k.startswith(SEMANTIC_HEAD)]
    for key in unused:
        report.drop(state_dict, key, "semantic head (training only), not in the model")
    if unused:
        report.warnings.append(
            "checkpoint has the semantic head (mask_branch.seg_head.*, mask_branch.logits.*) but "
            f"MODEL.CONDINST.MASK_BRANCH.SEMANTIC_LOSS_ON is False: dropped ({len(unused)} tensors)"
        )


def fit_to_model(state_dict: StateDict, model: nn.Module, report: CondInstReport) -> StateDict:
    """Check a converted state dict against the condseg ``model`` it is for: equal sizes of
    interest, and, after dropping a semantic head the model lacks, exactly the model's keys
    and shapes. Returns the (new) state dict; raises ``ValueError`` naming the problems."""
    state_dict = dict(state_dict)
    check_sizes_of_interest(report, model)
    drop_unused_semantic_head(state_dict, model, report)
    check_against_model(state_dict, model, report)
    return state_dict


def convert_file(path: str, model: Optional[nn.Module] = None) -> Tuple[StateDict, CondInstReport]:
    """Read an AdelaiDet CondInst checkpoint (``.pth`` trainer checkpoint or bare state dict,
    or ``.pkl``) and convert it; checked against ``model`` when one is given."""
    state_dict, report = convert_adelaidet_condinst(load_checkpoint_state_dict(path), source=path)
    if model is not None:
        state_dict = fit_to_model(state_dict, model, report)
    return state_dict, report
