"""Report stage (pepr.report): numbers checked against independent computations.

Every p-value, order, interval and peak epoch the report prints is recomputed here from the raw
fixture (scipy called directly on hand-assembled pairs, peak epochs by hand), never read back
from the code under test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pepr.errors import PeprInputError
from pepr.report.build import (
    compute_tables,
    load,
    read_tables,
    write_figures,
    write_histories,
    write_summary,
    write_tables,
)
from pepr.report.config import FIGURES, TABLES, ReportConfig
from pepr.report.data import load_model_metadata, model_family, report_variants, variants
from pepr.report.stats import (
    bootstrap_rank_ci,
    epoch_curves,
    format_p,
    holm,
    paired_effect,
    peak_epochs,
    top_k_separable,
    verdict,
    welch_effect,
)
from pepr.results.scoring import score
from report_sweep import METHOD, MODELS, make_sweep
from shared_data import PAPER_MODELS, absent

CELL = ["dataset", "init", "fraction"]


def gathered(root: Path) -> Path:
    """Gather the fixture's histories like the workflow's gather_histories rule; returns the table."""
    paths = sorted(str(p) for p in (root / "runs").rglob("history.csv"))
    write_histories(paths, root / "runs", root / "histories.csv")
    return root / "histories.csv"


def load_sweep(root: Path, cfg: ReportConfig | None = None, **kwargs):
    return load(root / "pepr.csv", gathered(root), cfg or ReportConfig(), **kwargs)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    make_sweep(root)
    return root


@pytest.fixture(scope="module")
def data(sweep):
    return load_sweep(sweep, ReportConfig(bootstrap_resamples=500))


@pytest.fixture(scope="module")
def tables(data):
    return compute_tables(data)


def raw(sweep: Path) -> pd.DataFrame:
    """The fixture table as plain pandas reads it (independent of the report's loader)."""
    return pd.read_csv(sweep / "pepr.csv", dtype={"fraction": str})


def model_means(df: pd.DataFrame, value: str) -> pd.DataFrame:
    """Seed means per (cell, model) of the successful runs, wide by init (recomputed here)."""
    ok = df[df["status"] == "ok"]
    return ok.groupby([*CELL, "model"])[value].mean().reset_index()


def hand_holm(p: list[float]) -> list[float]:
    """Holm's step-down adjustment written out directly from its definition."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


# ---------------------------------------------------------------- statistics against scipy / by hand


def test_holm_matches_the_step_down_definition_and_skips_untested():
    p = [0.01, 0.04, 0.03, 0.005]
    np.testing.assert_allclose(holm(np.array(p)), hand_holm(p), rtol=1e-15)
    # 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 -> max(0.06, 0.04) = 0.06 (monotone)
    np.testing.assert_allclose(holm(np.array(p)), [0.03, 0.06, 0.06, 0.02], rtol=1e-12)
    with_gap = holm(np.array([0.02, np.nan, 0.01]))
    assert np.isnan(with_gap[1]) and with_gap[0] == pytest.approx(0.02) and with_gap[2] == pytest.approx(0.02)
    assert np.isnan(holm(np.array([np.nan, np.nan]))).all()


def test_paired_effect_is_scipy_t_and_tost_is_two_shifted_one_sided_tests():
    a = np.array([0.81, 0.84, 0.79, 0.86, 0.83])
    b = np.array([0.80, 0.82, 0.80, 0.85, 0.81])
    effect = paired_effect(a, b, alpha=0.05, min_pairs=3, margin=0.02)
    ref = stats.ttest_rel(a, b)
    d = a - b
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    assert effect.p == pytest.approx(ref.pvalue, rel=1e-12) and effect.estimate == pytest.approx(d.mean())
    assert (effect.ci_low, effect.ci_high) == (pytest.approx(d.mean() - half), pytest.approx(d.mean() + half))
    tost = max(
        stats.ttest_1samp(d, -0.02, alternative="greater").pvalue, stats.ttest_1samp(d, 0.02, alternative="less").pvalue
    )
    assert effect.p_tost == pytest.approx(tost, rel=1e-12)
    # by hand: t statistics of the two one-sided tests
    se = d.std(ddof=1) / np.sqrt(len(d))
    by_hand = max(stats.t.sf((d.mean() + 0.02) / se, len(d) - 1), stats.t.cdf((d.mean() - 0.02) / se, len(d) - 1))
    assert effect.p_tost == pytest.approx(by_hand, rel=1e-10)


def test_welch_effect_and_its_tost_against_scipy():
    small = np.array([0.80, 0.82, 0.79, 0.81])
    large = np.array([0.83, 0.80, 0.84])
    effect = welch_effect(small, large, alpha=0.05, min_group=2, margin=0.02)
    ref = stats.ttest_ind(small, large, equal_var=False)
    assert effect.p == pytest.approx(ref.pvalue, rel=1e-12)
    assert effect.estimate == pytest.approx(small.mean() - large.mean())
    ci = ref.confidence_interval(0.95)
    assert (effect.ci_low, effect.ci_high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    va, vb = small.var(ddof=1) / len(small), large.var(ddof=1) / len(large)
    se = np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(small) - 1) + vb**2 / (len(large) - 1))  # Welch-Satterthwaite
    diff = small.mean() - large.mean()
    by_hand = max(stats.t.sf((diff + 0.02) / se, df), stats.t.cdf((diff - 0.02) / se, df))
    assert effect.p_tost == pytest.approx(by_hand, rel=1e-10)


def test_verdicts_equivalent_different_cannot_tell():
    rng = np.random.default_rng(0)
    base = rng.normal(0.8, 0.05, 12)
    same = paired_effect(base + rng.normal(0.001, 0.002, 12), base, 0.05, 3, margin=0.02)
    assert verdict(same.p, same.p_tost, 0.05) == "equivalent"
    far = paired_effect(base + 0.1 + rng.normal(0, 0.002, 12), base, 0.05, 3, margin=0.02)
    assert verdict(far.p, far.p_tost, 0.05) == "different"
    noisy = paired_effect(base[:3] + np.array([0.05, -0.04, 0.01]), base[:3], 0.05, 3, margin=0.02)
    assert verdict(noisy.p, noisy.p_tost, 0.05) == "cannot tell"
    assert verdict(np.nan, np.nan, 0.05) == "cannot tell"


def test_too_few_pairs_gives_no_p_value():
    result = paired_effect(np.array([0.8, 0.9]), np.array([0.7, 0.8]), alpha=0.05, min_pairs=3)
    assert np.isnan(result.p) and "n too small for a test" in result.note and result.n == 2
    equal = paired_effect(np.ones(8), np.ones(8), 0.05, 3, margin=0.02)
    assert np.isnan(equal.p) and np.isnan(equal.p_tost) and "all pairs equal" in equal.note
    # NaN pairs are dropped before counting.
    a, b = (
        np.r_[np.linspace(0.5, 0.9, 7), np.nan],
        np.r_[np.linspace(0.4, 0.85, 7) + [0, 0.01, 0, 0.02, 0, 0.01, 0], 0.3],
    )
    assert paired_effect(a, b, 0.05, 3).p == pytest.approx(stats.ttest_rel(a[:7], b[:7]).pvalue)
    assert np.isnan(welch_effect(np.array([0.8]), np.array([0.7, 0.75]), 0.05, 2).p)
    assert format_p(np.nan) == "no test" and format_p(0.0123) == "p = 0.012" and format_p(2e-5) == "p = 2.0e-05"


# ---------------------------------------------------------------- the comparison tables


def test_pretrained_vs_scratch_is_tested_per_context_on_model_means(sweep, tables):
    means = model_means(raw(sweep), "test_accuracy")
    table = tables["paired_init"]
    assert "all" not in set(table["context"])  # no pooling of contexts
    assert not table["metric"].str.startswith("pepr_").any()  # PePR never compared across inits
    rows = table[table["metric"] == "test_accuracy"].set_index("fraction")
    p_raw = {}
    for fraction in ["1.0", "0.1"]:
        wide = (
            means[means["fraction"] == fraction].pivot(index="model", columns="init", values="test_accuracy").dropna()
        )
        ref = stats.ttest_rel(wide["imagenet"], wide["scratch"])
        row = rows.loc[fraction]
        assert (row["treatment"], row["baseline"]) == ("imagenet", "scratch")
        assert row["n_models"] == len(wide) == 7  # one value per model, not 7 x 3 seeds
        assert row["p"] == pytest.approx(ref.pvalue, rel=1e-12)
        d = wide["imagenet"] - wide["scratch"]
        assert row["mean_diff"] == pytest.approx(d.mean(), rel=1e-12)
        tost = max(
            stats.ttest_1samp(d, -0.02, alternative="greater").pvalue,
            stats.ttest_1samp(d, 0.02, alternative="less").pvalue,
        )
        assert row["p_tost"] == pytest.approx(tost, rel=1e-12)
        p_raw[fraction] = ref.pvalue
    adjusted = hand_holm([p_raw["1.0"], p_raw["0.1"]])
    assert rows.loc["1.0", "p_holm"] == pytest.approx(adjusted[0]) and rows.loc["0.1", "p_holm"] == pytest.approx(
        adjusted[1]
    )
    assert set(rows["verdict"]) == {"different"}  # +6 to +9 accuracy points, far beyond the margin
    energy = table[(table["metric"] == "energy_kwh") & (table["fraction"] == "0.1")].iloc[0]
    e = (
        model_means(raw(sweep), "energy_kwh")
        .query("fraction == '0.1'")
        .pivot(index="model", columns="init", values="energy_kwh")
    )
    # Resources are tested on the log scale: ratio = geometric mean of the per-model ratios.
    assert energy["p"] == pytest.approx(stats.ttest_rel(np.log(e["imagenet"]), np.log(e["scratch"])).pvalue, rel=1e-12)
    assert energy["ratio"] == pytest.approx(stats.gmean(e["imagenet"] / e["scratch"]), rel=1e-12)
    assert energy["mean_diff"] == pytest.approx((e["imagenet"] - e["scratch"]).mean(), rel=1e-12)
    assert set(table["energy_method"]) == {METHOD}  # energy numbers carry their method


def test_fraction_comparison_pairs_smaller_fraction_with_the_full_one(sweep, tables):
    means = model_means(raw(sweep), "test_accuracy")
    row = tables["paired_fraction"].query("init == 'scratch' and metric == 'test_accuracy'").iloc[0]
    wide = means[means["init"] == "scratch"].pivot(index="model", columns="fraction", values="test_accuracy")
    assert (row["treatment"], row["baseline"]) == ("0.1", "1.0")
    assert row["p"] == pytest.approx(stats.ttest_rel(wide["0.1"], wide["1.0"]).pvalue, rel=1e-12)
    assert row["mean_diff"] == pytest.approx((wide["0.1"] - wide["1.0"]).mean())


def test_small_vs_large_split_per_cell_welch_holm_and_tost(sweep, tables, data):
    means = model_means(raw(sweep), "test_accuracy")
    params = raw(sweep).query("status == 'ok'").groupby([*CELL, "model"])["params"].first().reset_index()
    table = tables["small_vs_large"]
    p_raw, p_tost = [], []
    for _, row in table.iterrows():
        cell = means[(means[CELL] == row[CELL].values).all(axis=1)].set_index("model")
        counts = params[(params[CELL] == row[CELL].values).all(axis=1)].set_index("model")["params"]
        median = float(np.median(counts))  # the 7 successful models of the cell (not the failed convnext_atto)
        assert row["median_params"] == median == MODELS["densenet121"]
        small = cell.loc[[m for m in cell.index if counts[m] <= median], "test_accuracy"]
        large = cell.loc[[m for m in cell.index if counts[m] > median], "test_accuracy"]
        assert (row["n_small"], row["n_large"]) == (len(small), len(large)) == (4, 3)
        ref = stats.ttest_ind(small, large, equal_var=False)
        assert row["p_performance"] == pytest.approx(ref.pvalue, rel=1e-12)
        tost = max(
            stats.ttest_ind(small + 0.02, large, equal_var=False, alternative="greater").pvalue,
            stats.ttest_ind(small - 0.02, large, equal_var=False, alternative="less").pvalue,
        )
        assert row["p_tost_performance"] == pytest.approx(tost, rel=1e-12)
        p_raw.append(ref.pvalue)
        p_tost.append(tost)
    np.testing.assert_allclose(table["p_holm_performance"], hand_holm(p_raw), rtol=1e-12)
    np.testing.assert_allclose(table["p_tost_holm_performance"], hand_holm(p_tost), rtol=1e-12)
    expected = [verdict(p, q, 0.05) for p, q in zip(hand_holm(p_raw), hand_holm(p_tost))]
    assert list(table["verdict_performance"]) == expected


def test_small_large_split_uses_each_cells_own_parameter_counts(tmp_path):
    make_sweep(tmp_path, seeds=(0,))
    df = raw(tmp_path)
    # In the 10% cells resnet18 reports a smaller count (another head): it becomes small there only.
    moved = (df["fraction"] == "0.1") & (df["model"] == "resnet18")
    df.loc[moved, "params"] = 1_000_000
    df.to_csv(tmp_path / "pepr.csv", index=False)
    results = load_sweep(tmp_path).results
    resnet = results[results["model"] == "resnet18"].set_index("fraction")["small"]
    assert bool(resnet.loc["0.1"].all()) and not bool(resnet.loc["1.0"].any())


# ---------------------------------------------------------------- top-k, seeds, ranks


def test_top_k_order_is_the_seed_mean_order(sweep, tables):
    df = raw(sweep)
    for variant, column in [("PePR-E", "pepr_energy_kwh"), ("PePR-M", "pepr_peak_memory_mb")]:  # noqa: B007 - read by the query string below (@variant)
        ok = df[(df["status"] == "ok") & (df["init"] == "imagenet") & (df["fraction"] == "0.1")]
        expected = ok.groupby("model")[column].mean().sort_values(ascending=False).head(5)
        got = tables["top_k"].query("init == 'imagenet' and fraction == '0.1' and variant == @variant")
        assert list(got["model"]) == list(expected.index)
        assert list(got["rank"]) == [1, 2, 3, 4, 5]
        np.testing.assert_allclose(got["score"], expected.to_numpy(), rtol=1e-12)
    assert set(tables["top_k"]["energy_method"]) == {METHOD}


def test_top_k_has_the_best_performance_row_and_no_redundant_pepr_c(sweep, tables):
    df = raw(sweep)
    ok = df[(df["status"] == "ok") & (df["init"] == "scratch") & (df["fraction"] == "1.0")]
    means = ok.groupby("model")[["test_accuracy", "pepr_energy_kwh"]].mean()
    best = tables["top_k"].query("init == 'scratch' and fraction == '1.0' and variant == 'best performance'")
    assert len(best) == 1 and best.iloc[0]["model"] == means["test_accuracy"].idxmax()
    expected_rank = list(means["pepr_energy_kwh"].sort_values(ascending=False).index).index(best.iloc[0]["model"]) + 1
    assert best.iloc[0]["headline_rank"] == expected_rank
    # CO2 = energy x 0.1517 in the fixture: PePR-C would repeat PePR-E, so it is not presented.
    assert "PePR-C" not in set(tables["top_k"]["variant"]) and "PePR-C" not in set(tables["rank_ci"]["variant"])
    assert [v.label for v in report_variants(data_results(sweep))] == ["PePR-E", "PePR-T", "PePR-M"]


def data_results(root: Path) -> pd.DataFrame:
    return load(root / "pepr.csv", None, ReportConfig()).results


def test_pepr_c_is_kept_when_a_carbon_intensity_series_was_used(tmp_path):
    make_sweep(tmp_path, seeds=(0,))
    df = raw(tmp_path)
    df["carbon_intensity_source"] = "series: grid.csv"
    df.loc[df["status"] == "ok", "co2_kg"] *= np.linspace(0.5, 1.5, int((df["status"] == "ok").sum()))
    df.to_csv(tmp_path / "pepr.csv", index=False)
    data = load_sweep(tmp_path)
    assert "PePR-C" in [v.label for v in report_variants(data.results)]
    assert "PePR-C" in set(compute_tables(data)["top_k"]["variant"])


def test_seed_confidence_interval_is_student_t(sweep, tables):
    df = raw(sweep)
    values = df.query("status == 'ok' and init == 'scratch' and fraction == '1.0' and model == 'resnet18'")[
        "test_accuracy"
    ]
    low, high = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    row = tables["seeds"].query("init == 'scratch' and fraction == '1.0' and model == 'resnet18'").iloc[0]
    assert row["n_seeds"] == 3
    assert (row["performance_ci_low"], row["performance_ci_high"]) == (pytest.approx(low), pytest.approx(high))


def test_rank_intervals_separate_distinct_models_and_not_overlapping_ones():
    distinct = {"a": np.array([0.90, 0.91, 0.90]), "b": np.array([0.70, 0.71, 0.70]), "c": np.array([0.5, 0.5, 0.5])}
    ci = bootstrap_rank_ci(distinct, resamples=500, alpha=0.05, seed=0).set_index("model")
    assert list(ci["rank"]) == [1, 2, 3] and list(ci["rank_low"]) == [1, 2, 3] and list(ci["rank_high"]) == [1, 2, 3]
    assert top_k_separable(ci.reset_index(), 1) is True
    close = {"a": np.array([0.90, 0.70, 0.85]), "b": np.array([0.80, 0.88, 0.75]), "c": np.array([0.3, 0.31, 0.3])}
    ci = bootstrap_rank_ci(close, resamples=500, alpha=0.05, seed=0)
    # a (mean 0.817) and b (0.81): each can come first in a resample.
    assert ci.set_index("model").loc["a", "rank_high"] == 2 and ci.set_index("model").loc["b", "rank_low"] == 1
    assert top_k_separable(ci, 1) is False
    assert top_k_separable(ci, 2) is True
    assert top_k_separable(ci, 3) is None


def test_rank_table_only_with_several_seeds(tmp_path, tables):
    assert set(tables["rank_ci"]["n_seeds"]) == {3}
    make_sweep(tmp_path, seeds=(0,))
    single = compute_tables(load_sweep(tmp_path))
    assert single["rank_ci"].empty
    assert single["seeds"]["performance_ci_low"].isna().all()


# ---------------------------------------------------------------- epoch curves


def test_peak_epoch_and_savings_by_hand():
    # One cell, two runs, three epochs. Cumulative energy over the cell: min 1, max 6.
    history = pd.DataFrame(
        {
            "dataset": "d",
            "init": "scratch",
            "fraction": "1.0",
            "seed": 0,
            "model": ["a", "a", "a", "b", "b", "b"],
            "epoch": [1, 2, 3, 1, 2, 3],
            "test_accuracy": [0.60, 0.80, 0.82, 0.70, 0.72, 0.90],
            "cumulative_energy_kwh": [1.0, 2.0, 3.0, 2.0, 4.0, 6.0],
        }
    )
    curves = epoch_curves(history, "test_accuracy", "cumulative_energy_kwh", CELL)
    # a: 0.6/1, 0.8/1.2 = 0.6667, 0.82/1.4 = 0.5857 -> peak epoch 2
    # b: 0.7/1.2 = 0.5833, 0.72/1.6 = 0.45, 0.9/2 = 0.45 -> peak epoch 1
    np.testing.assert_allclose(
        curves["epoch_pepr"], [0.6, 0.8 / 1.2, 0.82 / 1.4, 0.7 / 1.2, 0.72 / 1.6, 0.9 / 2], rtol=1e-12
    )
    peaks = peak_epochs(curves, [*CELL, "model", "seed"], "test_accuracy", "cumulative_energy_kwh").set_index("model")
    assert peaks.loc["a", "peak_epoch"] == 2 and peaks.loc["b", "peak_epoch"] == 1
    assert peaks.loc["a", "resource_saved"] == pytest.approx(1.0) and peaks.loc["b", "resource_saved"] == pytest.approx(
        4.0
    )
    assert peaks.loc["a", "performance_cost"] == pytest.approx(0.02) and peaks.loc[
        "b", "performance_cost"
    ] == pytest.approx(0.2)


def test_peak_epochs_from_the_fixture_histories(sweep, tables):
    df = raw(sweep)
    run = df.query("status == 'ok' and init == 'imagenet' and fraction == '1.0'")
    histories = []
    for _, row in run.iterrows():
        h = pd.read_csv(
            sweep
            / "runs"
            / row["dataset"]
            / row["init"]
            / row["fraction"]
            / row["model"]
            / f"seed{row['seed']}"
            / "history.csv"
        )
        histories.append(h.assign(model=row["model"], seed=row["seed"]))
    allh = pd.concat(histories)
    low, high = allh["cumulative_energy_kwh"].min(), allh["cumulative_energy_kwh"].max()
    allh["pepr"] = allh["test_accuracy"] / (1 + (allh["cumulative_energy_kwh"] - low) / (high - low))
    peaks = tables["peaks"].query("init == 'imagenet' and fraction == '1.0'")
    for (model, seed), h in allh.groupby(["model", "seed"]):
        h = h.reset_index(drop=True)
        best_epoch = int(h.loc[h["pepr"].to_numpy().argmax(), "epoch"])
        got = peaks[(peaks["model"] == model) & (peaks["seed"] == seed)].iloc[0]
        assert got["peak_epoch"] == best_epoch
        assert got["resource_saved"] == pytest.approx(
            h["cumulative_energy_kwh"].iloc[-1] - h.loc[best_epoch - 1, "cumulative_energy_kwh"]
        )


# ---------------------------------------------------------------- failures, gaps, honesty


def test_failed_runs_and_missing_cells_are_listed(tmp_path):
    make_sweep(tmp_path, seeds=(0, 1))
    df = pd.read_csv(tmp_path / "pepr.csv", dtype={"fraction": str})
    # Drop one run entirely and make a whole cell fail.
    df = df[~((df["model"] == "resnet18") & (df["seed"] == 1) & (df["init"] == "scratch") & (df["fraction"] == "1.0"))]
    dead = (df["init"] == "imagenet") & (df["fraction"] == "0.1")
    df.loc[dead, "status"] = "failed"
    df.loc[dead, "reason"] = "CUDA out of memory"
    df.to_csv(tmp_path / "pepr.csv", index=False)
    data = load_sweep(tmp_path)
    write_tables(data, tmp_path / "tables")
    tables = read_tables(tmp_path / "tables")
    failed = tables["failed"]
    assert len(failed) == int((~(df["status"] == "ok")).sum())
    assert set(failed.loc[failed["init"] == "imagenet", "reason"]) >= {"CUDA out of memory"}
    missing = tables["missing"]
    assert missing.query("kind == 'run not in results'")[["init", "fraction", "model", "detail"]].values.tolist() == [
        ["scratch", "1.0", "resnet18", "seed 1"]
    ]
    assert missing.query("kind == 'group without successful run'")[["init", "fraction"]].values.tolist() == [
        ["imagenet", "0.1"]
    ]
    convnext = missing.query("kind == 'model without successful run in group'")
    assert set(convnext["model"]) == {"convnext_atto"} and len(convnext) == 3
    summary_path = write_summary(data, tmp_path / "tables", tmp_path / "summary.md")
    text = summary_path.read_text()
    assert "CUDA out of memory" in text and "group without successful run" in text and "run not in results" in text


def test_summary_reads_the_written_tables_and_states_tests_and_claims(data, tmp_path, sweep, monkeypatch):
    write_tables(data, tmp_path / "tables")
    # The summary must not recompute the tables (the rank bootstrap above all): forbid it.
    import pepr.report.tables as report_tables

    monkeypatch.setattr(report_tables, "rank_table", lambda *a, **k: pytest.fail("summary recomputed rank_ci"))
    monkeypatch.setattr(report_tables, "paired_table", lambda *a, **k: pytest.fail("summary recomputed a paired table"))
    summary_data = load(sweep / "pepr.csv", None, data.cfg)
    text = write_summary(summary_data, tmp_path / "tables", tmp_path / "summary.md").read_text()
    assert f"Energy method: {METHOD} (84 runs)" in text
    assert text.count("PePR-C ranks exactly as PePR-E") == 1 and "PePR-C:" not in text
    means = model_means(raw(sweep), "test_accuracy")
    wide = means[means["fraction"] == "1.0"].pivot(index="model", columns="init", values="test_accuracy")
    p_other = stats.ttest_rel(
        *[
            means[means["fraction"] == "0.1"].pivot(index="model", columns="init", values="test_accuracy")[c]
            for c in ("imagenet", "scratch")
        ]
    ).pvalue
    p_holm = hand_holm([stats.ttest_rel(wide["imagenet"], wide["scratch"]).pvalue, p_other])[0]
    assert f"paired t Holm {format_p(p_holm)}" in text
    assert (
        "*imagenet improves test_accuracy over scratch* (paired t on model means, Holm over contexts): **holds** in all 2 contexts."
        in text
    )
    # The best PePR-E model of each cell is mobilenetv3_small_050 (cheapest, accurate enough).
    assert text.count("PePR-E: **mobilenetv3_small_050**") == 4
    assert "*The best PePR-E model is a small one*: **holds** in all 4 groups with small and large models." in text
    assert "the best-performance model is **" in text
    svl = read_tables(tmp_path / "tables")["small_vs_large"]
    # Non-inferiority counts only the pretrained groups (the scratch ones are stated apart).
    pre = svl[svl["init"] != "scratch"]
    assert set(pre["family"]) == {"pretrained"} and set(svl.loc[svl["init"] == "scratch", "family"]) == {"scratch"}
    held, worse = int((pre["verdict_not_worse"] == "not worse").sum()), int((pre["verdict_not_worse"] == "worse").sum())
    assert f"not worse in {held}, worse in {worse}, cannot tell in {len(pre) - held - worse} of {len(pre)}" in text
    assert "Not counted toward it (scratch groups)" in text
    # Best small vs best large by accuracy, in one cell, recomputed here.
    ok = raw(sweep).query("status == 'ok'")
    cell = (
        ok.query("init == 'scratch' and fraction == '1.0'")
        .groupby("model")
        .agg(params=("params", "first"), acc=("test_accuracy", "mean"), energy=("energy_kwh", "mean"))
    )
    median = float(np.median([v for m, v in MODELS.items() if m != "convnext_atto"]))
    best_small = cell[cell["params"] <= median]["acc"].idxmax()
    best_large = cell[cell["params"] > median]["acc"].idxmax()
    saving = 1 - cell.loc[best_small, "energy"] / cell.loc[best_large, "energy"]
    assert (
        f"pneumoniamnist / scratch / 100% data (split at {median:,.0f} parameters): the best small model **{best_small}**"
        in text
    )
    assert f"uses {saving:.0%} less energy_kwh than the best large model **{best_large}**" in text


def test_single_model_single_seed_sweep_builds_everything(tmp_path):
    """Like .test/config.yaml: one model succeeds, one fails, one seed: no test has enough n."""
    make_sweep(tmp_path, seeds=(0,))
    df = pd.read_csv(tmp_path / "pepr.csv", dtype={"fraction": str})
    df = df[df["model"].isin(["mobilenetv3_small_050", "convnext_atto"])]
    ok = df["status"] == "ok"
    rescored = score(
        df[ok].drop(columns=[c for c in df.columns if c.startswith("pepr_") or c.endswith("_norm")]),
        performance="test_accuracy",
        resources=["energy_kwh", "co2_kg", "train_time_s", "peak_memory_mb"],
        by=CELL,
    )
    pd.concat([rescored, df[~ok]]).to_csv(tmp_path / "pepr.csv", index=False)
    cfg = ReportConfig(figure_formats=("png",))
    data = load_sweep(tmp_path, cfg)
    write_tables(data, tmp_path / "tables")
    tables = read_tables(tmp_path / "tables")
    assert set(tables["paired_init"]["note"]) == {"n too small for a test (need 3 pairs)"}
    assert tables["paired_init"]["p"].isna().all() and set(tables["paired_init"]["verdict"]) == {"cannot tell"}
    text = write_summary(data, tmp_path / "tables", tmp_path / "summary.md").read_text()
    assert "**cannot tell**" in text and "single seed" in text
    paths = write_figures(data, tmp_path / "figures")
    assert len(paths) == len(FIGURES) and all(p.stat().st_size > 5000 for p in paths)


def test_amortised_variant_shown_beside_plain_one_only_when_it_differs(sweep):
    df = raw(sweep)
    df["pepr_energy_kwh_amortised"] = df["pepr_energy_kwh"]
    assert [v.label for v in variants(df)] == ["PePR-E", "PePR-C", "PePR-T", "PePR-M"]
    df.loc[df["init"] == "imagenet", "pepr_energy_kwh_amortised"] *= 0.9
    assert [v.label for v in variants(df)][-1] == "PePR-E amortised"


# ---------------------------------------------------------------- inputs, settings, metadata


def test_bad_inputs_raise_clear_errors(sweep, tmp_path):
    df = raw(sweep)
    # energy_method is optional (tables from elsewhere lack it): the report says "not recorded".
    df.drop(columns=["energy_method"]).to_csv(tmp_path / "nomethod.csv", index=False)
    assert set(load(tmp_path / "nomethod.csv", None, ReportConfig()).results["energy_method"]) == {""}
    pd.DataFrame(
        {
            "dataset": [],
            "init": [],
            "fraction": [],
            "model": [],
            "seed": [],
            "epoch": [],
            "test_accuracy": [],
            "cumulative_energy_kwh": [],
        }
    ).to_csv(tmp_path / "nohist.csv", index=False)
    with pytest.raises(PeprInputError, match="has no epochs in"):
        load(sweep / "pepr.csv", tmp_path / "nohist.csv", ReportConfig())
    with pytest.raises(PeprInputError, match="equivalence_margin"):
        ReportConfig(equivalence_margin=0)
    with pytest.raises(PeprInputError, match="report_tables"):
        read_tables(tmp_path / "no_tables")
    with pytest.raises(PeprInputError, match="does not exist"):
        load(tmp_path / "absent.csv", sweep / "runs", ReportConfig())
    df.loc[0, "status"] = "crashed"
    df.to_csv(tmp_path / "status.csv", index=False)
    with pytest.raises(PeprInputError, match="status"):
        load(tmp_path / "status.csv", sweep / "runs", ReportConfig())
    with pytest.raises(PeprInputError, match="top_k"):
        ReportConfig(top_k=0)
    with pytest.raises(PeprInputError, match="unknown report setting"):
        ReportConfig.from_mapping({"topk": 3})
    assert ReportConfig.from_mapping({"figure_formats": ["png"], "alpha": 0.01}).figure_formats == ("png",)
    # the report rules call from_mapping directly: a bad type is a clear input error, not a TypeError
    with pytest.raises(PeprInputError, match=r"report.figure_formats = 5; give a list"):
        ReportConfig.from_mapping({"figure_formats": 5})
    assert ReportConfig.from_mapping({"figure_formats": "svg"}).figure_formats == ("svg",)


def test_model_family_from_timm_names():
    assert [
        model_family(m)
        for m in [
            "resnet18",
            "resnet50d",
            "mobilenetv3_small_050",
            "efficientnet_b0",
            "vit_tiny_patch16_224",
            "convnext_atto",
            "regnetx_002",
            "densenet121",
        ]
    ] == ["resnet", "resnet", "mobilenetv3", "efficientnet", "vit", "convnext", "regnetx", "densenet"]


@pytest.mark.skipif(not PAPER_MODELS.is_file(), reason=absent(PAPER_MODELS))
def test_paper_model_table_flags_known_models_and_marks_others(sweep):
    metadata = load_model_metadata(PAPER_MODELS)
    data = load(sweep / "pepr.csv", None, ReportConfig(model_metadata=str(PAPER_MODELS)))
    flags = data.results.drop_duplicates("model").set_index("model")["efficiency"]
    assert flags["efficientnet_b0"] == "efficient (paper)" and flags["densenet121"] == "not efficient (paper)"
    assert flags["toynet_custom7"] == "not in paper table"
    assert set(metadata.columns) == {"model", "type", "efficient"}


def test_figures_and_tables_are_written(data, tmp_path):
    paths = write_tables(data, tmp_path / "tables")
    assert sorted(p.name for p in paths) == sorted(TABLES.values())
    cfg = ReportConfig(figure_formats=("png", "pdf"), bootstrap_resamples=200)
    figure_data = type(data)(data.results, data.histories, data.peaks, cfg)
    written = write_figures(figure_data, tmp_path / "figures")
    assert sorted(p.name for p in written) == sorted(f"{s}.{f}" for s in FIGURES.values() for f in ("png", "pdf"))
    assert all(p.stat().st_size > 5000 for p in written)
    assert all(p.read_bytes()[:4] == b"%PDF" for p in written if p.suffix == ".pdf")


def test_report_never_imports_torch(sweep, tmp_path):
    code = (
        "import sys, os; os.environ['MPLBACKEND'] = 'Agg'\n"
        "import pepr.report.summary\n"
        "assert 'pepr.report.build' not in sys.modules, 'summary imports build: an import cycle'\n"
        "from pepr.report.build import load, compute_tables, draw_figures\n"
        "from pepr.report.config import ReportConfig\n"
        f"d = load({str(sweep / 'pepr.csv')!r}, {str(sweep / 'histories.csv')!r}, ReportConfig(bootstrap_resamples=100))\n"
        "compute_tables(d)\n"
        "assert 'torch' not in sys.modules and 'timm' not in sys.modules and 'snakemake' not in sys.modules, "
        "[m for m in sys.modules if m.split('.')[0] in ('torch', 'timm', 'snakemake')]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_gather_histories_tags_runs_and_skips_header_only_files(tmp_path):
    make_sweep(tmp_path, seeds=(0,), inits=("scratch",), fractions=("1.0",))
    failed_dir = tmp_path / "runs" / "pneumoniamnist" / "scratch" / "1.0" / "convnext_atto" / "seed0"
    failed_dir.mkdir(parents=True, exist_ok=True)
    (failed_dir / "history.csv").write_text("epoch,test_accuracy,cumulative_energy_kwh\n")  # a failed run's file
    table = pd.read_csv(gathered(tmp_path), dtype={"fraction": str})
    assert "convnext_atto" not in set(table["model"]) and len(table) == 7 * 5  # 7 successful models x 5 epochs
    one = table.query("model == 'resnet18'").sort_values("epoch")
    direct = pd.read_csv(
        tmp_path / "runs" / "pneumoniamnist" / "scratch" / "1.0" / "resnet18" / "seed0" / "history.csv"
    )
    np.testing.assert_allclose(one["test_accuracy"], direct["test_accuracy"], rtol=1e-15)
    assert set(one["fraction"]) == {"1.0"} and set(one["seed"]) == {0}
    with pytest.raises(PeprInputError, match="not laid out"):
        write_histories([str(tmp_path / "elsewhere" / "history.csv")], tmp_path / "runs", tmp_path / "h.csv")


def test_figures_readable_at_12_cells_integer_epochs_and_distinct_family_members(tmp_path):
    import shutil

    from pepr.report import figures

    make_sweep(tmp_path, seeds=(0,), fractions=("1.0", "0.5", "0.1"))
    df = raw(tmp_path)
    long = "synthetic-classes3-n_test300-n_train1000-n_val250-seed7"  # long names once overlapped
    shutil.copytree(tmp_path / "runs" / "pneumoniamnist", tmp_path / "runs" / long)
    pd.concat([df, df.assign(dataset=long)]).to_csv(tmp_path / "pepr.csv", index=False)
    data = load_sweep(tmp_path, ReportConfig(figure_formats=("png",)))
    assert data.results[CELL].drop_duplicates().shape[0] == 12
    # A handful of colour classes, never one per model or family (issue 15): the legend stays short.
    assert len(set(figures.model_classes(data.results, data.cfg).values())) <= figures.MAX_LEGEND
    for fig in [
        figures.epoch_pepr(data.histories, data.peaks, data.results, data.cfg),
        figures.pepr_profile(data.results, data.cfg),
    ]:
        fig.canvas.draw()
        axes = [ax for ax in fig.axes if ax.get_visible() and ax.get_title()]
        assert len(axes) == 12
        boxes = [ax.title.get_window_extent() for ax in axes]
        for i, box in enumerate(boxes):  # no two panel titles overlap (3 columns)
            assert not any(box.overlaps(other) for other in boxes[i + 1 :])
        if fig.axes[0].get_xlabel() == "epoch":
            ticks = [t for t in axes[0].get_xticks() if axes[0].get_xlim()[0] <= t <= axes[0].get_xlim()[1]]
            assert ticks and all(float(t).is_integer() for t in ticks)
