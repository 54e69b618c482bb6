#!/usr/bin/env python
"""Export a condseg FCOSDetector or CondInst to ONNX (dynamic mask heads included).

  python tools/export_model.py --config-file CFG --output model.onnx MODEL.WEIGHTS model_final.pth
  python tools/export_model.py --config-file CFG --output model.onnx --static-size 800x1216 --max-detections 100

The file takes ONE (3, H, W) uint8 image in the config's INPUT.FORMAT, already resized as
the Predictor does (ResizeShortestEdge to INPUT.MIN_SIZE_TEST / INPUT.MAX_SIZE_TEST), and
returns boxes (D, 4) XYXY px, scores (D,), classes (D,) and, for CondInst, masks (D, H, W)
probabilities (--mask-resolution stride: at the mask output stride of the input padded to
the backbone's size divisibility); H, W and D are dynamic unless --static-size /
--max-detections fix them.
The file's class names are those the weights were trained on when their checkpoint has
them (a warning says how they differ from the config's dataset), else the config's dataset's.
Run it with condseg.export.OnnxModel (ONNX Runtime). Exit status 0 on success, 1 with a
one-line error otherwise (nothing is written then).
"""
import argparse
import os
import sys

import condseg  # noqa: F401  (first: keeps detectron2's import quiet)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE", help="model config (yaml)")
    p.add_argument("--output", required=True, metavar="FILE.onnx", help="the ONNX file to write")
    p.add_argument("--static-size", metavar="HxW", help="fix the input size (default: dynamic H and W)")
    p.add_argument("--max-detections", type=int, metavar="N",
                   help="pad/cut the outputs to N rows and add num_detections (default: dynamic D)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: condseg.export.DEFAULT_OPSET)")
    p.add_argument("--input-dtype", choices=("uint8", "float32"), default="uint8", help="the input's element type")
    p.add_argument("--mask-resolution", choices=("input", "stride"), default="input",
                   help="CondInst masks at the input's size (default), or at the mask output stride of the padded "
                        "input, pasted by the caller (condseg's Predictor does it with the model's own pasting: faster)")
    p.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                   help="config overrides, e.g. MODEL.WEIGHTS output/model_final.pth")
    return p


def parse_size(text: str):
    """``"HxW"`` -> ``(H, W)``; ValueError with the option's name otherwise."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"--static-size {text}: expected HxW with two positive integers, e.g. 800x1216")
    return int(parts[0]), int(parts[1])


def run(args) -> str:
    """Build, load the weights strictly, export and check; returns the summary line."""
    import onnx
    from detectron2.modeling import build_model

    from condseg.checkpoint.classes import read_entry
    from condseg.config_setup import setup_cfg
    from condseg.export import DEFAULT_OPSET, export_onnx
    from condseg.export.onnx_export import check_cfg
    from condseg.inference.predictor import load_weights_strict

    if len(args.opts) % 2:
        raise ValueError(f"overrides must be KEY VALUE pairs, got an odd number: {' '.join(args.opts)}")
    if not os.path.isfile(args.config_file):
        raise FileNotFoundError(f"--config-file: no such file: {args.config_file}")
    static_size = parse_size(args.static_size) if args.static_size else None
    cfg = setup_cfg(args.config_file, args.opts, freeze=False)
    check_cfg(cfg)  # before building anything
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    classes = None  # the class names and ids the weights were trained on, when their checkpoint has them
    if cfg.MODEL.WEIGHTS:
        classes = read_entry(load_weights_strict(model, cfg.MODEL.WEIGHTS, args.config_file), cfg.MODEL.WEIGHTS)
    else:
        print("warning: MODEL.WEIGHTS is empty: exporting random weights", file=sys.stderr)
    path = export_onnx(model, args.output, cfg=cfg, static_size=static_size, max_detections=args.max_detections,
                       opset=args.opset or DEFAULT_OPSET, input_dtype=args.input_dtype,
                       mask_resolution=args.mask_resolution, classes=classes)
    onnx.checker.check_model(path)
    size_mb = os.path.getsize(path) / 2**20
    return f"{path}: {size_mb:.1f} MiB, onnx.checker.check_model passed"


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    try:
        print(run(args))
    except Exception as e:  # one line, no traceback: the message names the key or file
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
