"""ODConv's attention branch: the globally pooled input -> (hidden layer) -> one 1x1-conv
head per attention (channel, filter, spatial, kernel), as in the official code."""
import math
from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ATTENTIONS", "KERNEL_ACTIVATIONS", "ODAttention"]

ATTENTIONS = ("channel", "filter", "spatial", "kernel")
KERNEL_ACTIVATIONS = ("softmax", "sigmoid")


class ODAttention(nn.Module):
    """The attention branch: pooled input -> (hidden layer) -> one 1x1-conv head per attention.

    Submodules (official names): ``fc`` (1x1 conv ``C_in -> A``, no bias) and ``bn``
    (``BatchNorm2d(A)``) when ``hidden``; ``{channel,filter,spatial,kernel}_fc`` (1x1 convs
    with bias) for the heads in ``heads``. ``temperature`` is a plain float (not saved).
    """

    def __init__(
        self,
        in_channels: int,
        head_sizes: Dict[str, int],
        *,
        hidden_channels: int,
        hidden: bool = True,
        kernel_activation: str = "softmax",
        temperature: float = 1.0,
    ):
        super().__init__()
        self.temperature = float(temperature)
        self.kernel_activation = kernel_activation
        self.hidden = hidden
        feat = in_channels
        if hidden:
            self.fc = nn.Conv2d(in_channels, hidden_channels, 1, bias=False)
            self.bn = nn.BatchNorm2d(hidden_channels)
            feat = hidden_channels
        self.heads = tuple(name for name in ATTENTIONS if name in head_sizes)
        for name in self.heads:
            setattr(self, f"{name}_fc", nn.Conv2d(feat, head_sizes[name], 1, bias=True))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: Kaiming-normal (fan_out, ReLU) 1x1 convs, zero biases, BN 1/0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``x``: ``[B, C_in, H, W]`` -> dict of the present heads: ``channel [B, C_in]``,
        ``filter [B, C_out]``, ``spatial [B, k, k]``, ``kernel [B, n]``."""
        b = x.shape[0]
        h = x.mean(dim=(2, 3), keepdim=True)  # [B, C_in, 1, 1]
        if self.hidden:
            if b == 1 and isinstance(self.bn, nn.BatchNorm2d) and self.bn.training:
                raise ValueError(
                    "ODConv2d: the attention BatchNorm normalises pooled [B, A, 1, 1] vectors over the batch, "
                    "so train mode needs a batch of at least 2 samples (got 1). Use a larger batch, put the "
                    "attention BN in eval mode (running statistics, e.g. MODEL.ODCONV.ATTENTION_BN_EVAL), "
                    "or freeze it (FrozenBatchNorm2d)."
                )
            h = F.relu(self.bn(self.fc(h)))
        h = h.flatten(1)  # [B, A] (or [B, C_in] without hidden layer)
        out = {}
        for name in self.heads:
            head = getattr(self, f"{name}_fc")
            logits = F.linear(h, head.weight.flatten(1), head.bias) / self.temperature
            if name == "kernel" and self.kernel_activation == "softmax":
                out[name] = torch.softmax(logits, dim=1)
            else:
                out[name] = torch.sigmoid(logits)
        if "spatial" in out:
            k = math.isqrt(out["spatial"].shape[1])
            out["spatial"] = out["spatial"].view(b, k, k)  # row-major: channel u*k+v -> tap (u, v)
        return out
