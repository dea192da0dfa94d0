"""argparse value parsers shared by the ``pepr`` sub-commands (one message per kind of bad value).

Each raises :class:`argparse.ArgumentTypeError`, which argparse prints as ``--flag: message``.
:func:`setting_parser` derives a ``pepr train`` flag's parser from its setting's field.
:func:`check_out_folder` is the ``--out DIR`` check of the sub-commands that write a folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def number(text: str, kind: type) -> int | float:
    """``kind(text)``; an argparse error naming what was expected otherwise."""
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be {'an integer' if kind is int else 'a number'}, got {text!r}"
        ) from None


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0."""
    value = number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0."""
    value = number(text, float)
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = number(text, float)
    if not (0.0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def setting_parser(item: dataclasses.Field) -> Callable[[str], Any] | None:
    """The flag parser of a :class:`pepr.train.settings.TrainConfig` setting, from its field: the
    kind (``parse``: int, float or path) and the limits the checks on a run use too; None for text."""
    from pepr.train.settings import limits_text, within_limits

    kind = item.metadata.get("parse")
    if kind == "path":
        return Path
    if kind not in ("int", "float"):
        return None
    why = f" ({item.metadata['why']})" if item.metadata.get("why") else ""

    def parse(text: str) -> int | float:
        value = number(text, int if kind == "int" else float)
        if not within_limits(item, value):
            raise argparse.ArgumentTypeError(f"must be {limits_text(item)}{why}, got {text}")
        return value

    return parse


def check_out_folder(out: str) -> None:
    """Raise PeprInputError unless ``--out`` ``out`` is a folder, or can be made as one, and is
    writable; checked without creating anything (``pepr report``, ``pepr replay``)."""
    from pepr.errors import PeprInputError

    path = Path(out)
    if path.exists() and not path.is_dir():
        raise PeprInputError(f"--out '{out}' is a file; give a folder")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise PeprInputError(f"--out '{out}': '{probe}' is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PeprInputError(f"--out '{out}': '{probe}' is not writable; choose a writable folder")
