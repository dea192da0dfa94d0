"""test_predictions.npz: encoded, read back, archived and restored with its run (fast, no torch)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pepr.results import predictions, runs


def _arrays(n=6):
    labels = np.array([0, 1, 1, 0, 2, 2][:n])
    probs = np.eye(3, dtype=np.float32)[[0, 1, 0, 0, 2, 1][:n]]
    return labels, probs


def test_round_trip_and_per_image_correctness(tmp_path):
    labels, probs = _arrays()
    path = tmp_path / runs.PREDICTIONS_FILE
    path.write_bytes(predictions.encode(labels, probs))
    pred = predictions.read(path)
    assert np.array_equal(pred.labels, labels) and np.array_equal(pred.probabilities, probs)
    correct, lab = predictions.performance_per_image(pred, "test_accuracy")
    assert correct.tolist() == [1, 1, 0, 1, 1, 0]
    assert predictions.performance_per_image(pred, "test_auc") is None


def test_mismatched_lengths_refused():
    labels, probs = _arrays()
    with pytest.raises(ValueError, match="6 labels"):
        predictions.encode(labels, probs[:4])


def test_unreadable_or_linked_file_is_none(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz")
    assert predictions.read(bad) is None
    assert predictions.read(tmp_path / "missing.npz") is None
    good = tmp_path / "good.npz"
    good.write_bytes(predictions.encode(*_arrays()))
    link = tmp_path / "link.npz"
    link.symlink_to(good)
    assert predictions.read(link) is None


def test_archived_published_and_restored_with_the_run(tmp_path):
    out = tmp_path / "run"
    data = predictions.encode(*_arrays())
    metrics = {"status": "ok", "training_identity": {"model": "m"}}
    archive = runs.archive_result(out, metrics, [], data)
    runs.mark_finished(archive, out)
    assert (out / runs.PREDICTIONS_FILE).read_bytes() == data
    (out / runs.PREDICTIONS_FILE).unlink()
    (out / runs.METRICS_FILE).unlink()
    found = runs.find_finished(out, {"model": "m"})
    assert found == archive
    runs.restore_finished(found, out)
    assert (out / runs.PREDICTIONS_FILE).read_bytes() == data
    assert json.loads((out / runs.METRICS_FILE).read_text())["status"] == "ok"


def test_result_archived_without_predictions_leaves_none_behind(tmp_path):
    """An older result restored over a newer one's folder: its predictions are not the stale ones."""
    out = tmp_path / "run"
    out.mkdir()
    (out / runs.PREDICTIONS_FILE).write_bytes(predictions.encode(*_arrays()))
    archive = runs.archive_result(out, {"status": "ok"}, [])
    runs.mark_finished(archive, out)
    assert not (out / runs.PREDICTIONS_FILE).exists()
