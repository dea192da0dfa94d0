"""The report's tables, computed from ``pepr.csv`` (and the histories): each function returns
a DataFrame, so tests can check every number and the summary can quote them."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from pepr.report.config import STANDARD_RESOURCES, ReportConfig
from pepr.report.data import CELL, RUN, Variant, cells, energy_methods, variants
from pepr.report.stats import (
    bootstrap_rank_ci,
    describe,
    mean_ci,
    paired_test,
    top_k_separable,
    unpaired_test,
)

#: Preferred order of init strategies: earlier ones are the baseline of later ones.
INIT_ORDER = ["scratch", "imagenet", "transfer"]


def _resources(df: pd.DataFrame) -> list[str]:
    return [r for r in STANDARD_RESOURCES if r in df.columns]


def model_means(df: pd.DataFrame, cfg: ReportConfig) -> pd.DataFrame:
    """Successful runs averaged over seeds: one row per (cell, model) with n_seeds, params,
    the performance, the raw resources and every PePR variant."""
    ok = df[df["ok"]]
    value_columns = [cfg.performance, *_resources(df), *[v.column for v in variants(df)]]
    grouped = ok.groupby([*CELL, "model"], sort=False)
    means = grouped[value_columns].mean()
    means.insert(0, "n_seeds", grouped.size())
    means.insert(1, "params", grouped["params"].first())
    means.insert(2, "energy_method", grouped["energy_method"].agg(lambda s: "; ".join(sorted(set(s)))))
    return means.reset_index()


def top_k_table(df: pd.DataFrame, cfg: ReportConfig) -> pd.DataFrame:
    """The ``cfg.top_k`` best models per cell and PePR variant, by seed-mean score.

    Ties are broken by model name so the order is deterministic.
    """
    means = model_means(df, cfg)
    rows = []
    for variant in variants(df):
        scored = means.dropna(subset=[variant.column])
        for key, group in scored.groupby(CELL, sort=False):
            ordered = group.sort_values([variant.column, "model"], ascending=[False, True]).head(cfg.top_k)
            for rank, (_, row) in enumerate(ordered.iterrows(), start=1):
                rows.append(
                    {
                        **dict(zip(CELL, key)),
                        "variant": variant.label,
                        "rank": rank,
                        "model": row["model"],
                        "score": row[variant.column],
                        "n_seeds": int(row["n_seeds"]),
                        "params": int(row["params"]),
                        cfg.performance: row[cfg.performance],
                        **{r: row[r] for r in _resources(df)},
                        "energy_method": row["energy_method"],
                    }
                )
    return pd.DataFrame(rows)


def small_vs_large_table(df: pd.DataFrame, cfg: ReportConfig, median_params: float) -> pd.DataFrame:
    """Per cell: small (params <= sweep median) vs large models, seed-mean per model, with a
    two-sided Mann-Whitney test on performance and on the headline PePR variant."""
    means = model_means(df, cfg)
    headline = f"pepr_{cfg.resource}"
    rows = []
    for key in cells(df):
        group = means[(means[CELL] == pd.Series(key, index=CELL)).all(axis=1)]
        small = group[group["params"] <= median_params]
        large = group[group["params"] > median_params]
        row = {**dict(zip(CELL, key)), "median_params": median_params, "n_small": len(small), "n_large": len(large)}
        for column, name in [(cfg.performance, "performance"), (cfg.resource, cfg.resource), (headline, headline)]:
            row[f"small_mean_{name}"] = small[column].mean() if len(small) else np.nan
            row[f"large_mean_{name}"] = large[column].mean() if len(large) else np.nan
        for column, name in [(cfg.performance, "performance"), (headline, headline)]:
            result = unpaired_test(small[column].to_numpy(), large[column].to_numpy(), cfg.min_group)
            row[f"p_{name}"] = result.p
            row[f"test_{name}"] = describe(result)
        row["energy_method"] = _methods(_cell_rows(df, key).loc[lambda d: d["ok"], "energy_method"])
        rows.append(row)
    return pd.DataFrame(rows)


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


def paired_table(df: pd.DataFrame, cfg: ReportConfig, factor: str) -> pd.DataFrame:
    """Paired comparisons along ``factor`` ("init" or "fraction"), per context and pooled.

    A pair is the same model and seed (and the same other cell columns) under the two levels;
    only runs successful under both levels pair up. Metrics: performance, the headline
    resource and its PePR score. Two-sided Wilcoxon signed-rank test; too few pairs -> no test.
    """
    context = [c for c in CELL if c != factor]
    metrics = [cfg.performance, cfg.resource, f"pepr_{cfg.resource}"]
    ok = df[df["ok"]]
    rows = []
    for treatment, baseline in comparisons(df, factor):
        a = ok[ok[factor] == treatment]
        b = ok[ok[factor] == baseline]
        pairs = a.merge(b, on=[*context, "model", "seed"], suffixes=("_a", "_b"))
        groups = [("all", pairs)] + [
            (" / ".join(map(str, key if isinstance(key, tuple) else (key,))), group)
            for key, group in pairs.groupby(context, sort=True)
        ]
        if len(groups) == 2:  # a single context: the pooled row would repeat it
            groups = groups[1:]
        for context_label, group in groups:
            for metric in metrics:
                result = paired_test(group[f"{metric}_a"].to_numpy(), group[f"{metric}_b"].to_numpy(), cfg.min_pairs)
                diff = group[f"{metric}_a"] - group[f"{metric}_b"]
                rows.append(
                    {
                        "factor": factor,
                        "treatment": treatment,
                        "baseline": baseline,
                        "context": context_label,
                        "metric": metric,
                        "n_pairs": len(group),
                        "mean_treatment": group[f"{metric}_a"].mean(),
                        "mean_baseline": group[f"{metric}_b"].mean(),
                        "mean_diff": diff.mean(),
                        "median_diff": diff.median(),
                        "test": result.test,
                        "statistic": result.statistic,
                        "p": result.p,
                        "note": result.note,
                        "energy_method": _methods(group["energy_method_a"], group["energy_method_b"]),
                    }
                )
    columns = ["factor", "treatment", "baseline", "context", "metric", "n_pairs", "mean_treatment",
               "mean_baseline", "mean_diff", "median_diff", "test", "statistic", "p", "note", "energy_method"]
    return pd.DataFrame(rows, columns=columns)


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
    return pd.DataFrame(rows)


def rank_table(df: pd.DataFrame, cfg: ReportConfig) -> pd.DataFrame:
    """Bootstrap rank intervals per cell and standard PePR variant (cells with >= 2 seeds for
    some model only), and whether the top-k is separable from the rest."""
    rows = []
    standard = [v for v in variants(df) if v.resource in STANDARD_RESOURCES]
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
    return pd.DataFrame(rows)


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
    return pd.DataFrame(rows)


def headline_variant(df: pd.DataFrame, cfg: ReportConfig) -> Variant:
    """The variant of ``cfg.resource`` (checked present when the table was loaded)."""
    return next(v for v in variants(df) if v.resource == cfg.resource)
