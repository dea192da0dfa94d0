"""A run's per-image test predictions (``test_predictions.npz``): what the report pairs models on.

Every successful training writes, beside ``metrics.json``, the final model's predictions on the
test split: ``labels`` (int64, shape (N,); multi-label: (N, L) 0/1) and ``probabilities``
(float32, (N, C): softmax over classes; multi-label: per-label sigmoid scores). The test split is
the same for every model of a dataset whatever its data fraction, so two runs of one group can be
compared on the same images (a paired bootstrap, :mod:`pepr.report.uncertainty`).

The file is not a Snakemake output: sweeps finished before it existed lack it, and the report
falls back to intervals from seeds or the test-set size. It is written through the run
contract's atomic writer and archived with the run (:mod:`pepr.results.runs`).

numpy only (the report reads it without torch).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pepr.results.runs import PREDICTIONS_FILE

__all__ = ["PREDICTIONS_FILE", "Predictions", "encode", "read", "performance_per_image", "PER_IMAGE_METRICS"]

#: Largest file the report reads (a corrupt or planted file is skipped, not loaded).
MAX_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Predictions:
    """One run's test labels and class probabilities."""

    labels: np.ndarray
    probabilities: np.ndarray

    @property
    def multi_label(self) -> bool:
        return self.labels.ndim == 2


def encode(labels: np.ndarray, probabilities: np.ndarray) -> bytes:
    """The ``test_predictions.npz`` bytes (compressed) of ``labels`` and ``probabilities``;
    refuses arrays of different lengths (a wrong split would pair the wrong images)."""
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if labels.shape[0] != probabilities.shape[0] or probabilities.ndim != 2:
        raise ValueError(f"test predictions: {labels.shape[0]} labels but probabilities of shape {probabilities.shape}")
    labels = labels.astype(np.uint8 if labels.ndim == 2 else np.int64)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, labels=labels, probabilities=probabilities)
    return buffer.getvalue()


def read(path: str | os.PathLike) -> Predictions | None:
    """The predictions at ``path``; None for a missing, linked, oversized or unreadable file
    (the report then falls back to the table-based intervals for that run)."""
    path = Path(path)
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_BYTES:
            return None
        with np.load(path, allow_pickle=False) as data:
            labels, probabilities = data["labels"], data["probabilities"]
    except (OSError, ValueError, KeyError):
        return None
    if probabilities.ndim != 2 or labels.shape[0] != probabilities.shape[0] or labels.ndim not in (1, 2):
        return None
    return Predictions(labels=labels, probabilities=probabilities.astype(np.float32, copy=False))


#: Performance columns that decompose over test images (what a paired bootstrap can resample).
PER_IMAGE_METRICS = ("test_accuracy", "test_balanced_accuracy")


def performance_per_image(pred: Predictions, metric: str) -> tuple[np.ndarray, np.ndarray] | None:
    """``(correct, labels)`` for a single-label run: per image, 1.0 where the arg-max class is the
    label; with the labels, every metric of :data:`PER_IMAGE_METRICS` is a function of them on any
    resample of the images. None for multi-label runs or other metrics."""
    if metric not in PER_IMAGE_METRICS or pred.multi_label:
        return None
    correct = (pred.probabilities.argmax(axis=1) == pred.labels).astype(np.float64)
    return correct, pred.labels.astype(np.int64)
