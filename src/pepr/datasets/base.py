"""What every kind of dataset spec shares: the parsed spec, the loaded arrays, and the interface
each kind implements (:class:`DatasetKind`: parse, name, file, planning problems, load, facts for
the estimate, stamps for the validation cache). The kinds live beside this module (``medmnist``,
``npz``, ``synthetic``, ``images``); :mod:`pepr.datasets.registry` resolves a spec to its kind.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: The npz keys of the MedMNIST layout, split by split.
SPLITS: tuple[str, ...] = ("train", "val", "test")

#: Characters kept in a dataset's short name (a path component); the rest become ``_``.
SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed ``--dataset`` value.

    ``kind`` is ``"medmnist"``, ``"npz"``, ``"synthetic"``, ``"folder"`` or ``"csv"``; ``flag`` is set for MedMNIST,
    ``path`` for npz, ``options`` (sorted ``(key, value)`` pairs, every key of
    :data:`SYNTHETIC_DEFAULTS` resolved) for synthetic. ``size`` is the stored image size
    (``None`` for npz: read from the file). ``spec`` is the original string.
    """

    kind: str
    spec: str
    flag: str | None = None
    path: Path | None = None
    options: tuple[tuple[str, int | float], ...] = ()
    size: int | None = None
    #: synthetic options the user wrote explicitly (with non-default values), for the name
    explicit_options: tuple[tuple[str, int | float], ...] = field(default=(), compare=False)

    def option(self, key: str) -> int | float:
        """Value of a synthetic option (defaults resolved)."""
        return dict(self.options)[key]


@dataclass
class ImageData:
    """The three splits of a dataset as numpy arrays, images ``(N, C, H, W)`` (uint8 or float32).

    Images stay in their stored dtype (uint8 for MedMNIST: 4x less memory); the training code
    moves them to the device once and scales/normalises them there.
    """

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    class_names: tuple[str, ...]
    description: str
    #: labels are (N, L) 0/1 rows (BCE-with-logits, multi-label metrics) instead of class indices
    multi_label: bool = False
    #: what the run records about the data beyond its arrays (folder/csv: counts per split, ...)
    details: dict = field(default_factory=dict)

    @property
    def channels(self) -> int:
        """Number of image channels."""
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """Stored (height, width)."""
        return int(self.train_x.shape[2]), int(self.train_x.shape[3])

    def with_train_subset(self, indices: np.ndarray) -> ImageData:
        """A copy whose train split holds only ``indices`` (val/test untouched)."""
        import dataclasses

        return dataclasses.replace(self, train_x=self.train_x[indices], train_y=self.train_y[indices])


class DatasetKind:
    """One kind of dataset spec and everything pepr does with it, so that no code outside this
    package branches on the kind. Subclasses set ``name`` and override what differs.

    ``fetched``: a missing file is downloaded by the workflow's ``download_data`` rule.
    ``converted``: the file is built from the user's own files (rule ``prepare_images``; ``pepr
    train`` converts it before its checks).
    """

    #: the ``kind`` of the specs it parses
    name: str = ""
    fetched: bool = False
    converted: bool = False

    def matches(self, spec: str) -> bool:
        """Whether a (stripped, non-empty) spec string is of this kind."""
        raise NotImplementedError

    def parse(self, spec: str) -> DatasetSpec:
        """The parsed spec; PeprInputError for a malformed one (no file access)."""
        raise NotImplementedError

    def short_name(self, parsed: DatasetSpec) -> str:
        """Short, filesystem-safe, deterministic name (see :func:`pepr.datasets.core.dataset_name`)."""
        raise NotImplementedError

    def file(self, parsed: DatasetSpec, data_dir: Path | None) -> Path | None:
        """The file training reads (None when nothing is read)."""
        return None

    def problems(self, parsed: DatasetSpec, data_dir: Path | None, allow_download: bool) -> list[str]:
        """Every problem found without training, as readable lines ([]: usable)."""
        return []

    def load(
        self,
        parsed: DatasetSpec,
        name: str,
        data_dir: Path | None,
        allow_download: bool,
        workers: int | None,
        log: Callable | None,
    ) -> ImageData:
        """All three splits as arrays; PeprInputError listing every problem."""
        raise NotImplementedError

    def facts(
        self, parsed: DatasetSpec, name: str, data_dir: Path | None, given: Sequence[int] | None
    ) -> dict[str, Any]:
        """What ``pepr estimate`` needs without training: ``n_train``, ``n_val``, ``n_test``,
        ``channels``, ``num_classes``, ``stored_size``, ``train_class_counts`` (None: unknown or
        multi-label) and ``source`` (where the numbers came from). ``given``: the
        ``--dataset-size`` numbers of this dataset, for files not present."""
        raise NotImplementedError

    def stamps(self, parsed: DatasetSpec, data_dir: Path | None) -> list[Any]:
        """Stamps of the files a validation reads beyond ``data_dir``'s own npz files, so that a
        changed file re-validates (the workflow's validation cache)."""
        return []

    def planned_digest(
        self, parsed: DatasetSpec, data_dir: Path | None, file_digest: Callable[[str], str | None]
    ) -> str | None:
        """The content fingerprint planning records for the data a job reads (``file_digest``: the
        digest of a file, cached). Default: the digest of :meth:`file` (None without a file)."""
        path = self.file(parsed, data_dir)
        return file_digest(str(path)) if path is not None else None

    def source_changed(self, parsed: DatasetSpec, data_dir: Path | None) -> bool:
        """For a ``converted`` kind: whether the user's files changed since the conversion (its
        jobs then wait for the new conversion and retrain in the same run)."""
        return False

    def moved_file_stem(self, spec: str) -> str | None:
        """For a kind whose spec names the user's own file: the file's stem, under which a moved
        file (same name, same content) keeps its finished runs; None for the other kinds."""
        return None

    def stored_image_shape(self, parsed: DatasetSpec, data_file: Path | None) -> tuple[int, int] | None:
        """(height, width) the images are stored at, told without loading them (None: unknown).
        Default: the spec's own size (MedMNIST's ``@SIZE``, ``size=`` of image folders)."""
        return (int(parsed.size),) * 2 if parsed.size is not None else None

    def training_class_counts(self, parsed: DatasetSpec, data_dir: Path | None) -> list[int] | None:
        """Per-class counts of the training split as ``pepr train`` subsets it, told without
        loading images; None when they cannot be told (image folders, multi-label, no file yet)."""
        return None

    def prepare_problems(self, spec: str, data_dir: Path | None, workers: int | None) -> list[str]:
        """``pepr train``'s check of a ``converted`` kind's spec (parsed here: a malformed one is a
        problem too): converts when usable, returns the problems as readable lines."""
        return []


def facts_dict(
    n_train: int,
    n_val: int,
    n_test: int,
    channels: int,
    num_classes: int,
    stored_size: int,
    train_class_counts: tuple[int, ...] | None,
    source: str,
) -> dict[str, Any]:
    """The dict :meth:`DatasetKind.facts` returns (one spelling of its keys)."""
    return {
        "n_train": int(n_train),
        "n_val": int(n_val),
        "n_test": int(n_test),
        "channels": int(channels),
        "num_classes": int(num_classes),
        "stored_size": int(stored_size),
        "train_class_counts": None if train_class_counts is None else tuple(int(c) for c in train_class_counts),
        "source": source,
    }
