"""Estimate vs measurement, per model: results/estimate.csv against results/runs.csv (no torch)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from pepr.columns import RESOURCES
from pepr.errors import PeprInputError
from pepr.estimate.jobs import JOB_KEYS
from pepr.results.runs import normalise_status

#: (estimate column, measured runs.csv column, label) of every resource the estimate predicts.
COMPARED = tuple((r.estimate, r.column, r.estimate.removeprefix("est_")) for r in RESOURCES if r.estimate)


def _normalise_keys(df: pd.DataFrame, where: str) -> pd.DataFrame:
    missing = [k for k in JOB_KEYS if k not in df.columns]
    if missing:
        raise PeprInputError(
            f"{where} lacks the column(s) {', '.join(missing)} that identify a run ({', '.join(JOB_KEYS)})"
        )
    out = df.copy()
    for key in ("dataset", "init", "model"):
        out[key] = out[key].astype(str)
    try:
        out["fraction"] = pd.to_numeric(out["fraction"]).astype(float).round(9)
        out["seed"] = pd.to_numeric(out["seed"]).astype(int)
    except (ValueError, TypeError) as exc:
        raise PeprInputError(f"{where}: 'fraction' and 'seed' must be numbers ({exc})") from None
    return out


def compare_estimate(estimate: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per model: estimated vs measured time, energy and CO2 over the runs both tables have.

    Only successful runs that the estimate covered (and estimated) are compared, matched on
    ``dataset, init, fraction, model, seed``. Columns: ``model, runs_compared, est_X,
    measured_X, ratio_X`` (estimate / measurement) for X in time_s, energy_kwh, co2_kg, plus
    ``est_status`` and ``runs_not_estimated`` (measured runs without an estimate).
    """
    est = _normalise_keys(estimate, "the estimate table")
    measured = _normalise_keys(runs, "the runs table")
    needed = [m for _, m, _ in COMPARED] + ["status"]
    missing = [c for c in needed if c not in measured.columns]
    if missing:
        raise PeprInputError(f"the runs table lacks the measured column(s) {', '.join(missing)}")
    # The runs table's status rule ("OK" is ok, an unknown status is an error): pepr.results.aggregate.
    measured = measured[normalise_status(measured["status"], where="the runs table") == "ok"]
    est_ok = est[est["status"] == "ok"]
    merged = measured.merge(
        est_ok[list(JOB_KEYS) + [e for e, _, _ in COMPARED]], on=list(JOB_KEYS), how="left", validate="one_to_one"
    )
    merged["_estimated"] = merged["est_time_s"].notna()
    rows = []
    models = list(dict.fromkeys(list(est["model"]) + list(measured["model"])))
    for model in models:
        part = merged[merged["model"] == model]
        matched = part[part["_estimated"]]
        est_status = est.loc[est["model"] == model, "status"]
        row = {
            "model": model,
            "est_status": est_status.iloc[0] if len(est_status) else "not estimated",
            "runs_compared": int(len(matched)),
            "runs_not_estimated": int(len(part) - len(matched)),
        }
        for est_col, meas_col, label in COMPARED:
            est_sum = float(matched[est_col].sum()) if len(matched) else math.nan
            meas_sum = float(pd.to_numeric(matched[meas_col]).sum()) if len(matched) else math.nan
            row[f"est_{label}"] = est_sum
            row[f"measured_{label}"] = meas_sum
            row[f"ratio_{label}"] = est_sum / meas_sum if len(matched) and meas_sum > 0 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def plot_comparison(comparison: pd.DataFrame, path: Path) -> None:
    """Scatter of estimated vs measured training time per model (log-log, y = x line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = comparison[(comparison["runs_compared"] > 0)]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    if data.empty:
        ax.text(
            0.5, 0.5, "no run has both an estimate and a measurement", ha="center", va="center", transform=ax.transAxes
        )
        ax.set_axis_off()
    else:
        # hours for real sweeps, seconds for small ones (so the tick labels stay readable)
        unit, scale = (
            ("h", 3600.0) if max(data["measured_time_s"].max(), data["est_time_s"].max()) >= 3600 else ("s", 1.0)
        )
        x = data["measured_time_s"] / scale
        y = data["est_time_s"] / scale
        ax.scatter(x, y, s=18)
        for model, xi, yi in zip(data["model"], x, y):
            ax.annotate(model, (xi, yi), fontsize=6, alpha=0.7, xytext=(2, 2), textcoords="offset points")
        low = float(min(x.min(), y.min())) * 0.8
        high = float(max(x.max(), y.max())) * 1.25
        ax.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1, label="estimate = measured")
        if low > 0:
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlabel(f"measured training time ({unit}, summed over the model's runs)")
        ax.set_ylabel(f"estimated time ({unit}, pepr estimate)")
        ax.set_title("pepr estimate vs measurement, per model")
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def compare_files(
    estimate_path: str | Path, runs_path: str | Path, output: str | Path, figure: str | Path | None = None
) -> pd.DataFrame:
    """Read ``results/estimate.csv`` and ``results/runs.csv``, write the per-model comparison
    (:func:`compare_estimate`) to ``output`` and, when given, its figure; return the table."""
    from pepr.results.tableio import read_table, table_format, write_table

    table_format(output)
    comparison = compare_estimate(read_table(estimate_path), read_table(runs_path))
    write_table(comparison, output)
    if figure is not None:
        plot_comparison(comparison, Path(figure))
    return comparison
