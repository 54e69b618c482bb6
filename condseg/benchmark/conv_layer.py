"""One conv layer at a ResNet-50 stage shape, for the odconv and dcn cases: its input
and one run of it (training step or inference)."""

# ResNet-50 stages at an 800x1216 input: channels of the 3x3 convs and the stride.
RESNET50_STAGES = {"res2": (64, 4), "res3": (128, 8), "res4": (256, 16), "res5": (512, 32)}
INPUT_HW = (800, 1216)


def conv_input(stage: str, batch: int, device: str, seed: int = 0):
    """Random input ``(batch, C, H / stride, W / stride)`` of ``stage``'s 3x3 convs."""
    import torch

    channels, stride = RESNET50_STAGES[stage]
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, INPUT_HW[0] // stride, INPUT_HW[1] // stride, generator=g).to(device)


def conv_run(layer, x, mode, call=None):
    """One run of ``layer`` on ``x``: train = forward + backward of ``sum(out * g)``
    (returns the output and the input and weight gradients), infer = forward, no grad."""
    import torch

    call = call or layer
    if mode == "infer":
        layer.eval()

        def run():
            with torch.no_grad():
                return call(x)

        return run
    x.requires_grad_(True)
    g = torch.randn_like(call(x).detach())

    def run():
        out = call(x)
        (out * g).sum().backward()
        grads = (out.detach(), x.grad, layer.weight.grad)
        x.grad = None
        layer.zero_grad(set_to_none=True)
        return grads

    return run
