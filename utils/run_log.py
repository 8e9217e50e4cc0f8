"""Progress messages of a script run: the console and `run.log` in the output folder.

Every project module logs through `get_logger(__name__)`, a child of the "sam3ad" logger. A script run
(`utils.config.cli.run`) calls `start_logging()` once, which replaces whatever an earlier run in the same
process attached, so repeated in-process runs never write a line twice; `log_to_folder(out)` then adds
`out/run.log` (appended to, one timestamped line per message) once the output folder is checked and locked;
`stop_logging()` closes it. On the console, info lines go to stdout and warnings and errors to stderr,
each as the bare message, exactly as the former print calls wrote them. A record logged with
`extra=FILE_ONLY` (e.g. a crash's traceback) goes to run.log only.

Without `start_logging()` (a notebook, a library caller) messages propagate to the root logger as usual.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

LOGGER_NAME = "sam3ad"
LOG_FILE = "run.log"
FILE_ONLY = {"file_only": True}
FILE_FORMAT = "%(asctime)s %(levelname)s %(message)s"
_command = ""  # the command line of the current run, set by start_logging


def get_logger(name: str) -> logging.Logger:
    """The project logger for module `name` (pass `__name__`)."""
    return logging.getLogger(f"{LOGGER_NAME}.{name}")


class ConsoleHandler(logging.Handler):
    """Info to stdout, warnings and errors to stderr, as bare messages.

    The stream is looked up at each message, so a replaced sys.stdout / sys.stderr (pytest's capture, a
    notebook) is honoured.
    """

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.addFilter(lambda record: not getattr(record, "file_only", False))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # logging must never stop a run; report it the standard way
            self.handleError(record)


def _project_logger() -> logging.Logger:
    return logging.getLogger(LOGGER_NAME)


def stop_logging() -> None:
    """Close and detach every handler of the project logger; messages propagate to the root logger again."""
    logger = _project_logger()
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    logger.propagate = True


def start_logging(command: str = "") -> None:
    """Begin a script run: the console handler only (an earlier run's handlers are closed and removed).

    `command` (e.g. "test.py --dataset visa") is the first line `log_to_folder` writes into run.log.
    """
    global _command
    stop_logging()
    _command = command
    logger = _project_logger()
    logger.setLevel(logging.INFO)
    logger.propagate = False  # a root handler (e.g. a notebook's basicConfig) would print every line twice
    logger.addHandler(ConsoleHandler())


def log_to_folder(out: Path) -> Path:
    """Also append every message, timestamped, to `out/run.log` (replacing an earlier file); return it."""
    logger = _project_logger()
    for handler in [h for h in logger.handlers if isinstance(h, logging.FileHandler)]:
        logger.removeHandler(handler)
        handler.close()
    path = Path(out) / LOG_FILE
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(FILE_FORMAT))
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    get_logger(__name__).info("run started: %s", _command or "(no command line)", extra=FILE_ONLY)
    return path


def bar_progress(bar: Any) -> Callable[[int, int], None]:
    """A `progress(done, total)` callback (e.g. for `model.visual.mutual_raw`) that moves a tqdm `bar` to
    `done`; the model layer reports counts and never prints."""

    def advance(done: int, total: int) -> None:
        bar.update(done - bar.n)

    return advance
