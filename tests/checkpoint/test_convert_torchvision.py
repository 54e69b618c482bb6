"""torchvision ResNet -> condseg ResNet conversion (condseg.checkpoint.torchvision_resnet and
tools/convert_checkpoint.py torchvision-resnet), on randomly initialised torchvision
ResNet-18/50 whose BatchNorm affine parameters and running statistics are random too, so
that any mix-up of tensors changes the stage outputs."""
import os
import subprocess
import sys

import pytest
import torch
import torchvision
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model

import condseg.modeling  # noqa: F401  (registers the detectors)
from condseg.checkpoint import DETECTOR_PREFIX, save_checkpoint, torchvision_resnet, torchvision_to_condseg_key
from condseg.config import get_condseg_cfg
from condseg.modeling.backbone import build_resnet

from convert_tool import TOOL, load_tool

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CONFIG = os.path.join(ROOT, "configs", "condinst_R50_1x.yaml")
DEPTHS = {"resnet18": 18, "resnet50": 50}
NUM_KEYS = {"resnet18": 122, "resnet50": 320}  # torchvision state dict entries, fc included
CLASSIFIER = {"fc.weight", "fc.bias"}
STAGES = ["res2", "res3", "res4", "res5"]


def randomize_batchnorms(model: torch.nn.Module, seed: int) -> None:
    """Random BN affine parameters, running statistics and batch counts (torchvision's init
    makes them 1/0, which would hide a swapped weight/bias or mean/var)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(0.5 + torch.rand(n, generator=gen))
                module.bias.copy_(0.1 * torch.randn(n, generator=gen))
                module.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                module.num_batches_tracked.fill_(int(torch.randint(1, 10000, (), generator=gen)))


_MODELS = {}


def torchvision_model(name: str) -> torch.nn.Module:
    """torchvision's ``name`` with random weights, in eval mode (built once; do not modify)."""
    if name not in _MODELS:
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(weights=None)
        randomize_batchnorms(model, seed=1)
        _MODELS[name] = model.eval()
    return _MODELS[name]


def torchvision_stages(model, x):
    """torchvision's layer1..layer4 outputs, calling its modules in order."""
    y = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    outputs = []
    for layer in (model.layer1, model.layer2, model.layer3, model.layer4):
        y = layer(y)
        outputs.append(y)
    return outputs


def resnet_cfg(depth: int, *opts):
    cfg = get_condseg_cfg()
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.RESNETS.OUT_FEATURES = list(STAGES)
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    if depth in (18, 34):
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.merge_from_list(list(opts))
    return cfg


def condseg_resnet(depth: int, *opts):
    return build_resnet(resnet_cfg(depth, *opts), ShapeSpec(channels=3))


def detector_cfg(*opts):
    cfg = get_condseg_cfg()
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(["MODEL.RESNETS.STRIDE_IN_1X1", "False", *opts])
    cfg.MODEL.DEVICE = "cpu"
    return cfg


@pytest.fixture(scope="module")
def detector():
    """condseg's CondInst R-50 with torchvision's stride placement (FrozenBN backbone)."""
    return build_model(detector_cfg())


def assert_stage_outputs_equal(resnet, tv_model, seed=0):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ours = resnet.eval()(x)
        theirs = torchvision_stages(tv_model, x)
    for name, expected in zip(STAGES, theirs):
        assert ours[name].shape == expected.shape, name
        torch.testing.assert_close(ours[name], expected, rtol=1e-5, atol=1e-5, msg=lambda m: f"{name}: {m}")


# ---- the key mapping ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, name",
    [
        ("conv1.weight", "stem.conv1.weight"),
        ("bn1.running_mean", "stem.conv1.norm.running_mean"),
        ("bn1.num_batches_tracked", "stem.conv1.norm.num_batches_tracked"),
        ("layer1.0.conv1.weight", "res2.0.conv1.weight"),
        ("layer1.2.bn3.bias", "res2.2.conv3.norm.bias"),
        ("layer3.5.bn2.running_var", "res4.5.conv2.norm.running_var"),
        ("layer2.0.downsample.0.weight", "res3.0.shortcut.weight"),
        ("layer4.0.downsample.1.weight", "res5.0.shortcut.norm.weight"),
        ("layer3.22.conv2.weight", "res4.22.conv2.weight"),
        ("fc.weight", None),
        ("fc.bias", None),
    ],
)
def test_key_mapping(key, name):
    assert torchvision_to_condseg_key(key) == name


@pytest.mark.parametrize(
    "key",
    ["layer5.0.conv1.weight", "layer1.0.conv4.weight", "layer1.0.bn1.foo", "layer1.0.downsample.2.weight",
     "layer1.0.conv1.attention.fc.weight", "module.conv1.weight", "fc.extra", "classifier.weight"],
)
def test_key_mapping_rejects_other_keys(key):
    with pytest.raises(ValueError, match="not a key of a torchvision ResNet"):
        torchvision_to_condseg_key(key)


# ---- conversion: loads strictly and computes torchvision's stages -------------------------


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_converted_weights_compute_torchvision_stage_outputs(name):
    tv_model = torchvision_model(name)
    state = tv_model.state_dict()
    converted, report = torchvision_resnet.convert_torchvision_resnet(state, source=f"{name}.pth")
    assert report.num_input == NUM_KEYS[name] == len(state)
    assert set(report.dropped) == CLASSIFIER and "classifier" in report.dropped["fc.weight"]
    assert len(converted) == len(state) - 2 and len(report.renamed) == len(converted)
    for key, value in state.items():
        if key not in CLASSIFIER:
            assert converted[torchvision_to_condseg_key(key)] is value, key  # carried over, not copied

    depth = DEPTHS[name]
    expected_config = {"MODEL.RESNETS.DEPTH": depth}
    expected_config.update(
        {"MODEL.RESNETS.RES2_OUT_CHANNELS": 64} if depth == 18 else {"MODEL.RESNETS.STRIDE_IN_1X1": False}
    )
    expected_config.update(torchvision_resnet.INPUT_CONFIG)
    assert report.config == expected_config
    assert report.architecture == f"torchvision ResNet-{depth}"

    resnet = condseg_resnet(depth)
    incompatible = resnet.load_state_dict(converted, strict=True)
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    assert_stage_outputs_equal(resnet, tv_model)

    fitted = torchvision_resnet.fit_to_model(converted, resnet, report)
    assert list(fitted) == list(converted) and not report.warnings
    summary = report.summary(len(fitted))
    assert f"{NUM_KEYS[name]} tensors read, {len(converted)} converted" in summary
    assert "layerS.J.bnK.* -> res{S+1}.J.convK.norm.*" in summary
    assert "layerS.J.downsample.1.* -> res{S+1}.J.shortcut.norm.*" in summary
    assert "fc.weight, fc.bias: ImageNet classifier" in summary


def test_stride_placement_matters_and_is_checked():
    """With detectron2's default stride on the 1x1 conv the same weights compute something
    else (so the equality above is a real test), and fit_to_model refuses such a model."""
    converted, report = torchvision_resnet.convert_torchvision_resnet(torchvision_model("resnet50").state_dict())
    resnet = condseg_resnet(50, "MODEL.RESNETS.STRIDE_IN_1X1", "True")
    resnet.load_state_dict(converted, strict=True)  # same keys and shapes: only the check can tell
    with pytest.raises(AssertionError):
        assert_stage_outputs_equal(resnet, torchvision_model("resnet50"))
    with pytest.raises(ValueError) as info:
        torchvision_resnet.fit_to_model(converted, resnet, report)
    message = str(info.value)
    assert "res3.0" in message and "set MODEL.RESNETS.STRIDE_IN_1X1 False" in message


def test_ddp_prefix_is_stripped_and_prefix_added():
    state = torchvision_model("resnet18").state_dict()
    wrapped = {"module." + k: v for k, v in state.items()}
    converted, report = torchvision_resnet.convert_torchvision_resnet(wrapped, prefix="backbone.bottom_up")
    assert report.prefix == DETECTOR_PREFIX
    assert all(k.startswith(DETECTOR_PREFIX) for k in converted)
    name = "backbone.bottom_up.res3.0.shortcut.norm.running_var"
    assert converted[name] is state["layer2.0.downsample.1.running_var"]
    assert report.renamed["module.layer2.0.downsample.1.running_var"] == name
    assert set(report.dropped) == {"module.fc.weight", "module.fc.bias"}
    assert "module.layerS.J.bnK.* -> backbone.bottom_up.res{S+1}.J.convK.norm.*" in report.summary(len(converted))


def test_old_checkpoints_without_batch_counts_get_zeros():
    """Files saved before PyTorch 0.4.1 (the original torchvision URLs) have no
    num_batches_tracked: the check adds them as 0, as BatchNorm does when loading."""
    state = {k: v for k, v in torchvision_model("resnet18").state_dict().items() if "num_batches_tracked" not in k}
    converted, report = torchvision_resnet.convert_torchvision_resnet(state)
    resnet = condseg_resnet(18)
    fitted = torchvision_resnet.fit_to_model(converted, resnet, report)
    assert len(fitted) == len(converted) + 20 and int(fitted["stem.conv1.norm.num_batches_tracked"]) == 0
    assert any("20 num_batches_tracked absent" in c for c in report.checks)
    resnet.load_state_dict(fitted, strict=True)


def test_detector_loads_the_prefixed_file_by_exact_names(detector, tmp_path):
    """The CLI's default: keys under backbone.bottom_up. load with MODEL.WEIGHTS into a
    FrozenBN detector (num_batches_tracked dropped), every backbone tensor and nothing else;
    a bare file loads there only with detectron2's matching heuristics."""
    state = torchvision_model("resnet50").state_dict()
    converted, report = torchvision_resnet.convert_torchvision_resnet(state, prefix=DETECTOR_PREFIX)
    fitted = torchvision_resnet.fit_to_model(converted, detector, report)
    assert len(fitted) == 265 and sum("num_batches_tracked" in k for k in report.dropped) == 53
    assert report.checks[0] == "keys and shapes equal the model's backbone.bottom_up.* (265 tensors)"
    prefixed = str(tmp_path / "R-50-torchvision.pth")
    save_checkpoint(fitted, prefixed)

    class Recording(DetectionCheckpointer):
        def _load_model(self, checkpoint):
            self.incompatible = super()._load_model(checkpoint)
            return self.incompatible

    checkpointer = Recording(detector)
    checkpointer.load(prefixed)
    incompatible = checkpointer.incompatible
    assert not incompatible.unexpected_keys and not incompatible.incorrect_shapes
    assert not [k for k in incompatible.missing_keys if k.startswith(DETECTOR_PREFIX)]
    assert incompatible.missing_keys  # the FPN and the heads: not in an ImageNet checkpoint
    loaded = detector.state_dict()
    for key, value in state.items():
        if key not in CLASSIFIER and "num_batches_tracked" not in key:
            assert torch.equal(loaded[DETECTOR_PREFIX + torchvision_to_condseg_key(key)], value), key

    bare_state, bare_report = torchvision_resnet.convert_torchvision_resnet(state)
    bare_state = torchvision_resnet.fit_to_model(bare_state, detector.backbone.bottom_up, bare_report)
    bare = str(tmp_path / "bare.pth")
    save_checkpoint(bare_state, bare)
    key = DETECTOR_PREFIX + "res4.2.conv2.weight"
    with torch.no_grad():
        detector.get_parameter(key).zero_()
    checkpointer.load(bare)  # exact names: nothing matches
    assert key in checkpointer.incompatible.missing_keys and not detector.get_parameter(key).any()
    checkpointer.load(bare + "?matching_heuristics=True")
    assert not [k for k in checkpointer.incompatible.missing_keys if k.startswith(DETECTOR_PREFIX)]
    assert torch.equal(detector.get_parameter(key), state["layer3.2.conv2.weight"])


def test_input_config_check():
    _, report = torchvision_resnet.convert_torchvision_resnet(torchvision_model("resnet18").state_dict())
    torchvision_resnet.check_input_config(detector_cfg(), report)
    assert len(report.warnings) == 1
    warning = report.warnings[0]
    assert "INPUT.FORMAT is BGR" in warning and "MODEL.PIXEL_STD is [1.0, 1.0, 1.0]" in warning
    assert (
        "set INPUT.FORMAT RGB MODEL.PIXEL_MEAN [123.675,116.28,103.53] MODEL.PIXEL_STD [58.395,57.12,57.375]"
    ) in warning

    _, report = torchvision_resnet.convert_torchvision_resnet(torchvision_model("resnet18").state_dict())
    cfg = detector_cfg(*torchvision_resnet.config_opts(torchvision_resnet.INPUT_CONFIG))
    torchvision_resnet.check_input_config(cfg, report)
    assert not report.warnings and report.checks[-1].startswith("input format and normalisation: INPUT.FORMAT RGB")


# ---- errors -------------------------------------------------------------------------------


def without(state, *names):
    """``state`` without the keys ``names``; a name ending in "." removes every key it starts."""
    return {k: v for k, v in state.items() if not any(k == n or (n.endswith(".") and k.startswith(n)) for n in names)}


def test_not_a_resnet_names_the_keys():
    state = torchvision.models.mobilenet_v3_small(weights=None).state_dict()
    with pytest.raises(ValueError) as info:
        torchvision_resnet.convert_torchvision_resnet(state, source="mobilenet.pth")
    message = str(info.value)
    assert message.startswith("mobilenet.pth: keys with no condseg ResNet name (not a torchvision ResNet checkpoint?)")
    assert "features.0.0.weight" in message and f"({len(state)} in all)" in message


@pytest.mark.parametrize(
    "name, remove, extra, words",
    [
        ("resnet18", (), "layer2.1.se.fc1.weight",
         "keys with no condseg ResNet name (not a torchvision ResNet checkpoint?): layer2.1.se.fc1.weight"),
        ("resnet18", ("layer2.1.bn2.running_var",), None, "incomplete ResNet: missing layer2.1.bn2.running_var"),
        ("resnet18", ("layer4.0.downsample.1.weight",), None,
         "incomplete ResNet: missing layer4.0.downsample.1.weight"),
        ("resnet18", ("layer4.",), None, "not a complete ResNet: no layer4.*"),
        ("resnet18", ("layer1.0.",), None, "blocks missing inside a stage: layer1.0"),
        ("resnet50", ("layer3.5.",), None,
         "[3, 4, 5, 3] bottleneck blocks per stage is no ResNet depth condseg builds"),
        ("resnet18", (), "layer1.0.conv2.attention.fc.weight", "an ODConv (OD-ResNet) checkpoint"),
    ],
)
def test_broken_resnets_are_refused_naming_the_keys(name, remove, extra, words):
    state = without(torchvision_model(name).state_dict(), *remove)
    if extra:
        state[extra] = torch.zeros(8, 8, 1, 1)
    with pytest.raises(ValueError) as info:
        torchvision_resnet.convert_torchvision_resnet(state, source="ckpt.pth")
    assert str(info.value).startswith("ckpt.pth: ") and words in str(info.value)


def test_odconv_checkpoint_is_sent_to_its_converter():
    state = dict(torchvision_model("resnet18").state_dict())
    state["layer1.0.conv1.weight"] = state["layer1.0.conv1.weight"].unsqueeze(0)  # stacked [n, O, I, k, k]
    with pytest.raises(ValueError, match=r"ckpt\.pth: an ODConv .*layer1\.0\.conv1\.weight.*odconv-resnet"):
        torchvision_resnet.convert_torchvision_resnet(state, source="ckpt.pth")


def test_wrong_depth_names_the_keys_and_shapes():
    converted, report = torchvision_resnet.convert_torchvision_resnet(
        torchvision_model("resnet18").state_dict(), source="r18.pth"
    )
    with pytest.raises(ValueError) as info:
        torchvision_resnet.fit_to_model(converted, condseg_resnet(34), report)
    message = str(info.value)
    assert message.startswith("r18.pth does not fit the model")
    assert "missing (in the model, not in the checkpoint): res2.2.conv1.weight" in message


# ---- command line -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """torchvision's ResNet-18 saved as torchvision distributes it: a bare state dict."""
    path = str(tmp_path_factory.mktemp("torchvision") / "resnet18.pth")
    torch.save(torchvision_model("resnet18").state_dict(), path)
    return path


@pytest.mark.slow
def test_cli_round_trip(resnet18_file, tmp_path):
    out = str(tmp_path / "R-18-torchvision.pth")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    command = [sys.executable, TOOL, "torchvision-resnet", resnet18_file, out]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "122 tensors read, 100 converted (100 renamed, 0 unchanged), 22 dropped" in proc.stdout
    assert "layout   torchvision ResNet-18, keys under backbone.bottom_up." in proc.stdout
    assert "the model needs: MODEL.RESNETS.DEPTH 18 MODEL.RESNETS.RES2_OUT_CHANNELS 64 INPUT.FORMAT RGB" in proc.stdout
    assert "(20 in all): the model's norm keeps no batch count (FrozenBN)" in proc.stdout
    assert "checked  keys and shapes equal the model's backbone.bottom_up.* (100 tensors)" in proc.stdout
    assert f"wrote {out} (load it with MODEL.WEIGHTS {out}" in proc.stdout and "Traceback" not in proc.stderr
    assert os.listdir(tmp_path) == ["R-18-torchvision.pth"]

    saved = torch.load(out, weights_only=True)
    assert saved["matching_heuristics"] is False
    assert all(k.startswith(DETECTOR_PREFIX) for k in saved["model"])
    bare = {k[len(DETECTOR_PREFIX):]: v for k, v in saved["model"].items()}
    resnet = condseg_resnet(18)
    resnet.load_state_dict(bare, strict=True)  # BatchNorm fills the dropped batch counts itself
    assert_stage_outputs_equal(resnet, torchvision_model("resnet18"), seed=1)


def test_cli_bare_keys_checked_against_a_config(resnet18_file, tmp_path, capsys):
    out = tmp_path / "bare.pth"
    opts = ["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64"]
    args = ["--prefix", "", "--config-file", CONFIG, "--opts", *opts]
    code = load_tool().main(["torchvision-resnet", resnet18_file, str(out), *args])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    assert "bare ResNet keys (no prefix)" in stdout and "keys and shapes equal the model's (100 tensors)" in stdout
    assert "WARNING  the config's input differs" in stdout and "matching_heuristics=True" in stdout
    saved = torch.load(str(out), weights_only=True)["model"]
    assert "stem.conv1.weight" in saved and len(saved) == 100


@pytest.mark.parametrize(
    "args, words",
    [
        (["--config-file", CONFIG, "--opts", "MODEL.RESNETS.DEPTH", "50"], "does not fit the model"),
        (["--opts", "MODEL.RESNETS.NO_SUCH_KEY", "1"], "NO_SUCH_KEY"),
    ],
)
def test_cli_errors_exit_2_and_write_nothing(resnet18_file, tmp_path, capsys, args, words):
    out = tmp_path / "out.pth"
    assert load_tool().main(["torchvision-resnet", resnet18_file, str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("convert_checkpoint.py torchvision-resnet: error:") and words in err
    assert not out.exists()


def test_cli_not_a_resnet_names_file_and_keys(tmp_path, capsys):
    bad = str(tmp_path / "mobilenet.pth")
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), bad)
    out = tmp_path / "out.pth"
    assert load_tool().main(["torchvision-resnet", bad, str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: keys with no condseg ResNet name" in err and "features.0.0.weight" in err
    assert not out.exists()
