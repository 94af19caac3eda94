"""A progress bar that cooperates with logging.

tqdm redraws its bar on stderr in place; a log line written to the terminal meanwhile by
another handler breaks the bar in two and leaves its debris on the line. While the bar is
open, tqdm's own ``logging_redirect_tqdm`` routes the console handlers of seg_plugins',
detectron2's and fvcore's loggers through ``tqdm.write``, which clears the bar, prints the
line and redraws it below. Off a terminal (a log file, CI) the bar is off (``disable=None``),
and logging is left as it was.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

__all__ = ["progress_bar", "LOGGERS"]

LOGGERS = ("seg_plugins", "detectron2", "fvcore")


@contextlib.contextmanager
def progress_bar(**kwargs) -> Iterator[tqdm]:
    """``tqdm(**kwargs)`` on stderr (off when stderr is not a terminal) while the console
    handlers of :data:`LOGGERS` write through it."""
    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("disable", None)
    loggers = [logging.getLogger(name) for name in LOGGERS]
    with logging_redirect_tqdm(loggers=loggers), tqdm(**kwargs) as bar:
        yield bar
