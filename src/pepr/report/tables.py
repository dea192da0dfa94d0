"""The report's tables, computed from ``pepr.csv`` (and the histories): each function returns
a DataFrame, so tests can check every number and the summary can quote them.

Comparisons follow three rules. The unit is one value per model (its seed mean) within one
context, never each seed as an independent pair. PePR is compared only within a cell (it is
normalised there); across init strategies or data fractions the tables compare raw performance
and raw resources. Tests over several cells are Holm-corrected, and "on par" needs the TOST
equivalence test with ``report.equivalence_margin``.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from pepr.report.config import STANDARD_RESOURCES, ReportConfig
from pepr.report.data import CELL, RUN, Variant, cells, co2_is_scaled_energy, energy_methods, report_variants
from pepr.report.stats import (
    bootstrap_rank_ci,
    holm,
    mean_ci,
    paired_effect,
    top_k_separable,
    verdict,
    welch_effect,
)

#: Preferred order of init strategies: earlier ones are the baseline of later ones.
INIT_ORDER = ["scratch", "imagenet", "transfer"]
#: The top-k table's label for the paper's extra row: the model of best performance P.
BEST_PERFORMANCE = "best performance"
#: Columns of the peak-epoch table (also when no history exists).
PEAK_COLUMNS = [*RUN, "peak_epoch", "last_epoch", "peak_pepr", "last_pepr", "performance_at_peak",
                "performance_at_last", "resource_at_peak", "resource_at_last", "resource_saved", "performance_cost"]


def _resources(df: pd.DataFrame) -> list[str]:
    """Raw resource columns the comparisons use; CO2 only when it is not energy x a constant."""
    found = [r for r in STANDARD_RESOURCES if r in df.columns]
    if co2_is_scaled_energy(df):
        found = [r for r in found if r != "co2_kg"]
    return found


def model_means(df: pd.DataFrame, cfg: ReportConfig) -> pd.DataFrame:
    """Successful runs averaged over seeds: one row per (cell, model) with n_seeds, params,
    small (per cell), the performance, the raw resources and every PePR variant."""
    ok = df[df["ok"]]
    value_columns = [cfg.performance, *[r for r in STANDARD_RESOURCES if r in df.columns], f"pepr_{cfg.resource}",
                     *[v.column for v in report_variants(df)]]
    value_columns = list(dict.fromkeys(value_columns))
    grouped = ok.groupby([*CELL, "model"], sort=False)
    means = grouped[value_columns].mean()
    means.insert(0, "n_seeds", grouped.size())
    means.insert(1, "params", grouped["params"].first())
    means.insert(2, "small", grouped["small"].first())
    means.insert(3, "energy_method", grouped["energy_method"].agg(lambda s: "; ".join(sorted(set(s)))))
    return means.reset_index()


def top_k_table(df: pd.DataFrame, cfg: ReportConfig) -> pd.DataFrame:
    """The ``cfg.top_k`` best models per cell and PePR variant, by seed-mean score, and (as the
    paper's table does) the model of best performance P, variant "best performance", with its
    rank by the headline PePR in column ``headline_rank``.

    Ties are broken by model name so the order is deterministic.
    """
    means = model_means(df, cfg)
    headline = f"pepr_{cfg.resource}"
    rows = []

    def row_of(key, label, rank, row, score, headline_rank):
        return {
            **dict(zip(CELL, key)), "variant": label, "rank": rank, "model": row["model"], "score": score,
            "headline_rank": headline_rank, "n_seeds": int(row["n_seeds"]), "params": int(row["params"]),
            "small": bool(row["small"]), cfg.performance: row[cfg.performance],
            **{r: row[r] for r in _resources(df)}, "energy_method": row["energy_method"],
        }

    for key, group in means.groupby(CELL, sort=False):
        by_headline = group.sort_values([headline, "model"], ascending=[False, True])
        headline_rank = {m: i for i, m in enumerate(by_headline["model"], start=1)}
        for variant in report_variants(df):
            scored = group.dropna(subset=[variant.column])
            ordered = scored.sort_values([variant.column, "model"], ascending=[False, True]).head(cfg.top_k)
            for rank, (_, row) in enumerate(ordered.iterrows(), start=1):
                rows.append(row_of(key, variant.label, rank, row, row[variant.column], headline_rank[row["model"]]))
        best = group.sort_values([cfg.performance, "model"], ascending=[False, True]).iloc[0]
        rows.append(row_of(key, BEST_PERFORMANCE, 1, best, best[cfg.performance], headline_rank[best["model"]]))
    columns = [*CELL, "variant", "rank", "model", "score", "headline_rank", "n_seeds", "params", "small",
               cfg.performance, *_resources(df), "energy_method"]
    return pd.DataFrame(rows, columns=columns)


def small_vs_large_table(df: pd.DataFrame, cfg: ReportConfig) -> pd.DataFrame:
    """Per cell: small vs large models (split at that cell's median parameter count), one
    seed-mean per model. Performance: Welch t test of small - large with its CI, TOST with
    ``report.equivalence_margin`` and the verdict (equivalent / different / cannot tell); the
    headline PePR (within the cell): Welch t test. p-values are Holm-adjusted over the cells.
    """
    means = model_means(df, cfg)
    headline = f"pepr_{cfg.resource}"
    rows = []
    for key in cells(df):
        group = _cell_rows(means, key)
        small, large = group[group["small"]], group[~group["small"]]
        median = _cell_rows(df, key)["median_params"].iloc[0]
        row = {**dict(zip(CELL, key)), "median_params": median, "n_small": len(small), "n_large": len(large)}
        for column, name in [(cfg.performance, "performance"), (cfg.resource, cfg.resource), (headline, headline)]:
            row[f"small_mean_{name}"] = small[column].mean() if len(small) else np.nan
            row[f"large_mean_{name}"] = large[column].mean() if len(large) else np.nan
        for column, name, margin in [(cfg.performance, "performance", cfg.equivalence_margin), (headline, headline, None)]:
            effect = welch_effect(small[column].to_numpy(), large[column].to_numpy(), cfg.alpha, cfg.min_group, margin)
            row.update({f"diff_{name}": effect.estimate, f"ci_low_{name}": effect.ci_low, f"ci_high_{name}": effect.ci_high,
                        f"p_{name}": effect.p, f"note_{name}": effect.note})
            if margin is not None:
                row["p_tost_performance"] = effect.p_tost
        row["energy_method"] = _methods(_cell_rows(df, key).loc[lambda d: d["ok"], "energy_method"])
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    table["test"] = "Welch t on model means"
    table["margin"] = cfg.equivalence_margin
    table["p_holm_performance"] = holm(table["p_performance"])
    table["p_tost_holm_performance"] = holm(table["p_tost_performance"])
    table[f"p_holm_{headline}"] = holm(table[f"p_{headline}"])
    table["verdict_performance"] = [
        verdict(p, q, cfg.alpha) for p, q in zip(table["p_holm_performance"], table["p_tost_holm_performance"])
    ]
    return table


def _cell_rows(df: pd.DataFrame, key: tuple) -> pd.DataFrame:
    return df[(df[CELL] == pd.Series(key, index=CELL)).all(axis=1)]


def _methods(*columns: pd.Series) -> str:
    """The distinct energy methods behind some runs, so no energy number travels without it."""
    methods = sorted({m for column in columns for m in column if m})
    return "; ".join(methods) if methods else "not recorded"


def _ordered_inits(values: list[str]) -> list[str]:
    known = [v for v in INIT_ORDER if v in values]
    return known + sorted(v for v in values if v not in INIT_ORDER)


def comparisons(df: pd.DataFrame, factor: str) -> list[tuple[str, str]]:
    """(treatment, baseline) pairs to compare along ``factor`` ("init" or "fraction").

    init: every later strategy against every earlier one in scratch < imagenet < transfer.
    fraction: every smaller fraction against the largest one.
    """
    if factor == "init":
        order = _ordered_inits(sorted(set(df["init"])))
        return [(later, earlier) for earlier, later in itertools.combinations(order, 2)]
    fractions = df[["fraction", "fraction_value"]].drop_duplicates().sort_values("fraction_value", ascending=False)
    names = list(fractions["fraction"])
    return [(smaller, names[0]) for smaller in names[1:]]


PAIRED_COLUMNS = ["factor", "treatment", "baseline", "context", "metric", "n_models", "mean_treatment", "mean_baseline",
                  "mean_diff", "ci_low", "ci_high", "ratio", "ratio_ci_low", "ratio_ci_high", "test", "statistic", "p", "p_holm", "margin", "p_tost",
                  "p_tost_holm", "verdict", "note", "energy_method"]


def model_pairs(df: pd.DataFrame, cfg: ReportConfig, factor: str, treatment: str, baseline: str) -> pd.DataFrame:
    """Per context (the cell columns other than ``factor``) and model: the model's seed mean
    under ``treatment`` (``*_a``) and ``baseline`` (``*_b``), for models successful under both."""
    context = [c for c in CELL if c != factor]
    means = model_means(df, cfg)
    a = means[means[factor] == treatment]
    b = means[means[factor] == baseline]
    return a.merge(b, on=[*context, "model"], suffixes=("_a", "_b"))


def paired_table(df: pd.DataFrame, cfg: ReportConfig, factor: str) -> pd.DataFrame:
    """Paired comparisons along ``factor`` ("init" or "fraction"), one row per context and metric.

    A pair is one model's seed mean under the two levels within one context (same dataset and
    other cell column); only models successful under both count, so n = models, not runs.
    Metrics: the performance and the raw resources (never PePR, which is normalised within each
    cell). Performance: paired t test of the mean difference (treatment - baseline) with its t
    CI, and TOST with ``report.equivalence_margin``. Resources: paired t test on the log scale,
    ``ratio`` = geometric mean of the per-model ratios treatment / baseline with its CI (the
    raw mean difference is given too). Holm adjustment over the contexts of one comparison and
    metric; verdict equivalent (performance only) / different / cannot tell.
    """
    context = [c for c in CELL if c != factor]
    metrics = [cfg.performance, *_resources(df)]
    rows = []
    for treatment, baseline in comparisons(df, factor):
        pairs = model_pairs(df, cfg, factor, treatment, baseline)
        for key, group in pairs.groupby(context, sort=True):
            key = key if isinstance(key, tuple) else (key,)
            for metric in metrics:
                performance = metric == cfg.performance
                margin = cfg.equivalence_margin if performance else None
                a, b = group[f"{metric}_a"].to_numpy(), group[f"{metric}_b"].to_numpy()
                effect = paired_effect(a, b, cfg.alpha, cfg.min_pairs, margin)
                # Resources differ between models by orders of magnitude and change by a factor, so
                # they are tested on the log scale: the ratio is the geometric mean of the
                # per-model ratios, with its CI, and p tests ratio = 1.
                # A zero or missing resource has no logarithm: that model drops out of the ratio.
                positive = lambda v: np.log(np.where(v > 0, v, np.nan))  # noqa: E731
                with np.errstate(invalid="ignore"):
                    ratio = paired_effect(positive(a), positive(b), cfg.alpha, cfg.min_pairs)
                tested = effect if performance else ratio
                rows.append({
                    "factor": factor, "treatment": treatment, "baseline": baseline,
                    **dict(zip(context, key)), "context": " / ".join(map(str, key)), "metric": metric,
                    "n_models": effect.n, "mean_treatment": float(np.nanmean(a)) if len(a) else np.nan,
                    "mean_baseline": float(np.nanmean(b)) if len(b) else np.nan, "mean_diff": effect.estimate,
                    "ci_low": effect.ci_low, "ci_high": effect.ci_high, "ratio": float(np.exp(ratio.estimate)),
                    "ratio_ci_low": float(np.exp(ratio.ci_low)), "ratio_ci_high": float(np.exp(ratio.ci_high)),
                    "test": "paired t on model means" if performance else "paired t on log model means (ratio)",
                    "statistic": tested.statistic, "p": tested.p,
                    "margin": margin if margin is not None else np.nan, "p_tost": effect.p_tost, "note": tested.note,
                    "energy_method": _methods(group["energy_method_a"], group["energy_method_b"]),
                })
    table = pd.DataFrame(rows, columns=[*PAIRED_COLUMNS[:3], *context, *PAIRED_COLUMNS[3:]])
    if table.empty:
        return table
    family = ["treatment", "baseline", "metric"]
    table["p_holm"] = table.groupby(family, sort=False)["p"].transform(lambda p: holm(p.to_numpy()))
    table["p_tost_holm"] = table.groupby(family, sort=False)["p_tost"].transform(lambda p: holm(p.to_numpy()))
    table["verdict"] = [
        verdict(p, q, cfg.alpha) if metric == cfg.performance else verdict(p, np.nan, cfg.alpha)
        for p, q, metric in zip(table["p_holm"], table["p_tost_holm"], table["metric"])
    ]
    return table


def seed_table(df: pd.DataFrame, cfg: ReportConfig) -> pd.DataFrame:
    """Per cell and model: mean and (1 - alpha) Student-t CI over seeds of the performance and
    of the headline PePR variant (CI empty with a single seed)."""
    headline = f"pepr_{cfg.resource}"
    rows = []
    for key, group in df[df["ok"]].groupby([*CELL, "model"], sort=False):
        perf = mean_ci(group[cfg.performance].to_numpy(), cfg.alpha)
        pepr = mean_ci(group[headline].to_numpy(), cfg.alpha)
        rows.append(
            {
                **dict(zip([*CELL, "model"], key)),
                "n_seeds": len(group),
                "performance_mean": perf[0],
                "performance_ci_low": perf[1],
                "performance_ci_high": perf[2],
                f"{headline}_mean": pepr[0],
                f"{headline}_ci_low": pepr[1],
                f"{headline}_ci_high": pepr[2],
            }
        )
    columns = [*CELL, "model", "n_seeds", "performance_mean", "performance_ci_low", "performance_ci_high",
               f"{headline}_mean", f"{headline}_ci_low", f"{headline}_ci_high"]
    return pd.DataFrame(rows, columns=columns)


def rank_table(df: pd.DataFrame, cfg: ReportConfig) -> pd.DataFrame:
    """Bootstrap rank intervals per cell and standard PePR variant (cells with >= 2 seeds for
    some model only), and whether the top-k is separable from the rest."""
    rows = []
    standard = [v for v in report_variants(df) if v.resource in STANDARD_RESOURCES]
    ok = df[df["ok"]]
    for key, group in ok.groupby(CELL, sort=False):
        if group.groupby("model").size().max() < 2:
            continue
        for index, variant in enumerate(standard):
            values = {m: g[variant.column].to_numpy() for m, g in group.groupby("model")}
            ci = bootstrap_rank_ci(values, cfg.bootstrap_resamples, cfg.alpha, cfg.seed + index)
            separable = top_k_separable(ci, cfg.top_k)
            counts = group.groupby("model").size()
            for _, row in ci.sort_values(["rank", "model"]).iterrows():
                rows.append(
                    {
                        **dict(zip(CELL, key)),
                        "variant": variant.label,
                        "model": row["model"],
                        "n_seeds": int(counts[row["model"]]),
                        "rank": int(row["rank"]),
                        "rank_ci_low": int(row["rank_low"]),
                        "rank_ci_high": int(row["rank_high"]),
                        "top_k_separable": "n/a (no more than top_k models)" if separable is None else ("yes" if separable else "no"),
                    }
                )
    columns = [*CELL, "variant", "model", "n_seeds", "rank", "rank_ci_low", "rank_ci_high", "top_k_separable"]
    return pd.DataFrame(rows, columns=columns)


def failed_table(df: pd.DataFrame) -> pd.DataFrame:
    """The failed runs with their reasons."""
    return df.loc[~df["ok"], [*RUN, "reason"]].reset_index(drop=True)


def missing_table(df: pd.DataFrame, expected: pd.DataFrame | None = None) -> pd.DataFrame:
    """What the sweep lacks: cells with no successful run, and runs absent or failed per cell.

    ``expected`` lists the planned runs (columns dataset, init, fraction, model, seed); None
    means the full product of the values seen in the table (every dataset x init x fraction x
    model x seed that appears anywhere). Rows: kind ("cell without successful run",
    "run not in results", "model without successful run in cell"), the cell, model, detail.
    """
    if expected is None:
        expected = pd.DataFrame(
            list(itertools.product(*[sorted(set(df[c])) for c in RUN])), columns=RUN
        )
    else:
        expected = expected[RUN].astype({"dataset": str, "init": str, "model": str, "seed": int}).copy()
        expected["fraction"] = expected["fraction"].astype(str)
    present = set(map(tuple, df[RUN].itertuples(index=False)))
    ok_models = set(map(tuple, df.loc[df["ok"], [*CELL, "model"]].itertuples(index=False)))
    ok_cells = set(map(tuple, df.loc[df["ok"], CELL].itertuples(index=False)))
    rows = []
    for key in sorted(set(map(tuple, expected[CELL].itertuples(index=False)))):
        if key not in ok_cells:
            rows.append({**dict(zip(CELL, key)), "kind": "cell without successful run", "model": "", "detail": ""})
    for run in expected.itertuples(index=False):
        run = tuple(run)
        if run not in present:
            rows.append({**dict(zip(CELL, run[:3])), "kind": "run not in results", "model": run[3], "detail": f"seed {run[4]}"})
    reasons = df[~df["ok"]].groupby([*CELL, "model"])["reason"].agg(lambda s: "; ".join(sorted(set(s))))
    for key in sorted(set(map(tuple, expected[[*CELL, "model"]].itertuples(index=False)))):
        if key[:3] in ok_cells and key not in ok_models:
            rows.append({**dict(zip(CELL, key[:3])), "kind": "model without successful run in cell", "model": key[3], "detail": reasons.get(key, "")})
    return pd.DataFrame(rows, columns=[*CELL, "kind", "model", "detail"])


def energy_method_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per cell: how energy was obtained (counts of each ``energy_method``)."""
    rows = []
    for key in cells(df):
        group = df[(df[CELL] == pd.Series(key, index=CELL)).all(axis=1)]
        rows.append({**dict(zip(CELL, key)), "energy_method": energy_methods(group)})
    return pd.DataFrame(rows, columns=[*CELL, "energy_method"])


def headline_variant(df: pd.DataFrame, cfg: ReportConfig) -> Variant:
    """The variant of ``cfg.resource`` (checked present when the table was loaded)."""
    return next(v for v in report_variants(df) if v.resource == cfg.resource)
