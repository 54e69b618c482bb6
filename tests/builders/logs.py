"""caplog attached to one logger directly, for tests of what a module logs."""
import contextlib
import logging
from typing import Optional


@contextlib.contextmanager
def caplog_on(caplog, name: str, level: int, logger_level: Optional[int] = None):
    """``caplog`` receiving the records of logger ``name`` at ``level`` and above, whatever
    the loggers up the tree do (a set-up elsewhere in the session may have turned off their
    propagation): the handler is attached to the logger itself, which stops propagating
    meanwhile, so each record arrives once. ``logger_level``: the logger's own level
    meanwhile (unchanged if None). Everything is restored after."""
    logger = logging.getLogger(name)
    old_level, old_propagate = logger.level, logger.propagate
    if logger_level is not None:
        logger.setLevel(logger_level)
    logger.propagate = False
    logger.addHandler(caplog.handler)
    caplog.handler.setLevel(level)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate
