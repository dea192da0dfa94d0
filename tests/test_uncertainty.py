"""Intervals on performance and PePR, and contenders (pepr.report.uncertainty, the decision table):
a paired bootstrap over test predictions, seeds, a binomial interval from the test-set size."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np
import pandas as pd
import pytest

from pepr.cli import main
from pepr.report import uncertainty
from pepr.results import predictions, runs


def test_paired_bootstrap_covers_a_known_difference_in_at_least_90_percent_of_200_groups():
    """Two models on the same 300 test images, true accuracies 0.80 and 0.74 (difference 0.06):
    the percentile interval of the paired difference covers 0.06 in >= 180 of 200 simulations."""
    rng = np.random.default_rng(7)
    n, truth, covered = 300, 0.06, 0
    labels = np.zeros(n, dtype=np.int64)
    for _ in range(200):
        shared = rng.random(n)  # errors on the same images are correlated, as in real models
        a = (shared < 0.80).astype(float)
        b = np.where(rng.random(n) < 0.5, shared < 0.74, rng.random(n) < 0.74).astype(float)
        weights = uncertainty.bootstrap_weights(n, 400, rng)
        draws = uncertainty.resampled_performance(np.stack([a, b]), labels, "test_accuracy", weights)
        low, high = uncertainty.paired_difference_interval(draws[0], draws[1], 0.05)
        covered += low <= truth <= high
    assert covered >= 180, covered


def test_balanced_accuracy_on_resamples_matches_the_formula():
    correct = np.array([[1, 0, 1, 1, 0, 1.0]])
    labels = np.array([0, 0, 0, 1, 1, 1])
    whole = uncertainty.resampled_performance(correct, labels, "test_balanced_accuracy", np.ones((1, 6)))
    assert whole[0, 0] == pytest.approx((2 / 3 + 2 / 3) / 2)
    only_class_0 = np.array([[2.0, 1, 0, 0, 0, 0]])  # a resample without class 1: mean over class 0 only
    assert uncertainty.resampled_performance(correct, labels, "test_balanced_accuracy", only_class_0)[
        0, 0
    ] == pytest.approx(2 / 3)


def test_wilson_interval_against_the_textbook_value():
    low, high = uncertainty.wilson(np.array([0.8]), np.array([100]), 1.959964)
    assert (low[0], high[0]) == pytest.approx((0.7112, 0.8666), abs=1e-4)


def _group(models, perf, energy, seeds=1, n_test=None):
    rows = []
    for m, p, e in zip(models, perf, energy):
        for s in range(seeds):
            rows.append({"model": m, "seed": s, "acc": p[s] if isinstance(p, tuple) else p, "pepr_kwh": None, "kwh": e})
    df = pd.DataFrame(rows)
    r = (df["kwh"] - df["kwh"].min()) / (df["kwh"].max() - df["kwh"].min())
    df["pepr_kwh"] = df["acc"] / (1 + r)
    if n_test is not None:
        df["n_test"] = n_test
    return df


def test_binomial_contenders_from_the_test_set_size():
    df = _group(["a", "b", "c"], [0.90, 0.89, 0.60], [1.0, 1.0, 2.0], n_test=200)
    unc = uncertainty.group_uncertainty(df, "acc", ["pepr_kwh"], 0.05, 200, 0, None, "n_test")
    assert unc.method == uncertainty.BINOMIAL and "200 test images" in unc.detail
    assert unc.distinguishable("pepr_kwh", 0, 1) is False and unc.distinguishable("pepr_kwh", 0, 2) is True
    assert unc.performance_ci[0, 0] < 0.90 < unc.performance_ci[0, 1]


def test_seed_intervals_and_welch_comparison():
    df = _group(
        ["a", "b", "c"], [(0.90, 0.91, 0.89), (0.895, 0.90, 0.905), (0.70, 0.71, 0.69)], [1.0, 2.0, 3.0], seeds=3
    )
    unc = uncertainty.group_uncertainty(df, "acc", ["pepr_kwh"], 0.05, 200, 0, None, None)
    assert unc.method == uncertainty.SEEDS
    assert unc.distinguishable("acc", 0, 1) is False and unc.distinguishable("acc", 0, 2) is True


def test_unknown_without_seeds_size_or_predictions():
    unc = uncertainty.group_uncertainty(
        _group(["a", "b"], [0.9, 0.8], [1.0, 2.0]), "acc", ["pepr_kwh"], 0.05, 200, 0, None, None
    )
    assert unc.method == uncertainty.UNKNOWN and unc.distinguishable("pepr_kwh", 0, 1) is None
    assert np.isnan(unc.performance_ci).all()


def _workflow_table(tmp_path, accuracies, energies, n=400, seed=0):
    """A pepr-style table of one group (dataset d, scratch, 1.0) and each run's test_predictions.npz
    under tmp_path/runs: model m is right on the first accuracies[m] * n images."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    rows = []
    for model, acc in accuracies.items():
        right = np.zeros(n, dtype=bool)
        right[rng.permutation(n)[: int(round(acc * n))]] = True
        probs = np.eye(2, dtype=np.float32)[np.where(right, labels, 1 - labels)]
        folder = tmp_path / runs.run_folder(runs.cell_key("d", "scratch", "1.0", model, 0), "runs")
        folder.mkdir(parents=True)
        (folder / runs.PREDICTIONS_FILE).write_bytes(predictions.encode(labels, probs))
        rows.append(
            {
                "dataset": "d",
                "init": "scratch",
                "fraction": 1.0,
                "model": model,
                "seed": 0,
                "test_accuracy": right.mean(),
                "energy_kwh": energies[model],
                "params": 1000 * energies[model],
            }
        )
    table = tmp_path / "runs.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    return table


def test_report_pairs_models_on_their_test_predictions(tmp_path, capsys):
    """'big' is best by PePR-E, 'mid' (1 point lower, same images) cannot be told from it and is
    cheaper: recommended, with 'big' as its one contender; 'bad' is distinguishable."""
    table = _workflow_table(
        tmp_path, {"big": 0.90, "mid": 0.89, "bad": 0.55}, {"big": 0.0010, "mid": 0.00099, "bad": 0.002}
    )
    out = tmp_path / "report"
    assert main(["report", str(table), "--runs", str(tmp_path / "runs"), "--bootstrap", "500", "--out", str(out)]) == 0
    decision = pd.read_csv(out / "tables" / "decision.csv")
    row = decision.iloc[0]
    assert row["best_pepr_model"] == "big" and row["recommended_model"] == "mid"
    assert row["contenders"] == "big" and row["n_contenders"] == 1
    assert row["interval_method"] == "paired bootstrap over 400 test images, 500 resamples"
    assert row["recommended_performance_ci_low"] < 0.89 < row["recommended_performance_ci_high"]
    assert row["statement"].startswith("mid (or any of 1 other not distinguishable from it)")
    intervals = pd.read_csv(out / "tables" / "intervals.csv").set_index("model")
    assert set(intervals.index) == {"big", "mid", "bad"}
    assert (intervals["pepr_energy_kwh_ci_low"] <= intervals["pepr_energy_kwh"]).all()
    assert (intervals["pepr_energy_kwh"] <= intervals["pepr_energy_kwh_ci_high"]).all()
    summary = (out / "summary.md").read_text()
    assert "| **mid** |" in summary and "| 1: big |" in summary and "paired bootstrap over 400 test images" in summary
    page = (out / "report.html").read_text()
    first_screen = page[page.index("id='decision'") : page.index("id='footprint'")]
    assert "contenders (not distinguishable)" in first_screen and "1: big" in first_screen
    assert "paired bootstrap over 400 test images" in first_screen  # how, under the table
    assert page.count("recommended (by PePR-E)") == 1  # the decision table appears once (not again in the summary)
    assert 'classList.toggle("enlarged")' in page and "figure img.enlarged{position:fixed" in page  # click to enlarge


def test_n_test_flag_gives_binomial_intervals_and_a_missing_column_is_refused(tmp_path, capsys):
    table = tmp_path / "t.csv"
    pd.DataFrame(
        {"model": ["a", "b", "c"], "acc": [0.9, 0.89, 0.6], "kwh": [0.5, 0.51, 1.0], "size": [300] * 3}
    ).to_csv(table, index=False)
    out = tmp_path / "r"
    args = ["report", str(table), "--performance", "acc", "--resource", "kwh"]
    assert main([*args, "--n-test", "nope", "--out", str(out)]) == 2
    assert "--n-test 'nope'" in capsys.readouterr().err and not out.exists()
    assert main([*args, "--n-test", "size", "--out", str(out)]) == 0
    row = pd.read_csv(out / "tables" / "decision.csv").iloc[0]
    assert row["interval_method"].startswith("binomial") and row["n_contenders"] >= 1


def test_bootstrap_flag_is_checked(tmp_path, capsys):
    table = tmp_path / "t.csv"
    pd.DataFrame({"model": ["a"], "test_accuracy": [0.9], "energy_kwh": [1.0]}).to_csv(table, index=False)
    assert main(["report", str(table), "--bootstrap", "5", "--out", str(tmp_path / "r")]) == 2
    assert "--bootstrap = 5" in capsys.readouterr().err


def _two_tasks(tmp_path, guess_task_perf=(0.52, 0.55, 0.50, 0.53, 0.51, 0.54)):
    """Six models per task (three small, three large); 'guess' sits at chance AUC, 'liver' does not."""
    rows = []
    for task, perf in [("liver", (0.80, 0.82, 0.81, 0.84, 0.86, 0.85)), ("guess", guess_task_perf)]:
        for i, p in enumerate(perf):
            rows.append(
                {"name": f"m{i}", "task": task, "auc": p, "kwh": 0.01 * (i + 1), "n": 1000 * (i + 1), "n_test": 100}
            )
    path = tmp_path / "t.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


FLAGS = [
    "--model",
    "name",
    "--performance",
    "auc",
    "--resource",
    "kwh",
    "--params",
    "n",
    "--by",
    "task",
    "--n-test",
    "n_test",
]


def test_a_group_at_chance_recommends_nothing_and_counts_toward_no_claim(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["report", str(_two_tasks(tmp_path)), *FLAGS, "--out", str(out)]) == 0, capsys.readouterr().err
    decision = pd.read_csv(out / "tables" / "decision.csv", keep_default_na=False).set_index("task")
    assert decision.loc["guess", "recommended_model"] == "" and bool(decision.loc["guess", "uninformative"])
    assert decision.loc["guess", "statement"].startswith("no model beats guessing here: the best auc (m1, 0.55)")
    assert decision.loc["liver", "recommended_model"] != "" and not decision.loc["liver", "uninformative"]
    summary = (out / "summary.md").read_text()
    assert "| task guess | none: no model beats guessing |" in summary
    assert "Not counted toward any claim: 1 group(s) where no model beats guessing (task guess)" in summary


def test_margin_sensitivity_is_where_the_verdict_flips(tmp_path, capsys):
    table = _two_tasks(tmp_path, guess_task_perf=(0.70, 0.72, 0.71, 0.73, 0.74, 0.72))
    out = tmp_path / "r"
    assert main(["report", str(table), *FLAGS, "--out", str(out)]) == 0
    svl = pd.read_csv(out / "tables" / "small_vs_large.csv").set_index("task")
    flip = svl.loc["liver", "margin_not_worse_from"]
    assert 0 < flip < 1
    verdicts = {}
    for margin in (flip * 0.98, flip * 1.02):
        again = tmp_path / f"m{margin}"
        assert main(["report", str(table), *FLAGS, "--margin", f"{margin:.6f}", "--out", str(again)]) == 0
        verdicts[margin] = (
            pd.read_csv(again / "tables" / "small_vs_large.csv").set_index("task").loc["liver", "verdict_not_worse"]
        )
    assert list(verdicts.values()) == ["cannot tell", "not worse"]
    summary = (out / "summary.md").read_text()
    assert "Sensitivity (the margin from which each group's verdict is *not worse*; now 0.02" in summary
    assert f"task liver: {flip:.3g}" in summary


def test_table_strings_are_text_and_any_column_name_is_a_group_key(tmp_path, capsys):
    """Markdown, HTML and spreadsheet formulas in model names and group values stay text;
    ``class`` and ``body part`` work as --by columns."""
    table = tmp_path / "t.csv"
    pd.DataFrame(
        {
            "model": ["![x](https://host/p.png)", "<b>b</b>", "=cmd|x", "a"] * 2,
            "test_accuracy": [0.8, 0.85, 0.9, 0.7, 0.6, 0.65, 0.7, 0.5],
            "energy_kwh": [1, 2, 3, 1.5] * 2,
            "class": ["<i>g</i>"] * 4 + ["[l](javascript:x)"] * 4,
            "body part": ["h"] * 8,
        }
    ).to_csv(table, index=False)
    out = tmp_path / "r"
    assert main(["report", str(table), "--by", "class", "--by", "body part", "--out", str(out)]) == 0, (
        capsys.readouterr().err
    )
    page = (out / "report.html").read_text()
    assert "https://host/p.png" not in page.replace("![x](https://host/p.png)", "")  # never a src or href
    assert "<b>b</b>" not in page and "<i>g</i>" not in page and 'href="javascript' not in page
    decision = (out / "tables" / "decision.csv").read_text()
    assert "'=cmd|x" in decision and ",=cmd" not in decision  # a spreadsheet shows it, does not run it
    from pepr.report.build import read_tables

    assert "=cmd|x" in set(read_tables(out / "tables")["decision"]["best_model"])  # read back as written


def test_a_failure_mid_report_leaves_out_as_it_was(tmp_path, monkeypatch, capsys):
    from pepr.report import build

    table = tmp_path / "t.csv"
    pd.DataFrame({"model": ["a", "b"], "test_accuracy": [0.9, 0.8], "energy_kwh": [1.0, 2.0]}).to_csv(
        table, index=False
    )
    out = tmp_path / "r"

    def broken(*args, **kwargs):
        raise OSError("disk full while writing summary.md")

    monkeypatch.setattr(build, "write_summary", broken)
    with pytest.raises(OSError, match="disk full"):
        build.write_report(table, out, build.TableSpec(), build.ReportConfig())
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]  # no staging left
    monkeypatch.undo()
    assert main(["report", str(table), "--out", str(out)]) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    monkeypatch.setattr(build, "write_summary", broken)
    with pytest.raises(OSError):
        build.write_report(table, out, build.TableSpec(), build.ReportConfig())
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # the earlier report untouched


def test_units_convert_the_totals_and_an_impossible_mix_is_refused(tmp_path, capsys):
    table = tmp_path / "t.csv"
    pd.DataFrame(
        {
            "model": ["a", "b", "c"],
            "top1": [90.0, 85.0, 70.0],
            "co2": [500.0, 1500.0, 2000.0],
            "co2_kg": [0.5, 1.5, 2.0],
            "minutes": [60.0, 120.0, 30.0],
        }
    ).to_csv(table, index=False)
    out = tmp_path / "r"
    grams = tmp_path / "grams.csv"
    pd.read_csv(table).drop(columns="co2_kg").to_csv(grams, index=False)
    assert (
        main(
            [
                "report",
                str(grams),
                "--performance",
                "top1:%",
                "--resource",
                "co2:g",
                "--resource",
                "minutes:min",
                "--out",
                str(out),
            ]
        )
        == 0
    ), capsys.readouterr().err
    footprint = pd.read_csv(out / "tables" / "footprint.csv").iloc[0]
    assert footprint["co2_kg"] == pytest.approx(4.0)  # 4,000 g
    assert footprint["device_hours"] == pytest.approx(3.5)
    assert pd.read_csv(out / "pepr.csv")["top1"].tolist() == [0.9, 0.85, 0.7]  # scored as fractions
    bad = tmp_path / "bad"
    assert main(["report", str(table), "--resource", "co2_kg:g", "--performance", "top1:%", "--out", str(bad)]) == 2
    assert "the column's name says kg, the flag says g" in capsys.readouterr().err and not bad.exists()
    assert main(["report", str(table), "--resource", "co2:furlongs", "--out", str(bad)]) == 2
    assert "COL:UNIT" in capsys.readouterr().err


def test_a_run_dominating_its_groups_range_is_noted(tmp_path, capsys):
    table = tmp_path / "t.csv"
    pd.DataFrame(
        {
            "model": list("abcdef"),
            "test_accuracy": [0.8, 0.82, 0.79, 0.81, 0.83, 0.85],
            "energy_kwh": [1.0, 1.1, 1.05, 1.2, 1.15, 100.0],
        }
    ).to_csv(table, index=False)
    out = tmp_path / "r"
    assert main(["report", str(table), "--out", str(out)]) == 0
    text = (out / "summary.md").read_text()
    assert "**Dominated range:**" in text and "5 of 6 runs have R < 0.05; the largest energy_kwh is f's, 100" in text
