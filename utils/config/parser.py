"""The argument parser of every script: argparse, with a usage error on one line."""

from __future__ import annotations

import argparse
from typing import NoReturn


class OneLineParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` whose usage errors (unknown flag, missing or bad value) are one line
    on stderr, ``error: <what argparse says> (see <script> --help)``, with exit code 2 as argparse's."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")
