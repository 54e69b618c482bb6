"""ODConv temperature annealing: the published schedule, applied before each step and reset
to 1 after it (so evaluation and saved models run at T = 1)."""
import types

import pytest
from torch import nn

from condseg.engine.hooks import ODConvTemperature, annealed_temperature, set_temperature
from condseg.layers import ODConv2d


def test_schedule_is_the_published_linear_anneal():
    # T = 1 + max(0, 29 * (1 - t / N)), t counting from 1
    assert annealed_temperature(1, 30, 100) == pytest.approx(1 + 29 * 0.99)
    assert annealed_temperature(50, 30, 100) == pytest.approx(15.5)
    assert annealed_temperature(100, 30, 100) == 1.0
    assert annealed_temperature(1000, 30, 100) == 1.0
    assert annealed_temperature(1, 30, 0) == 1.0


class _Storage:
    def __init__(self):
        self.scalars = []

    def put_scalar(self, name, value, **kwargs):
        self.scalars.append((name, value))


def test_hook_sets_temperature_for_the_step_and_one_after_it():
    model = nn.Sequential(ODConv2d(4, 4, 3, padding=1, kernel_num=2), nn.ReLU(), ODConv2d(4, 4, 1, kernel_num=2))
    seen = []
    hook = ODConvTemperature(init=30, num_iters=10)
    hook.trainer = types.SimpleNamespace(model=model, iter=0, storage=_Storage())
    hook.before_train()
    for it in range(12):
        hook.trainer.iter = it
        hook.before_step()
        seen.append([m.temperature for m in model if isinstance(m, ODConv2d)])
        hook.after_step()
        assert all(m.temperature == 1.0 for m in model if isinstance(m, ODConv2d))
    assert seen[0] == [pytest.approx(1 + 29 * 0.9)] * 2
    assert seen[9] == seen[11] == [1.0, 1.0]
    assert [v for _, v in hook.trainer.storage.scalars] == [s[0] for s in seen]


def test_hook_warns_when_there_is_nothing_to_anneal(caplog):
    hook = ODConvTemperature(init=30, num_iters=10)
    hook.trainer = types.SimpleNamespace(model=nn.Linear(2, 2))
    hook.before_train()
    assert "no ODConv layer" in caplog.text
    assert set_temperature(nn.Linear(2, 2), 5.0) == 0
