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
from pepr.report.build import compute_tables, load, write_figures, write_summary, write_tables
from pepr.report.config import FIGURES, TABLES, ReportConfig
from pepr.report.data import load_model_metadata, model_family, variants
from pepr.report.stats import format_p, paired_test, peak_epochs, epoch_curves, top_k_separable, bootstrap_rank_ci
from pepr.scoring import score
from report_sweep import METHOD, MODELS, make_sweep

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
PAPER_MODELS = SHARED / "data" / "paper" / "model_names.csv"
CELL = ["dataset", "init", "fraction"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    make_sweep(root)
    return root


@pytest.fixture(scope="module")
def data(sweep):
    return load(sweep / "pepr.csv", sweep / "runs", ReportConfig(bootstrap_resamples=500))


@pytest.fixture(scope="module")
def tables(data):
    return compute_tables(data)


def raw(sweep: Path) -> pd.DataFrame:
    """The fixture table as plain pandas reads it (independent of the report's loader)."""
    return pd.read_csv(sweep / "pepr.csv", dtype={"fraction": str})


# ---------------------------------------------------------------- paired and unpaired tests


def test_pretrained_vs_scratch_p_value_is_scipy_on_the_pairs(sweep, tables):
    df = raw(sweep)
    ok = df[df["status"] == "ok"]
    wide = ok.pivot_table(index=["dataset", "fraction", "model", "seed"], columns="init", values="test_accuracy").dropna()
    expected = stats.wilcoxon(wide["imagenet"], wide["scratch"])
    row = tables["paired_init"].query("context == 'all' and metric == 'test_accuracy'").iloc[0]
    assert (row["treatment"], row["baseline"]) == ("imagenet", "scratch")
    assert row["n_pairs"] == len(wide) == 2 * 7 * 3  # 2 fractions x 7 successful models x 3 seeds
    assert row["p"] == pytest.approx(expected.pvalue, rel=1e-12)
    assert row["mean_diff"] == pytest.approx((wide["imagenet"] - wide["scratch"]).mean(), rel=1e-12)
    # The per-context rows use only that context's pairs.
    one = wide.xs("0.1", level="fraction")
    row = tables["paired_init"].query("context == 'pneumoniamnist / 0.1' and metric == 'energy_kwh'").iloc[0]
    energy = ok.pivot_table(index=["dataset", "fraction", "model", "seed"], columns="init", values="energy_kwh").xs("0.1", level="fraction")
    assert row["p"] == pytest.approx(stats.wilcoxon(energy["imagenet"], energy["scratch"]).pvalue, rel=1e-12)
    assert row["n_pairs"] == len(one)
    assert set(tables["paired_init"]["energy_method"]) == {METHOD}  # energy numbers carry their method


def test_fraction_comparison_pairs_smaller_fraction_with_the_full_one(sweep, tables):
    df = raw(sweep)
    ok = df[df["status"] == "ok"]
    wide = ok.pivot_table(index=["dataset", "init", "model", "seed"], columns="fraction", values="pepr_energy_kwh")
    row = tables["paired_fraction"].query("context == 'all' and metric == 'pepr_energy_kwh'").iloc[0]
    assert (row["treatment"], row["baseline"]) == ("0.1", "1.0")
    assert row["p"] == pytest.approx(stats.wilcoxon(wide["0.1"], wide["1.0"]).pvalue, rel=1e-12)


def test_small_vs_large_uses_model_means_and_mann_whitney(sweep, tables, data):
    df = raw(sweep)
    ok = df[(df["status"] == "ok") & (df["init"] == "scratch") & (df["fraction"] == "1.0")]
    per_model = ok.groupby("model").agg(params=("params", "first"), acc=("test_accuracy", "mean"))
    median = float(np.median(sorted(MODELS.values())))  # all 8 models, failed convnext_atto included
    assert data.median_params == median
    small, large = per_model[per_model["params"] <= median], per_model[per_model["params"] > median]
    row = tables["small_vs_large"].query("init == 'scratch' and fraction == '1.0'").iloc[0]
    assert (row["n_small"], row["n_large"]) == (len(small), len(large)) == (3, 4)
    assert row["p_performance"] == pytest.approx(stats.mannwhitneyu(small["acc"], large["acc"]).pvalue, rel=1e-12)
    assert row["small_mean_performance"] == pytest.approx(small["acc"].mean())


def test_too_few_pairs_gives_no_p_value():
    result = paired_test(np.array([0.8, 0.9, 0.7]), np.array([0.7, 0.8, 0.75]), min_pairs=6)
    assert np.isnan(result.p) and "n too small for a test" in result.note and result.n == 3
    equal = paired_test(np.ones(8), np.ones(8), min_pairs=6)
    assert np.isnan(equal.p) and "all pairs equal" in equal.note
    # NaN pairs are dropped before counting.
    a, b = np.r_[np.linspace(0.5, 0.9, 7), np.nan], np.r_[np.linspace(0.4, 0.85, 7), 0.3]
    assert paired_test(a, b, min_pairs=6).p == pytest.approx(stats.wilcoxon(a[:7], b[:7]).pvalue)
    assert format_p(np.nan) == "no test" and format_p(0.0123) == "p = 0.012" and format_p(2e-5) == "p = 2.0e-05"


# ---------------------------------------------------------------- top-k, seeds, ranks


def test_top_k_order_is_the_seed_mean_order(sweep, tables):
    df = raw(sweep)
    for variant, column in [("PePR-E", "pepr_energy_kwh"), ("PePR-M", "pepr_peak_memory_mb")]:
        ok = df[(df["status"] == "ok") & (df["init"] == "imagenet") & (df["fraction"] == "0.1")]
        expected = ok.groupby("model")[column].mean().sort_values(ascending=False).head(5)
        got = tables["top_k"].query("init == 'imagenet' and fraction == '0.1' and variant == @variant")
        assert list(got["model"]) == list(expected.index)
        assert list(got["rank"]) == [1, 2, 3, 4, 5]
        np.testing.assert_allclose(got["score"], expected.to_numpy(), rtol=1e-12)
    assert set(tables["top_k"]["energy_method"]) == {METHOD}


def test_seed_confidence_interval_is_student_t(sweep, tables):
    df = raw(sweep)
    values = df.query("status == 'ok' and init == 'scratch' and fraction == '1.0' and model == 'resnet18'")["test_accuracy"]
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
    single = compute_tables(load(tmp_path / "pepr.csv", tmp_path / "runs", ReportConfig()))
    assert single["rank_ci"].empty
    assert single["seeds"]["performance_ci_low"].isna().all()


# ---------------------------------------------------------------- epoch curves


def test_peak_epoch_and_savings_by_hand():
    # One cell, two runs, three epochs. Cumulative energy over the cell: min 1, max 6.
    history = pd.DataFrame({
        "dataset": "d", "init": "scratch", "fraction": "1.0", "seed": 0,
        "model": ["a", "a", "a", "b", "b", "b"],
        "epoch": [1, 2, 3, 1, 2, 3],
        "test_accuracy": [0.60, 0.80, 0.82, 0.70, 0.72, 0.90],
        "cumulative_energy_kwh": [1.0, 2.0, 3.0, 2.0, 4.0, 6.0],
    })
    curves = epoch_curves(history, "test_accuracy", "cumulative_energy_kwh", CELL)
    # a: 0.6/1, 0.8/1.2 = 0.6667, 0.82/1.4 = 0.5857 -> peak epoch 2
    # b: 0.7/1.2 = 0.5833, 0.72/1.6 = 0.45, 0.9/2 = 0.45 -> peak epoch 1
    np.testing.assert_allclose(curves["epoch_pepr"], [0.6, 0.8 / 1.2, 0.82 / 1.4, 0.7 / 1.2, 0.72 / 1.6, 0.9 / 2], rtol=1e-12)
    peaks = peak_epochs(curves, [*CELL, "model", "seed"], "test_accuracy", "cumulative_energy_kwh").set_index("model")
    assert peaks.loc["a", "peak_epoch"] == 2 and peaks.loc["b", "peak_epoch"] == 1
    assert peaks.loc["a", "resource_saved"] == pytest.approx(1.0) and peaks.loc["b", "resource_saved"] == pytest.approx(4.0)
    assert peaks.loc["a", "performance_cost"] == pytest.approx(0.02) and peaks.loc["b", "performance_cost"] == pytest.approx(0.2)


def test_peak_epochs_from_the_fixture_histories(sweep, tables):
    df = raw(sweep)
    run = df.query("status == 'ok' and init == 'imagenet' and fraction == '1.0'")
    histories = []
    for _, row in run.iterrows():
        h = pd.read_csv(sweep / "runs" / row["dataset"] / row["init"] / row["fraction"] / row["model"] / f"seed{row['seed']}" / "history.csv")
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
        assert got["resource_saved"] == pytest.approx(h["cumulative_energy_kwh"].iloc[-1] - h.loc[best_epoch - 1, "cumulative_energy_kwh"])


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
    data = load(tmp_path / "pepr.csv", tmp_path / "runs", ReportConfig())
    tables = compute_tables(data)
    failed = tables["failed"]
    assert len(failed) == int((~(df["status"] == "ok")).sum())
    assert set(failed.loc[failed["init"] == "imagenet", "reason"]) >= {"CUDA out of memory"}
    missing = tables["missing"]
    assert missing.query("kind == 'run not in results'")[["init", "fraction", "model", "detail"]].values.tolist() == [
        ["scratch", "1.0", "resnet18", "seed 1"]
    ]
    assert missing.query("kind == 'cell without successful run'")[["init", "fraction"]].values.tolist() == [["imagenet", "0.1"]]
    convnext = missing.query("kind == 'model without successful run in cell'")
    assert set(convnext["model"]) == {"convnext_atto"} and len(convnext) == 3
    summary_path = write_summary(data, tmp_path / "summary.md")
    text = summary_path.read_text()
    assert "CUDA out of memory" in text and "cell without successful run" in text and "run not in results" in text


def test_summary_states_energy_method_tests_and_claims(data, tables, tmp_path, sweep):
    text = write_summary(data, tmp_path / "summary.md").read_text()
    assert f"Energy method: {METHOD} (84 runs)" in text
    df = raw(sweep)
    ok = df[df["status"] == "ok"]
    wide = ok.pivot_table(index=["dataset", "fraction", "model", "seed"], columns="init", values="test_accuracy")
    expected_p = stats.wilcoxon(wide["imagenet"], wide["scratch"]).pvalue
    assert f"*imagenet improves test_accuracy over scratch*: **holds**" in text
    assert format_p(expected_p) in text
    # The best PePR-E model of each cell is mobilenetv3_small_050 (cheapest, accurate enough).
    assert text.count("PePR-E: **mobilenetv3_small_050**") == 4
    assert "*The best PePR-E model is a small one*: **holds** in all 4 cells with small and large models." in text
    # Best small vs best large by accuracy, in one cell, recomputed here.
    cell = ok.query("init == 'scratch' and fraction == '1.0'").groupby("model").agg(
        params=("params", "first"), acc=("test_accuracy", "mean"), energy=("energy_kwh", "mean"))
    median = data.median_params
    best_small = cell[cell["params"] <= median]["acc"].idxmax()
    best_large = cell[cell["params"] > median]["acc"].idxmax()
    saving = 1 - cell.loc[best_small, "energy"] / cell.loc[best_large, "energy"]
    assert (f"pneumoniamnist / scratch / 100% data: the best small model **{best_small}**" in text)
    assert f"uses {saving:.0%} less energy_kwh than the best large model **{best_large}**" in text


def test_single_model_single_seed_sweep_builds_everything(tmp_path):
    """Like .test/config.yaml: one model succeeds, one fails, one seed: no test has enough n."""
    make_sweep(tmp_path, seeds=(0,))
    df = pd.read_csv(tmp_path / "pepr.csv", dtype={"fraction": str})
    df = df[df["model"].isin(["mobilenetv3_small_050", "convnext_atto"])]
    ok = df["status"] == "ok"
    rescored = score(df[ok].drop(columns=[c for c in df.columns if c.startswith("pepr_") or c.endswith("_norm")]),
                     performance="test_accuracy", resources=["energy_kwh", "co2_kg", "train_time_s", "peak_memory_mb"], by=CELL)
    pd.concat([rescored, df[~ok]]).to_csv(tmp_path / "pepr.csv", index=False)
    cfg = ReportConfig(figure_formats=("png",))
    data = load(tmp_path / "pepr.csv", tmp_path / "runs", cfg)
    tables = compute_tables(data)
    assert set(tables["paired_init"]["note"]) == {"n too small for a test (need 6 pairs)"}
    assert tables["paired_init"]["p"].isna().all()
    text = write_summary(data, tmp_path / "summary.md").read_text()
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
    df.drop(columns=["energy_method"]).to_csv(tmp_path / "nomethod.csv", index=False)
    with pytest.raises(PeprInputError, match="energy_method"):
        load(tmp_path / "nomethod.csv", sweep / "runs", ReportConfig())
    with pytest.raises(PeprInputError, match="no history file"):
        load(sweep / "pepr.csv", tmp_path / "nowhere", ReportConfig())
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


def test_model_family_from_timm_names():
    assert [model_family(m) for m in ["resnet18", "resnet50d", "mobilenetv3_small_050", "efficientnet_b0",
                                      "vit_tiny_patch16_224", "convnext_atto", "regnetx_002", "densenet121"]] == [
        "resnet", "resnet", "mobilenetv3", "efficientnet", "vit", "convnext", "regnetx", "densenet"]


@pytest.mark.skipif(not PAPER_MODELS.is_file(), reason=f"the paper's model table is not at {PAPER_MODELS} (../shared absent)")
def test_paper_model_table_flags_known_models_and_marks_others(sweep):
    metadata = load_model_metadata(PAPER_MODELS)
    data = load(sweep / "pepr.csv", sweep / "runs", ReportConfig(model_metadata=str(PAPER_MODELS)))
    flags = data.results.drop_duplicates("model").set_index("model")["efficiency"]
    assert flags["efficientnet_b0"] == "efficient (paper)" and flags["densenet121"] == "not efficient (paper)"
    assert flags["toynet_custom7"] == "not in paper table"
    assert set(metadata.columns) == {"model", "type", "efficient"}


def test_figures_and_tables_are_written(data, tmp_path):
    paths = write_tables(data, tmp_path / "tables")
    assert sorted(p.name for p in paths) == sorted(TABLES.values())
    cfg = ReportConfig(figure_formats=("png", "pdf"), bootstrap_resamples=200)
    figure_data = type(data)(data.results, data.histories, data.peaks, data.median_params, cfg)
    written = write_figures(figure_data, tmp_path / "figures")
    assert sorted(p.name for p in written) == sorted(f"{s}.{f}" for s in FIGURES.values() for f in ("png", "pdf"))
    assert all(p.stat().st_size > 5000 for p in written)
    assert all(p.read_bytes()[:4] == b"%PDF" for p in written if p.suffix == ".pdf")


def test_report_never_imports_torch(sweep, tmp_path):
    code = (
        "import sys, os; os.environ['MPLBACKEND'] = 'Agg'\n"
        "from pepr.report.build import load, compute_tables, draw_figures\n"
        "from pepr.report.config import ReportConfig\n"
        f"d = load({str(sweep / 'pepr.csv')!r}, {str(sweep / 'runs')!r}, ReportConfig(bootstrap_resamples=100))\n"
        "compute_tables(d)\n"
        "assert 'torch' not in sys.modules and 'timm' not in sys.modules and 'snakemake' not in sys.modules, "
        "[m for m in sys.modules if m.split('.')[0] in ('torch', 'timm', 'snakemake')]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
