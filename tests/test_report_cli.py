"""``pepr report TABLE --out DIR``: any runs table (CSV or Parquet, any column names) -> the
report folder; bad input -> exit 2, one line, nothing written."""

from __future__ import annotations

import os
import re
import subprocess
import sys

os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np
import pandas as pd
import pytest

from pepr.cli import main
from report_sweep import make_sweep

#: A small results table that is not pepr's own (the README's example).
FOREIGN = pd.DataFrame(
    {
        "name": ["tiny", "mid", "big", "tiny", "mid", "big"],
        "acc": [0.80, 0.85, 0.86, 0.70, 0.75, 0.78],
        "kwh": [0.010, 0.030, 0.090, 0.020, 0.040, 0.050],
        "n_params": [1_000, 5_000, 20_000, 1_000, 5_000, 20_000],
        "task": ["liver", "liver", "liver", "lung", "lung", "lung"],
    }
)
FOREIGN_FLAGS = ["--model", "name", "--performance", "acc", "--resource", "kwh", "--params", "n_params", "--by", "task"]
OUTPUTS = [
    "pepr.csv",
    "summary.md",
    "report.html",
    "tables/decision.csv",
    "tables/footprint.csv",
    "tables/measurement_checks.csv",
    "tables/size_trend.csv",
    "tables/small_vs_large.csv",
]


def run_report(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(["report", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_foreign_table_with_its_own_column_names(tmp_path, capsys):
    FOREIGN.to_csv(tmp_path / "results.csv", index=False)
    out = tmp_path / "report"
    code, stdout, err = run_report([tmp_path / "results.csv", *FOREIGN_FLAGS, "--out", out], capsys)
    assert code == 0, err
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    scored = pd.read_csv(out / "pepr.csv")
    assert list(scored.columns) == [*FOREIGN.columns, "kwh_norm", "pepr_kwh"]  # the input, plus scores
    liver = scored[scored["task"] == "liver"].set_index("name")
    assert liver["pepr_kwh"].to_dict() == pytest.approx({"tiny": 0.80, "mid": 0.85 / 1.25, "big": 0.86 / 2})
    # The decision table, by hand: best PePR vs best accuracy per task.
    decision = pd.read_csv(out / "tables" / "decision.csv").set_index("task")
    assert decision.loc["liver", "recommended_model"] == "tiny" and decision.loc["liver", "best_model"] == "big"
    assert decision.loc["liver", "performance_share"] == pytest.approx(0.80 / 0.86)
    assert decision.loc["liver", "resource_share"] == pytest.approx(0.010 / 0.090)
    assert (
        decision.loc["liver", "statement"] == "tiny (uncertainty unknown): 93% of the best acc (big) at 11% of its kwh"
    )
    assert decision.loc["liver", "contenders"] == "unknown" and decision.loc["liver", "interval_method"].startswith(
        "unknown"
    )
    assert (
        decision.loc["lung", "statement"] == "tiny (uncertainty unknown): 90% of the best acc (big) at 40% of its kwh"
    )
    text = (out / "summary.md").read_text()
    # The decision comes first, then the footprint and the checks.
    assert (
        text.index("## Decision")
        < text.index("footprint")
        < text.index("Measurement checks")
        < text.index("## Best model")
    )
    assert (
        "| task liver | **tiny** | 0.8 | unknown | unknown | unknown | 0.01 | big | 0.86 | 0.09 | "
        "93% of the best acc at 11% of its kwh |"
    ) in text
    assert "--n-test COL" in text  # says how to get an interval
    assert "not known from this table" in text  # no energy_kwh/train_time_s columns: no totals invented
    checks = pd.read_csv(out / "tables" / "measurement_checks.csv")
    assert list(checks.columns) == ["name", "task", "check", "severity", "detail"]
    assert list(pd.read_csv(out / "tables" / "top_k.csv").columns)[:4] == ["task", "variant", "rank", "name"]


def test_foreign_table_page_has_the_three_interactive_plots_in_its_own_names(tmp_path, capsys):
    """report.html of a table with its own column names (the README's example): the plots are
    drawn from what `pepr report` computed, not from pepr.csv reread in pepr's names."""
    FOREIGN.to_csv(tmp_path / "results.csv", index=False)
    out = tmp_path / "report"
    code, _, err = run_report([tmp_path / "results.csv", *FOREIGN_FLAGS, "--out", out], capsys)
    assert code == 0, err
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "could not read pepr.csv" not in page and "No interactive plot" not in page
    assert page.count('class="plotly-graph-div"') == 3 and page.count("* plotly.js v") == 1
    for plot in ("plot-performance_vs_params", "plot-performance_vs_resource", "plot-pepr_vs_params"):
        assert f'id="{plot}"' in page
    # Hover: the user's model names, and the user's column names as labels.
    texts = {name for array in re.findall(r'"text":\[([^\]]*)\]', page) for name in re.findall(r'"([^"]*)"', array)}
    assert {"tiny", "mid", "big"} <= texts
    for label in ("n_params: %{customdata", "acc: %{customdata", "kwh: %{customdata", "PePR(kwh): %{customdata"):
        assert label in page, label
    assert "(seed %{customdata" not in page  # the table has no seed: none is shown
    assert '"label":"task liver"' in page and '"label":"task lung"' in page  # one menu entry per group
    assert "3 runs" not in page and "6 runs, 3 models" in page
    # The decision table shows the group column first, then the sentence.
    decision = page[page.index("id='decision'") : page.index("id='footprint'")]
    headers = re.findall(r"<th>([^<]*)</th>", decision)
    assert headers[:7] == [
        "task",
        "decision",
        "recommended (by PePR(kwh))",
        "acc",
        "acc interval",
        "PePR(kwh) interval",
        "contenders (not distinguishable)",
    ], headers
    assert "Not known from this table" in page  # no energy_kwh / train_time_s: no totals invented


def test_rename_gives_the_same_report_as_flags(tmp_path, capsys):
    FOREIGN.to_parquet(tmp_path / "results.parquet", index=False)  # Parquet input
    out = tmp_path / "renamed"
    code, _, err = run_report(
        [
            tmp_path / "results.parquet",
            "--rename",
            "name=model",
            "--rename",
            "acc=test_accuracy",
            "--rename",
            "kwh=energy_kwh",
            "--rename",
            "n_params=params",
            "--by",
            "task",
            "--out",
            out,
        ],
        capsys,
    )
    assert code == 0, err
    decision = pd.read_csv(out / "tables" / "decision.csv")
    assert decision["recommended_model"].tolist() == ["tiny", "tiny"]
    assert decision["statement"].tolist() == [
        "tiny (uncertainty unknown): 93% of the best test_accuracy (big) at 11% of its energy_kwh",
        "tiny (uncertainty unknown): 90% of the best test_accuracy (big) at 40% of its energy_kwh",
    ]
    assert "model" in pd.read_csv(out / "pepr.csv").columns
    footprint = pd.read_csv(out / "tables" / "footprint.csv").iloc[0]
    assert footprint["energy_kwh"] == pytest.approx(FOREIGN["kwh"].sum()) and footprint["measurement"] == "not recorded"


def test_missing_optional_columns_no_params_no_status_no_seed_no_group(tmp_path, capsys):
    FOREIGN.drop(columns=["n_params", "task"]).iloc[:3].to_csv(tmp_path / "bare.csv", index=False)
    out = tmp_path / "bare"
    code, _, err = run_report(
        [tmp_path / "bare.csv", "--model", "name", "--performance", "acc", "--resource", "kwh", "--out", out], capsys
    )
    assert code == 0, err
    text = (out / "summary.md").read_text()
    assert "no parameter counts" in text and "skipped" in text
    assert pd.read_csv(out / "tables" / "small_vs_large.csv").empty
    assert pd.read_csv(out / "tables" / "size_trend.csv").empty
    figures = {p.stem for p in (out / "figures").glob("*.png")}
    assert figures and not figures & {
        "2_performance_vs_params",
        "3_pepr_vs_params",
        "8_energy_vs_params",
        "9_pooled_vs_params",
    }
    assert pd.read_csv(out / "tables" / "decision.csv")["recommended_model"].tolist() == ["tiny"]
    page = (out / "report.html").read_text(encoding="utf-8")  # no params: the plot against energy only
    assert page.count('class="plotly-graph-div"') == 1 and 'id="plot-performance_vs_resource"' in page


def test_status_any_case_and_histories_table(tmp_path, capsys):
    make_sweep(tmp_path, seeds=(0,), inits=("scratch",), fractions=("1.0",))
    runs = pd.read_csv(tmp_path / "pepr.csv")
    runs = runs.drop(columns=[c for c in runs.columns if c.startswith("pepr_") or c.endswith("_norm")])
    runs["status"] = runs["status"].str.upper()  # "OK" / "FAILED"
    runs = runs.rename(columns={"model": "arch"})
    runs.to_csv(tmp_path / "runs.csv", index=False)
    histories = []
    for path in sorted((tmp_path / "runs").rglob("history.csv")):
        history = pd.read_csv(path)
        if len(history):
            parts = path.relative_to(tmp_path / "runs").parts
            histories.append(
                history.assign(
                    dataset=parts[0],
                    init=parts[1],
                    fraction=parts[2],
                    arch=parts[3],
                    seed=int(parts[4].removeprefix("seed")),
                )
            )
    pd.concat(histories).to_csv(tmp_path / "histories.csv", index=False)
    out = tmp_path / "report"
    code, _, err = run_report(
        [tmp_path / "runs.csv", "--model", "arch", "--histories", tmp_path / "histories.csv", "--out", out], capsys
    )
    assert code == 0, err
    scored = pd.read_csv(out / "pepr.csv")
    failed = scored["status"] == "FAILED"
    assert failed.any() and scored.loc[failed, "pepr_energy_kwh"].isna().all()
    assert scored.loc[~failed, "pepr_energy_kwh"].notna().all()
    peaks = pd.read_csv(out / "tables" / "peak_epochs.csv")
    assert len(peaks) == int((~failed).sum()) and "arch" in peaks.columns
    assert set(pd.read_csv(out / "tables" / "failed_runs.csv")["arch"]) == {"convnext_atto"}


def test_pepr_own_table_reports_with_defaults_as_the_workflow_does(tmp_path, capsys):
    """The workflow's pepr.csv through `pepr report` (no flags) and through the rules' load():
    the same scores and the same tables (one code path)."""
    from pepr.report.build import compute_tables, load
    from pepr.report.config import ReportConfig

    make_sweep(tmp_path, seeds=(0, 1), inits=("scratch", "imagenet"), fractions=("1.0",))
    out = tmp_path / "report"
    code, _, err = run_report([tmp_path / "pepr.csv", "--out", out], capsys)
    assert code == 0, err
    written = pd.read_csv(tmp_path / "pepr.csv")
    rescored = pd.read_csv(out / "pepr.csv")
    assert np.allclose(written["pepr_energy_kwh"].fillna(-1), rescored["pepr_energy_kwh"].fillna(-1))
    workflow = compute_tables(load(tmp_path / "pepr.csv", None, ReportConfig()))
    decision = pd.read_csv(out / "tables" / "decision.csv", dtype={"fraction": str})
    assert decision["recommended_model"].tolist() == workflow["decision"]["recommended_model"].tolist()
    footprint = pd.read_csv(out / "tables" / "footprint.csv").iloc[0]
    assert footprint["energy_kwh"] == pytest.approx(written["energy_kwh"].sum())
    assert footprint["device_hours"] == pytest.approx(written["train_time_s"].sum() / 3600)
    assert footprint["measurement"] == "estimated"


BAD_CASES = {
    "absent table": (lambda d: d / "absent.csv", [], "does not exist"),
    "unknown resource": (None, ["--resource", "joules"], "no column 'joules'"),
    "performance outside [0, 1]": ("percent", [], "do not (e.g. 80.0); use a fraction"),
    "bad rename": (None, ["--rename", "acc"], "OLD=NEW"),
    "rename of an absent column": (None, ["--rename", "accuracy=test_accuracy"], "no column 'accuracy'"),
    "two rows per model without a seed": ("duplicated", [], "no seed column"),
    "negative resource": ("negative", [], "non-negative"),
    "column in two roles": (None, ["--by", "acc"], "both as --performance and as --by"),
    "unknown status": ("status", [], "unknown run status"),
    "bad histories": (None, ["--histories", "absent_hist.csv"], "does not exist"),
    "bad combination": (None, ["--combine", "kwh:two,acc"], "--combine"),
    "combination of an unscored column": (None, ["--combine", "kwh,n_params"], "add it with --resource"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, tmp_path, capsys):
    table, extra, message = BAD_CASES[case]
    frame = FOREIGN.copy()
    if table == "percent":
        frame["acc"] *= 100
    elif table == "duplicated":
        frame["task"] = "liver"
    elif table == "negative":
        frame.loc[2, "kwh"] = -0.5
    elif table == "status":
        frame["status"] = ["ok", "ok", "running", "ok", "ok", "ok"]
    path = tmp_path / "results.csv"
    frame.to_csv(path, index=False)
    if callable(table):
        path = table(tmp_path)
    extra = [str(tmp_path / e) if e.endswith(".csv") else e for e in extra]
    out = tmp_path / "out" / "report"
    code, stdout, err = run_report([path, *FOREIGN_FLAGS, *extra, "--out", out], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("pepr report: error: ") and message in err, err
    assert "np.float" not in err and "np.int" not in err, err  # values shown as plain numbers
    assert not (tmp_path / "out").exists()


def test_out_that_is_a_file_is_refused_before_reading(tmp_path, capsys):
    FOREIGN.to_csv(tmp_path / "results.csv", index=False)
    (tmp_path / "taken").write_text("mine")
    code, _, err = run_report([tmp_path / "results.csv", *FOREIGN_FLAGS, "--out", tmp_path / "taken"], capsys)
    assert code == 2 and "is a file" in err and (tmp_path / "taken").read_text() == "mine"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    code, _, err = run_report([tmp_path / "results.csv", *FOREIGN_FLAGS, "--out", tmp_path / "mine"], capsys)
    assert code == 2 and "already holds other files" in err and os.listdir(tmp_path / "mine") == ["notes.txt"]


def test_report_cli_starts_without_torch(tmp_path):
    FOREIGN.to_csv(tmp_path / "results.csv", index=False)
    code = (
        "import sys, runpy; sys.argv = ['pepr', 'report', sys.argv[1], '--out', sys.argv[2], "
        + ", ".join(repr(f) for f in FOREIGN_FLAGS)
        + "]\n"
        "from pepr.cli import main\nrc = main(sys.argv[1:])\nassert 'torch' not in sys.modules, 'torch imported'\nsys.exit(rc)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "results.csv"), str(tmp_path / "r")],
        capture_output=True,
        text=True,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert result.returncode == 0, result.stderr
