#!/usr/bin/env python
"""Run a trained condseg model on images, folders, a video or a webcam, and write the
rendered results (detectron2's demo, with a faster pipeline and json exports).

  python tools/demo.py --config-file CFG --input a.jpg photos/ "shots/*.png" --output out/ --json out/results.json
  python tools/demo.py --config-file CFG --video-input clip.mp4 --output out/clip.mp4 --json out/clip.json
  python tools/demo.py --config-file CFG --webcam --show
  ... --opts MODEL.WEIGHTS output/quickstart/model_final.pth MODEL.DEVICE cuda

Exit status: 0 when every input was processed, 1 when some inputs (or video frames)
were bad (the others are still processed and the problems listed at the end), 2 when
nothing could be run (bad config, weights, video or output path).
"""
import argparse
import logging
import os
import sys

import condseg  # noqa: F401  (first: keeps detectron2's import quiet)
from condseg.inference import Predictor, WeightsMismatchError
from condseg.inference.frames_per_call import FramesPerCall
from condseg.inference.images import run_images
from condseg.inference.sinks import VideoSink, display_available
from condseg.inference.sources import IMAGE_EXTENSIONS, VideoOpenError, expand_image_inputs
from condseg.inference.video import run_video

VIDEO_EXTENSIONS = tuple(VideoSink.FOURCC)
VIDEO_BATCHES = (1, 2)  # frames per model call tried on a video file's first frames; the faster is kept


class DemoError(Exception):
    """Nothing can be run: the message says why and names the file."""


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE",
                   help="model config (yaml), or a model exported by tools/export_model.py (.onnx, run in ONNX Runtime)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", nargs="+", metavar="PATH", help="image files, folders or glob patterns")
    src.add_argument("--video-input", metavar="FILE", help="a video file")
    src.add_argument("--webcam", nargs="?", type=int, const=0, metavar="INDEX", help="a camera (default index 0)")
    p.add_argument("--output", metavar="FILE_OR_DIR",
                   help="images: a folder (or a file for one image); video: an .mp4/.avi file or a folder")
    p.add_argument("--json", metavar="FILE",
                   help="also write the predictions: COCO format for images, per-frame records for a video")
    p.add_argument("--confidence-threshold", type=float, default=0.5, help="minimum score to keep a detection")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"images or frames per model call (default: for a video file "
                        f"{' or '.join(map(str, VIDEO_BATCHES))}, whichever runs faster on its first frames "
                        "(the choice is printed); 1 for a webcam, where more would add latency, and for images)")
    p.add_argument("--no-overlap", action="store_true",
                   help="video: decode, run the model and draw one after the other (for comparison)")
    p.add_argument("--fp16", action="store_true", help="run the model with float16 autocast (CUDA)")
    p.add_argument("--show", action="store_true", help="also show the results in a window, when there is a display")
    p.add_argument("--max-frames", type=int, default=None, help="video/webcam: stop after this many frames")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--opts", default=[], nargs=argparse.REMAINDER, metavar="KEY VALUE",
                   help="config overrides, e.g. MODEL.WEIGHTS model_final.pth MODEL.DEVICE cpu")
    return p


def _check_output_folder(path: str) -> None:
    """The folder that will hold ``path`` must exist (nothing is created far from the user's intent)."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise DemoError(f"--output {path}: the folder {folder} does not exist (create it first)")


def _video_output(args) -> str:
    """The output video path: --output itself, or a file named after the input inside it."""
    out = args.output
    if out is None:
        return None
    if os.path.isdir(out) or not os.path.splitext(out)[1]:  # a folder: made if its parent exists
        _check_output_folder(os.path.normpath(out))
        os.makedirs(out, exist_ok=True)
        stem = "webcam" if args.video_input is None else os.path.splitext(os.path.basename(args.video_input))[0]
        return os.path.join(out, stem + ".mp4")
    if os.path.splitext(out)[1].lower() not in VIDEO_EXTENSIONS:
        raise DemoError(f"--output {out}: a video output must end in one of {', '.join(VIDEO_EXTENSIONS)}")
    _check_output_folder(out)
    return out


def _image_outputs(args, files):
    """Output path per input image (None without --output)."""
    out = args.output
    if out is None:
        return [None] * len(files)
    single_file = len(files) == 1 and os.path.splitext(out)[1].lower() in IMAGE_EXTENSIONS and not os.path.isdir(out)
    if single_file:
        _check_output_folder(out)
        return [out]
    _check_output_folder(os.path.normpath(out))
    os.makedirs(out, exist_ok=True)
    names, paths = set(), []
    for f in files:
        stem, ext = os.path.splitext(os.path.basename(f))
        name, k = stem, 1
        while name in names:  # the same file name in two input folders
            k += 1
            name = f"{stem}_{k}"
        names.add(name)
        paths.append(os.path.join(out, name + (ext if ext.lower() in (".jpg", ".jpeg", ".png") else ".png")))
    for f, p in zip(files, paths):
        if os.path.abspath(f) == os.path.abspath(p):
            raise DemoError(f"--output {out}: would overwrite the input image {f} (choose another folder)")
    return paths


def demo_images(args, predictor_factory) -> int:
    """``--input``: every image file the arguments name -> renderings, COCO json, summary."""
    files, problems = expand_image_inputs(args.input)
    if not files and problems:
        for path, msg in problems:
            print(f"  problem: {path}: {msg}", file=sys.stderr)
        raise DemoError("no image to process")
    outputs = _image_outputs(args, files)
    if args.json:
        _check_output_folder(args.json)
    predictor = predictor_factory()
    show = args.show and display_available()
    if args.show and not show:
        logging.getLogger("condseg").warning("no display: --show ignored")
    summary = run_images(predictor, files, outputs, json_path=args.json, batch_size=args.batch_size, show=show,
                         progress=not args.no_progress)
    print("\n".join(summary.lines()))
    if args.output:
        print(f"rendered images: {args.output}")
    if args.json:
        print(f"predictions (COCO format): {args.json}")
    problems += summary.problems
    if problems:
        print(f"{len(problems)} problems:", file=sys.stderr)
        for path, msg in problems:
            print(f"  {path}: {msg}", file=sys.stderr)
        return 1
    return 0


def demo_video(args, predictor_factory) -> int:
    """``--video-input`` or ``--webcam``: one video -> rendered video, per-frame json, summary."""
    output = _video_output(args)
    if output and args.video_input and os.path.abspath(output) == os.path.abspath(args.video_input):
        raise DemoError(f"--output {output}: would overwrite the input video")
    if args.json:
        _check_output_folder(args.json)
    source = args.webcam if args.video_input is None else args.video_input
    if isinstance(source, str) and not os.path.isfile(source):
        raise DemoError(f"--video-input {source}: no such file")
    if output is None and not args.json and not args.show:
        logging.getLogger("condseg").warning("no --output, --json or --show: the results are not kept")
    predictor = predictor_factory()
    frames_per_call = FramesPerCall(args.batch_size) if args.batch_size else FramesPerCall.measured(VIDEO_BATCHES)
    try:
        summary = run_video(predictor, source, output=output, json_path=args.json, batch_size=frames_per_call,
                            overlap=not args.no_overlap, show=args.show, progress=not args.no_progress,
                            max_frames=args.max_frames)
    except VideoOpenError as e:
        raise DemoError(str(e))
    print("\n".join(summary.lines()))
    print(f"frames per model call: {frames_per_call.description}")
    return 1 if summary.errors else 0


def batch_size(args):
    """Frames or images per model call: ``--batch-size``, else None for a video file
    (measured: one of :data:`VIDEO_BATCHES`) and 1 for a webcam (latency) or images."""
    if args.batch_size is not None:
        return args.batch_size
    return None if args.video_input else 1


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if args.batch_size is not None and args.batch_size < 1:
        print("demo: error: --batch-size must be at least 1", file=sys.stderr)
        return 2
    args.batch_size = batch_size(args)
    if not os.path.isfile(args.config_file):
        print(f"demo: error: --config-file {args.config_file}: no such file", file=sys.stderr)
        return 2

    onnx = args.config_file.endswith(".onnx")
    if onnx and args.opts:
        print("demo: error: --opts: an exported model (.onnx) holds its config; export again to change it",
              file=sys.stderr)
        return 2

    def predictor_factory():
        try:
            if onnx:
                if args.fp16:
                    logging.getLogger("condseg").warning("--fp16: an exported model runs in float32 on the CPU")
                return Predictor.from_onnx(args.config_file, confidence_threshold=args.confidence_threshold)
            return Predictor(args.config_file, opts=args.opts, confidence_threshold=args.confidence_threshold,
                             fp16=args.fp16)
        except (FileNotFoundError, WeightsMismatchError) as e:
            raise DemoError(str(e))
        except ValueError as e:  # condseg.export.NotAnExportError: the .onnx file is not an export
            if onnx:
                raise DemoError(str(e))
            raise
        except KeyError as e:  # yacs: a key in --opts that the config does not have
            raise DemoError(f"--opts: {e.args[0] if e.args else e}")

    try:
        if args.input:
            return demo_images(args, predictor_factory)
        return demo_video(args, predictor_factory)
    except DemoError as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("demo: interrupted; what was done so far is written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
