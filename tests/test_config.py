"""condseg's config keys: published defaults, comments, detectron2's override rules."""
import os
import re

import pytest

from condseg.config import get_condseg_cfg

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _get(cfg, dotted):
    for part in dotted.split("."):
        cfg = cfg[part]
    return cfg


def _norm(v):
    return list(v) if isinstance(v, tuple) else v


@pytest.mark.parametrize("group", ["MODEL.FCOS.", "MODEL.CONDINST."])
def test_defaults_equal_published_defaults(fixture, group):
    """Every key of the group defaults to the reference's defaults.py value (the
    fixture's effective value, unless a yaml of the reference overrode it)."""
    ref = fixture("condinst", "config_defaults.json")
    cfg = get_condseg_cfg()
    overridden = ref["overridden_by"]
    checked = 0
    for key, value in ref["values"].items():
        if not key.startswith(group) or key in overridden:
            continue
        assert _norm(_get(cfg, key)) == value, key
        checked += 1
    assert checked >= 10


def test_keys_overridden_by_base_yaml_keep_defaults_py_values(fixture):
    # Base-CondInst.yaml turns these on; the defaults stay as defaults.py has them.
    cfg = get_condseg_cfg()
    assert cfg.MODEL.FCOS.THRESH_WITH_CTR is False
    assert cfg.MODEL.CONDINST.MAX_PROPOSALS == -1


def test_every_new_key_has_a_comment():
    src = open(os.path.join(ROOT, "condseg", "config.py")).read()
    for line in src.splitlines():
        if re.match(r"\s*_C\.[A-Z_.]+ = (?!CN\(\))", line):
            assert "#" in line, f"config key without a comment: {line.strip()}"


def test_unknown_key_fails_with_detectron2_error(tmp_path):
    cfg = get_condseg_cfg()
    with pytest.raises((KeyError, AssertionError), match="MODEL.FCOS.NOT_A_KEY"):  # yacs: "Non-existent key"
        cfg.merge_from_list(["MODEL.FCOS.NOT_A_KEY", "1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(f'_BASE_: "{os.path.abspath(os.path.join(ROOT, "configs", "Base-FCOS.yaml"))}"\nMODEL:\n  FCOS:\n    NUM_CLASES: 3\n')
    with pytest.raises(KeyError, match="NUM_CLASES"):
        get_condseg_cfg().merge_from_file(str(bad))


def test_base_inheritance_and_overrides():
    cfg = get_condseg_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs", "quickstart", "fcos_R18_shapes.yaml"))
    assert cfg.MODEL.META_ARCHITECTURE == "FCOSDetector"  # from _BASE_
    assert cfg.MODEL.RESNETS.DEPTH == 18  # from the file itself
    cfg.merge_from_list(["MODEL.FCOS.NMS_TH", "0.5"])
    assert cfg.MODEL.FCOS.NMS_TH == 0.5


SHIPPED = sorted(
    os.path.relpath(os.path.join(d, f), os.path.join(ROOT, "configs"))
    for d, _, files in os.walk(os.path.join(ROOT, "configs")) for f in files if f.endswith(".yaml")
)
QUICKSTART = [n for n in SHIPPED if n.startswith("quickstart")]


# Parameter counts of the published models: AdelaiDet's CondInst R-50 (fixtures/condinst/
# model_keys_MS_R_50_1x.json), and its FCOS part (the backbone with FPN and P6/P7, 30,323,584,
# and the FCOS head, 4,920,666, of the same file).
CONDINST_R50 = 34_111_179
FCOS_R50 = 23_454_912 + 2_688_512 + 1_180_160 + 4_920_666
# DCNv2 in res3-res5 adds a 3x3 offset/mask predictor (27 outputs, bias) per block: 4, 6 and 3
# blocks of 128, 256 and 512 bottleneck channels.
DCN_PREDICTORS = sum(blocks * (27 * 9 * c + 27) for blocks, c in ((4, 128), (6, 256), (3, 512)))
REFERENCE_COUNTS = {
    "condinst_R50_1x.yaml": CONDINST_R50,
    "condinst_R50_3x.yaml": CONDINST_R50,
    "Base-CondInst.yaml": CONDINST_R50,
    "fcos_R50_1x.yaml": FCOS_R50,
    "Base-FCOS.yaml": FCOS_R50,
    "condinst_dcnv2.yaml": CONDINST_R50 + DCN_PREDICTORS,
}


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _build(name):
    from detectron2.modeling import build_model

    cfg = get_condseg_cfg()
    cfg.merge_from_file(os.path.join(ROOT, "configs", name))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu"])
    return cfg, build_model(cfg)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if not n.startswith("quickstart") else n
                                  for n in SHIPPED])
def test_shipped_configs_build_their_models(name, fixture):
    """Every shipped config builds its model (the COCO ones on the CPU), with the published
    parameter count where one exists; the quickstart models also run an image."""
    import torch

    cfg, model = _build(name)
    assert _count(model) > 0
    if name in REFERENCE_COUNTS:
        assert _count(model) == REFERENCE_COUNTS[name]
    if name == "condinst_odconv.yaml":  # OD-ResNet-50 4x: the official backbone's count (its BN frozen here)
        official = fixture("odconv", "od_resnet_state_dict_keys.json")["od_resnet50_kn4"]
        bottom_up = model.backbone.bottom_up
        frozen_affine = sum(b.numel() for n, b in bottom_up.named_buffers() if n.endswith((".weight", ".bias")))
        assert _count(bottom_up) + frozen_affine == official["num_parameters_excluding_fc"]
        assert _count(model) - _count(bottom_up) == CONDINST_R50 - 23_454_912
    if name.startswith("quickstart"):
        model.eval()
        with torch.no_grad():
            out = model([{"image": torch.zeros(3, 96, 128), "height": 96, "width": 128}])[0]["instances"]
        assert out.image_size == (96, 128)


def test_quickstart_configs_share_data_input_solver_and_backbone():
    """The README compares the quickstart models at an equal budget: same images, input
    sizes, batch, iterations, optimizer and ResNet."""
    assert {"quickstart/fcos_R18_shapes.yaml", "quickstart/condinst_R18_shapes.yaml",
            "quickstart/mask_rcnn_R18_shapes.yaml"} <= set(QUICKSTART)
    cfgs = []
    for name in QUICKSTART:
        cfg = get_condseg_cfg()
        cfg.merge_from_file(os.path.join(ROOT, "configs", name))
        r = cfg.MODEL.RESNETS
        cfgs.append((cfg.DATASETS, cfg.INPUT, cfg.SOLVER, cfg.DATALOADER, cfg.MODEL.DEVICE, cfg.MODEL.BACKBONE.FREEZE_AT,
                     cfg.MODEL.FPN.OUT_CHANNELS, (r.DEPTH, r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS, r.NORM)))
    assert all(c == cfgs[0] for c in cfgs[1:])
