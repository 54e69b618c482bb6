#!/usr/bin/env python
"""Convert other code bases' checkpoints to condseg's layout.

  python tools/convert_checkpoint.py adelaidet-condinst model_final.pth condinst_R50_1x.pth
  python tools/convert_checkpoint.py adelaidet-condinst IN.pth OUT.pth --config-file CFG --opts KEY VALUE ...

The converted state dict is checked against the model built (on the CPU) from the config
and ``--opts``, key by key and shape by shape, before anything is written. The output
``.pth`` then loads with ``MODEL.WEIGHTS OUT.pth`` (same config). A failed conversion
prints the reason, writes nothing and exits with status 2.

Subcommands
  adelaidet-condinst   AdelaiDet CondInst: trainer checkpoint or bare state dict (.pth),
                       or a detectron2-style .pkl; default config configs/condinst_R50_1x.yaml
"""
import argparse
import os
import sys
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# fvcore scripts a function at import time, which recent torch reports as deprecated
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

from detectron2.modeling import build_model  # noqa: E402

import condseg  # noqa: E402,F401  (registers components)
from condseg.checkpoint import adelaidet, load_checkpoint_state_dict, save_checkpoint  # noqa: E402
from condseg.config import get_condseg_cfg  # noqa: E402


def build_cpu_model(config_file: str, opts):
    """The condseg model of ``config_file`` plus ``KEY VALUE`` overrides, on the CPU."""
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"{config_file}: no such config file")
    if len(opts) % 2:
        raise ValueError(f"--opts takes KEY VALUE pairs, got {len(opts)} values: {opts}")
    cfg = get_condseg_cfg()
    cfg.merge_from_file(config_file)
    try:
        cfg.merge_from_list(list(opts))
    except (AssertionError, KeyError) as e:  # yacs asserts that keys exist
        raise ValueError(f"--opts: {e}") from e
    cfg.MODEL.DEVICE = "cpu"
    return build_model(cfg)


def adelaidet_condinst(args):
    """AdelaiDet CondInst checkpoint -> condseg CondInst."""
    # read and rename first, so that a bad input fails before the model is built
    state_dict, report = adelaidet.convert_adelaidet_condinst(load_checkpoint_state_dict(args.input), args.input)
    return adelaidet.fit_to_model(state_dict, build_cpu_model(args.config_file, args.opts), report), report


# name: (function args -> (state dict, report), default config)
SUBCOMMANDS = {
    "adelaidet-condinst": (adelaidet_condinst, os.path.join(ROOT, "configs", "condinst_R50_1x.yaml")),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    for name, (func, config) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=func.__doc__, description=func.__doc__)
        sub.add_argument("input", metavar="INPUT", help="checkpoint to convert")
        sub.add_argument("output", metavar="OUTPUT", help="converted checkpoint to write (.pth)")
        sub.add_argument("--config-file", default=config, metavar="CFG", help="config of the model to check against")
        sub.add_argument("--opts", nargs="*", default=[], metavar="KEY VALUE", help="config overrides")
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
    print(f"  model    {args.config_file} {' '.join(args.opts)}".rstrip())
    print(f"wrote {args.output} (load it with MODEL.WEIGHTS {args.output})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
