"""A tiny CondInst checkpoint made in the tests, whose masks are known in advance.

The detector keeps its random weights (so what it detects depends on the image), but
the controller is set to predict the same dynamic mask head for every location: a
diamond of L1 radius ``RADIUS`` (in units of the level's size of interest, 64 px on
P3) around the instance's own location, from the relative coordinates alone. So every
predicted mask is a small diamond where the model put an instance: masks that are
neither empty nor the whole frame, at places only the model knows.
"""
import os

import torch
from detectron2.modeling import build_model

from condseg.config_setup import setup_cfg

QUICKSTART = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "quickstart", "condinst_R18_shapes.yaml")
RADIUS = 0.4
SHARPNESS = 20.0
TINY_OPTS = [
    "MODEL.RESNETS.STEM_OUT_CHANNELS", 16, "MODEL.RESNETS.RES2_OUT_CHANNELS", 16,
    "MODEL.FPN.OUT_CHANNELS", 32, "MODEL.CONDINST.MASK_BRANCH.CHANNELS", 32,  # GN: 32 groups
    "MODEL.FCOS.NUM_CLS_CONVS", 1, "MODEL.FCOS.NUM_BOX_CONVS", 1,
    "MODEL.FCOS.POST_NMS_TOPK_TEST", 3, "MODEL.FCOS.INFERENCE_TH_TEST", 0.0,
    "INPUT.MIN_SIZE_TEST", 128, "INPUT.MAX_SIZE_TEST", 192,  # P7 >= 2 values per GN group "SEED", 0,
]


def diamond_params(channels: int = 8, in_feats: int = 8) -> torch.Tensor:
    """The 169 dynamic parameters (3 layers, 8 channels, relative coordinates) of the
    diamond head: ``logit = SHARPNESS * (RADIUS - |dx| - |dy|)``."""
    c_in = in_feats + 2
    w0 = torch.zeros(channels, c_in)
    w0[0, 0], w0[1, 0], w0[2, 1], w0[3, 1] = 1.0, -1.0, 1.0, -1.0  # relu(+-dx), relu(+-dy)
    w1 = torch.zeros(channels, channels)
    w1[0, :4] = 1.0  # |dx| + |dy|
    w2 = torch.zeros(1, channels)
    w2[0, 0] = -SHARPNESS
    b0, b1, b2 = torch.zeros(channels), torch.zeros(channels), torch.tensor([SHARPNESS * RADIUS])
    return torch.cat([w0.flatten(), w1.flatten(), w2.flatten(), b0, b1, b2])


def make_tiny_model(folder: str):
    """Write ``config.yaml`` and ``model.pth`` (the tiny diamond-mask CondInst) into
    ``folder``; returns their paths."""
    torch.manual_seed(0)
    cfg = setup_cfg(QUICKSTART, TINY_OPTS, freeze=False)
    model = build_model(cfg)
    with torch.no_grad():
        params = diamond_params(cfg.MODEL.CONDINST.MASK_HEAD.CHANNELS, cfg.MODEL.CONDINST.MASK_BRANCH.OUT_CHANNELS)
        assert model.controller.bias.numel() == params.numel()
        model.controller.weight.zero_()
        model.controller.bias.copy_(params)
    config, weights = os.path.join(folder, "config.yaml"), os.path.join(folder, "model.pth")
    with open(config, "w") as f:
        f.write(cfg.dump())
    torch.save({"model": model.state_dict()}, weights)
    return config, weights
