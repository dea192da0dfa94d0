"""Verdicts that say which way: small vs large as a non-inferiority claim per pretrained group,
PePR of small vs large with its Holm p, and the diminishing-returns test (performance levelling
off with log parameters, Holm).

Constructed tables with a known answer (small better / equal / worse; mixed inits); every
p-value recomputed here with scipy, never read back from the code under test.
"""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pepr.report.build import compute_tables, prepare
from pepr.report.config import ReportConfig
from pepr.report.data import TableSpec, prepare_table
from pepr.report.stats import holm, noninferiority_verdict, welch_noninferiority
from pepr.report.summary import summary_markdown

#: 10 models: the 5 smallest are "small" (at or below the median of 10 counts).
PARAMS = [1e5, 2e5, 3e5, 4e5, 5e5, 6e6, 7e6, 8e6, 9e6, 1e7]
NOISE = np.array([0.004, -0.003, 0.001, -0.002, 0.0])


def group_table(init: str, shift: float, dataset: str = "ds") -> pd.DataFrame:
    """One group: large models at ~0.80 accuracy, small ones at 0.80 + ``shift`` (same noise),
    energy growing with size."""
    rows = []
    for i, params in enumerate(PARAMS):
        small = i < 5
        acc = 0.80 + NOISE[i % 5] * (1 if small else -1) + (shift if small else 0.0)
        rows.append(
            {
                "dataset": dataset,
                "init": init,
                "fraction": "1.0",
                "model": f"m{i}",
                "seed": 0,
                "params": params,
                "test_accuracy": acc,
                "energy_kwh": 0.001 * (1 + i) ** 2,
            }
        )
    return pd.DataFrame(rows)


def report(table: pd.DataFrame, cfg: ReportConfig | None = None):
    prepared = prepare_table(table, TableSpec(), cfg or ReportConfig())
    data = prepare(prepared, None)
    return data, compute_tables(data)


def svl_row(svl: pd.DataFrame, init: str, dataset: str = "ds") -> pd.Series:
    return svl[(svl["init"] == init) & (svl["dataset"] == dataset)].iloc[0]


def test_noninferiority_is_the_one_sided_welch_test_with_the_margin():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.80, 0.01, 6), rng.normal(0.81, 0.01, 7)
    result = welch_noninferiority(a, b, 0.02, 2)
    assert result.p_not_worse == pytest.approx(
        stats.ttest_ind(a + 0.02, b, equal_var=False, alternative="greater").pvalue, rel=1e-12
    )
    assert result.p_worse == pytest.approx(
        stats.ttest_ind(a + 0.02, b, equal_var=False, alternative="less").pvalue, rel=1e-12
    )
    assert noninferiority_verdict(0.01, 0.99, 0.05) == "not worse"
    assert noninferiority_verdict(0.99, 0.01, 0.05) == "worse"
    assert noninferiority_verdict(0.3, 0.7, 0.05) == "cannot tell"
    assert np.isnan(welch_noninferiority(a[:1], b, 0.02, 2).p_not_worse)


@pytest.mark.parametrize(
    "shift, not_worse, direction",
    [
        (+0.06, "not worse", "small better"),
        (0.0, "not worse", "no significant difference"),
        (-0.10, "worse", "small worse"),
    ],
)
def test_small_better_equal_worse_each_get_their_direction(shift, not_worse, direction):
    _, tables = report(group_table("imagenet", shift))
    row = svl_row(tables["small_vs_large"], "imagenet")
    assert row["family"] == "pretrained"
    assert row["verdict_not_worse"] == not_worse
    assert row["direction_performance"] == direction
    assert row["diff_performance"] == pytest.approx(shift, abs=0.01)
    small = group_table("imagenet", shift)["test_accuracy"].to_numpy()
    expected = stats.ttest_ind(small[:5] + 0.02, small[5:], equal_var=False, alternative="greater").pvalue
    assert row["p_not_worse_holm"] == pytest.approx(expected, rel=1e-9)  # one pretrained group: Holm = raw


def test_mixed_inits_a_scratch_group_never_counts_toward_the_pretrained_claim():
    # Pretrained: small worse by far more than the margin; scratch: small clearly better.
    table = pd.concat(
        [
            group_table("imagenet", -0.10),
            group_table("scratch", +0.06),
            group_table("imagenet", -0.10, dataset="other"),
        ],
        ignore_index=True,
    )
    data, tables = report(table)
    svl = tables["small_vs_large"]
    assert dict(zip(svl["init"] + "/" + svl["dataset"], svl["family"])) == {
        "imagenet/ds": "pretrained",
        "imagenet/other": "pretrained",
        "scratch/ds": "scratch",
    }
    # Holm runs within each family: the two pretrained groups form one family of 2 tests.
    pre = svl[svl["family"] == "pretrained"]
    raw = []
    for dataset in ("ds", "other"):
        acc = group_table("imagenet", -0.10, dataset)["test_accuracy"].to_numpy()
        raw.append(stats.ttest_ind(acc[:5] + 0.02, acc[5:], equal_var=False, alternative="less").pvalue)
    assert pre.sort_values("dataset")["p_worse_holm"].to_numpy() == pytest.approx(holm(np.array(raw)), rel=1e-9)
    assert svl_row(svl, "scratch")["p_worse_holm"] == pytest.approx(
        stats.ttest_ind(
            group_table("scratch", 0.06)["test_accuracy"].to_numpy()[:5] + 0.02,
            group_table("scratch", 0.06)["test_accuracy"].to_numpy()[5:],
            equal_var=False,
            alternative="less",
        ).pvalue
    )
    text = summary_markdown(data, tables)
    claim = next(
        line for line in text.splitlines() if line.startswith("- *Small models are not worse than large ones*")
    )
    assert "pretrained groups" in claim and "**does not hold**" in claim
    assert "not worse in 0, worse in 2, cannot tell in 0 of 2" in claim  # the scratch group is not among them
    assert "small worse" in claim and "-0.1" in claim  # sign and size stated
    assert "Not counted toward it (scratch groups)" in text and "ds / scratch / 100% data: not worse, +0.06" in text


def test_without_an_init_column_the_claim_covers_all_groups_and_says_so():
    table = group_table("imagenet", 0.0).drop(columns=["init"])
    data, tables = report(table)
    assert set(tables["small_vs_large"]["family"]) == {"all"}
    text = summary_markdown(data, tables)
    assert "the table does not say which init each used" in text
    assert "no `init` group column" in text


def test_pepr_small_vs_large_is_stated_per_group_with_its_holm_p():
    table = pd.concat([group_table("imagenet", 0.0), group_table("imagenet", 0.0, dataset="other")], ignore_index=True)
    data, tables = report(table)
    svl = tables["small_vs_large"].sort_values("dataset")
    peprs, raw = [], []
    for dataset in ("ds", "other"):
        scored = data.results[(data.results["dataset"] == dataset)].sort_values("params")["pepr_energy_kwh"].to_numpy()
        raw.append(stats.ttest_ind(scored[:5], scored[5:], equal_var=False).pvalue)
        peprs.append(scored[:5].mean() - scored[5:].mean())
    assert svl["p_holm_pepr_energy_kwh"].to_numpy() == pytest.approx(holm(np.array(raw)), rel=1e-9)
    assert svl["diff_pepr_energy_kwh"].to_numpy() == pytest.approx(peprs)
    assert set(svl["direction_pepr_energy_kwh"]) == {"higher for small"}
    text = summary_markdown(data, tables)
    assert text.count("PePR-E small - large +") == 2
    assert "*PePR-E is higher for small models* (Welch t on model means, Holm over groups): **holds**" in text


def _sized(accuracy_of_log10_params, init: str = "imagenet") -> pd.DataFrame:
    """One group of 10 models whose accuracy is a function of log10(params) plus small noise."""
    table = group_table(init, 0.0)
    logs = np.log10(table["params"].to_numpy())
    table["test_accuracy"] = accuracy_of_log10_params(logs) + np.tile(NOISE, 2) * 0.2
    return table


def test_diminishing_returns_is_performance_levelling_off_with_log_parameters():
    """Accuracy rises with size and flattens (concave in log params): the claim holds, tested on
    the quadratic term of an OLS fit against the line, Holm over the groups; PePR vs size is
    stated beside it, not as it."""
    rises_and_levels = lambda t: 0.95 - 0.4 * np.exp(-1.5 * (t - 5))  # noqa: E731
    table = pd.concat([_sized(rises_and_levels, "imagenet"), _sized(rises_and_levels, "scratch")], ignore_index=True)
    data, tables = report(table)
    trend = tables["size_trend"].sort_values("init")
    raw = []
    for init in ("imagenet", "scratch"):
        runs = data.results[data.results["init"] == init]
        t = np.log10(runs["params"].to_numpy())
        t = t - t.mean()
        x = np.column_stack([np.ones(len(t)), t, t**2])
        coef, res, _, _ = np.linalg.lstsq(x, runs["test_accuracy"].to_numpy(), rcond=None)
        sigma2 = float(res[0]) / (len(t) - 3)
        se = np.sqrt(sigma2 * np.linalg.inv(x.T @ x)[2, 2])
        raw.append(stats.t.cdf(coef[2] / se, len(t) - 3))
    assert trend["p_holm_levels_off"].to_numpy() == pytest.approx(holm(np.array(raw)), rel=1e-9)
    assert set(trend["diminishing_returns"]) == {"yes"} and set(trend["trend_performance"]) == {"rises with size"}
    text = summary_markdown(data, tables)
    line = text.split("*Diminishing returns with scale*")[1].split("\n")[0]
    assert "**holds**" in line and "levels off" in line
    assert "Separately, PePR-E vs parameters" in text


def test_a_straight_rise_in_log_parameters_is_no_levelling_off():
    table = _sized(lambda t: 0.55 + 0.08 * (t - 5) + 0.03 * (t - 5) ** 2)  # accelerating: convex
    _, tables = report(table)
    row = tables["size_trend"].iloc[0]
    assert row["curvature_performance"] > 0 and row["diminishing_returns"] == "no"
    flat = _sized(lambda t: 0.6 + 0.05 * (t - 5))  # a line: neither levels off nor accelerates
    _, tables = report(flat)
    assert tables["size_trend"]["diminishing_returns"].iloc[0] == "cannot tell"


def test_spearman_p_is_exact_for_few_models():
    from itertools import permutations

    from pepr.report.stats import spearman_trend

    # Three models in perfect order: 2 of the 3! pairings are as extreme, p = 1/3 (the t
    # approximation would say 0 and call a 3-model trend significant).
    assert spearman_trend(np.array([1.0, 2, 3]), np.array([0.5, 0.6, 0.7]), 3).p == pytest.approx(1 / 3)
    x, y = np.array([1.0, 2, 3, 4, 5, 6]), np.array([2.0, 1, 4, 3, 6, 5])
    rho = stats.spearmanr(x, y).statistic
    extreme = [abs(stats.spearmanr(x, y[list(p)]).statistic) >= abs(rho) - 1e-12 for p in permutations(range(6))]
    assert spearman_trend(x, y, 3).p == pytest.approx(np.mean(extreme))
    many = np.arange(20.0)
    assert spearman_trend(many, many**2, 3).p > 0  # rho = 1: never an invented p = 0


def test_data_need_pairs_pretrained_on_the_least_data_with_scratch_on_the_most():
    few = group_table("imagenet", 0.0).assign(fraction="0.1")
    full = group_table("scratch", 0.0)
    full["test_accuracy"] = few["test_accuracy"].to_numpy() + np.array([0.002, -0.001, 0.0, 0.001, -0.002] * 2)
    data, tables = report(pd.concat([few, full, group_table("scratch", 0.0).assign(fraction="0.1")], ignore_index=True))
    row = tables["data_need"].iloc[0]
    assert (row["pretrained"], row["pretrained_fraction"], row["scratch_fraction"], row["n_models"]) == (
        "imagenet",
        "0.1",
        "1.0",
        10,
    )
    diff = few["test_accuracy"].to_numpy() - full["test_accuracy"].to_numpy()
    assert row["mean_diff"] == pytest.approx(diff.mean())
    assert row["p"] == pytest.approx(stats.ttest_rel(few["test_accuracy"], full["test_accuracy"]).pvalue, rel=1e-9)
    assert row["verdict"] == "equivalent"
    assert "*Pretrained on the least data is on par with scratch on the most*" in summary_markdown(data, tables)
    worse = few.assign(test_accuracy=few["test_accuracy"] - 0.1 + np.tile(NOISE, 2))
    _, tables = report(pd.concat([worse, full], ignore_index=True))
    assert tables["data_need"]["verdict"].iloc[0] == "different" and tables["data_need"]["mean_diff"].iloc[0] < -0.05
