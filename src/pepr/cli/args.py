"""argparse value parsers shared by the ``pepr`` sub-commands (one message per kind of bad value).

Each raises :class:`argparse.ArgumentTypeError`, which argparse prints as ``--flag: message``.
:data:`PARSERS` names them for :class:`pepr.train.settings.TrainConfig`'s field metadata.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pepr.columns import MAX_SEED


def number(text: str, kind: type) -> int | float:
    """``kind(text)``; an argparse error naming what was expected otherwise."""
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None


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


def seed(text: str) -> int:
    """A seed numpy and torch accept: 0..MAX_SEED."""
    value = non_negative_int(text)
    if value > MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be in 0..{MAX_SEED} (numpy's seed range), got {text}")
    return value


def fraction(text: str) -> float:
    """A fraction in (0, 1]."""
    value = number(text, float)
    if not (0.0 < value <= 1.0):
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
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


#: Parser names used in :class:`pepr.train.settings.TrainConfig` metadata (``parse``).
PARSERS: dict[str, Callable[[str], Any]] = {
    "positive_int": positive_int,
    "non_negative_int": non_negative_int,
    "seed": seed,
    "fraction": fraction,
    "non_negative_float": non_negative_float,
    "positive_float": positive_float,
    "path": Path,
}
