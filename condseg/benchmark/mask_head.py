"""CondInst dynamic mask heads, the published grouped-convolution formulation
("grouped_conv") against condseg's batched matrix product ("bmm"), on mask
features (2, 8, 100, 136) with 50 and 500 instances: training step
(forward, x2 aligned upsampling, sigmoid, dice loss against (200, 272) masks,
backward; also "bmm+fused_loss", condseg's training path, where heads,
upsampling, sigmoid, dice and their gradients run together in cache-sized
blocks of instances) and inference (forward, x2 aligned upsampling, sigmoid,
no grad; also "bmm+fused_probs", condseg's inference path, the same in blocks).
"""
from .harness import Case


def runs(device: str, impl: str, num_instances: int, mode: str, seed: int = 0):
    """Build the inputs once and return a zero-argument function doing one run.

    ``impl``: ``grouped_conv`` (the published formulation: grouped convolutions, then
    upsampling, sigmoid and dice on the full-resolution tensors), ``bmm`` (condseg's heads,
    same loss computation), ``bmm+fused_loss`` (condseg's training path,
    ``dynamic_mask_dice_loss``) or ``bmm+fused_probs`` (condseg's inference path,
    ``dynamic_mask_probs``).
    """
    import torch

    from condseg.layers import (
        aligned_bilinear, dice_loss, dynamic_layer_shapes, dynamic_mask_dice_loss, dynamic_mask_heads,
        dynamic_mask_probs,
    )

    fused = "+fused" in impl
    impl = impl.split("+")[0]

    g = torch.Generator().manual_seed(seed)
    b, c, h, w = 2, 8, 100, 136
    feats = torch.randn(b, c, h, w, generator=g).to(device)
    params = (0.5 * torch.randn(num_instances, 169, generator=g)).to(device)
    im_inds = torch.randint(0, b, (num_instances,), generator=g).to(device)
    # FCOS locations on their level's grid, with that level's size of interest
    levels = torch.randint(0, 5, (num_instances,), generator=g)
    strides = torch.tensor([8, 16, 32, 64, 128])[levels]
    xs = torch.randint(0, 100, (num_instances,), generator=g) * strides % (w * 8) + strides // 2
    ys = torch.randint(0, 100, (num_instances,), generator=g) * strides % (h * 8) + strides // 2
    locations = torch.stack((xs, ys), dim=1).float().to(device)
    soi = torch.tensor([64.0, 128, 256, 512, 1024])[levels].to(device)
    gt = (torch.rand(num_instances, 1, 2 * h, 2 * w, generator=g) > 0.5).float().to(device)
    shapes = dynamic_layer_shapes(c, 8, 3)

    def heads(p, f):
        return dynamic_mask_heads(f, p, im_inds, locations, soi, shapes, mask_feat_stride=8, impl=impl)

    if mode == "train":
        params.requires_grad_(True)
        feats.requires_grad_(True)

        def run():
            if fused:
                loss = dynamic_mask_dice_loss(feats, params, im_inds, locations, soi, shapes, gt).mean()
            else:
                loss = dice_loss(aligned_bilinear(heads(params, feats), 2).sigmoid(), gt).mean()
            loss.backward()
            out = (loss.detach(), params.grad, feats.grad)
            params.grad = None
            feats.grad = None
            return out

    else:

        def run():
            if fused:
                return dynamic_mask_probs(feats, params, im_inds, locations, soi, shapes, 8, 2)
            with torch.no_grad():
                return aligned_bilinear(heads(params, feats), 2).sigmoid()

    return run


def plan(devices):
    impls = {"train": ("grouped_conv", "bmm", "bmm+fused_loss"), "infer": ("grouped_conv", "bmm", "bmm+fused_probs")}
    return [
        {"case": "mask-head", "device": d, "impl": impl, "num_instances": n, "mode": mode}
        for d in devices
        for mode in ("train", "infer")
        for n in (50, 500)
        for impl in impls[mode]
    ]


CASE = Case(plan, runs, "grouped_conv", ("num_instances",), help=__doc__)
