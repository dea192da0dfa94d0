"""PePR as the paper measures it and beyond: reserved GPU memory (PePR-M (reserved)) and data
(PePR-D) as selectable report resources, and the combined PePR R = sum w_j R_j / sum w_j, checked
on constructed tables against hand-computed values."""

from __future__ import annotations

import pandas as pd
import pytest

from pepr.columns import COMBINED, SCORED_COLUMNS
from pepr.errors import PeprInputError
from pepr.plan.report_settings import ReportConfig, parse_combine, report_config_from
from pepr.report.data import TableSpec, prepare_table, variants
from pepr.results.scoring import score


def runs() -> pd.DataFrame:
    """One group of three runs: energy 1, 2, 3 (normalised 0, 0.5, 1), time 10, 30, 20
    (normalised 0, 1, 0.5), performance 0.9, 0.8, 0.7."""
    return pd.DataFrame(
        {
            "dataset": "d",
            "init": "scratch",
            "fraction": "1.0",
            "model": ["a", "b", "c"],
            "seed": 0,
            "test_accuracy": [0.9, 0.8, 0.7],
            "energy_kwh": [1.0, 2.0, 3.0],
            "train_time_s": [10.0, 30.0, 20.0],
            "memory_reserved_epoch2_mb": [100.0, 300.0, 200.0],
            "n_train": [500, 500, 500],
        }
    )


def test_combined_pepr_is_the_weighted_mean_of_the_normalised_resources():
    cfg = ReportConfig(combine="energy_kwh:2,train_time_s:1")
    prepared = prepare_table(runs(), TableSpec(resources=("energy_kwh", "train_time_s")), cfg)
    table = prepared.table
    # R = (2 * [0, 0.5, 1] + [0, 1, 0.5]) / 3
    assert table[f"{COMBINED}_norm"].tolist() == pytest.approx([0.0, 2 / 3, 2.5 / 3])
    assert table[f"pepr_{COMBINED}"].tolist() == pytest.approx([0.9, 0.8 / (5 / 3), 0.7 / (1 + 2.5 / 3)])
    assert COMBINED in prepared.resources
    assert "PePR-combined" in [v.label for v in variants(table)]


def test_equal_weights_by_default_and_the_cheapest_on_everything_scores_its_performance():
    prepared = prepare_table(runs(), TableSpec(), ReportConfig(combine="energy_kwh,train_time_s"))
    assert prepared.table[f"pepr_{COMBINED}"].tolist() == pytest.approx([0.9, 0.8 / 1.75, 0.7 / 1.75])


def test_reserved_memory_and_data_are_selectable_resources_with_their_labels():
    table = runs().assign(n_train=[500, 1000, 2000])
    prepared = prepare_table(table, TableSpec(resources=("memory_reserved_epoch2_mb", "n_train")), ReportConfig())
    assert prepared.table["pepr_memory_reserved_epoch2_mb"].tolist() == pytest.approx([0.9, 0.8 / 2, 0.7 / 1.5])
    assert prepared.table["pepr_n_train"].tolist() == pytest.approx([0.9, 0.8 / (1 + 500 / 1500), 0.7 / 2])
    labels = {v.resource: v.label for v in variants(prepared.table)}
    assert labels["memory_reserved_epoch2_mb"] == "PePR-M (reserved)" and labels["n_train"] == "PePR-D"


def test_workflow_report_resources_are_scored_beside_pepr_csvs_own_scores_which_stay_as_they_are():
    pepr_csv = score(runs(), resources=["energy_kwh"], by=["dataset", "init", "fraction"])
    pepr_csv["pepr_energy_kwh"] = [0.11, 0.22, 0.33]  # read as written, never recomputed
    cfg = ReportConfig(resources=("memory_reserved_epoch2_mb",), combine="energy_kwh,memory_reserved_epoch2_mb")
    prepared = prepare_table(pepr_csv, TableSpec(scored=True, resources=("energy_kwh",)), cfg)
    assert prepared.table["pepr_energy_kwh"].tolist() == [0.11, 0.22, 0.33]
    assert prepared.table["pepr_memory_reserved_epoch2_mb"].tolist() == pytest.approx([0.9, 0.4, 0.7 / 1.5])
    assert prepared.table[f"{COMBINED}_norm"].tolist() == pytest.approx([0.0, 0.75, 0.75])
    # pepr.csv's scored columns are the workflow's, whatever the report adds
    assert "memory_reserved_epoch2_mb" not in SCORED_COLUMNS and "n_train" not in SCORED_COLUMNS


def test_the_same_training_images_in_every_run_are_not_a_copied_measurement():
    from pepr.report.loading import prepare

    data = prepare(
        prepare_table(runs(), TableSpec(resources=("energy_kwh", "n_train")), ReportConfig(bootstrap_resamples=100)),
        None,
    )
    assert data.flags is not None
    assert not data.flags["detail"].astype(str).str.contains("n_train").any()


@pytest.mark.parametrize(
    "text, message",
    [
        ("energy_kwh", "two or more"),
        ("energy_kwh,energy_kwh", "two or more different"),
        ("energy_kwh:x,train_time_s", "COL:WEIGHT"),
        ("energy_kwh:-1,train_time_s", "weight >= 0"),
        ("energy_kwh:0,train_time_s:0", "not all weighted 0"),
    ],
)
def test_a_bad_combination_is_refused_in_one_line(text, message):
    with pytest.raises(PeprInputError, match=message):
        ReportConfig(combine=text)


def test_combine_parses_weights():
    assert parse_combine("energy_kwh:2, train_time_s") == (("energy_kwh", 2.0), ("train_time_s", 1.0))
    assert parse_combine("") == ()


def test_combining_an_unscored_resource_is_refused_before_any_work():
    with pytest.raises(PeprInputError, match="add it with --resource"):
        prepare_table(runs(), TableSpec(resources=("energy_kwh",)), ReportConfig(combine="energy_kwh,train_time_s"))
    # in the workflow, at -n: pepr.csv scores it or report.resources adds it
    with pytest.raises(PeprInputError, match="report.resources"):
        report_config_from({"report": {"combine": "energy_kwh,n_train"}})
    cfg = report_config_from({"report": {"combine": "energy_kwh,n_train", "resources": ["n_train"]}})
    assert cfg.resources == ("n_train",)


def test_reserved_memory_of_a_cpu_sweep_is_refused_with_the_reason():
    table = runs().assign(memory_reserved_epoch2_mb=None)
    with pytest.raises(PeprInputError, match="GPU only"):
        prepare_table(table, TableSpec(), ReportConfig(resources=("memory_reserved_epoch2_mb",)))
    # a sweep on device: cpu never records it: said at snakemake -n
    with pytest.raises(PeprInputError, match="device: cpu"):
        report_config_from({"device": "cpu", "report": {"resources": ["memory_reserved_epoch2_mb"]}})
    assert report_config_from({"device": "cuda", "report": {"resources": ["memory_reserved_epoch2_mb"]}}).resources
