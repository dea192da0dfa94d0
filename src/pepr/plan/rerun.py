"""What retrains a finished cell: pepr's content-based rerun check behind the train rules' params.

Snakemake (9.27) records a job's ``params`` as the ``repr`` of each value and re-plans a finished
job when the recorded texts differ from today's (``persistence.params_changed``: a set
comparison of the texts). pepr keeps that trigger but decides itself what the text is: the train
rules' ``params.train`` (a :class:`pepr.plan.grid.TrainSettings`) is written out by
:func:`record_text`:

* when the job has a record and it is *equivalent* to today's settings, the recorded text
  verbatim: Snakemake sees no change, whatever the text looks like. So a sweep finished with an
  earlier pepr (whose record still holds ``country`` and ``data_dir``) plans no retrain, and
* otherwise today's text: the settings dict, plus the data file's content fingerprint
  (``data_sha256``) once it is known.

Equivalent means: every *training* setting is equal as training resolves it (model, dataset,
init, fraction, epochs, seed, image_size, batch_size, lr, device, precision, save_model; an
optional setting left out is its default, ``image_size`` left out is the dataset's stored size,
numbers compare as numbers), and the data file has the same content. Settings that do not change what is trained are ignored: ``country`` and
``carbon_intensity`` (CO2 is energy x intensity, derived at aggregation from the measured energy
per epoch) and ``data_dir`` (where the data lives, not what it is). Data content: when the
record has a fingerprint, it must match today's (``touch``/``cp``/``rsync`` change nothing); a
record of an earlier pepr has none, and then the data file counts as changed when it is newer
than the run's metrics.json (the earlier behaviour).

The data inputs themselves are ``ancient()`` in train.smk, so a timestamp alone never makes
Snakemake re-plan a cell (Snakemake 9.27 treats an input newer than its output as changed unless
its checksum matches, and a file over ``max-checksum-file-size``, 1 MB, has none).

Standard library only.
"""

from __future__ import annotations

import ast
import hashlib
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from pepr.files import file_sha256

__all__ = [
    "NOT_TRIGGERS",
    "paths_digest",
    "DataDigests",
    "attach_record",
    "record_text",
    "equivalent",
    "native_image_size",
    "stored_image_shape",
]

#: Settings that never retrain a finished cell (see the module docstring).
#: (``retrain``, ``threads``, ``out_dir``, ``pretrain_metrics`` are never settings of the record;
#: listed so a TrainSettings that ever carried them still compares by what is trained.)
NOT_TRIGGERS: frozenset[str] = frozenset(
    {"country", "carbon_intensity", "data_dir", "data_sha256", "retrain", "threads", "out_dir", "pretrain_metrics"}
)
#: Defaults of settings that are recorded only when set (an absent key means this value).
_ABSENT_MEANS: dict[str, Any] = {"precision": "fp32", "save_model": None, "image_size": None}


def paths_digest(paths: Iterable[str]) -> str:
    """A short digest of a list of paths (order-independent): the set of runs a rule reads."""
    joined = "\n".join(sorted(paths))
    return hashlib.sha256(joined.encode()).hexdigest()[:16]


class DataDigests:
    """Content fingerprints of a sweep's data files, computed at most once per file per process
    (lazily: only when a finished cell's record is compared or a job's record is written)."""

    def __init__(
        self,
        cache_dir: str | os.PathLike | None,
        planned: Mapping[str, Callable[[Callable[[str], str | None]], str | None]] | None = None,
    ) -> None:
        self.cache_dir = cache_dir
        self._known: dict[str, str | None] = {}
        # data files built from the user's files (pepr.datasets: a kind's planned_digest): their
        # fingerprint comes from the sources, asked again once the built file changes
        self.planned = dict(planned or {})
        self._planned_known: dict[tuple[str, Any], str | None] = {}

    def __call__(self, path: str | None) -> str | None:
        if path is None:
            return None
        if path in self.planned:
            try:
                stat = os.stat(path)
                stamp: Any = (stat.st_size, stat.st_mtime_ns)
            except OSError:
                stamp = None
            if (path, stamp) not in self._planned_known:
                self._planned_known[(path, stamp)] = self.planned[path](lambda file: file_sha256(file, self.cache_dir))
            return self._planned_known[(path, stamp)]
        if path not in self._known:
            self._known[path] = file_sha256(path, self.cache_dir)
        return self._known[path]


def attach_record(
    settings: Any,
    recorded: Callable[[], Iterable[str] | None],
    output: str,
    data_file: str | None,
    digests: DataDigests,
) -> Any:
    """Give a TrainSettings what :func:`record_text` needs: the job's recorded params texts
    (a callable, asked only when Snakemake compares), its metrics.json path, its data file."""
    settings._pepr_record = (recorded, output, data_file, digests)
    return settings


def _literal(text: str) -> dict[str, Any] | None:
    if not (isinstance(text, str) and text.startswith("{")):
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _npz_stem(spec: Any) -> str | None:
    if not isinstance(spec, str) or not spec.strip():
        return None
    from pepr.datasets.registry import kind_of

    return kind_of(spec).moved_file_stem(spec)


def stored_image_shape(spec: Any, data_file: str | None) -> tuple[int, int] | None:
    """(height, width) a dataset's images are stored at, told without loading them (MedMNIST and
    synthetic from the spec, npz from ``train_images``' header); None when it cannot be told."""
    try:
        from pepr.datasets.core import parse_dataset_spec
        from pepr.datasets.registry import kind_of

        parsed = parse_dataset_spec(spec)
        return kind_of(parsed).stored_image_shape(parsed, Path(data_file) if data_file is not None else None)
    except Exception:  # an unreadable spec or file: not known (the data checks name what is wrong)
        return None


def native_image_size(spec: Any, data_file: str | None) -> int | None:
    """The size ``image_size`` unset trains at: the stored size of square images; None when it
    cannot be told without loading the data (then an explicit size counts as a change)."""
    shape = stored_image_shape(spec, data_file)
    return shape[0] if shape is not None and shape[0] == shape[1] else None


def _same_image_size(before: Any, now: Any, native: Callable[[], int | None]) -> bool:
    """``image_size`` unset trains at the stored size: 28 on a 28 px dataset is no change."""
    if before is None and now is None or before == now:
        return True
    if (before is None) == (now is None):
        return False
    size = native()
    return size is not None and (before if before is not None else now) == size


def equivalent(
    old: Mapping[str, Any],
    new: Mapping[str, Any],
    data_sha256: Callable[[], str | None],
    data_newer_than_output: Callable[[], bool],
    native_size: Callable[[], int | None] = lambda: None,
) -> bool:
    """Whether a recorded settings dict ``old`` trains the same as today's ``new`` (see the module):
    each setting compared by the value training resolves it to (an absent optional setting is its
    default; ``image_size`` unset is ``native_size()``, the dataset's stored size)."""
    recorded_digest = old.get("data_sha256")
    for key in (set(old) | set(new)) - NOT_TRIGGERS:
        default = _ABSENT_MEANS.get(key)
        before, now = old.get(key, default), new.get(key, default)
        if before == now:
            continue
        if key == "image_size" and _same_image_size(before, now, native_size):
            continue
        if key == "dataset" and recorded_digest and _npz_stem(before) and _npz_stem(before) == _npz_stem(now):
            continue  # an npz file moved: same name, same content (checked below)
        return False
    if recorded_digest is not None:
        return recorded_digest == data_sha256()
    return not data_newer_than_output()


def record_text(settings: Any) -> str:
    """The text Snakemake records and compares for a TrainSettings (see the module docstring)."""
    plain = dict.__repr__(settings)
    attached = getattr(settings, "_pepr_record", None)
    if attached is None:
        return plain
    recorded, output, data_file, digests = attached

    def digest() -> str | None:
        return digests(data_file)

    def data_newer() -> bool:
        if data_file is None:
            return False
        try:
            return os.stat(data_file).st_mtime > os.stat(output).st_mtime
        except OSError:
            return False

    current = dict(settings)
    for text in recorded() or ():
        old = _literal(text)
        if (
            old is not None
            and "model" in old
            and equivalent(
                old, current, digest, data_newer, lambda: native_image_size(current.get("dataset"), data_file)
            )
        ):
            return text
    found = digest()
    return repr({**current, "data_sha256": found}) if found else plain
