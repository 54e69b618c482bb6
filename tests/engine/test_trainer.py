"""Trainer pieces that the CLI tests do not pin down: optimizer choice, evaluator tasks."""
import pytest
import torch

import condseg  # noqa: F401
from condseg.config import get_condseg_cfg
from condseg.engine import Trainer


def test_adamw_optimizer_keeps_detectron2_parameter_rules(fcos_cfg):
    cfg = fcos_cfg("SOLVER.OPTIMIZER", "ADAMW", "SOLVER.BASE_LR", "0.001", "SOLVER.WEIGHT_DECAY", "0.05",
               "SOLVER.WEIGHT_DECAY_NORM", "0.0")
    model = Trainer.build_model(cfg)
    opt = Trainer.build_optimizer(cfg, model)
    assert isinstance(opt, torch.optim.AdamW)
    decays = {g["weight_decay"] for g in opt.param_groups}
    assert decays == {0.0, 0.05}  # norm layers are not decayed, convs are
    assert sum(len(g["params"]) for g in opt.param_groups) == sum(1 for p in model.parameters() if p.requires_grad)


def test_sgd_is_the_default_optimizer(fcos_cfg):
    assert get_condseg_cfg().SOLVER.OPTIMIZER == "SGD"
    cfg = fcos_cfg("SOLVER.OPTIMIZER", "SGD")  # the quickstart config itself picks AdamW
    opt = Trainer.build_optimizer(cfg, Trainer.build_model(cfg))
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.9


def test_unknown_optimizer_names_the_key(fcos_cfg):
    cfg = fcos_cfg("SOLVER.OPTIMIZER", "LION")
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        Trainer.build_optimizer(cfg, Trainer.build_model(cfg))
