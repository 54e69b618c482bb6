"""A built condseg model made ready to trace: a copy in eval mode whose dynamic layers
run a formulation with no shape-dependent dispatch.

* :class:`~condseg.layers.ODConv2d`: ``"pointwise"`` where the kernel is shared by all
  samples, else ``"batch_groups"`` (the published one: per-sample kernels by a broadcast
  product, one grouped convolution). ``"auto"`` picks by the input's size and the
  ``grouped`` / ``per_sample`` forms choose whether to fold the attentions into the
  kernels by size too: on symbolic sizes those choices are guards the exporter cannot
  keep. Outputs are equal up to float rounding (``condseg.layers.odconv_formulations``).
* :class:`~condseg.layers.DeformConv2d`: ``"torchvision"``, which exports as ONNX
  ``DeformConv`` (opset 19) and which ONNX Runtime runs; the ``grid_sample`` form splits
  the batch by a size rule, a guard on symbolic sizes.
"""
import copy

from torch import nn

from condseg.layers import DeformConv2d, ODConv2d

__all__ = ["prepare_for_export", "EXPORT_IMPLS"]

#: which formulation each dynamic layer type gets in an exported model
EXPORT_IMPLS = {"ODConv2d": "batch_groups (pointwise for a shared kernel)", "DeformConv2d": "torchvision"}


def prepare_for_export(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` on the CPU in eval mode, its ODConv / deformable layers set to the
    formulations of :data:`EXPORT_IMPLS` (``model`` itself is left as it is)."""
    model = copy.deepcopy(model).cpu().eval()
    for module in model.modules():
        if isinstance(module, ODConv2d):
            module.impl = "pointwise" if module.shared_kernel else "batch_groups"
        elif isinstance(module, DeformConv2d):
            module.impl = "torchvision"
    for p in model.parameters():
        p.requires_grad_(False)
    return model
