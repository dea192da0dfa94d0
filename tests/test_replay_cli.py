"""`pepr replay`: bad tables exit 2 with one line and write nothing; results on constructed histories."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pandas as pd
import pytest

from pepr.cli import main
from test_adaptive import histories


def run_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


CURVES = {
    "a": [0.9, 0.92, 0.93, 0.94],
    "b": [0.6, 0.61, 0.62, 0.62],
    "c": [0.5, 0.5, 0.5, 0.5],
    "d": [0.55, 0.56, 0.56, 0.57],
}


@pytest.fixture
def sweep(tmp_path) -> Path:
    frames = [histories(CURVES, dict.fromkeys(CURVES, 1.0), seeds=(0, 1), group=g) for g in ("x", "y")]
    table = pd.concat(frames)
    table["init"], table["fraction"] = "scratch", 1.0
    path = tmp_path / "histories.csv"
    table.to_csv(path, index=False)
    return path


def test_replay_writes_one_row_per_group_and_prints_totals(sweep, tmp_path):
    code, out, err = run_cli(
        "replay", sweep, "--rungs", "1", "--keep", "0.25", "--min-keep", "1", "--out", tmp_path / "r"
    )
    assert code == 0, err
    result = pd.read_csv(tmp_path / "r" / "replay.csv")
    assert list(result.columns[:3]) == ["dataset", "init", "fraction"]
    assert list(result["dataset"]) == ["x", "y"]
    assert list(result["best_full"]) == ["a", "a"] and list(result["recommended"]) == ["a", "a"]
    assert list(result["pepr_regret"]) == [0.0, 0.0]
    assert result["resource_share"].tolist() == pytest.approx([7 / 16, 7 / 16])
    assert "share 0.438" in out and "in 2 of 2 group(s)" in out


def test_replay_parquet_and_other_column_names(sweep, tmp_path):
    table = pd.read_csv(sweep).rename(columns={"model": "name", "epoch": "ep", "cumulative_energy_kwh": "kwh"})
    path = tmp_path / "h.parquet"
    table.to_parquet(path)
    code, _, err = run_cli(
        "replay",
        path,
        "--model",
        "name",
        "--epoch",
        "ep",
        "--resource",
        "kwh",
        "--by",
        "dataset",
        "--rungs",
        "1,2",
        "--keep",
        "0.5",
        "--out",
        tmp_path / "r",
    )
    assert code == 0, err
    assert list(pd.read_csv(tmp_path / "r" / "replay.csv").columns[:2]) == ["dataset", "best_full"]


def _bad(tmp_path, sweep, change):
    table = pd.read_csv(sweep)
    table = change(table)
    path = tmp_path / "bad.csv"
    table.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    "change, flags, message",
    [
        (lambda t: t.drop(columns=["val_accuracy"]), [], "no column 'val_accuracy'"),
        (lambda t: t.assign(test_accuracy=t["test_accuracy"] * 100), [], "must lie in [0, 1]"),
        (lambda t: t.assign(cumulative_energy_kwh=-t["cumulative_energy_kwh"]), [], "non-negative"),
        (lambda t: t.assign(epoch=t["epoch"] - 1), [], "whole numbers >= 1"),
        (lambda t: pd.concat([t, t.head(1)]), [], "twice"),
        (lambda t: t.assign(dataset=t["dataset"].where(t.index != 3)), [], "missing values"),
        (lambda t: t, ["--rungs", "4"], "below the final epoch"),
        (lambda t: t, ["--keep", "0"], "keep 0.0"),
        (lambda t: t, ["--model", "name"], "no column 'name'"),
        (lambda t: t.assign(status="running"), [], "unknown run status"),
        (lambda t: t.head(0), [], "no rows"),
    ],
)
def test_bad_tables_exit_2_with_one_line_and_write_nothing(tmp_path, sweep, change, flags, message):
    path = _bad(tmp_path, sweep, change)
    code, out, err = run_cli("replay", path, "--rungs", "1", *flags, "--out", tmp_path / "out")
    assert code == 2
    assert err.startswith("pepr replay: error:") and message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists() and out == ""


def test_missing_table_and_bad_out(tmp_path, sweep):
    code, _, err = run_cli("replay", tmp_path / "nope.csv", "--out", tmp_path / "out")
    assert code == 2 and "does not exist" in err and not (tmp_path / "out").exists()
    (tmp_path / "file").write_text("x")
    code, _, err = run_cli("replay", sweep, "--rungs", "1", "--out", tmp_path / "file")
    assert code == 2 and "is a file" in err
