#!/usr/bin/env python
"""Convert other code bases' checkpoints to condseg's layout.

  python tools/convert_checkpoint.py adelaidet-condinst model_final.pth condinst_R50_1x.pth
  python tools/convert_checkpoint.py adelaidet-condinst IN.pth OUT.pth --config-file CFG --opts KEY VALUE ...
  python tools/convert_checkpoint.py torchvision-resnet resnet50-0676ba61.pth R-50-torchvision.pth
  python tools/convert_checkpoint.py odconv-resnet od_resnet50_4x.pth.tar OD-R-50-4x.pth --config-file CFG

The converted state dict is checked against the model built (on the CPU) from the config
and ``--opts``, key by key and shape by shape, before anything is written. The output
``.pth`` then loads with ``MODEL.WEIGHTS OUT.pth`` (same config). A failed conversion
prints the reason, writes nothing and exits with status 2.

Subcommands
  adelaidet-condinst   AdelaiDet CondInst: trainer checkpoint or bare state dict (.pth),
                       or a detectron2-style .pkl; default config configs/condinst_R50_1x.yaml
  torchvision-resnet   torchvision ResNet ImageNet weights (resnet18 ... resnet152,
                       resnext*, wide_resnet*): condseg's ResNet backbone
  odconv-resnet        official ODConv OD-ResNet ImageNet checkpoints (od_resnet18/50, any
                       kernel_num; weights under "state_dict" with DDP's "module."):
                       condseg's OD-ResNet backbone

Backbone subcommands (torchvision-resnet, odconv-resnet) write the backbone's keys under
--prefix, by default "backbone.bottom_up.", where condseg's detectors keep their ResNet, so
that MODEL.WEIGHTS loads the file with exact names (the detector's other weights are
reported as not found in the checkpoint, as for any ImageNet initialisation); --prefix ""
writes the ResNet's own names (load those into a detector only with
MODEL.WEIGHTS "OUT.pth?matching_heuristics=True"). With --config-file the weights are
checked against that config's detector (the backbone part); without it, against condseg's
ResNet built with the settings the checkpoint needs (printed, for your config: depth,
STRIDE_IN_1X1 False, RGB input with torchvision's normalisation, ODConv settings) and
detectron2's defaults otherwise (FrozenBN, so num_batches_tracked is dropped); --opts
apply on top.
"""
import argparse
import os
import sys

import condseg  # noqa: F401  (first: registers condseg's components and keeps detectron2's import quiet)
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from torch import nn

from condseg.checkpoint import adelaidet, load_checkpoint_state_dict, odconv, resnet, save_checkpoint
from condseg.checkpoint import torchvision_resnet
from condseg.config import get_condseg_cfg
from condseg.modeling.backbone import build_resnet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # for the default config's path
ALL_STAGES = ["MODEL.RESNETS.OUT_FEATURES", "['res2','res3','res4','res5']"]  # build every stage the checkpoint has


def build_cpu_cfg(config_file, opts, base_opts=()):
    """condseg's config: ``config_file`` (None: the defaults), then ``base_opts``, then the
    user's ``KEY VALUE`` overrides ``opts``, on the CPU."""
    if config_file is not None and not os.path.isfile(config_file):
        raise FileNotFoundError(f"{config_file}: no such config file")
    if len(opts) % 2:
        raise ValueError(f"--opts takes KEY VALUE pairs, got {len(opts)} values: {opts}")
    cfg = get_condseg_cfg()
    if config_file is not None:
        cfg.merge_from_file(config_file)
    for what, values in (("the checkpoint's settings", base_opts), ("--opts", opts)):
        try:
            cfg.merge_from_list(list(values))
        except (AssertionError, KeyError) as e:  # yacs asserts that keys exist
            raise ValueError(f"{what}: {e}") from e
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def build_cpu_model(config_file: str, opts):
    """The condseg model of ``config_file`` plus ``KEY VALUE`` overrides, on the CPU."""
    return build_model(build_cpu_cfg(config_file, opts))


def nest(module: nn.Module, prefix: str) -> nn.Module:
    """``module`` inside containers, so that its keys start with ``prefix`` (``"a.b."``)."""
    for name in reversed(prefix.rstrip(".").split(".") if prefix else []):
        module = nn.ModuleDict({name: module})
    return module


def backbone_check_model(args, report) -> nn.Module:
    """What a converted backbone is checked against: with ``--config-file``, the detector
    of that config (its ResNet at ``backbone.bottom_up`` when the keys have no prefix),
    whose input format and normalisation are checked too; without, condseg's ResNet built
    from the defaults plus the checkpoint's settings (``report.config``) plus ``--opts``,
    under the keys' prefix."""
    if args.config_file is not None:
        cfg = build_cpu_cfg(args.config_file, args.opts)
        resnet.check_input_config(cfg, report)
        model = build_model(cfg)
        return model if report.prefix else model.get_submodule(resnet.DETECTOR_PREFIX.rstrip("."))
    cfg = build_cpu_cfg(None, args.opts, ALL_STAGES + resnet.config_opts(report.config))
    return nest(build_resnet(cfg, ShapeSpec(channels=3)), report.prefix)


def adelaidet_condinst(args):
    """AdelaiDet CondInst checkpoint -> condseg CondInst."""
    # read and rename first, so that a bad input fails before the model is built
    state_dict, report = adelaidet.convert_adelaidet_condinst(load_checkpoint_state_dict(args.input), args.input)
    return adelaidet.fit_to_model(state_dict, build_cpu_model(args.config_file, args.opts), report), report


def torchvision_resnet_backbone(args):
    """torchvision ResNet ImageNet checkpoint -> condseg's ResNet backbone."""
    state_dict, report = torchvision_resnet.convert_torchvision_resnet(
        load_checkpoint_state_dict(args.input), args.input, prefix=args.prefix
    )
    return torchvision_resnet.fit_to_model(state_dict, backbone_check_model(args, report), report), report


def odconv_resnet_backbone(args):
    """Official ODConv OD-ResNet checkpoint -> condseg's OD-ResNet backbone."""
    state_dict, report = odconv.convert_odconv_resnet(
        load_checkpoint_state_dict(args.input), args.input, prefix=args.prefix
    )
    return odconv.fit_to_model(state_dict, backbone_check_model(args, report), report), report


def backbone_arguments(parser):
    parser.add_argument(
        "--prefix",
        default=resnet.DETECTOR_PREFIX,
        help='prefix of the written keys (default "%(default)s", where condseg\'s detectors keep their '
        'ResNet, for MODEL.WEIGHTS; "" for the ResNet\'s own names)',
    )


NO_CONFIG = "condseg's ResNet with the checkpoint's settings"
# name: (function args -> (state dict, report), default config (None: NO_CONFIG), extra arguments or None)
SUBCOMMANDS = {
    "adelaidet-condinst": (adelaidet_condinst, os.path.join(ROOT, "configs", "condinst_R50_1x.yaml"), None),
    "torchvision-resnet": (torchvision_resnet_backbone, None, backbone_arguments),
    "odconv-resnet": (odconv_resnet_backbone, None, backbone_arguments),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    for name, (func, config, add_arguments) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=func.__doc__, description=func.__doc__)
        sub.add_argument("input", metavar="INPUT", help="checkpoint to convert")
        sub.add_argument("output", metavar="OUTPUT", help="converted checkpoint to write (.pth)")
        default = os.path.relpath(config, ROOT) if config else NO_CONFIG
        sub.add_argument(
            "--config-file", default=config, metavar="CFG",
            help=f"config of the model to check against (default: {default})",
        )
        sub.add_argument("--opts", nargs="*", default=[], metavar="KEY VALUE", help="config overrides")
        if add_arguments is not None:
            add_arguments(sub)
        sub.set_defaults(func=func)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if not args.output.endswith(".pth"):  # fail before the work; save_checkpoint checks it too
            raise ValueError(f"{args.output}: the output must be a .pth file")
        state_dict, report = args.func(args)
        save_checkpoint(state_dict, args.output)
    except (FileNotFoundError, ValueError) as e:
        print(f"convert_checkpoint.py {args.command}: error: {e}", file=sys.stderr)
        return 2
    print(report.summary(len(state_dict)))
    print(f"  model    {args.config_file or NO_CONFIG} {' '.join(args.opts)}".rstrip())
    usage = report.usage(args.output) if hasattr(report, "usage") else f"load it with MODEL.WEIGHTS {args.output}"
    print(f"wrote {args.output} ({usage})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
