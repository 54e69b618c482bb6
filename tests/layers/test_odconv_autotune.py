"""ODConv's measured formulation (``autotune``): the choice is an allowed formulation with
the published formulation's numbers, it is cached per shape and mode in a json file that a
new process reads back without measuring, a corrupt file is ignored with a warning, the
measurement leaves the parameters' gradients and torch's random stream alone, and with
the switch off nothing is measured."""
import json
import logging

import pytest
import torch

from condseg.layers import ODConv2d
from condseg.layers import odconv_autotune as autotune
from condseg.layers.odconv_autotune import ODConvTuner, pick, shape_key, size_bucket
from condseg.layers.odconv_formulations import auto_impl, impls_for

pytestmark = pytest.mark.usefixtures("one_thread")


def _layers(seed=0, **kwargs):
    """An autotuned ODConv 3x3 and a ``batch_groups`` twin with the same weights."""
    torch.manual_seed(seed)
    tuned = ODConv2d(8, 8, 3, padding=1, autotune=True, **kwargs)
    twin = ODConv2d(8, 8, 3, padding=1, impl="batch_groups", **kwargs)
    twin.load_state_dict(tuned.state_dict())
    return tuned, twin


@pytest.fixture
def timed(monkeypatch):
    """Counts the timed runs of the measurements."""
    calls = []
    real = autotune.time_call

    def counting(run, device):
        calls.append(1)
        return real(run, device)

    monkeypatch.setattr(autotune, "time_call", counting)
    return calls


def test_the_choice_is_allowed_and_computes_the_published_numbers(tmp_path):
    tuned, twin = _layers()
    tuned.tuner = ODConvTuner(str(tmp_path))
    tuned.eval(), twin.eval()
    x = torch.randn(2, 8, 12, 12)
    with torch.no_grad():
        y = tuned(x)
        assert tuned.resolved_impl(x) in impls_for(tuned) and "batch_groups" in impls_for(tuned)
        torch.testing.assert_close(y, twin(x), rtol=1e-5, atol=1e-5)
        chosen = tuned.resolved_impl(x)
    [entry] = json.loads((tmp_path / autotune.CACHE_FILE).read_text())["machines"][autotune.machine_key(x.device)].values()
    assert set(entry["ms"]) <= set(impls_for(tuned)) and entry["impl"] == chosen


def test_training_measurement_leaves_gradients_and_the_random_stream_alone(tmp_path):
    tuned, twin = _layers(seed=1)
    tuned.tuner = ODConvTuner(str(tmp_path))
    x = torch.randn(3, 8, 10, 10)
    xs = [x.clone().requires_grad_(True) for _ in range(2)]
    g = torch.randn(3, 8, 10, 10)
    rng = torch.get_rng_state()
    y = tuned(xs[0])  # measures (train mode: forward + backward of every formulation)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in tuned.parameters()) and xs[0].grad is None
    assert "train" in next(iter(tuned.tuner.entries(autotune.machine_key(x.device))))
    (y * g).sum().backward()
    (twin(xs[1]) * g).sum().backward()
    torch.testing.assert_close(xs[0].grad, xs[1].grad, rtol=1e-4, atol=1e-5)
    for (name, p), q in zip(tuned.named_parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_the_cache_is_read_back_without_measuring_and_keyed_by_shape_and_mode(tmp_path, timed):
    tuned, _ = _layers()
    tuned.tuner = ODConvTuner(str(tmp_path))
    tuned.eval()
    x = torch.randn(2, 8, 12, 12)
    with torch.no_grad():
        first = tuned.resolved_impl(x)
    assert timed and (tmp_path / autotune.CACHE_FILE).exists()
    measured = len(timed)
    tuned.tuner = ODConvTuner(str(tmp_path))  # a new process: the file, read at first use
    with torch.no_grad():
        assert tuned.resolved_impl(x) == first
        assert tuned.resolved_impl(torch.randn(2, 8, 11, 12)) == first  # 11 and 12 share a size bucket
    assert len(timed) == measured
    with torch.no_grad():
        tuned.resolved_impl(torch.randn(2, 8, 20, 12))  # another size
    assert len(timed) > measured
    measured = len(timed)
    tuned.resolved_impl(x.requires_grad_(True))  # training: another key
    assert len(timed) > measured
    keys = json.loads((tmp_path / autotune.CACHE_FILE).read_text())["machines"][autotune.machine_key(x.device)]
    assert sorted(k.rsplit("| ", 1)[1] for k in keys) == ["infer", "infer", "train"]
    assert size_bucket(11) == size_bucket(12) == 12 and size_bucket(13) == 14 and size_bucket(50) == 56
    assert shape_key(tuned, x, True) != shape_key(ODConv2d(8, 8, 3, padding=1, kernel_num=2), x, True)


def test_a_corrupt_cache_file_is_ignored_with_one_warning(tmp_path, condseg_log):
    condseg_log.set_level(logging.INFO, logger="condseg")
    path = tmp_path / autotune.CACHE_FILE
    path.write_text('{"version": 1, "machines": ')
    tuned, _ = _layers()
    tuned.tuner = ODConvTuner(str(tmp_path))
    tuned.eval()
    with torch.no_grad():
        tuned.resolved_impl(torch.randn(2, 8, 12, 12))
        tuned.resolved_impl(torch.randn(2, 8, 20, 20))
    warnings = [r for r in condseg_log.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and str(path) in warnings[0].getMessage()
    assert len(json.loads(path.read_text())["machines"][autotune.machine_key(torch.device("cpu"))]) == 2  # replaced
    assert sum("over" in r.getMessage() for r in condseg_log.records if r.levelname == "INFO") == 2  # the choices


def test_the_switch_off_applies_the_rule_and_never_measures(monkeypatch, tmp_path):
    monkeypatch.setenv("CONDSEG_CACHE_DIR", str(tmp_path))

    def never(run, device):
        raise AssertionError("measured with autotune off")

    monkeypatch.setattr(autotune, "time_call", never)
    layer = ODConv2d(8, 8, 3, padding=1)
    x = torch.randn(2, 8, 12, 12, requires_grad=True)
    assert not layer.autotune and layer.resolved_impl(x) == auto_impl(layer, x)
    layer(x).sum().backward()
    assert not list(tmp_path.iterdir())
    layer.autotune = True  # the process-wide tuner, in CONDSEG_CACHE_DIR
    monkeypatch.setattr(autotune, "_DEFAULT", None)
    with pytest.raises(AssertionError, match="measured with autotune off"):
        layer(x)
    assert autotune.default_tuner().path == str(tmp_path / autotune.CACHE_FILE)


def test_a_tie_keeps_the_published_formulation():
    assert pick({"batch_groups": 1.00, "grouped": 0.97, "winograd": 0.99}) == "batch_groups"  # noise
    assert pick({"batch_groups": 1.00, "grouped": 0.90, "winograd": 0.60}) == "winograd"
    assert pick({"batch_groups": 1.00, "grouped": 1.20}) == "batch_groups"
    assert pick({"grouped": 1.0, "per_sample": 0.9}) == "per_sample"  # no baseline measured (out of memory)


def test_the_config_switch_reaches_every_odconv_layer(quickstart_cfg):
    from detectron2.layers import ShapeSpec

    from condseg.modeling.backbone.resnet import build_resnet

    cfg = quickstart_cfg("condinst_R18_odconv_shapes.yaml")

    def layers(c):
        return [m for m in build_resnet(c, ShapeSpec(channels=3)).modules() if isinstance(m, ODConv2d)]

    assert layers(cfg) and not any(m.autotune for m in layers(cfg))  # off by default
    cfg.MODEL.ODCONV.AUTOTUNE = True
    assert all(m.autotune and m.impl == "auto" for m in layers(cfg))
