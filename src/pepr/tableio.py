"""Read and write result tables as CSV or Parquet, chosen by file extension.

Writes are atomic (temp file in the same folder, then rename) so an interrupted or failed
write never leaves a partial table behind.
"""

from __future__ import annotations

import os
import uuid
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


def _temporary_sibling(path: Path) -> Path:
    """A new, empty file beside ``path`` created with ``open(..., "x")``.

    Unlike ``tempfile.mkstemp`` (always 0600), ``open`` applies the user's umask, so after the
    rename the table is as readable as any file the user creates (0644 under umask 022):
    teammates on a shared cluster file system must be able to read runs.csv and pepr.csv.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "x"):
        pass
    return tmp


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``df`` atomically as CSV or Parquet (by extension), creating parent folders.

    The file's permissions follow the umask (0666 minus umask), like any file the user writes.
    """
    path = Path(path)
    fmt = table_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path)
    try:
        if fmt == "csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
