from .trainer import Trainer, has_compiled_detectron2_ops, wrap_ddp

__all__ = ["Trainer", "has_compiled_detectron2_ops", "wrap_ddp"]
