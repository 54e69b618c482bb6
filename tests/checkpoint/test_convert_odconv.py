"""Official ODConv OD-ResNet -> condseg conversion (condseg.checkpoint.odconv and
tools/convert_checkpoint.py odconv-resnet) on synthetic official checkpoints built from the
key/shape inventory of the four official models (fixture odconv/od_resnet_state_dict_keys.json),
wrapped as the official training script saves them: ``{"state_dict": {"module." + key: ...}}``.

Each synthetic tensor has its real shape but is an expanded view of one random row (plus
its index, so every key has its own values): the R-50 4x model's 90 M parameters cost a
few kB. Loading the converted weights into condseg's OD-ResNet is tested with the backbone.
"""
import os
import re

import pytest
import torch
import torchvision
from torch import nn

from condseg.checkpoint import DETECTOR_PREFIX, load_checkpoint_state_dict, odconv, official_to_condseg_key

from convert_tool import load_tool

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODELS = {  # fixture entry: (depth, kernel_num)
    "od_resnet18_kn1": (18, 1),
    "od_resnet18_kn4": (18, 4),
    "od_resnet50_kn1": (50, 1),
    "od_resnet50_kn4": (50, 4),
}
CLASSIFIER = {"fc.weight", "fc.bias"}
_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_NORM = rf"norm\.{_BN}"
_ATTENTION = rf"attention\.(fc\.weight|bn\.{_BN}|(channel|filter|spatial|kernel)_fc\.(weight|bias))"
LAYOUT = re.compile(  # condseg's OD-ResNet keys (detectron2's ResNet names plus ODConv's)
    rf"stem\.conv1\.(weight|{_NORM})"
    rf"|res[2-5]\.\d+\.(conv[1-3]\.(weight|{_NORM}|{_ATTENTION})|shortcut\.(weight|{_NORM}))"
)


def synthetic_tensor(index: int, shape, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    if not dtype.is_floating_point:  # num_batches_tracked
        return torch.tensor(1000 + index, dtype=dtype).expand(shape)
    row = torch.randn(shape[-1], generator=gen) + index
    return row.expand(shape)


@pytest.fixture(scope="module")
def inventory(fixture):
    return fixture("odconv", "od_resnet_state_dict_keys.json")


_STATES = {}


def official_state(inventory, model: str):
    """A synthetic official state dict of ``model`` (official names, no prefix; do not modify)."""
    if model not in _STATES:
        gen = torch.Generator().manual_seed(list(MODELS).index(model))
        entries = inventory[model]["state_dict"]
        _STATES[model] = {
            e["key"]: synthetic_tensor(i, e["shape"], getattr(torch, e["dtype"]), gen) for i, e in enumerate(entries)
        }
    return _STATES[model]


def training_checkpoint(state):
    """``state`` as the official training script saves it (DDP-wrapped model)."""
    return {
        "epoch": 120,
        "arch": "od_resnet",
        "state_dict": {"module." + k: v for k, v in state.items()},
        "best_acc1": torch.tensor(78.0),
        "optimizer": {"state": {}, "param_groups": []},
    }


# ---- the key mapping ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, name",
    [
        ("conv1.weight", "stem.conv1.weight"),
        ("bn1.weight", "stem.conv1.norm.weight"),
        ("bn1.num_batches_tracked", "stem.conv1.norm.num_batches_tracked"),
        ("layer1.0.conv1.weight", "res2.0.conv1.weight"),
        ("layer1.0.bn1.running_mean", "res2.0.conv1.norm.running_mean"),
        ("layer3.5.bn3.running_var", "res4.5.conv3.norm.running_var"),
        ("layer2.0.downsample.0.weight", "res3.0.shortcut.weight"),
        ("layer2.0.downsample.1.bias", "res3.0.shortcut.norm.bias"),
        ("layer1.0.conv1.attention.fc.weight", "res2.0.conv1.attention.fc.weight"),
        ("layer1.0.conv1.attention.bn.running_var", "res2.0.conv1.attention.bn.running_var"),
        ("layer2.1.conv2.attention.channel_fc.weight", "res3.1.conv2.attention.channel_fc.weight"),
        ("layer3.0.conv3.attention.filter_fc.bias", "res4.0.conv3.attention.filter_fc.bias"),
        ("layer4.1.conv2.attention.spatial_fc.bias", "res5.1.conv2.attention.spatial_fc.bias"),
        ("layer4.2.conv1.attention.kernel_fc.weight", "res5.2.conv1.attention.kernel_fc.weight"),
        ("fc.weight", None),
        ("fc.bias", None),
    ],
)
def test_key_mapping(key, name):
    assert official_to_condseg_key(key) == name


@pytest.mark.parametrize(
    "key",
    [
        "module.conv1.weight",  # the converter strips DDP's prefix, the mapping does not
        "layer5.0.conv1.weight",
        "layer1.0.conv1.attention.temperature",
        "layer1.0.conv1.attention.kernel_fc.scale",
        "layer1.0.bn1.attention.fc.weight",
        "layer1.0.downsample.0.attention.fc.weight",
        "classifier.weight",
    ],
)
def test_key_mapping_rejects_other_keys(key):
    with pytest.raises(ValueError, match="not a key of an OD-ResNet"):
        official_to_condseg_key(key)


# ---- all four official models -------------------------------------------------------------


@pytest.mark.parametrize("model", list(MODELS))
def test_every_official_key_is_mapped(inventory, model):
    depth, kernel_num = MODELS[model]
    info = inventory[model]
    state = official_state(inventory, model)
    wrapped = training_checkpoint(state)["state_dict"]
    converted, report = odconv.convert_odconv_resnet(wrapped, source=f"{model}.pth.tar")

    assert report.num_input == info["num_state_dict_entries"] == len(state)
    assert set(report.dropped) == {"module." + k for k in CLASSIFIER}
    assert len(converted) == len(state) - 2 == len(report.renamed)
    for entry in info["state_dict"]:
        key = entry["key"]
        name = official_to_condseg_key(key)
        if key in CLASSIFIER:
            assert name is None
            continue
        assert report.renamed["module." + key] == name
        assert converted[name] is state[key], key  # carried over, bit for bit
        assert list(converted[name].shape) == entry["shape"] and str(converted[name].dtype) == "torch." + entry["dtype"]
    assert all(LAYOUT.fullmatch(k) for k in converted), [k for k in converted if not LAYOUT.fullmatch(k)]
    assert sum(k.endswith(".attention.fc.weight") for k in converted) == info["num_odconv_layers"]
    assert sum(v.numel() for k, v in converted.items() if ".attention." not in k and v.dim() == 5) == (
        info["num_parameters_odconv_stacked_weights"]
    )

    assert report.kernel_num == kernel_num and report.reduction == 0.0625
    assert report.architecture == f"OD-ResNet-{depth}, ODConv {kernel_num}x"
    assert report.config["MODEL.RESNETS.DEPTH"] == depth
    assert report.config["MODEL.ODCONV.ON_PER_STAGE"] == [True] * 4
    assert report.config["MODEL.ODCONV.KERNEL_NUM"] == kernel_num
    assert report.config["MODEL.ODCONV.REDUCTION"] == 0.0625
    assert report.config["INPUT.FORMAT"] == "RGB"
    if depth == 50:
        assert report.config["MODEL.RESNETS.STRIDE_IN_1X1"] is False
    else:
        assert report.config["MODEL.RESNETS.RES2_OUT_CHANNELS"] == 64
    layers = info["num_odconv_layers"]
    assert report.checks == [f"kernel_num {kernel_num} in all {layers} ODConvs, attention branches complete"]
    assert not report.warnings


@pytest.mark.parametrize(
    "key, name",
    [
        ("layer1.0.conv1.weight", "res2.0.conv1.weight"),
        ("layer1.1.conv2.attention.spatial_fc.weight", "res2.1.conv2.attention.spatial_fc.weight"),
        ("layer2.0.bn1.running_mean", "res3.0.conv1.norm.running_mean"),
        ("layer3.0.downsample.0.weight", "res4.0.shortcut.weight"),
        ("layer4.1.conv1.attention.bn.num_batches_tracked", "res5.1.conv1.attention.bn.num_batches_tracked"),
    ],
)
def test_converted_layout_samples(inventory, key, name):
    """The same official key in R-18 4x and R-50 4x lands on the same condseg key, with the
    detector prefix."""
    for model in ("od_resnet18_kn4", "od_resnet50_kn4"):
        state = official_state(inventory, model)
        wrapped = training_checkpoint(state)["state_dict"]
        converted, report = odconv.convert_odconv_resnet(wrapped, prefix=DETECTOR_PREFIX)
        assert converted[DETECTOR_PREFIX + name] is state[key], model
        if key.endswith("conv1.weight") and key.startswith("layer"):
            assert converted[DETECTOR_PREFIX + name].shape[0] == 4  # stacked kernels stay stacked


def test_training_checkpoint_file_round_trip(inventory, tmp_path):
    state = official_state(inventory, "od_resnet50_kn4")
    path = str(tmp_path / "od_resnet50_4x.pth.tar")
    torch.save(training_checkpoint(state), path)
    assert os.path.getsize(path) < 5_000_000  # expanded views saved as such
    assert len(load_checkpoint_state_dict(path)) == len(state)  # found under "state_dict"
    converted, report = odconv.convert_file(path, prefix=DETECTOR_PREFIX)
    assert report.source == path and report.prefix == DETECTOR_PREFIX and report.kernel_num == 4
    assert len(converted) == len(state) - 2 and all(k.startswith(DETECTOR_PREFIX) for k in converted)
    for key, value in state.items():
        if key not in CLASSIFIER:
            assert torch.equal(converted[DETECTOR_PREFIX + official_to_condseg_key(key)], value), key
    summary = report.summary(len(converted))
    assert "928 tensors read, 926 converted (926 renamed, 0 unchanged), 2 dropped" in summary
    assert "module.layerS.J.bnK.* -> backbone.bottom_up.res{S+1}.J.convK.norm.* (240)" in summary
    assert "layout   OD-ResNet-50, ODConv 4x, keys under backbone.bottom_up." in summary
    assert "MODEL.ODCONV.ON_PER_STAGE [True,True,True,True] MODEL.ODCONV.KERNEL_NUM 4" in summary
    assert "module.fc.weight, module.fc.bias: ImageNet classifier" in summary

    bare = str(tmp_path / "bare.pth")  # a bare state dict, no DDP prefix
    torch.save(state, bare)
    converted_bare, report_bare = odconv.convert_file(bare)
    assert list(converted_bare) == [k[len(DETECTOR_PREFIX):] for k in converted]
    assert set(report_bare.dropped) == CLASSIFIER


def test_odconv_in_some_stages_only(inventory):
    """Block convs of res2/res3 plain (4-D, no attention): ON_PER_STAGE says so."""
    state = {}
    for key, value in official_state(inventory, "od_resnet18_kn4").items():
        if key.startswith(("layer1.", "layer2.")) and ".attention." in key:
            continue
        plain = key.startswith(("layer1.", "layer2.")) and re.fullmatch(r"layer\d\.\d\.conv\d\.weight", key)
        state[key] = value[0] if plain else value
    converted, report = odconv.convert_odconv_resnet(state)
    assert report.config["MODEL.ODCONV.ON_PER_STAGE"] == [False, False, True, True]
    assert report.architecture == "OD-ResNet-18, ODConv 4x in res4, res5"
    assert converted["res2.0.conv1.weight"].dim() == 4 and converted["res4.0.conv1.weight"].dim() == 5


# ---- errors -------------------------------------------------------------------------------


def changed(state, remove=(), **changes):
    out = {k: v for k, v in state.items() if k not in remove}
    out.update(changes)
    return out


def test_kernel_num_must_be_the_same_everywhere(inventory):
    state = official_state(inventory, "od_resnet18_kn4")
    two = state["layer3.1.conv2.weight"][:2]
    with pytest.raises(ValueError) as info:
        odconv.convert_odconv_resnet(changed(state, **{"layer3.1.conv2.weight": two}), source="ckpt.pth")
    message = str(info.value)
    assert message.startswith("ckpt.pth: not a consistent OD-ResNet: ")
    assert "ODConvs with different kernel_num: 2 in layer3.1.conv2; 4 in layer1.0.conv1" in message
    assert "layer3.1.conv2.attention.kernel_fc.weight has 4 outputs, kernel_num is 2" in message


@pytest.mark.parametrize(
    "model, remove, extra, words",
    [
        ("od_resnet18_kn4", ["layer2.0.conv1.attention.filter_fc.bias"], {},
         "attention keys missing: layer2.0.conv1.attention.filter_fc.bias"),
        ("od_resnet18_kn1", [], {"layer2.0.conv1.attention.kernel_fc.weight": torch.zeros(1, 16, 1, 1)},
         "attention keys that ODConv does not have there: layer2.0.conv1.attention.kernel_fc.weight"),
        ("od_resnet50_kn1", [], {"layer1.0.conv1.attention.spatial_fc.bias": torch.zeros(1)},
         "attention keys that ODConv does not have there: layer1.0.conv1.attention.spatial_fc.bias"),
        ("od_resnet50_kn4", ["layer3.2.bn3.weight"], {}, "incomplete ResNet: missing layer3.2.bn3.weight"),
        ("od_resnet18_kn4", [], {"layer1.0.conv1.attention.temperature": torch.zeros(())},
         "keys with no condseg ResNet name (not an OD-ResNet checkpoint?): layer1.0.conv1.attention.temperature"),
    ],
)
def test_broken_checkpoints_are_refused_naming_the_keys(inventory, model, remove, extra, words):
    state = changed(official_state(inventory, model), remove, **extra)
    with pytest.raises(ValueError) as info:
        odconv.convert_odconv_resnet(state, source="ckpt.pth")
    assert str(info.value).startswith("ckpt.pth: ") and words in str(info.value)


def test_plain_conv_in_an_odconv_stage(inventory):
    state = official_state(inventory, "od_resnet18_kn1")
    state = changed(state, **{"layer3.0.conv2.weight": state["layer3.0.conv2.weight"][0]})
    with pytest.raises(ValueError, match=r"plain \(4-D\) convs in an ODConv stage: layer3\.0\.conv2"):
        odconv.convert_odconv_resnet(state)


def test_plain_resnet_is_sent_to_torchvision_converter():
    state = torchvision.models.resnet18(weights=None).state_dict()
    with pytest.raises(ValueError, match=r"r18\.pth: no ODConv .*torchvision-resnet"):
        odconv.convert_odconv_resnet(state, source="r18.pth")


def test_partial_ddp_prefix_names_the_keys(inventory):
    state = dict(official_state(inventory, "od_resnet18_kn1"))
    state["module.conv1.weight"] = state.pop("conv1.weight")
    with pytest.raises(ValueError, match=r"ckpt\.pth: keys with no condseg ResNet name .*module\.conv1\.weight"):
        odconv.convert_odconv_resnet(state, source="ckpt.pth")


# ---- command line -------------------------------------------------------------------------


class Layout(nn.Module):
    """A stand-in model whose state dict holds given tensors (keys may contain dots)."""

    def __init__(self, tensors):
        super().__init__()
        self.tensors = tensors

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        for key, value in self.tensors.items():
            destination[prefix + key] = value


@pytest.fixture(scope="module")
def r18_checkpoint(inventory, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("odconv") / "od_resnet18_1x.pth.tar")
    torch.save(training_checkpoint(official_state(inventory, "od_resnet18_kn1")), path)
    return path


def test_cli_writes_detector_keys(inventory, r18_checkpoint, tmp_path, capsys, monkeypatch):
    """The command line's plumbing, checked against a stand-in with the layout of condseg's
    OD-ResNet-18 (the backbone's own test loads the weights into it)."""
    tool = load_tool()
    expected = {
        official_to_condseg_key(e["key"]): torch.zeros(e["shape"])
        for e in inventory["od_resnet18_kn1"]["state_dict"] if e["key"] not in CLASSIFIER
    }
    seen = {}

    def check_model(args, report):
        seen["config"] = dict(report.config)
        return tool.nest(Layout(expected), report.prefix)

    monkeypatch.setattr(tool, "backbone_check_model", check_model)
    out = tmp_path / "OD-R-18-1x.pth"
    assert tool.main(["odconv-resnet", r18_checkpoint, str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "314 tensors read, 312 converted (312 renamed, 0 unchanged), 2 dropped" in stdout
    assert "checked  keys and shapes equal the model's backbone.bottom_up.* (312 tensors)" in stdout
    assert "layout   OD-ResNet-18, ODConv 1x, keys under backbone.bottom_up." in stdout
    assert f"wrote {out} (load it with MODEL.WEIGHTS {out}" in stdout
    assert seen["config"]["MODEL.ODCONV.KERNEL_NUM"] == 1
    saved = torch.load(str(out), weights_only=True)
    assert saved["matching_heuristics"] is False and len(saved["model"]) == 312
    state = official_state(inventory, "od_resnet18_kn1")
    assert torch.equal(saved["model"]["backbone.bottom_up.res3.0.conv2.attention.spatial_fc.bias"],
                       state["layer2.0.conv2.attention.spatial_fc.bias"])


def test_cli_checks_against_condseg_od_resnet(r18_checkpoint, tmp_path, capsys):
    out = tmp_path / "OD-R-18-1x.pth"
    assert load_tool().main(["odconv-resnet", r18_checkpoint, str(out), "--prefix", ""]) == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert "keys and shapes equal the model's" in stdout and "bare ResNet keys" in stdout


def test_cli_plain_resnet_exits_2_and_writes_nothing(tmp_path, capsys):
    bad = str(tmp_path / "resnet18.pth")
    torch.save({"state_dict": torchvision.models.resnet18(weights=None).state_dict()}, bad)
    out = tmp_path / "out.pth"
    assert load_tool().main(["odconv-resnet", bad, str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"convert_checkpoint.py odconv-resnet: error: {bad}: no ODConv")
    assert "torchvision-resnet" in err
    assert not out.exists()
