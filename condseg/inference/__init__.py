"""Running trained models for people and programs: the ``Predictor``, json exports,
rendering, colour tracking across video frames, and the demo's pipelines: inputs
(``sources``), outputs (``sinks``), images (``images``), videos (``video``) and their
summaries (``summary``)."""
from .images import run_images  # noqa: F401
from .predictor import Predictor, WeightsMismatchError, load_weights_strict  # noqa: F401
from .render import color_of, draw_instances  # noqa: F401
from .results import coco_results_file, instances_to_records, video_results_file  # noqa: F401
from .sources import ImageReadError, expand_image_inputs, read_image  # noqa: F401
from .tracking import IoUTracker  # noqa: F401
from .video import run_video  # noqa: F401
