"""The errors of :mod:`condseg.export`."""

__all__ = ["ExportError", "NotAnExportError"]


class ExportError(ValueError):
    """A model, config or option that cannot be exported (the message names the config
    key or option and the reason). Nothing is written when it is raised."""


class NotAnExportError(ValueError):
    """A file (ONNX or not) that condseg's exporter did not write (the message names it)."""
