"""ResNet blocks with dynamic convolutions, drop-in for detectron2's ``BasicBlock`` /
``BottleneckBlock`` (same forward, same parameter names, so checkpoints line up):

* ``ODBasicBlock`` / ``ODBottleneckBlock``: the OD-ResNet layout (Li et al., ICLR 2022):
  every block conv (1x1 and 3x3) is an :class:`~condseg.layers.ODConv2d`, the stride
  sits on the 3x3 conv, the shortcut stays an ordinary 1x1 conv + norm. Keys:
  ``convK.weight`` (stacked ``(n, C_out, C_in, k, k)``), ``convK.attention.*``,
  ``convK.norm.*``, ``shortcut.*``.
* ``DeformBasicBlock`` / ``DeformBottleneckBlock``: the 3x3 ``conv2`` is a deformable
  convolution (DCNv2 when modulated, else DCNv1) fed by ``conv2_offset``, a plain 3x3
  conv predicting the offsets (and mask logits), zero-initialised, as in detectron2's
  ``DeformBottleneckBlock`` (same names), on :class:`~condseg.layers.DeformConv2d`
  (``torchvision.ops.deform_conv2d`` or its ``grid_sample`` formulation, ``impl``).
"""
import torch
import torch.nn.functional as F
from detectron2.layers import get_norm
from detectron2.modeling.backbone.resnet import BasicBlock, BottleneckBlock

from condseg.layers import DeformConv2d, ODConv2d, offset_predictor, split_offset_mask

__all__ = ["ODBasicBlock", "ODBottleneckBlock", "DeformBasicBlock", "DeformBottleneckBlock"]


def _geometry(conv) -> dict:
    """The shape arguments of a (square-kernel) convolution, to build its replacement."""
    return {
        "in_channels": conv.in_channels,
        "out_channels": conv.out_channels,
        "kernel_size": conv.kernel_size[0],
        "stride": conv.stride[0],
        "padding": conv.padding[0],
        "dilation": conv.dilation[0],
        "groups": conv.groups,
    }


def _odconv(conv, norm: str, kernel_num: int, reduction: float, impl: str, autotune: bool) -> ODConv2d:
    """An ODConv2d with the geometry of the detectron2 ``Conv2d`` it replaces."""
    return ODConv2d(
        **_geometry(conv), kernel_num=kernel_num, reduction=reduction, impl=impl, autotune=autotune,
        norm=get_norm(norm, conv.out_channels),
    )


class ODBasicBlock(BasicBlock):
    """detectron2's ``BasicBlock`` with ODConv 3x3 convs (``conv1`` carries the stride)."""

    def __init__(self, in_channels, out_channels, *, stride=1, norm="BN", kernel_num=4, reduction=0.0625, impl="auto",
                 autotune=False):
        super().__init__(in_channels, out_channels, stride=stride, norm=norm)
        self.conv1 = _odconv(self.conv1, norm, kernel_num, reduction, impl, autotune)
        self.conv2 = _odconv(self.conv2, norm, kernel_num, reduction, impl, autotune)


class ODBottleneckBlock(BottleneckBlock):
    """detectron2's ``BottleneckBlock`` with ODConv 1x1/3x3/1x1 convs; the stride is on the
    3x3 conv (``stride_in_1x1=False``), as in the published OD-ResNet."""

    def __init__(self, in_channels, out_channels, *, kernel_num=4, reduction=0.0625, impl="auto", autotune=False,
                 **kwargs):
        if kwargs.get("stride_in_1x1"):
            raise ValueError(
                "ODConv stages put the stride on the 3x3 conv, as the published OD-ResNet: "
                "set MODEL.RESNETS.STRIDE_IN_1X1 False"
            )
        super().__init__(in_channels, out_channels, **kwargs)
        norm = kwargs.get("norm", "BN")
        for name in ("conv1", "conv2", "conv3"):
            setattr(self, name, _odconv(getattr(self, name), norm, kernel_num, reduction, impl, autotune))


class _DeformConv2:
    """Mixin: replace the 3x3 ``conv2`` by ``conv2_offset`` + a deformable conv."""

    def _make_deformable(self, norm, modulated: bool, deform_num_groups: int, impl: str):
        conv = self.conv2
        self.deform_modulated = modulated
        self.conv2_offset = offset_predictor(
            conv.in_channels,
            conv.kernel_size[0],
            stride=conv.stride[0],
            padding=conv.padding[0],
            dilation=conv.dilation[0],
            deformable_groups=deform_num_groups,
            modulated=modulated,
        )
        deform = DeformConv2d(
            **_geometry(conv), deformable_groups=deform_num_groups, bias=False, norm=get_norm(norm, conv.out_channels),
            impl=impl,
        )
        with torch.no_grad():  # keep the block's (c2_msra) init of the 3x3 weights
            deform.weight.copy_(conv.weight)
        self.conv2 = deform

    def _conv2(self, x: torch.Tensor) -> torch.Tensor:
        offset, mask = split_offset_mask(self.conv2_offset(x), modulated=self.deform_modulated)
        return self.conv2(x, offset, mask)


class DeformBasicBlock(_DeformConv2, BasicBlock):
    """detectron2's ``BasicBlock`` whose second 3x3 conv is deformable."""

    def __init__(self, in_channels, out_channels, *, stride=1, norm="BN", deform_modulated=True, deform_num_groups=1,
                 deform_impl="auto"):
        super().__init__(in_channels, out_channels, stride=stride, norm=norm)
        self._make_deformable(norm, deform_modulated, deform_num_groups, deform_impl)

    def forward(self, x):
        out = F.relu_(self.conv1(x))
        out = self._conv2(out)
        out += x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out)


class DeformBottleneckBlock(_DeformConv2, BottleneckBlock):
    """detectron2's ``BottleneckBlock`` whose 3x3 conv is deformable (detectron2's
    ``DeformBottleneckBlock``, without its compiled op)."""

    def __init__(self, in_channels, out_channels, *, deform_modulated=True, deform_num_groups=1, deform_impl="auto",
                 **kwargs):
        super().__init__(in_channels, out_channels, **kwargs)
        self._make_deformable(kwargs.get("norm", "BN"), deform_modulated, deform_num_groups, deform_impl)

    def forward(self, x):
        out = F.relu_(self.conv1(x))
        out = F.relu_(self._conv2(out))
        out = self.conv3(out)
        out += x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out)
