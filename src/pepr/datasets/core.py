"""Datasets for ``pepr train``: MedMNIST 2D flags, any MedMNIST-layout ``.npz``, the user's own
images and a synthetic set, behind one set of functions (each kind's code is in its own module:
:mod:`~pepr.datasets.medmnist`, :mod:`~pepr.datasets.npz`, :mod:`~pepr.datasets.images`,
:mod:`~pepr.datasets.synthetic`; :mod:`~pepr.datasets.registry` resolves a spec to its kind).

Dataset spec grammar (the ``--dataset`` value and the workflow's ``datasets`` entries):

``FLAG`` or ``FLAG@SIZE``
    A MedMNIST 2D flag (``medmnist.INFO``: all 12), e.g. ``pneumoniamnist``; ``@SIZE`` picks a MedMNIST+
    size (28, 64, 128 or 224; default 28). The file is ``DATA_DIR/FLAG.npz`` at 28 px and
    ``DATA_DIR/FLAG_SIZE.npz`` otherwise (MedMNIST's own names); ``DATA_DIR`` is ``--data-dir`` or,
    when not given, the ``medmnist`` package's default root (``~/.medmnist``). 3D flags are
    rejected; the multi-label ``chestmnist`` trains with BCE-with-logits (:mod:`pepr.train.loop`).
``npz:PATH``
    Any file in the MedMNIST npz layout: ``train_images``, ``train_labels``, ``val_images``,
    ``val_labels``, ``test_images``, ``test_labels``; images ``(N, H, W)`` or ``(N, H, W, C)`` with
    C in {1, 3}, uint8 (0-255) or float (taken as they are); labels ``(N,)`` or ``(N, 1)``
    integers in ``0..K-1``, or ``(N, L)`` 0/1 rows with L > 1 (a multi-label task). A relative
    PATH is relative to the current working directory.
``folder:PATH[,val=0.1,test=0.2,size=N,channels=1|3,seed=S]`` and ``csv:FILE[,...]``
    The user's own images (ImageFolder layout or a manifest), converted once into a cached npz
    under ``DATA_DIR/images/`` and then read exactly as ``npz:`` (:mod:`pepr.datasets.images`).
``synthetic`` or ``synthetic:KEY=VALUE,...``
    A procedurally generated image-classification set (see :func:`make_synthetic`); NOT medical
    data, only shaped like it, for offline demos and tests. Keys and defaults are
    :data:`SYNTHETIC_DEFAULTS`.

Everything in the "spec" part of this module is cheap (numpy only, header reads) so the workflow
can validate a whole config before launching anything."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pepr.datasets.base import SPLITS, DatasetSpec, ImageData  # noqa: F401 - part of this module's API
from pepr.datasets.medmnist import MEDMNIST_SIZES, download_hint, medmnist_filename, medmnist_info  # noqa: F401
from pepr.datasets.medmnist_info import default_data_dir  # noqa: F401 - part of this module's API
from pepr.datasets.npz import npz_headers, npz_problems  # noqa: F401 - part of this module's API
from pepr.datasets.registry import kind_of
from pepr.datasets.synthetic import SYNTHETIC_DEFAULTS, make_synthetic, synthetic_class_counts  # noqa: F401
from pepr.errors import PeprInputError


def parse_dataset_spec(spec: str) -> DatasetSpec:
    """Parse a dataset spec string (grammar in the module docstring).

    Raises :class:`PeprInputError` for a malformed spec, an unknown or 3D MedMNIST flag, an
    unsupported MedMNIST size, or an unknown/out-of-range synthetic option. Does not touch files.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise PeprInputError(
            "dataset spec is empty; use a MedMNIST flag (e.g. 'pneumoniamnist' or "
            "'pneumoniamnist@64'), 'npz:PATH', 'folder:PATH', 'csv:FILE' or 'synthetic[:key=value,...]'"
        )
    spec = spec.strip()
    return kind_of(spec).parse(spec)


def dataset_name(spec: str) -> str:
    """Short, filesystem-safe, deterministic name of a dataset spec (a path component).

    ``pneumoniamnist`` -> ``pneumoniamnist``; ``pneumoniamnist@64`` -> ``pneumoniamnist_64``;
    ``npz:/x/my data.npz`` -> ``my_data``; ``synthetic`` -> ``synthetic``;
    ``synthetic:size=32,classes=3`` -> ``synthetic-classes3-size32`` (keys sorted; options equal
    to their default are left out, so equivalent specs share a name); ``folder:data/xrays,size=64``
    -> ``xrays-size64``.
    """
    parsed = parse_dataset_spec(spec)
    return kind_of(parsed).short_name(parsed)


def dataset_file(spec: DatasetSpec, data_dir: Path | None) -> Path | None:
    """The file a spec reads (``None`` for synthetic data)."""
    return kind_of(spec).file(spec, data_dir)


def dataset_problems(spec: str, data_dir: Path | None, allow_download: bool = False) -> list[str]:
    """Every problem with a dataset spec that can be found without training (empty list: OK).

    Malformed spec, missing file (with where to put it and how to fetch it; not a problem when
    ``allow_download`` and the spec is a MedMNIST flag, since ``pepr train`` downloads it), and
    bad file contents (:func:`npz_problems`). Fast: reads array headers and labels only.
    """
    try:
        parsed = parse_dataset_spec(spec)
    except PeprInputError as exc:
        return [str(exc)]
    return kind_of(parsed).problems(parsed, data_dir, allow_download)


def load_dataset(
    spec: str, data_dir: Path | None = None, allow_download: bool = True, workers: int | None = None, log=None
) -> ImageData:
    """Load all three splits of a dataset spec.

    A missing MedMNIST file is downloaded through the ``medmnist`` package when
    ``allow_download`` (and the network) allows; a ``folder:``/``csv:`` spec is converted into
    its cached npz first when that is missing or stale (:func:`pepr.datasets.images.prepare`, ``workers``
    processes); otherwise, and for every bad file, raises :class:`PeprInputError` listing all
    problems found.
    """
    parsed = parse_dataset_spec(spec)
    return kind_of(parsed).load(parsed, dataset_name(spec), data_dir, allow_download, workers, log)


# --------------------------------------------------------------------------------------------
# Training fractions
# --------------------------------------------------------------------------------------------


def stratified_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of a seeded, stratified ``fraction`` of ``labels`` (sorted).

    Each class keeps ``round(fraction * count)`` samples (half rounds up), drawn from a seeded
    per-class permutation, so for one seed a smaller fraction's subset is contained in a larger
    one's. Raises :class:`PeprInputError` when ``fraction`` is outside (0, 1] or a class would
    get no sample.
    """
    if not (0.0 < fraction <= 1.0):
        raise PeprInputError(f"fraction must be in (0, 1], got {fraction}")
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:
        return _multilabel_subset(labels, fraction, seed)
    labels = labels.reshape(-1)
    if fraction == 1.0:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        keep = stratified_keep(len(members), fraction, cls)
        chosen.append(members[rng.permutation(len(members))[:keep]])
    return np.sort(np.concatenate(chosen))


def _multilabel_subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A seeded ``fraction`` of multi-label rows, stratified by each row's first positive label
    (no positive: its own stratum); nested across fractions for one seed like the single-label one."""
    if fraction == 1.0:
        return np.arange(len(labels))
    has_positive = labels.any(axis=1)
    keys = np.where(has_positive, labels.argmax(axis=1), -1)
    rng = np.random.default_rng(seed)
    chosen = []
    for key in np.unique(keys):
        members = np.flatnonzero(keys == key)
        keep = int(np.floor(fraction * len(members) + 0.5))
        chosen.append(members[rng.permutation(len(members))[:keep]])
    picked = np.sort(np.concatenate(chosen))
    if len(picked) < 2:
        raise PeprInputError(
            f"fraction {fraction} leaves {len(picked)} training image(s) of {len(labels)}; use a larger fraction"
        )
    return picked


def stratified_keep(count: int, fraction: float, cls: object = "?") -> int:
    """Samples a class of ``count`` keeps in :func:`stratified_subset`: ``round(fraction * count)``,
    half rounding up. Raises :class:`PeprInputError` when that is 0 (``cls`` names the class)."""
    keep = int(np.floor(fraction * count + 0.5))
    if keep == 0:
        raise PeprInputError(
            f"fraction {fraction} leaves class {cls} ({count} training samples) with no sample; "
            f"use fraction >= {1.5 / count:.3g} or drop this cell"
        )
    return keep


def stratified_subset_size(class_counts: np.ndarray | list[int] | tuple[int, ...], fraction: float) -> int:
    """Size of :func:`stratified_subset` for a training split with these per-class counts
    (classes with no sample ignored), without drawing it: the same rule, any seed."""
    if not (0.0 < fraction <= 1.0):
        raise PeprInputError(f"fraction must be in (0, 1], got {fraction}")
    counts = [int(c) for c in class_counts]
    if fraction == 1.0:
        return sum(counts)
    return sum(stratified_keep(count, fraction, cls) for cls, count in enumerate(counts) if count > 0)
