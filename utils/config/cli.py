"""Shared command-line plumbing for scripts/: flags named like config keys, and one-line errors."""

from __future__ import annotations

import argparse
import errno
import os
import shlex
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from dataset import DatasetError
from model import ModelLoadError
from utils.config.loading import ConfigError, StaleOutputError, parse_int_list, parse_list, resolve_config
from utils.config.parser import OneLineParser
from utils.config.schema import Config, Setting, flags_of, yaml_value
from utils.distributed import RankError
from utils.files import OutputDirError, disk_full_message
from utils.run_log import FILE_ONLY, get_logger, start_logging, stop_logging
from utils.training.checkpoint import CheckpointError

log = get_logger(__name__)


def user_errors() -> tuple[type[Exception], ...]:
    """Exceptions that mean bad input: shown as one line, never as a traceback."""
    return (
        ConfigError,
        DatasetError,
        ModelLoadError,
        StaleOutputError,
        RankError,
        CheckpointError,
        OutputDirError,
        FileNotFoundError,
    )


def script_parser(script: str, description: str, *more: str) -> argparse.ArgumentParser:
    """A parser with `--config` and a flag per setting that `script` (and the scripts `more`) exposes (see
    utils/config/schema.py; app.py takes demo.py's flags and its own).

    Every flag is named like its key and defaults to None (= not given, the config decides); choices,
    types and help come from the key's declaration. Booleans get `--key` / `--no-key`, lists are
    comma-separated.
    """
    parser = OneLineParser(description=description, argument_default=None)
    parser.add_argument(
        "--config", help="YAML file with keys of configs/config.yaml (e.g. configs/mvtec.yaml)"
    )
    for declared in [s for name in (script, *more) for s in flags_of(name)]:
        parser.add_argument(f"--{declared.name}", **_flag_options(declared))
    return parser


def _flag_options(declared: Setting) -> dict[str, Any]:
    """argparse keyword arguments for one declared setting."""
    info = declared.info
    text = f"{info.help} (default: {yaml_value(declared.default)})"
    options: dict[str, Any] = {"help": text.replace("%", "%%")}  # argparse formats help with %
    if declared.kind is bool:
        options["action"] = argparse.BooleanOptionalAction
    elif declared.kind is list:
        options["type"] = parse_int_list if declared.item is int else parse_list
    elif declared.kind in (int, float):
        options["type"] = declared.kind
    elif declared.kind is not str:
        raise TypeError(f"setting '{declared.name}' ({declared.kind.__name__}) cannot be a flag: YAML only")
    if info.choices:
        options["choices"] = list(info.choices)
    return options


def config_from_args(
    args: argparse.Namespace, not_config: Sequence[str] = (), output_per_dataset: bool = False
) -> Config:
    """The run's Config: defaults <- --config YAML <- the flags given on the command line (`resolve_config`).

    `not_config` names flags that are not config keys (e.g. the demo's --image_path). With
    `output_per_dataset`, an output_dir set neither by --output_dir nor by the --config file becomes
    `<default output_dir>/<dataset>` (results/mvtec, results/visa), so two datasets never share a folder.
    """
    skip = {"config", *not_config}
    cli = {key: value for key, value in vars(args).items() if key not in skip}
    return resolve_config(args.config, cli, output_per_dataset)


def run(
    main: Callable[[argparse.Namespace], int | None], parse_args: Callable, argv: Sequence[str] | None
) -> int:
    """Parse `argv`, call `main`; a user error becomes `error: <message>` on stderr and exit code 2.

    So does a full disk (ENOSPC) anywhere: the message says to free space and rerun, which resumes; and a
    file-system refusal (a read-only or unwritable folder, a file where a folder belongs, a name too long:
    FILE_SYSTEM_HINTS). Ctrl-C prints one stop line and returns 130; a rerun resumes.
    Logging (utils/run_log.py) is set up for the run and closed after it; `main` adds run.log once it knows
    its output folder, so the error line and an unexpected crash's traceback land there too.
    """
    args = parse_args(argv)
    script = Path(getattr(sys.modules.get(main.__module__), "__file__", None) or main.__module__).name
    start_logging(shlex.join([script, *(sys.argv[1:] if argv is None else argv)]))
    python_format = warnings.formatwarning
    warnings.formatwarning = one_line_warning
    try:
        return main(args) or 0
    except KeyboardInterrupt:
        end_progress_bars()
        log.error("stopped by Ctrl-C: rerun the same command to resume (finished images are kept)")
        return 130
    except Exception as err:
        end_progress_bars()
        message = user_message(err)
        if message is None:
            log.exception("stopped by an unexpected error", extra=FILE_ONLY)
            raise
        log.error(f"error: {message}")
        return 2
    finally:
        warnings.formatwarning = python_format
        stop_logging()


def one_line_warning(message: Warning | str, category: type[Warning], *where: Any, **line: Any) -> str:
    """A warning as the scripts print it: `warning: <message>`, without Python's source file and line."""
    return f"warning: {message}\n"


def end_progress_bars() -> None:
    """Close the progress bars an error left open, so that the error starts a line of its own (a bar leaves
    the cursor after itself: `bottle:  50%|#####| 2/4error: ...`)."""
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def user_message(err: Exception) -> str | None:
    """The one-line message `run` shows for `err`, or None when it is a bug (shown as a traceback)."""
    if isinstance(err, user_errors()):
        return str(err)
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return disk_full_message(err.filename or "the output folder")
    if isinstance(err, OSError) and err.errno in FILE_SYSTEM_HINTS:
        name = err.filename2 or err.filename or "a file"  # a rename names its target second
        too_long = err.errno == errno.ENAMETOOLONG
        length = f" ({len(os.fsencode(Path(name).name))}-byte name)" if too_long else ""
        return f"{err.strerror}: {name}{length}: {FILE_SYSTEM_HINTS[err.errno]}"
    return None


# What to do about a file-system refusal: bad input (the folder given, a file name), not a bug of the code.
FILE_SYSTEM_HINTS: dict[int, str] = {
    errno.EACCES: "fix its permissions (an output: make it writable, or choose another --output_dir)",
    errno.EPERM: "fix its permissions (an output: make it writable, or choose another --output_dir)",
    errno.EROFS: "the file system is read-only: choose another --output_dir",
    errno.ENOTDIR: "a file stands where a folder is needed: move it away, or choose another --output_dir",
    errno.EEXIST: "a file stands where a folder is needed: move it away, or choose another --output_dir",
    errno.EISDIR: "a folder stands where a file is written: move it away, or choose another --output_dir",
    errno.ENAMETOOLONG: "the name is longer than the file system allows (255 bytes): rename the input file",
}
