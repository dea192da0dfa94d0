"""The workflow's report rules read the scored pepr.csv once: its scores are taken as score_runs
wrote them, never computed again; ``pepr report`` on a user's table still checks and scores it."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import pepr.results.scoring
from pepr.errors import PeprInputError
from pepr.report.config import ReportConfig
from pepr.report.data import TableSpec, prepare_table
from pepr.report.loading import load
from pepr.results.aggregate import score_to_csv
from pepr.results.tableio import read_table, write_table
from report_sweep import make_sweep


@pytest.fixture
def workflow_pepr_csv(tmp_path):
    """A small sweep's pepr.csv as the score_runs rule writes it (amortised column and a finished
    run with an undefined performance included)."""
    runs = pd.read_csv(make_sweep(tmp_path, seeds=(0, 1), inits=("scratch",)))
    runs = runs[[c for c in runs.columns if not c.endswith("_norm") and not c.startswith("pepr_")]]
    runs["energy_kwh_amortised"] = runs["energy_kwh"] * 1.5
    runs.loc[runs.index[runs["status"] == "ok"][0], "test_accuracy"] = np.nan
    write_table(runs, tmp_path / "runs.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        score_to_csv(tmp_path / "runs.csv", tmp_path / "pepr.csv", performance="test_accuracy")
    return tmp_path / "pepr.csv"


def _never_scored(*args, **kwargs):
    raise AssertionError("the workflow's report scored pepr.csv again")


def test_the_workflow_report_reads_the_scores_score_runs_wrote(workflow_pepr_csv, monkeypatch):
    cfg = ReportConfig.from_mapping({})
    raw = read_table(workflow_pepr_csv)
    rescored = prepare_table(raw, TableSpec(performance=cfg.performance, skip_undefined_performance=True), cfg)
    monkeypatch.setattr(pepr.results.scoring, "score", _never_scored)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the run without a performance is listed as not scored
        data = load(workflow_pepr_csv, None, cfg)
    read = prepare_table(raw, TableSpec(performance=cfg.performance, skip_undefined_performance=True, scored=True), cfg)
    pd.testing.assert_frame_equal(read.table, rescored.table)
    pd.testing.assert_frame_equal(read.scored, rescored.scored)
    assert read.resources == rescored.resources and "energy_kwh_amortised" in read.resources
    assert read.cfg == rescored.cfg and data.cfg == rescored.cfg
    assert data.results["pepr_energy_kwh"].notna().sum() == (raw["pepr_energy_kwh"].notna()).sum() > 0


def test_a_table_without_its_scores_is_refused_on_the_workflow_path(workflow_pepr_csv, tmp_path):
    table = read_table(workflow_pepr_csv)
    write_table(table.drop(columns=["pepr_co2_kg"]), tmp_path / "unscored.csv")
    with pytest.raises(PeprInputError, match="lacks the score column.*pepr_co2_kg.*score_runs"):
        load(tmp_path / "unscored.csv", None, ReportConfig.from_mapping({}))


def test_a_users_table_is_still_scored(workflow_pepr_csv, monkeypatch):
    """pepr report's path recomputes the scores of any table, a stale pepr.csv included."""
    table = read_table(workflow_pepr_csv)
    table["pepr_energy_kwh"] = 0.5  # stale values are never trusted there
    calls = []
    real = pepr.results.scoring.score
    monkeypatch.setattr(pepr.results.scoring, "score", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = ReportConfig.from_mapping({})
    prepared = prepare_table(table, TableSpec(performance="test_accuracy", skip_undefined_performance=True), cfg)
    assert calls and prepared.scored["pepr_energy_kwh"].nunique() > 1
