"""Read and write result tables as CSV or Parquet, chosen by file extension.

Writes are atomic (temp file in the same folder, then rename) so an interrupted or failed
write never leaves a partial table behind; the file gets the user's umask (0644 under umask
022), never ``mkstemp``'s 0600. CSV is written with pyarrow's writer (:func:`write_csv`), read
back to the same values as pandas' writer. Reads refuse a repeated column name instead of
pandas' silent ``x.1`` renaming. Every failure is a :class:`PeprInputError` naming the path.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from pepr.errors import PeprInputError
from pepr.results.runs import remove_stale_temporaries

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
            _refuse_duplicate_names(_csv_header(path), path)
            return pd.read_csv(path)
        table = pd.read_parquet(path)
        _refuse_duplicate_names([str(c) for c in table.columns], path)
        return table
    except PeprInputError:
        raise
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


def _csv_header(path: Path) -> list[str]:
    """The column names of a CSV file's first line, exactly as written (no renaming)."""
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        return next(csv.reader(handle), [])


def _refuse_duplicate_names(names: list[str], path: str | os.PathLike) -> None:
    # pandas silently renames a repeated CSV header to "x.1": the user would then score or
    # report a column they never named, so a repeated name is refused instead.
    seen: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        if name in seen:
            raise PeprInputError(
                f"table '{path}' has two columns named {name!r} (columns {seen[name]} and {position}); "
                "rename or drop one of them"
            )
        seen[name] = position


def check_writable(path: str | os.PathLike, flag: str = "output") -> None:
    """Raise PeprInputError now when a table cannot be written at ``path``.

    Called before expensive work (reading, scoring, calibrating) so that a wrong ``--output`` or
    a read-only folder is reported before anything is computed. Checks the extension, that
    ``path`` is not a folder, that no parent is a file, and that a file can be created in its
    folder (which it creates, as the write would). A disk that fills up later is caught by
    :func:`write_table`.
    """
    _check_output_path(path, flag)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _temporary_sibling(path).unlink()
    except OSError as exc:
        raise PeprInputError(
            f"{flag} '{os.fspath(path)}' cannot be written ({exc.strerror or exc}); choose a writable folder"
        ) from None


def _check_output_path(path: str | os.PathLike, flag: str) -> None:
    """Extension known, ``path`` not a folder, no parent a file (no file system changes)."""
    text = os.fspath(path)
    table_format(path)
    path = Path(path)
    if text.endswith(("/", os.sep)) or path.is_dir():
        raise PeprInputError(
            f"{flag} '{text}' is a folder; give a file name inside it, e.g. '{path / ('table' + path.suffix)}'"
        )
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise PeprInputError(f"{flag} '{text}': '{parent}' is a file, not a folder; choose another path")
            break


#: Column kinds pyarrow's CSV writer renders as pandas would read them back (bool, int, unsigned,
#: float, object, string); dates, durations, categories, complex numbers go through pandas.
_ARROW_CSV_KINDS = frozenset("biufOUT")


def write_csv(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``df`` as CSV (no index) to ``path``, reading back with ``pd.read_csv`` to the same values.

    Uses pyarrow's CSV writer, about 3x faster than ``DataFrame.to_csv`` on a 24,000-run
    pepr.csv (see bench/aggregate_bench.py). Where the two writers' text would read back
    differently, this keeps pandas' reading: a float column whose values are all whole numbers
    is written as ``1.0`` (arrow writes ``1``, which reads back as an integer column). Columns
    arrow cannot convert (mixed-type objects, dates, categories) fall back to pandas' writer.
    """
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    kinds = {getattr(dtype, "kind", "O") for dtype in df.dtypes}
    if not kinds <= _ARROW_CSV_KINDS or isinstance(df.columns, pd.MultiIndex):
        df.to_csv(path, index=False)
        return
    whole = {}
    for position, (_name, column) in enumerate(df.items()):
        if column.dtype.kind == "f":
            values = column.to_numpy()
            finite = values[np.isfinite(values)]
            # A NaN makes pandas read the column as float anyway; otherwise keep the ".0".
            if len(values) and not np.isnan(values).any() and np.array_equal(finite, np.floor(finite)):
                whole[position] = [repr(float(v)) for v in values]
    frame = df
    if whole:
        frame = df.copy(deep=False)
        for position, text in whole.items():
            frame.isetitem(position, text)
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        df.to_csv(path, index=False)  # e.g. an object column mixing numbers and text
        return
    pa_csv.write_csv(table, path)


def write_table(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``df`` atomically as CSV or Parquet (by extension), creating parent folders.

    The file's permissions follow the umask (0666 minus umask), like any file the user writes.
    A failed write (full disk, read-only folder, ``path`` a folder) raises PeprInputError
    naming the path; an existing table at ``path`` is then left as it was.
    """
    _check_output_path(path, "output")
    path = Path(path)
    fmt = table_format(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)  # a writer killed before its rename (kill -9 during score_runs)
        tmp = _temporary_sibling(path)
        if fmt == "csv":
            write_csv(df, tmp)
        else:
            df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise PeprInputError(
            f"cannot write table '{path}' ({exc.strerror or exc}); free some space or choose another output path"
        ) from None
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise
