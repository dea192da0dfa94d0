"""pepr.results.aggregate: metrics.json files -> runs.csv -> pepr.csv (no training needed)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pepr.errors import PeprInputError
from pepr.results.aggregate import (
    AMORTISED_RESOURCES,
    CELL_COLUMNS,
    RESOURCES,
    aggregate_to_csv,
    collect_runs,
    read_metrics,
    score_runs,
    score_to_csv,
)

ROOT = "results/runs"


def write_run(base: Path, dataset: str, init: str, fraction: str, model: str, seed: int, /, **metrics) -> str:
    """One metrics.json in the workflow's layout, with the contract's keys (tests override some)."""
    folder = base / ROOT / dataset / init / fraction / model / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "status": "ok",
        "reason": "",
        "model": model,
        "dataset": dataset,
        "init": init,
        "fraction": float(fraction),
        "seed": seed,
        "params": 1000,
        "test_accuracy": 0.8,
        "energy_kwh": 1.0,
        "co2_kg": 0.1,
        "train_time_s": 10.0,
        "peak_memory_mb": 100.0,
        "energy_method": "estimated",
        "config": {"nested": "kept in the JSON only"},
        "energy_per_epoch": [0.5, 0.5],
    }
    record.update(metrics)
    path = folder / "metrics.json"
    path.write_text(json.dumps(record))
    return str(path.relative_to(base))


def write_pretrain(base: Path, source: str, model: str, /, **metrics) -> str:
    folder = base / "results" / "pretrain" / source / model
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "status": "ok",
        "reason": "",
        "model": model,
        "energy_kwh": 6.0,
        "co2_kg": 0.6,
        "train_time_s": 60.0,
        "peak_memory_mb": 500.0,
    }
    record.update(metrics)
    (folder / "metrics.json").write_text(json.dumps(record))
    return str((folder / "metrics.json").relative_to(base))


def test_rows_are_cells_named_by_their_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = [
        write_run(tmp_path, "synthetic", "scratch", "1.0", "m2", 0, dataset="synthetic:n_train=10"),
        write_run(tmp_path, "synthetic", "scratch", "1.0", "m1", 0, test_accuracy=0.5, extra_metric=3),
        write_run(
            tmp_path,
            "synthetic",
            "scratch",
            "0.1",
            "m1",
            1,
            status="failed",
            reason="kernel larger than input",
            test_accuracy=None,
            energy_kwh=None,
        ),
    ]
    runs = collect_runs(files, runs_root=ROOT)
    assert list(runs.columns[:7]) == [*CELL_COLUMNS, "status", "reason"]
    # sorted by cell, whatever the input order
    assert list(zip(runs["fraction"], runs["model"], runs["seed"])) == [(0.1, "m1", 1), (1.0, "m1", 0), (1.0, "m2", 0)]
    assert runs["status"].tolist() == ["failed", "ok", "ok"]
    assert runs.loc[0, "reason"] == "kernel larger than input"
    assert math.isnan(runs.loc[0, "test_accuracy"])
    assert runs.loc[1, "test_accuracy"] == 0.5
    # what pepr train recorded as dataset/init is kept under other names
    assert runs.loc[2, "dataset"] == "synthetic" and runs.loc[2, "dataset_spec"] == "synthetic:n_train=10"
    assert runs.loc[1, "init_spec"] == "scratch"
    # every top-level scalar becomes a column; nested objects stay in the JSON
    assert "extra_metric" in runs.columns and "config" not in runs.columns and "energy_per_epoch" not in runs.columns


def test_transfer_rows_carry_pretraining_cost_and_amortised_columns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ck = "checkpoint:results/pretrain/src/m1/model.pt"
    files = [
        write_run(tmp_path, "d", "transfer", "1.0", "m1", 0, init=ck, energy_kwh=1.0, train_time_s=10.0),
        write_run(tmp_path, "d", "transfer", "0.1", "m1", 0, init=ck, energy_kwh=0.5, train_time_s=4.0),
        write_run(tmp_path, "d2", "transfer", "1.0", "m1", 0, init=ck, energy_kwh=2.0, train_time_s=30.0),
        write_run(tmp_path, "d", "scratch", "1.0", "m1", 0, energy_kwh=3.0),
    ]
    pretrain = [write_pretrain(tmp_path, "src", "m1", energy_kwh=6.0, co2_kg=0.6, train_time_s=60.0)]
    runs = collect_runs(files, pretrain, runs_root=ROOT).set_index(["dataset", "init", "fraction"])
    row = runs.loc[("d", "transfer", 1.0)]
    assert row["pretrain_source"] == "src" and row["pretrain_status"] == "ok"
    assert row["pretrain_uses"] == 3  # three fine-tune runs share the checkpoint
    assert row["pretrain_energy_kwh"] == 6.0 and row["pretrain_peak_memory_mb"] == 500.0
    assert row["energy_kwh_amortised"] == pytest.approx(1.0 + 6.0 / 3)
    assert row["train_time_s_amortised"] == pytest.approx(10.0 + 60.0 / 3)
    assert runs.loc[("d", "transfer", 0.1), "co2_kg_amortised"] == pytest.approx(0.1 + 0.6 / 3)
    scratch = runs.loc[("d", "scratch", 1.0)]
    assert scratch["energy_kwh_amortised"] == 3.0  # nothing to amortise
    assert pd.isna(scratch["pretrain_energy_kwh"]) and pd.isna(scratch["pretrain_uses"])
    # the amortised total over the transfer runs is their own cost plus one pretraining
    transfer = runs.xs("transfer", level="init")
    assert transfer["energy_kwh_amortised"].sum() == pytest.approx(transfer["energy_kwh"].sum() + 6.0)


def test_transfer_run_without_pretraining_record_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = [write_run(tmp_path, "d", "transfer", "1.0", "m1", 0)]
    with pytest.raises(PeprInputError, match="m1 have no pretraining metrics"):
        collect_runs(files, [], runs_root=ROOT)


@pytest.mark.parametrize(
    "content, message",
    [("{not json", "not readable JSON"), ("[1, 2]", "must hold a JSON object")],
)
def test_unreadable_metrics_files_are_named(tmp_path, content, message):
    path = tmp_path / "metrics.json"
    path.write_text(content)
    with pytest.raises(PeprInputError, match=message) as info:
        read_metrics(path)
    assert str(path) in str(info.value)
    with pytest.raises(PeprInputError, match="does not exist"):
        read_metrics(tmp_path / "nope.json")


def test_files_outside_the_run_layout_or_disagreeing_with_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stray = tmp_path / "results" / "runs" / "d" / "metrics.json"
    stray.parent.mkdir(parents=True)
    stray.write_text("{}")
    with pytest.raises(PeprInputError, match="not laid out as"):
        collect_runs([str(stray.relative_to(tmp_path))], runs_root=ROOT)
    moved = write_run(tmp_path, "d", "scratch", "1.0", "m1", 0, model="m2")
    with pytest.raises(PeprInputError, match="disagree"):
        collect_runs([moved], runs_root=ROOT)
    with pytest.raises(PeprInputError, match="no metrics.json"):
        collect_runs([], runs_root=ROOT)


def make_runs(tmp_path: Path) -> pd.DataFrame:
    """Two cells with 3 successful runs each, one failed run, transfer rows with pretraining."""
    ck = "checkpoint:results/pretrain/src/{m}/model.pt"
    files = []
    for _i, (model, acc, energy, mem) in enumerate(
        [("a", 0.9, 1.0, 100.0), ("b", 0.8, 3.0, 300.0), ("c", 0.6, 2.0, 200.0)]
    ):
        files.append(
            write_run(
                tmp_path,
                "d",
                "scratch",
                "1.0",
                model,
                0,
                test_accuracy=acc,
                energy_kwh=energy,
                co2_kg=energy / 10,
                train_time_s=energy * 10,
                peak_memory_mb=mem,
            )
        )
        files.append(
            write_run(
                tmp_path,
                "d",
                "transfer",
                "1.0",
                model,
                0,
                init=ck.format(m=model),
                test_accuracy=acc,
                energy_kwh=energy / 2,
                co2_kg=energy / 20,
                train_time_s=energy * 5,
                peak_memory_mb=mem,
            )
        )
    files.append(
        write_run(
            tmp_path,
            "d",
            "scratch",
            "1.0",
            "x",
            0,
            status="failed",
            reason="cannot run",
            test_accuracy=None,
            energy_kwh=None,
            co2_kg=None,
            train_time_s=None,
            peak_memory_mb=None,
        )
    )
    # pretraining cost differs per model: it changes the amortised ranking
    pretrain = [
        write_pretrain(tmp_path, "src", m, energy_kwh=e, co2_kg=e / 10, train_time_s=e * 10)
        for m, e in (("a", 10.0), ("b", 0.0), ("c", 1.0))
    ]
    return collect_runs(files, pretrain, runs_root=ROOT)


def test_scores_are_pepr_within_each_cell_over_successful_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = make_runs(tmp_path)
    scored = score_runs(runs, performance="test_accuracy")
    assert len(scored) == len(runs) == 7
    pd.testing.assert_frame_equal(scored[runs.columns], runs)  # input columns untouched
    for resource in [*RESOURCES, *(f"{r}_amortised" for r in AMORTISED_RESOURCES)]:
        assert f"{resource}_norm" in scored.columns and f"pepr_{resource}" in scored.columns
    failed = scored[scored["status"] == "failed"]
    assert failed["pepr_energy_kwh"].isna().all() and failed["energy_kwh_norm"].isna().all()
    ok = scored[scored["status"] == "ok"].set_index(["init", "model"])
    # scratch cell: energies 1, 3, 2 -> norms 0, 1, 0.5 (the failed run does not count)
    assert ok.loc[("scratch", "a"), "energy_kwh_norm"] == 0.0
    assert ok.loc[("scratch", "b"), "energy_kwh_norm"] == 1.0
    assert ok.loc[("scratch", "c"), "energy_kwh_norm"] == 0.5
    assert ok.loc[("scratch", "a"), "pepr_energy_kwh"] == pytest.approx(0.9)
    assert ok.loc[("scratch", "b"), "pepr_energy_kwh"] == pytest.approx(0.8 / 2)
    assert ok.loc[("scratch", "c"), "pepr_energy_kwh"] == pytest.approx(0.6 / 1.5)
    # amortised transfer energies: a 0.5+10=10.5, b 1.5+0=1.5, c 1.0+1=2.0 -> the ranking flips
    assert ok.loc[("transfer", "a"), "energy_kwh_amortised_norm"] == 1.0
    assert ok.loc[("transfer", "b"), "energy_kwh_amortised_norm"] == 0.0
    assert ok.loc[("transfer", "c"), "energy_kwh_amortised_norm"] == pytest.approx(0.5 / 9)
    assert ok.loc[("transfer", "a"), "energy_kwh_norm"] == 0.0  # without amortisation a is cheapest
    # every score lies between P/2 and P
    for resource in RESOURCES:
        pepr = scored.loc[scored["status"] == "ok", f"pepr_{resource}"]
        perf = scored.loc[scored["status"] == "ok", "test_accuracy"]
        assert ((pepr <= perf + 1e-12) & (pepr >= perf / 2 - 1e-12)).all()


def test_scoring_by_another_performance_and_errors_name_the_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = make_runs(tmp_path)
    runs["test_auc"] = 0.7
    assert (score_runs(runs, performance="test_auc").dropna(subset=["pepr_energy_kwh"])["pepr_energy_kwh"] <= 0.7).all()
    runs.loc[runs["model"] == "b", "test_auc"] = np.nan
    # issue 19: an undefined performance no longer stops scoring; the run is named and left unscored
    with pytest.warns(UserWarning, match="d/scratch/1.0/b/0"):
        scored = score_runs(runs, performance="test_auc", skip_undefined=True)
    unscored = scored[scored["model"] == "b"]
    assert (
        unscored["pepr_energy_kwh"].isna().all() and unscored["score_note"].str.contains("test_auc is undefined").all()
    )
    with pytest.raises(PeprInputError, match="d/scratch/1.0/b/0"):  # pepr score on a user's table: still an error
        score_runs(runs, performance="test_auc")
    with pytest.raises(PeprInputError, match="unknown column"):
        score_runs(runs, performance="val_nothing")


def test_all_runs_failed_gives_empty_scores(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = [
        write_run(tmp_path, "d", "scratch", "1.0", m, 0, status="failed", reason="r", test_accuracy=None)
        for m in ("a", "b")
    ]
    scored = score_runs(collect_runs(files, runs_root=ROOT))
    assert len(scored) == 2 and scored["pepr_energy_kwh"].isna().all()


def test_csv_round_trip(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_runs(tmp_path)
    files = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / ROOT).rglob("metrics.json"))
    pretrain = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "results/pretrain").rglob("metrics.json"))
    aggregate_to_csv(files, "results/runs.csv", pretrain, runs_root=ROOT)
    scored = score_to_csv("results/runs.csv", "results/pepr.csv", performance="test_accuracy")
    back = pd.read_csv("results/pepr.csv")
    assert len(back) == 7 and list(back.columns) == list(scored.columns)
    assert back["reason"].fillna("").tolist() == scored["reason"].fillna("").tolist()
    np.testing.assert_allclose(back["pepr_energy_kwh"], scored["pepr_energy_kwh"])


def test_aggregation_never_imports_torch(tmp_path):
    code = "import sys, pepr.results.aggregate; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_tables_are_readable_per_the_umask(tmp_path, monkeypatch, umask, mode):
    """runs.csv / pepr.csv get 0666 minus the umask (not mkstemp's 0600): teammates can read them."""
    import os

    monkeypatch.chdir(tmp_path)
    make_runs(tmp_path)
    files = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / ROOT).rglob("metrics.json"))
    pretrain = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "results/pretrain").rglob("metrics.json"))
    old = os.umask(umask)
    try:
        aggregate_to_csv(files, "results/runs.csv", pretrain, runs_root=ROOT)
        score_to_csv("results/runs.csv", "results/pepr.parquet")
    finally:
        os.umask(old)
    for name in ("runs.csv", "pepr.parquet"):
        assert (tmp_path / "results" / name).stat().st_mode & 0o777 == mode, name
    assert not list((tmp_path / "results").glob(".*.tmp")), "temporary file left behind"


def test_status_spelling_is_normalised_never_dropped(tmp_path, monkeypatch):
    """Documented rule (normalise_status): case and spaces are ignored, so "OK" is scored."""
    monkeypatch.chdir(tmp_path)
    files = [
        write_run(tmp_path, "d", "scratch", "1.0", "a", 0, status="OK", energy_kwh=1.0),
        write_run(tmp_path, "d", "scratch", "1.0", "b", 0, status=" ok ", energy_kwh=3.0),
        write_run(tmp_path, "d", "scratch", "1.0", "c", 0, status="FAILED", reason="oom"),
    ]
    runs = collect_runs(files, runs_root=ROOT)
    assert runs["status"].tolist() == ["ok", "ok", "failed"]
    # a hand-edited runs table gets the same rule when scored
    scored = score_runs(runs.assign(status=["Ok", "OK", "Failed"]))
    assert scored["pepr_energy_kwh"].notna().tolist() == [True, True, False]
    np.testing.assert_allclose(scored["pepr_energy_kwh"].iloc[:2], [0.8, 0.4])


def test_a_stopped_run_is_kept_and_never_scored(tmp_path, monkeypatch):
    """An adaptive sweep's stopped run: a row of runs.csv, no PePR score (it has no final numbers)."""
    monkeypatch.chdir(tmp_path)
    files = [
        write_run(tmp_path, "d", "scratch", "1.0", "a", 0, energy_kwh=1.0),
        write_run(tmp_path, "d", "scratch", "1.0", "b", 0, energy_kwh=3.0),
        write_run(tmp_path, "d", "scratch", "1.0", "c", 0, status="Stopped", energy_kwh=0.1),
    ]
    runs = collect_runs(files, runs_root=ROOT)
    assert runs["status"].tolist() == ["ok", "ok", "stopped"]
    scored = score_runs(runs)
    assert scored["pepr_energy_kwh"].notna().tolist() == [True, True, False]
    np.testing.assert_allclose(scored["pepr_energy_kwh"].iloc[:2], [0.8, 0.4])


def test_unknown_status_is_an_error_naming_the_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = [write_run(tmp_path, "d", "scratch", "1.0", "a", 0, status="running")]
    with pytest.raises(PeprInputError, match=r"seed0/metrics.json \('running'\).*'ok', 'failed' or 'stopped'"):
        collect_runs(files, runs_root=ROOT)
    runs = collect_runs([write_run(tmp_path, "d", "scratch", "1.0", "b", 0)], runs_root=ROOT)
    with pytest.raises(PeprInputError, match=r"d/scratch/1.0/b/0 \('done'\)"):
        score_runs(runs.assign(status="done"))


def test_csv_writer_round_trip_gives_the_same_values_as_pandas(tmp_path):
    """tableio's pyarrow CSV writer reads back to exactly what pandas' to_csv would, and to the
    original values: whole-number floats stay floats, text with commas/quotes/newlines survives."""
    from pepr.results.tableio import read_table, write_table

    rng = np.random.default_rng(1)
    n = 12
    table = pd.DataFrame(
        {
            "dataset": ["d"] * n,
            "fraction": [1.0] * n,  # all whole numbers: arrow alone would write "1" and read back int
            "seed": np.arange(n),
            "test_accuracy": rng.random(n),
            "co2_kg": rng.random(n) * 1e-9,
            "pretrain_uses": np.where(np.arange(n) % 3 == 0, np.nan, 4.0),
            "status": ["ok"] * (n - 1) + ["failed"],
            "reason": [""] * (n - 1) + ['kernel, "7x7"\nlarger than image'],
            "flag": np.arange(n) % 2 == 0,
            "pretrain_source": pd.Series([None] * (n - 2) + ["src", "src"], dtype=object),
        }
    )
    write_table(table, tmp_path / "arrow.csv")
    table.to_csv(tmp_path / "pandas.csv", index=False)
    back = read_table(tmp_path / "arrow.csv")
    pd.testing.assert_frame_equal(back, pd.read_csv(tmp_path / "pandas.csv"))
    assert back["fraction"].dtype == float and back["seed"].dtype == np.int64
    np.testing.assert_array_equal(back["test_accuracy"].to_numpy(), table["test_accuracy"].to_numpy())
    np.testing.assert_array_equal(back["co2_kg"].to_numpy(), table["co2_kg"].to_numpy())
    assert back["reason"].iloc[-1] == table["reason"].iloc[-1]
    # a column arrow cannot convert (numbers mixed with text) goes through pandas, same result
    mixed = table.assign(host=pd.Series([1, "node-a"] * (n // 2), dtype=object))
    write_table(mixed, tmp_path / "mixed.csv")
    mixed.to_csv(tmp_path / "mixed_pandas.csv", index=False)
    pd.testing.assert_frame_equal(read_table(tmp_path / "mixed.csv"), pd.read_csv(tmp_path / "mixed_pandas.csv"))


def test_histories_co2_follows_the_country_and_the_series_as_runs_csv_does(tmp_path):
    """gather_histories with the workflow's carbon settings: per-epoch CO2 = that epoch's
    measured energy x the intensity (country average, or the series at the epoch's midpoint),
    whatever intensity training recorded; cumulative CO2 is their running sum."""
    import calendar

    from pepr.report.data import gather_histories
    from pepr.results.aggregate import CarbonSettings
    from pepr.results.carbon import country_intensity_g_per_kwh
    from pepr.results.runs import HISTORY_COLUMNS, history_csv

    run = tmp_path / "runs" / "ds" / "scratch" / "1.0" / "m" / "seed0"
    run.mkdir(parents=True)
    energies = [0.002, 0.003]
    rows = [
        {
            **{c: "" for c in HISTORY_COLUMNS},
            "epoch": i + 1,
            "epoch_energy_kwh": e,
            "epoch_co2_kg": 99.0,
            "cumulative_co2_kg": 99.0 * (i + 1),
        }
        for i, e in enumerate(energies)
    ]
    (run / "history.csv").write_text(history_csv(rows))
    start = calendar.timegm((2026, 1, 1, 0, 0, 0))
    (run / "metrics.json").write_text(json.dumps({"status": "ok", "epoch_midpoints_unix": [start + 600, start + 4200]}))
    paths, root = [str(run / "history.csv")], tmp_path / "runs"

    recorded = gather_histories(paths, root)
    assert list(recorded["epoch_co2_kg"]) == [99.0, 99.0]

    intensity = country_intensity_g_per_kwh("FRA")
    by_country = gather_histories(paths, root, CarbonSettings("FRA"))
    assert list(by_country["epoch_co2_kg"]) == pytest.approx([e * intensity / 1000 for e in energies])
    assert list(by_country["cumulative_co2_kg"]) == pytest.approx([0.002 * intensity / 1000, 0.005 * intensity / 1000])

    series = tmp_path / "grid.csv"
    series.write_text("timestamp,gco2_per_kwh\n2026-01-01T00:00:00Z,100\n2026-01-01T01:00:00Z,300\n")
    by_series = gather_histories(paths, root, CarbonSettings("FRA", series))
    assert list(by_series["epoch_co2_kg"]) == pytest.approx([0.002 * 0.1, 0.003 * 0.3])

    (run / "metrics.json").write_text(json.dumps({"status": "ok"}))  # no epoch times: as recorded
    assert list(gather_histories(paths, root, CarbonSettings("FRA", series))["epoch_co2_kg"]) == [99.0, 99.0]
