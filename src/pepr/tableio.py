"""Read and write result tables as CSV or Parquet, chosen by file extension.

Writes are atomic (temp file in the same folder, then rename) so an interrupted or failed
write never leaves a partial table behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

from pepr.errors import PeprInputError

CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")


def table_format(path: str | os.PathLike) -> str:
    """Return "csv" or "parquet" for ``path``'s extension, or raise PeprInputError."""
    suffix = Path(path).suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    raise PeprInputError(
        f"cannot tell the format of '{path}' from its extension '{suffix or '(none)'}'; "
        f"use one of {', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)}"
    )


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV or Parquet table; raise PeprInputError when it is missing or unreadable."""
    path = Path(path)
    fmt = table_format(path)
    if not path.exists():
        raise PeprInputError(f"table '{path}' does not exist")
    if path.is_dir():
        raise PeprInputError(f"table '{path}' is a directory, not a file")
    try:
        if fmt == "csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise PeprInputError(f"table '{path}' is empty (no header, no rows)") from None
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise PeprInputError(f"cannot read {fmt} table '{path}': {exc}") from None
    except Exception as exc:  # pyarrow raises its own error types for corrupt files
        raise PeprInputError(f"cannot read {fmt} table '{path}': {exc}") from None


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``df`` atomically as CSV or Parquet (by extension), creating parent folders."""
    path = Path(path)
    fmt = table_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if fmt == "csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
