"""Model components; importing registers them with detectron2's registries."""
from . import backbone, condinst, fcos  # noqa: F401
