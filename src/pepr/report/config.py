"""The report stage's outputs (table and figure file names) and its settings.

The settings (:class:`ReportConfig`, the ``report:`` section of the workflow config) and their
checks live in :mod:`pepr.plan.report_settings`, on the planning side, so that planning validates
them without importing the report; they are imported here for the report's modules.
"""

from __future__ import annotations

from pepr.columns import PERFORMANCE_COLUMNS
from pepr.plan.report_settings import STANDARD_RESOURCES, TABLE_SETTINGS, WORKFLOW_GROUP, ReportConfig

__all__ = [
    "FIGURES",
    "HISTORIES_TABLE",
    "PERFORMANCE_COLUMNS",
    "STANDARD_RESOURCES",
    "TABLES",
    "TABLE_SETTINGS",
    "WORKFLOW_GROUP",
    "ReportConfig",
]

#: Table name -> file name under the tables folder (``results/tables``).
TABLES: dict[str, str] = {
    "top_k": "top_k.csv",
    "small_vs_large": "small_vs_large.csv",
    "paired_init": "paired_init.csv",
    "paired_fraction": "paired_fraction.csv",
    "data_need": "data_need.csv",
    "seeds": "seed_ci.csv",
    "rank_ci": "rank_ci.csv",
    "peaks": "peak_epochs.csv",
    "failed": "failed_runs.csv",
    "missing": "missing.csv",
    "energy_methods": "energy_methods.csv",
    "decision": "decision.csv",
    "intervals": "intervals.csv",
    "excluded_runs": "excluded_runs.csv",
    "verdict_changes": "verdict_changes.csv",
    "size_trend": "size_trend.csv",
    "measurement_checks": "measurement_checks.csv",
    "footprint": "footprint.csv",
    # adaptive sweeps (pepr.report.adaptive): empty for a full grid
    "adaptive_savings": "adaptive_savings.csv",
    "adaptive_stopped": "adaptive_stopped.csv",
}

#: Figure name -> file stem under the figures folder (one file per configured format).
FIGURES: dict[str, str] = {
    "pepr_profile": "1_pepr_profile",
    "performance_vs_params": "2_performance_vs_params",
    "pepr_vs_params": "3_pepr_vs_params",
    "init_comparison": "4_pretrained_vs_scratch",
    "fraction_comparison": "5_data_fraction",
    "performance_vs_resource": "6_performance_vs_energy",
    "epoch_pepr": "7_epoch_pepr",
    "model_space": "8_energy_vs_params",
    "pooled": "9_pooled_vs_params",
}

#: The gathered per-epoch histories of every run (one table, written by gather_histories).
HISTORIES_TABLE = "histories.csv"
