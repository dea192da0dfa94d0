"""pepr train's adaptive segments on CPU (slow): stop after a rung keeping the checkpoint, continue
to the end training no epoch twice, record a stopped cell, a finished cell never retrained."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from pepr.errors import PeprInputError
from pepr.train.adaptive_run import rung_file
from pepr.train.checks import training_problems
from pepr.train.run import run_training
from pepr.train.settings import TrainConfig

TINY = "synthetic:n_train=96,n_val=32,n_test=48"


def QUIET(message):
    """A log that says nothing."""


def config(out: Path, **extra) -> TrainConfig:
    return TrainConfig(
        model="test_resnet", dataset=TINY, epochs=3, batch_size=16, device="cpu", threads=1, out_dir=out, **extra
    )


def history(out: Path) -> list[dict[str, str]]:
    with open(out / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_rung_flags_are_checked_against_epochs():
    assert any(
        "--stop-after must be an epoch in 1..epochs-1" in p
        for p in training_problems(
            {"model": "m", "dataset": "synthetic", "epochs": 3, "stop_after": 3}, check_data=False
        )
    )
    assert any(
        "not both" in p
        for p in training_problems(
            {"model": "m", "dataset": "synthetic", "epochs": 3, "stop_after": 1, "stopped_at": 1}, check_data=False
        )
    )


@pytest.mark.slow
def test_rung_then_continue_trains_each_epoch_once_and_sums_the_segments(tmp_path):
    out = tmp_path / "run"
    rung = run_training(config(out, stop_after=1), log=QUIET)
    assert rung["status"] == "ok" and rung["rung"] == 1 and len(rung["history"]) == 1
    assert (out / "resume.pt").exists() and (out / rung_file(1)).exists()
    assert not (out / "metrics.json").exists()
    assert rung["energy_kwh"] == pytest.approx(rung["history"][0]["cumulative_energy_kwh"])
    second = run_training(config(out, stop_after=2), log=QUIET)
    assert [row["epoch"] for row in second["history"]] == [1, 2]
    assert second["history"][0] == rung["history"][0]  # epoch 1 was not trained again
    final = run_training(config(out), log=QUIET)
    assert final["status"] == "ok" and final["segments"] == 3
    rows = history(out)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3] and [int(r["segment"]) for r in rows] == [0, 1, 2]
    assert final["train_time_s"] == pytest.approx(sum(float(r["epoch_time_s"]) for r in rows))
    assert not (out / "resume.pt").exists()
    # a finished cell asked for a rung again (a full grid turned adaptive): taken from its history
    again = run_training(config(out, stop_after=1), log=QUIET)
    assert again["history"][0]["epoch"] == 1 and json.loads((out / "metrics.json").read_text())["status"] == "ok"


@pytest.mark.slow
def test_a_stopped_cell_is_recorded_and_can_be_continued(tmp_path):
    out = tmp_path / "run"
    rung = run_training(config(out, stop_after=1), log=QUIET)
    stopped = run_training(config(out, stopped_at=1), log=QUIET)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "stopped" and metrics["rung"] == 1 and "rung 1" in metrics["reason"]
    assert metrics["energy_kwh"] == pytest.approx(rung["energy_kwh"])
    assert metrics["val_accuracy"] == pytest.approx(rung["val_accuracy"])
    assert metrics["test_accuracy"] == pytest.approx(rung["test_accuracy"])
    assert stopped["status"] == "stopped" and [int(r["epoch"]) for r in history(out)] == [1]
    assert (out / "resume.pt").exists()
    # kept after all (a raised keep): the workflow deletes the stopped outputs, training continues
    (out / "metrics.json").unlink()
    (out / "history.csv").unlink()
    final = run_training(config(out), log=QUIET)
    assert final["status"] == "ok" and [int(r["epoch"]) for r in history(out)] == [1, 2, 3]
    assert final["segments"] == 2
    # stopped again (a lowered keep): the finished result is kept, nothing retrained
    (out / "metrics.json").unlink()
    again = run_training(config(out, stopped_at=1), log=QUIET)
    assert again["status"] == "ok" and json.loads((out / "metrics.json").read_text())["status"] == "ok"


@pytest.mark.slow
def test_stopped_without_a_rung_record_is_an_input_error(tmp_path):
    with pytest.raises(PeprInputError, match="rung record"):
        run_training(config(tmp_path / "run", stopped_at=1), log=QUIET)
