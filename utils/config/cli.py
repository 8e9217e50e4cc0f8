"""Shared command-line plumbing for scripts/: flags named like config keys, and one-line errors."""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from dataset import DatasetError
from model import ModelLoadError
from utils.config.loading import ConfigError, parse_list, resolve_config
from utils.evaluation.store import StaleOutputError
from utils.files import OutputDirError, disk_full_message
from utils.training.checkpoint import CheckpointError


def user_errors() -> tuple[type[Exception], ...]:
    """Exceptions that mean bad input: shown as one line, never as a traceback."""
    return (
        ConfigError,
        DatasetError,
        ModelLoadError,
        StaleOutputError,
        CheckpointError,
        OutputDirError,
        FileNotFoundError,
    )


def base_parser(description: str) -> argparse.ArgumentParser:
    """A parser with `--config` and the flags every script shares; every default is None (= not given)."""
    parser = argparse.ArgumentParser(description=description, argument_default=None)
    parser.add_argument(
        "--config", help="YAML file with keys of configs/config.yaml (e.g. configs/mvtec.yaml)"
    )
    parser.add_argument(
        "--model_path", help="local facebook/sam3 folder (default ~/autodl-tmp/download/sam3)"
    )
    parser.add_argument("--output_dir", help="where outputs are written")
    parser.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--dtype", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--batch_size", type=int, help="images per vision-encoder pass")
    parser.add_argument("--chunk_size", type=int, help="image x prompt rows per decoder pass")
    parser.add_argument("--prompt_strategy", choices=["base", "category", "mixed", "contextual"])
    return parser


def add_checkpoint_arg(parser: argparse.ArgumentParser) -> None:
    """--checkpoint: score the learned concepts of a scripts/train.py checkpoint."""
    parser.add_argument(
        "--checkpoint", help="trained concepts from scripts/train.py (OUTPUT_DIR/last.safetensors)"
    )


def add_dataset_args(parser: argparse.ArgumentParser) -> None:
    """Flags that choose a dataset and its categories."""
    parser.add_argument("--dataset", choices=["mvtec", "visa", "folder"])
    parser.add_argument("--dataset_path", help="datasets root (default: first line of dataset_dir.txt)")
    parser.add_argument(
        "--categories", type=parse_list, help="comma-separated categories (default: all found)"
    )


def config_from_args(
    args: argparse.Namespace, not_config: Sequence[str] = (), output_per_dataset: bool = False
) -> dict[str, Any]:
    """Resolve defaults <- --config YAML <- the flags given on the command line.

    `not_config` names flags that are not config keys (e.g. the demo's --image_path). With
    `output_per_dataset`, an output_dir set neither by --output_dir nor by the --config file becomes
    `<default output_dir>/<dataset>` (results/mvtec, results/visa), so two datasets never share a folder.
    """
    skip = {"config", *not_config}
    cli = {key: value for key, value in vars(args).items() if key not in skip}
    cfg = resolve_config(args.config, cli)
    if output_per_dataset and cli.get("output_dir") is None and not _file_sets(args.config, "output_dir"):
        cfg["output_dir"] = str(Path(cfg["output_dir"]) / cfg["dataset"])
    return cfg


def _file_sets(config_path: str | None, key: str) -> bool:
    """Whether the YAML file `config_path` (already read and checked by resolve_config) sets `key`."""
    return bool(config_path) and key in (yaml.safe_load(Path(config_path).expanduser().read_text()) or {})


def run(
    main: Callable[[argparse.Namespace], int | None], parse_args: Callable, argv: Sequence[str] | None
) -> int:
    """Parse `argv`, call `main`; a user error becomes `error: <message>` on stderr and exit code 2.

    So does a full disk (ENOSPC) anywhere: the message says to free space and rerun, which resumes.
    """
    args = parse_args(argv)
    try:
        return main(args) or 0
    except user_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        print(f"error: {disk_full_message(err.filename or 'the output folder')}", file=sys.stderr)
        return 2
