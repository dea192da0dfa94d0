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
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from pepr.columns import ADDITIVE_RESOURCES, COMBINED, DETERMINISTIC_RESOURCES
from pepr.report.config import STANDARD_RESOURCES, ReportConfig
from pepr.report.data import (
    MEASURED_ON,
    MEMORY_METHOD,
    MEMORY_METHOD_UNRECORDED,
    co2_is_scaled_energy,
    energy_methods,
    group_label,
    group_rows,
    groups,
    report_variants,
    run_columns,
)
from pepr.report.stats import (
    bootstrap_rank_ci,
    direction,
    holm,
    levelling_off,
    noninferiority_verdict,
    paired_effect,
    spearman_trend,
    top_k_separable,
    verdict,
    welch_effect,
    welch_noninferiority,
)
from pepr.report.uncertainty import UNKNOWN, GroupUncertainty
from pepr.train.measure import LOW_CPU_SHARE

#: Preferred order of init strategies: earlier ones are the baseline of later ones.
INIT_ORDER = ["scratch", "imagenet", "transfer"]
#: The top-k table's label for the paper's extra row: the model of best performance P.
BEST_PERFORMANCE = "best performance"
#: Columns of the peak-epoch table (also when no history exists).
PEAK_COLUMNS = [
    "model",
    "seed",
    "peak_epoch",
    "last_epoch",
    "peak_pepr",
    "last_pepr",
    "performance_at_peak",
    "performance_at_last",
    "resource_at_peak",
    "resource_at_last",
    "resource_saved",
    "performance_cost",
]


def _resources(df: pd.DataFrame, cfg: ReportConfig | None = None) -> list[str]:
    """Raw resource columns the comparisons use (the standard ones present, and the headline
    one); CO2 only when it is not energy x a constant."""
    found = [r for r in STANDARD_RESOURCES if r in df.columns]
    if cfg is not None and cfg.resource not in found:
        found.append(cfg.resource)
    if co2_is_scaled_energy(df):
        found = [r for r in found if r != "co2_kg"]
    return found


def model_means(df: pd.DataFrame, cfg: ReportConfig) -> pd.DataFrame:
    """Successful runs averaged over seeds: one row per (cell, model) with n_seeds, params,
    small (per cell), the performance, the raw resources and every PePR variant."""
    ok = df[df["ok"]]
    value_columns = [
        cfg.performance,
        *_resources(df, cfg),
        f"pepr_{cfg.resource}",
        *[v.column for v in report_variants(df)],
    ]
    value_columns = list(dict.fromkeys(value_columns))
    grouped = ok.groupby([*cfg.group, "model"], sort=False)
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
    resources, shown = _resources(df, cfg), report_variants(df)  # once: each scans the whole table
    rows = []

    def row_of(key, label, rank, row, score, headline_rank):
        return {
            **dict(zip(cfg.group, key)),
            "variant": label,
            "rank": rank,
            "model": row["model"],
            "score": score,
            "headline_rank": headline_rank,
            "n_seeds": int(row["n_seeds"]),
            "params": _count(row["params"]),
            "small": _flag(row["small"]),
            cfg.performance: row[cfg.performance],
            **{r: row[r] for r in resources},
            "energy_method": row["energy_method"],
        }

    for key, group in means.groupby(list(cfg.group), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        by_headline = group.sort_values([headline, "model"], ascending=[False, True])
        headline_rank = {m: i for i, m in enumerate(by_headline["model"], start=1)}
        for variant in shown:
            scored = group.dropna(subset=[variant.column])
            ordered = scored.sort_values([variant.column, "model"], ascending=[False, True]).head(cfg.top_k)
            for rank, (_, row) in enumerate(ordered.iterrows(), start=1):
                rows.append(row_of(key, variant.label, rank, row, row[variant.column], headline_rank[row["model"]]))
        best = group.sort_values([cfg.performance, "model"], ascending=[False, True]).iloc[0]
        rows.append(row_of(key, BEST_PERFORMANCE, 1, best, best[cfg.performance], headline_rank[best["model"]]))
    columns = [
        *cfg.group,
        "variant",
        "rank",
        "model",
        "score",
        "headline_rank",
        "n_seeds",
        "params",
        "small",
        cfg.performance,
        *resources,
        "energy_method",
    ]
    return pd.DataFrame(rows, columns=columns)


def init_family(key: tuple, cfg: ReportConfig) -> str:
    """Which claim family a group counts toward: "pretrained" (any init but scratch),
    "scratch", or "all" when ``init`` is not a group key (the table does not say)."""
    if "init" not in cfg.group:
        return "all"
    init = str(key[list(cfg.group).index("init")])
    return "scratch" if init == "scratch" else "pretrained"


def small_vs_large_table(df: pd.DataFrame, cfg: ReportConfig) -> pd.DataFrame:
    """Per group: small vs large models (split at that group's median parameter count), one
    seed-mean per model. Empty without parameter counts.

    Performance: Welch t test of small - large with its CI, TOST with
    ``report.equivalence_margin`` and its verdict (equivalent / different / cannot tell), and
    the non-inferiority test (small not worse than large by the margin or more) with its
    verdict (not worse / worse / cannot tell) and the direction of the difference. The
    non-inferiority p-values are Holm-adjusted within the group's ``family`` (pretrained,
    scratch, or all when init is unknown), so groups of another init strategy never count
    toward a pretrained claim; the other p-values over all groups. The headline PePR (within
    the group): Welch t test, Holm over the groups, and its direction.
    """
    if not cfg.params_known:
        return pd.DataFrame(columns=[*cfg.group, "family", "median_params", "n_small", "n_large"])
    means = model_means(df, cfg)
    headline = f"pepr_{cfg.resource}"
    rows = []
    for key in groups(df, cfg.group):
        group = group_rows(means, key, cfg.group)
        small, large = group[group["small"] == True], group[group["small"] == False]  # noqa: E712 (nullable)
        median = group_rows(df, key, cfg.group)["median_params"].iloc[0]
        row = {
            **dict(zip(cfg.group, key)),
            "family": init_family(key, cfg),
            "median_params": median,
            "n_small": len(small),
            "n_large": len(large),
        }
        for column, name in [(cfg.performance, "performance"), (cfg.resource, cfg.resource), (headline, headline)]:
            row[f"small_mean_{name}"] = small[column].mean() if len(small) else np.nan
            row[f"large_mean_{name}"] = large[column].mean() if len(large) else np.nan
        for column, name, margin in [
            (cfg.performance, "performance", cfg.equivalence_margin),
            (headline, headline, None),
        ]:
            effect = welch_effect(small[column].to_numpy(), large[column].to_numpy(), cfg.alpha, cfg.min_group, margin)
            row.update(
                {
                    f"diff_{name}": effect.estimate,
                    f"ci_low_{name}": effect.ci_low,
                    f"ci_high_{name}": effect.ci_high,
                    f"p_{name}": effect.p,
                    f"note_{name}": effect.note,
                }
            )
            if margin is not None:
                row["p_tost_performance"] = effect.p_tost
        ni = welch_noninferiority(
            small[cfg.performance].to_numpy(), large[cfg.performance].to_numpy(), cfg.equivalence_margin, cfg.min_group
        )
        row.update({"p_not_worse": ni.p_not_worse, "p_worse": ni.p_worse})
        row["energy_method"] = _methods(group_rows(df, key, cfg.group).loc[lambda d: d["ok"], "energy_method"])
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
    for column in ("p_not_worse", "p_worse"):
        table[f"{column}_holm"] = table.groupby("family", sort=False)[column].transform(lambda p: holm(p.to_numpy()))
    table["verdict_not_worse"] = [
        noninferiority_verdict(p, q, cfg.alpha) for p, q in zip(table["p_not_worse_holm"], table["p_worse_holm"])
    ]
    table["margin_not_worse_from"] = _flip_margins(means, table, cfg)
    table["direction_performance"] = [
        direction(d, p, cfg.alpha, "small better", "small worse")
        for d, p in zip(table["diff_performance"], table["p_holm_performance"])
    ]
    table[f"direction_{headline}"] = [
        direction(d, p, cfg.alpha, "higher for small", "lower for small")
        for d, p in zip(table[f"diff_{headline}"], table[f"p_holm_{headline}"])
    ]
    return table


def _flip_margins(means: pd.DataFrame, table: pd.DataFrame, cfg: ReportConfig) -> list[float]:
    """Per group of the small-vs-large table: the smallest non-inferiority margin (one margin
    for every group, as the report uses) at which its verdict is "not worse", Holm within its
    family as the table's verdict; found by bisection, as every Holm-adjusted p falls when the
    margin grows. NaN where no test runs (as :func:`welch_noninferiority`), or not even a
    margin of 1 makes it hold. The summary's sensitivity line quotes it."""
    from scipy import stats as scipy_stats

    diff, se, dof = np.full(len(table), np.nan), np.full(len(table), np.nan), np.full(len(table), np.nan)
    for i, (_, row) in enumerate(table.iterrows()):
        group = group_rows(means, tuple(row[c] for c in cfg.group), cfg.group)
        a = group.loc[group["small"] == True, cfg.performance].dropna().to_numpy(dtype=float)  # noqa: E712 (nullable)
        b = group.loc[group["small"] == False, cfg.performance].dropna().to_numpy(dtype=float)  # noqa: E712
        if min(len(a), len(b)) < cfg.min_group or (np.ptp(a) == 0 and np.ptp(b) == 0):
            continue
        va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
        diff[i], se[i] = a.mean() - b.mean(), np.sqrt(va + vb)
        dof[i] = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    families = [np.flatnonzero(table["family"].to_numpy() == f) for f in dict.fromkeys(table["family"])]

    def adjusted(margins: np.ndarray) -> np.ndarray:
        # Welch's one-sided test of small + margin > large: the p of scipy's ttest_ind, vectorised
        p = scipy_stats.t.sf((diff + margins) / se, dof)
        out = np.empty(len(p))
        for members in families:
            out[members] = holm(p[members])
        return out

    holds_at_one = adjusted(np.ones(len(table))) < cfg.alpha
    out = np.full(len(table), np.nan)
    for i in np.flatnonzero(holds_at_one):
        low, high = 0.0, 1.0
        for _ in range(20):  # 1e-6 of the performance scale: below any printed digit
            mid = (low + high) / 2
            low, high = (low, mid) if adjusted(np.full(len(table), mid))[i] < cfg.alpha else (mid, high)
        out[i] = high
    return list(out)


#: Columns of the size-trend table (Spearman of parameters vs performance and vs PePR).
SIZE_TREND_COLUMNS = [
    "family",
    "n_models",
    "variant",
    "rho_performance",
    "p_performance",
    "p_holm_performance",
    "trend_performance",
    "curvature_performance",
    "p_levels_off",
    "p_holm_levels_off",
    "p_accelerates",
    "p_holm_accelerates",
    "diminishing_returns",
    "rho_pepr",
    "p_pepr",
    "p_holm_pepr",
    "trend_pepr",
    "note",
]


def size_trend_table(df: pd.DataFrame, cfg: ReportConfig) -> pd.DataFrame:
    """Per group: Spearman's rho of the models' parameter counts vs their performance and vs
    their headline PePR (one seed mean per model), two-sided p, Holm over the groups per
    metric; and whether performance levels off with size (:func:`levelling_off`: a quadratic
    in log10 parameters against a line, one-sided p of the quadratic term, Holm over the
    groups). ``diminishing_returns`` is the paper's claim about performance: "yes" when it
    significantly levels off, "no" when it significantly accelerates, else "cannot tell".
    PePR vs size (``trend_pepr``) is stated beside it, not as it (energy rises with size, so
    PePR falls with size almost by construction). Empty without parameter counts."""
    if not cfg.params_known:
        return pd.DataFrame(columns=[*cfg.group, *SIZE_TREND_COLUMNS])
    means = model_means(df, cfg)
    headline = f"pepr_{cfg.resource}"
    rows = []
    for key in groups(df[df["ok"]], cfg.group):
        group = group_rows(means, key, cfg.group)
        perf = spearman_trend(group["params"].to_numpy(), group[cfg.performance].to_numpy(), cfg.min_pairs)
        pepr = spearman_trend(group["params"].to_numpy(), group[headline].to_numpy(), cfg.min_pairs)
        bend = levelling_off(group["params"].to_numpy(), group[cfg.performance].to_numpy(), cfg.min_pairs)
        rows.append(
            {
                **dict(zip(cfg.group, key)),
                "family": init_family(key, cfg),
                "n_models": perf.n,
                "variant": cfg.resource_label,
                "rho_performance": perf.rho,
                "p_performance": perf.p,
                "curvature_performance": bend.curvature,
                "p_levels_off": bend.p_levels_off,
                "p_accelerates": bend.p_accelerates,
                "rho_pepr": pepr.rho,
                "p_pepr": pepr.p,
                "note": "; ".join(n for n in dict.fromkeys([perf.note, pepr.note, bend.note]) if n),
            }
        )
    table = pd.DataFrame(rows, columns=[*cfg.group, *SIZE_TREND_COLUMNS])
    if table.empty:
        return table
    table["p_holm_performance"] = holm(table["p_performance"].to_numpy(dtype=float))
    table["p_holm_pepr"] = holm(table["p_pepr"].to_numpy(dtype=float))
    table["trend_performance"] = [
        direction(r, p, cfg.alpha, "rises with size", "falls with size", "no significant trend")
        for r, p in zip(table["rho_performance"], table["p_holm_performance"])
    ]
    table["trend_pepr"] = [
        direction(r, p, cfg.alpha, "rises with size", "falls with size", "no significant trend")
        for r, p in zip(table["rho_pepr"], table["p_holm_pepr"])
    ]
    table["p_holm_levels_off"] = holm(table["p_levels_off"].to_numpy(dtype=float))
    table["p_holm_accelerates"] = holm(table["p_accelerates"].to_numpy(dtype=float))
    table["diminishing_returns"] = [
        "yes" if p < cfg.alpha else "no" if q < cfg.alpha else "cannot tell"
        for p, q in zip(table["p_holm_levels_off"].fillna(1.0), table["p_holm_accelerates"].fillna(1.0))
    ]
    return table


#: Columns of the decision table after the group keys.
DECISION_COLUMNS = [
    "n_models",
    "performance_metric",
    "resource",
    "variant",
    "recommended_model",
    "recommended_pepr",
    "recommended_pepr_ci_low",
    "recommended_pepr_ci_high",
    "recommended_performance",
    "recommended_performance_ci_low",
    "recommended_performance_ci_high",
    "recommended_resource",
    "contenders",
    "n_contenders",
    "best_pepr_model",
    "interval_method",
    "chance_performance",
    "uninformative",
    "best_model",
    "best_performance",
    "best_resource",
    "performance_share",
    "resource_share",
    "statement",
]


def _contenders(unc: GroupUncertainty | None, column: str, top: str) -> list[str] | None:
    """The models whose ``column`` (a PePR) cannot be told apart from ``top``'s; None when the
    group's uncertainty is unknown."""
    if unc is None or unc.method == UNKNOWN or top not in unc.models:
        return None
    a = unc.models.index(top)
    return [m for b, m in enumerate(unc.models) if b != a and unc.distinguishable(column, a, b) is False]


def decision_table(
    df: pd.DataFrame, cfg: ReportConfig, uncertainties: dict[tuple, GroupUncertainty] | None = None
) -> pd.DataFrame:
    """Per group, the decision: the model of best seed-mean headline PePR and its
    *contenders* (the models not distinguishable from it, :mod:`pepr.report.uncertainty`); the
    recommended model is the cheapest (smallest headline resource) of them, with its
    performance, resource and their intervals; the best-performance model with its own, the
    recommended model's share of the best model's performance and resource, and the sentence
    saying it ("m (or any of 4 others not distinguishable from it): 94% of the best
    test_accuracy at 8% of its energy_kwh"). Ties go to the model name."""
    means = model_means(df, cfg)
    headline = f"pepr_{cfg.resource}"
    uncertainties = uncertainties or {}
    rows = []
    for key in groups(df[df["ok"]], cfg.group):
        group = group_rows(means, key, cfg.group)
        top = group.sort_values([headline, "model"], ascending=[False, True]).iloc[0]
        unc = uncertainties.get(tuple(key))
        contenders = _contenders(unc, headline, top["model"])
        tied = group[group["model"].isin([top["model"], *(contenders or [])])]
        rec = tied.sort_values([cfg.resource, headline, "model"], ascending=[True, False, True]).iloc[0]
        others = [m for m in tied["model"] if m != rec["model"]]
        best = group.sort_values([cfg.performance, "model"], ascending=[False, True]).iloc[0]
        perf_share = rec[cfg.performance] / best[cfg.performance] if best[cfg.performance] > 0 else np.nan
        res_share = rec[cfg.resource] / best[cfg.resource] if best[cfg.resource] > 0 else np.nan
        chance = unc.chance if unc is not None else None
        uninformative = unc is not None and unc.uninformative()
        if uninformative:
            statement = (
                f"no model beats guessing here: the best {cfg.performance} ({best['model']}, "
                f"{best[cfg.performance]:.3g}) lies within the {1 - cfg.alpha:.0%} interval of guessing "
                f"({chance[0]:.3g} [{chance[1]:.3g}, {chance[2]:.3g}]); no model is recommended"
            )
        else:
            if contenders is None:
                name = f"{rec['model']} (uncertainty unknown)"
            elif others:
                name = f"{rec['model']} (or any of {len(others)} other{'s' if len(others) > 1 else ''} not distinguishable from it)"
            else:
                name = f"{rec['model']} (distinguishable from every other model)"
            if rec["model"] == best["model"]:
                statement = f"{name} is both the best {cfg.resource_label} and the best-{cfg.performance} model"
            else:
                share = "an unknown share" if np.isnan(res_share) else f"{res_share:.0%}"
                statement = (
                    f"{name}: {perf_share:.0%} of the best {cfg.performance} ({best['model']}) "
                    f"at {share} of its {cfg.resource}"
                )
        ci = {}
        if unc is not None and rec["model"] in unc.models:
            i = unc.models.index(rec["model"])
            ci = {
                "recommended_pepr_ci_low": unc.pepr_ci[headline][i, 0],
                "recommended_pepr_ci_high": unc.pepr_ci[headline][i, 1],
                "recommended_performance_ci_low": unc.performance_ci[i, 0],
                "recommended_performance_ci_high": unc.performance_ci[i, 1],
            }
        rows.append(
            {
                **dict(zip(cfg.group, key)),
                "n_models": len(group),
                "performance_metric": cfg.performance,
                "resource": cfg.resource,
                "variant": cfg.resource_label,
                "recommended_model": "" if uninformative else rec["model"],
                "recommended_pepr": rec[headline],
                **ci,
                "recommended_performance": rec[cfg.performance],
                "recommended_resource": rec[cfg.resource],
                "contenders": "unknown" if contenders is None else "; ".join(others),
                "n_contenders": None if contenders is None else len(others),
                "best_pepr_model": top["model"],
                "interval_method": unc.detail if unc is not None else UNKNOWN,
                "chance_performance": chance[0] if chance is not None else np.nan,
                "uninformative": uninformative,
                "best_model": best["model"],
                "best_performance": best[cfg.performance],
                "best_resource": best[cfg.resource],
                "performance_share": perf_share,
                "resource_share": res_share,
                "statement": statement,
            }
        )
    return pd.DataFrame(rows, columns=[*cfg.group, *DECISION_COLUMNS])


def interval_table(df: pd.DataFrame, cfg: ReportConfig, uncertainties: dict[tuple, GroupUncertainty]) -> pd.DataFrame:
    """Per group and model: how its interval was obtained, its performance and every PePR
    variant with their (1 - alpha) intervals (empty where unknown)."""
    frames = [unc.table(dict(zip(cfg.group, key))) for key, unc in uncertainties.items()]
    columns = [*cfg.group, "model", "interval_method", "performance", "performance_ci_low", "performance_ci_high"]
    for variant in report_variants(df):
        columns += [variant.column, f"{variant.column}_ci_low", f"{variant.column}_ci_high"]
    if not frames:
        return pd.DataFrame(columns=columns)
    table = pd.concat(frames, ignore_index=True)
    return table[[c for c in columns if c in table.columns]]


#: Memory resources: deterministic for one model, image size and batch (reserved GPU memory
#: repeats exactly), so an equal value is flagged only between runs that differ in those.
MEMORY_RESOURCES = ("peak_memory_mb", "memory_reserved_epoch2_mb")
#: What makes two runs' memory the same allocation (those present in the table).
MEMORY_CONFIG = ("model", "image_size", "batch_size")
#: A run's implied power is flagged when its modified z-score (0.6745 (x - median) / MAD, on
#: log power) exceeds this (Iglewicz & Hoaglin's 3.5) *and* it is this far (factor) from the
#: median: a sweep of near-identical estimates has a tiny MAD but no real outlier.
POWER_Z, POWER_FACTOR = 3.5, 1.5
#: A copied value is harmful when the run's implied power is this far (factor) from its
#: group's median: the value belongs to another amount of work (a 100%-data energy in a 10% group).
COPY_POWER_FACTOR = 2.0
#: A group's runs are contended when a run's recorded CPU share is below LOW_SHARE (the level
#: at which ``pepr train`` warns), or below 1/SHARE_SPREAD of the group's highest: time and
#: estimated energy then measure the neighbours.
LOW_SHARE, SHARE_SPREAD = LOW_CPU_SHARE, 2.0
#: Severity of a flag: harmful flags are left out by ``report.exclude_flagged``; harmless ones
#: are kept (they explain, they do not distort the scores).
HARMFUL, HARMLESS = "harmful", "harmless"


def _is_memory(resource: str) -> bool:
    return resource in MEMORY_RESOURCES or "memory" in resource or resource.endswith("_mb")


def _implied_power(frame: pd.DataFrame) -> pd.Series:
    """Energy / time in W per run (NaN where either is missing or not positive)."""
    if "energy_kwh" not in frame.columns or "train_time_s" not in frame.columns:
        return pd.Series(np.nan, index=frame.index)
    energy = pd.to_numeric(frame["energy_kwh"], errors="coerce")
    seconds = pd.to_numeric(frame["train_time_s"], errors="coerce")
    return (energy * 3.6e6 / seconds).where((energy > 0) & (seconds > 0))


def _off_the_common_value(values: pd.Series, groups: pd.Series, separator: str) -> Iterator[tuple[Any, str, str]]:
    """In every group whose runs hold more than one value: each run not on the group's most common
    value (ties: the first in sort order), as ``(index, its value, "a (n runs)<sep>b (m runs)")``."""
    for _key, group in values.groupby(groups, sort=False):
        counts = group.value_counts()
        if len(counts) < 2:
            continue
        ranked = sorted(counts.index, key=lambda v: (-counts[v], v))
        split = separator.join(f"{v} ({counts[v]} runs)" for v in ranked)
        for index in group.index[group != ranked[0]]:
            yield index, group[index], split


def run_flags(
    df: pd.DataFrame, cfg: ReportConfig, resources: list[str], synthetic: tuple[str, ...] = ()
) -> pd.DataFrame:
    """Every flag of the measurement checks, one row per flagged successful run and check:
    ``row`` (the run's index in ``df``), the run's columns, ``check``, ``severity``
    (:data:`HARMFUL` or :data:`HARMLESS`) and ``detail`` (several resources of one check joined
    by " | "). See :func:`measurement_checks_table` for the checks."""
    run = [c for c in ["model", *cfg.group, "seed"] if c not in synthetic]
    ok = df[df["ok"]]
    rows: list[dict] = []

    def flag(index, check: str, detail: str, severity: str = HARMFUL) -> None:
        r = ok.loc[index]
        rows.append({"row": index, **{c: r[c] for c in run}, "check": check, "severity": severity, "detail": detail})

    def where(r: pd.Series) -> str:
        shown = [c for c in cfg.group if c not in synthetic]
        return (group_label(tuple(r[c] for c in shown), shown) if shown else "the table") + f", seed {r['seed']}"

    power = _implied_power(ok)
    group_median = power.groupby(ok["group_id"]).transform("median")
    n_train = pd.to_numeric(ok["n_train"], errors="coerce") if "n_train" in ok.columns else None

    def copy_severity(index, others: pd.DataFrame, resource: str) -> tuple[str, str]:
        ratio = power[index] / group_median[index] if group_median[index] > 0 else np.nan
        if np.isfinite(ratio) and not 1 / COPY_POWER_FACTOR < ratio < COPY_POWER_FACTOR:
            return HARMFUL, f"; harmful: its implied power is {ratio:.2g}x its group's median"
        if n_train is not None and (n_train[others.index] != n_train[index]).any():
            return HARMFUL, "; harmful: copied from a group of another data size"
        if _is_memory(resource):
            return HARMFUL, "; harmful: another model or configuration cannot allocate exactly the same memory"
        return HARMLESS, "; harmless: same data size and a plausible implied power"

    known = list(dict.fromkeys([*resources, *[c for c in STANDARD_RESOURCES if c in df.columns]]))
    # Equal by construction (training images, a combination of normalised values): never a copy.
    copied = [
        r
        for r in known
        if r in ADDITIVE_RESOURCES
        or (
            r not in STANDARD_RESOURCES
            and not r.endswith("_amortised")
            and r not in DETERMINISTIC_RESOURCES
            and r != COMBINED
        )
    ]
    memory = [r for r in known if _is_memory(r)]
    config = [c for c in MEMORY_CONFIG if c in ok.columns]
    for resource in dict.fromkeys([*copied, *memory]):
        values = pd.to_numeric(ok[resource], errors="coerce")
        frame = ok.assign(_value=values)[lambda d: np.isfinite(d["_value"]) & (d["_value"] > 0)]
        if _is_memory(resource):
            # deterministic for one model, image size and batch: only equal across configurations
            keys, apart = ["_value"], frame.groupby(config, dropna=False, sort=False).ngroup()
        else:
            keys, apart = ["model", "_value"], frame["group_id"]
        # Vectorised first (tens of thousands of runs): only values shared across groups are walked.
        spread = apart.groupby([frame[k] for k in keys], sort=False).transform("nunique")
        for _, same in frame[spread > 1].groupby(keys, sort=True):
            for index, r in same.iterrows():
                others = same[apart[same.index] != apart[index]]
                severity, why = copy_severity(index, others, resource)
                whom = "as the same model in" if not _is_memory(resource) else "as"
                names = sorted(
                    {(f"{o['model']} in " if _is_memory(resource) else "") + where(o) for _, o in others.iterrows()}
                )
                flag(
                    index,
                    "identical_resource",
                    f"{resource} = {r['_value']!r} exactly {whom} {'; '.join(names)}: "
                    f"a copied or reused measurement? (a fresh run never repeats a measured value to the last digit){why}",
                    severity,
                )
    # The same model's resources and performance all equal in two groups: a whole run copied.
    measured = [r for r in dict.fromkeys([*ADDITIVE_RESOURCES, *resources]) if r in ok.columns]
    if measured and cfg.performance in ok.columns:
        signature = ok.groupby(["model", cfg.performance, *measured], sort=False).ngroup()
        spread = ok["group_id"].groupby(signature).transform("nunique")
        for _, same in ok[spread > 1].groupby(signature[spread > 1], sort=True):
            for index, r in same.iterrows():
                others = sorted({where(o) for _, o in same.iterrows() if o["group_id"] != r["group_id"]})
                flag(
                    index,
                    "duplicated_run",
                    f"{cfg.performance} and {', '.join(measured)} all equal the same model's in "
                    f"{'; '.join(others)}: a whole run copied into another group",
                )
    for resource in known:
        values = pd.to_numeric(ok[resource], errors="coerce")
        for index in ok.index[~(np.isfinite(values) & (values > 0))]:
            shown = "empty" if pd.isna(values[index]) else repr(float(values[index]))
            if resource in resources and shown == "empty":
                continue  # scoring already refuses an empty scored resource
            flag(
                index,
                "nonpositive_resource",
                f"{resource} = {shown}: a real run costs more than nothing; the measurement failed or was not recorded",
            )
    if power.notna().any():
        device = ok["device"].astype(str) if "device" in ok.columns else pd.Series("", index=ok.index)
        usable = power.notna()
        for name, watts in power[usable].groupby(device[usable]):
            log = np.log(watts)
            median = float(np.median(log))
            mad = float(np.median(np.abs(log - median)))
            if len(watts) < 3 or mad == 0:
                continue
            z = 0.6745 * (log - median) / mad
            typical = float(np.exp(median))
            for index in watts.index[(np.abs(z) > POWER_Z) & (np.abs(log - median) > np.log(POWER_FACTOR))]:
                on = f" on device {name}" if name else ""
                flag(
                    index,
                    "implied_power",
                    f"energy / time = {watts[index]:.3g} W, the sweep's median{on} is "
                    f"{typical:.3g} W (robust z {z[index]:+.1f}): energy or time mismeasured, or another machine?",
                )
    for column in [c for c in ("cpu_share", "gpu_share") if c in ok.columns]:
        share = pd.to_numeric(ok[column], errors="coerce")
        highest = share.groupby(ok["group_id"]).transform("max")
        contended = share.notna() & ((share < LOW_SHARE) | (share * SHARE_SPREAD < highest))
        for index in ok.index[contended]:
            flag(
                index,
                "contended",
                f"{column} = {share[index]:.2f} (the group's highest {highest[index]:.2f}): the run "
                "shared its machine, so its time and estimated energy measured the neighbours too; rerun it alone",
            )
    if "duplicate_images" in ok.columns:  # folder:/csv: data with identical images across splits or classes
        counts = pd.to_numeric(ok["duplicate_images"], errors="coerce").fillna(0)
        for _, group in ok[counts > 0].groupby(list(cfg.group), sort=True):
            # harmless to the resource scores (every model of the group saw the same images); it
            # warns that the group's test performance may be optimistic
            flag(
                group.index[0],
                "data_leak",
                f"{int(group['duplicate_images'].iloc[0])} group(s) of identical images in "
                "more than one split or class of this dataset (listed in the run's dataset_info); test scores may be "
                "optimistic. dedupe=drop-train in the dataset spec drops the train-side copies",
                HARMLESS,
            )
    for column in [c for c in MEASURED_ON if c in ok.columns]:
        for index, _value, split in _off_the_common_value(ok[column].astype(str), ok["group_id"], ", "):
            flag(
                index,
                "mixed_devices",
                f"the group's runs were measured on different {column}s: {split}; "
                "PePR compares them as if on one machine",
                HARMLESS,
            )
    memory_columns = [r for r in known if _is_memory(r)]
    if memory_columns and MEMORY_METHOD in ok.columns:
        # A resident set also counts the heap's free pages (5-20% more, varying): runs measured
        # one way and the other cannot be ranked by memory against each other.
        methods = ok[MEMORY_METHOD].where(ok[MEMORY_METHOD].notna(), MEMORY_METHOD_UNRECORDED).astype(str)
        scored = any(r in resources for r in memory_columns)
        for index, method, split in _off_the_common_value(methods, ok["group_id"], "; "):
            flag(
                index,
                "mixed_memory_methods",
                f"{', '.join(memory_columns)} measured as {method}, the group's other runs otherwise: "
                f"{split}. Their memory is not comparable; retrain the group's runs measured the other "
                "way (snakemake --forcerun on their metrics.json) so every run is measured alike",
                HARMFUL if scored else HARMLESS,
            )
    table = pd.DataFrame(rows, columns=["row", *run, "check", "severity", "detail"])
    if table.empty:
        return table
    # One row per run and check: several resources (or columns) of one check are one explanation.
    return table.groupby(["row", *run, "check"], sort=False, as_index=False).agg(
        severity=("severity", lambda s: HARMFUL if (s == HARMFUL).any() else HARMLESS), detail=("detail", " | ".join)
    )


def measurement_checks_table(
    df: pd.DataFrame, cfg: ReportConfig, resources: list[str], synthetic: tuple[str, ...] = ()
) -> pd.DataFrame:
    """Sanity checks of the measurements, one row per flagged successful run and check: the run
    (model, group keys, seed), ``check``, ``severity`` and ``detail``. A flag is *harmful*
    when the value distorts the scores (``report.exclude_flagged`` leaves those runs out),
    *harmless* when it only explains.

    Checks: ``identical_resource`` (an energy/CO2/time value, or a non-standard scored
    resource, exactly equal to the same model's value in another group; memory only between
    runs of another model, image size or batch, as allocations repeat exactly otherwise):
    harmful when the run's implied power is :data:`COPY_POWER_FACTOR` x off its group's median,
    or the copy comes from a group of another data size (``n_train``); ``duplicated_run`` (the
    same model's performance and every resource equal in two groups); ``implied_power``
    (energy / time a robust outlier among the sweep's runs on the same device, see
    :data:`POWER_Z`); ``nonpositive_resource`` (zero, negative or non-finite); ``contended``
    (``cpu_share`` / ``gpu_share`` below :data:`LOW_SHARE` or under 1/:data:`SHARE_SPREAD` of the
    group's highest); ``mixed_devices`` (harmless: a group's runs measured on different
    devices/hosts/GPU models, the runs not on the most common one flagged); ``data_leak``
    (harmless: one row per group whose dataset holds identical images in two splits or classes,
    ``duplicate_images`` in runs.csv); ``mixed_memory_methods`` (a group's working sets
    measured in different ways, ``memory_method``, e.g. runs of an earlier pepr that read the CPU
    resident set beside runs that read the heap's bytes in use; the runs not on the group's most
    common method flagged, harmful when a memory resource is scored).
    """
    return run_flags(df, cfg, resources, synthetic).drop(columns="row")


def _measured_or_estimated(methods: pd.Series) -> str:
    """ "measured", "estimated", "measured (N runs) and estimated (M runs)" or "not recorded"."""
    kinds = methods.fillna("").astype(str).str.strip().str.lower()
    measured = int(kinds.str.startswith("measured").sum())
    estimated = int(kinds.str.startswith("estimated").sum())
    if measured and not estimated:
        return "measured"
    if estimated and not measured:
        return "estimated"
    if measured and estimated:
        return f"measured ({measured} runs) and estimated ({estimated} runs)"
    return "not recorded"


#: Columns of the footprint table (one row: the sweep's totals).
FOOTPRINT_COLUMNS = [
    "n_runs",
    "energy_kwh",
    "co2_kg",
    "device_hours",
    "pretraining_energy_kwh",
    "pretraining_co2_kg",
    "pretraining_device_hours",
    "measurement",
    "energy_method",
]


def footprint_table(df: pd.DataFrame) -> pd.DataFrame:
    """The sweep's own cost: total energy (kWh), CO2 (kg) and device-hours (sum of
    ``train_time_s`` / 3600) over every run that recorded them (failed runs included: they
    cost too), pretraining included where present (each pretraining counted once:
    ``pretrain_X / pretrain_uses`` summed over the runs sharing it), and whether the energy
    was measured or estimated (from ``energy_method``). A quantity the table lacks is empty."""

    def total(column: str) -> float:
        if column not in df.columns:
            return np.nan
        values = pd.to_numeric(df[column], errors="coerce")
        return float(values[np.isfinite(values)].sum()) if np.isfinite(values).any() else np.nan

    def pretraining(column: str) -> float:
        if f"pretrain_{column}" not in df.columns or "pretrain_uses" not in df.columns:
            return 0.0
        cost = pd.to_numeric(df[f"pretrain_{column}"], errors="coerce") / pd.to_numeric(
            df["pretrain_uses"], errors="coerce"
        )
        return float(cost[np.isfinite(cost)].sum())

    pre = {c: pretraining(c) for c in ADDITIVE_RESOURCES}
    row = {
        "n_runs": len(df),
        "energy_kwh": total("energy_kwh") + pre["energy_kwh"] if "energy_kwh" in df.columns else np.nan,
        "co2_kg": total("co2_kg") + pre["co2_kg"] if "co2_kg" in df.columns else np.nan,
        "device_hours": (total("train_time_s") + pre["train_time_s"]) / 3600
        if "train_time_s" in df.columns
        else np.nan,
        "pretraining_energy_kwh": pre["energy_kwh"],
        "pretraining_co2_kg": pre["co2_kg"],
        "pretraining_device_hours": pre["train_time_s"] / 3600,
        "measurement": _measured_or_estimated(df["energy_method"]) if "energy_method" in df.columns else "not recorded",
        "energy_method": _methods(df["energy_method"]) if "energy_method" in df.columns else "not recorded",
    }
    table = pd.DataFrame([row], columns=FOOTPRINT_COLUMNS)
    numeric = [c for c in FOOTPRINT_COLUMNS if c not in ("measurement", "energy_method")]
    return table.astype({c: float for c in numeric}).astype({"n_runs": int})


def _count(value: object) -> int | None:
    """A parameter count as an int; None when unknown (a table without params)."""
    return None if value is None or pd.isna(value) else int(value)


def _flag(value: object) -> bool | None:
    return None if value is None or pd.isna(value) else bool(value)


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


PAIRED_COLUMNS = [
    "factor",
    "treatment",
    "baseline",
    "context",
    "metric",
    "n_models",
    "mean_treatment",
    "mean_baseline",
    "mean_diff",
    "ci_low",
    "ci_high",
    "ratio",
    "ratio_ci_low",
    "ratio_ci_high",
    "test",
    "statistic",
    "p",
    "p_holm",
    "margin",
    "p_tost",
    "p_tost_holm",
    "verdict",
    "note",
    "energy_method",
]


def model_pairs(df: pd.DataFrame, cfg: ReportConfig, factor: str, treatment: str, baseline: str) -> pd.DataFrame:
    """Per context (the cell columns other than ``factor``) and model: the model's seed mean
    under ``treatment`` (``*_a``) and ``baseline`` (``*_b``), for models successful under both."""
    context = [c for c in cfg.group if c != factor]
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
    context = [c for c in cfg.group if c != factor]
    if factor not in cfg.group:  # e.g. a table without init strategies: nothing to compare
        return pd.DataFrame(columns=[*PAIRED_COLUMNS[:3], *context, *PAIRED_COLUMNS[3:]])
    metrics = [cfg.performance, *_resources(df, cfg)]
    rows = []
    for treatment, baseline in comparisons(df, factor):
        pairs = model_pairs(df, cfg, factor, treatment, baseline)
        if not context:  # the factor is the only group key: one context, the whole table
            pairs = pairs.assign(_context="all")
        for key, group in pairs.groupby(context or ["_context"], sort=True):
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
                rows.append(
                    {
                        "factor": factor,
                        "treatment": treatment,
                        "baseline": baseline,
                        **dict(zip(context, key)),
                        "context": " / ".join(map(str, key)),
                        "metric": metric,
                        "n_models": effect.n,
                        "mean_treatment": float(np.nanmean(a)) if len(a) else np.nan,
                        "mean_baseline": float(np.nanmean(b)) if len(b) else np.nan,
                        "mean_diff": effect.estimate,
                        "ci_low": effect.ci_low,
                        "ci_high": effect.ci_high,
                        "ratio": float(np.exp(ratio.estimate)),
                        "ratio_ci_low": float(np.exp(ratio.ci_low)),
                        "ratio_ci_high": float(np.exp(ratio.ci_high)),
                        "test": "paired t on model means" if performance else "paired t on log model means (ratio)",
                        "statistic": tested.statistic,
                        "p": tested.p,
                        "margin": margin if margin is not None else np.nan,
                        "p_tost": effect.p_tost,
                        "note": tested.note,
                        "energy_method": _methods(group["energy_method_a"], group["energy_method_b"]),
                    }
                )
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


DATA_NEED_COLUMNS = [
    "dataset",
    "pretrained",
    "pretrained_fraction",
    "scratch_fraction",
    "n_models",
    "mean_pretrained",
    "mean_scratch",
    "mean_diff",
    "ci_low",
    "ci_high",
    "p",
    "p_tost",
    "p_holm",
    "p_tost_holm",
    "margin",
    "verdict",
    "note",
]


def data_need_table(df: pd.DataFrame, cfg: ReportConfig) -> pd.DataFrame:
    """The paper's data-need claim: per dataset and pretrained init, the models pretrained and
    fine-tuned on the smallest data fraction against the same models trained from scratch on
    the largest, paired by model (seed means): mean difference of the performance, its CI,
    paired t and TOST with ``report.equivalence_margin``, Holm over the comparisons, and the
    verdict (equivalent / different / cannot tell). Empty unless init and fraction are both
    group keys and both ends exist."""
    if not {"init", "fraction"} <= set(cfg.group) or "scratch" not in set(df["init"]):
        return pd.DataFrame(columns=DATA_NEED_COLUMNS)
    means = model_means(df, cfg)
    means = means.assign(fraction_value=pd.to_numeric(means["fraction"], errors="coerce"))
    by_dataset = means.groupby("dataset", sort=True) if "dataset" in cfg.group else [("all", means)]
    rows = []
    for dataset, frame in by_dataset:
        scratch = frame[frame["init"] == "scratch"]
        if scratch.empty:
            continue
        largest = scratch.loc[scratch["fraction_value"].idxmax(), "fraction"]
        baseline = scratch[scratch["fraction"] == largest].set_index("model")[cfg.performance]
        for init in _ordered_inits(sorted(set(frame["init"]) - {"scratch"})):
            pretrained = frame[frame["init"] == init]
            smallest = pretrained.loc[pretrained["fraction_value"].idxmin(), "fraction"]
            treated = pretrained[pretrained["fraction"] == smallest].set_index("model")[cfg.performance]
            both = treated.index.intersection(baseline.index)
            effect = paired_effect(
                treated[both].to_numpy(), baseline[both].to_numpy(), cfg.alpha, cfg.min_pairs, cfg.equivalence_margin
            )
            rows.append(
                {
                    "dataset": dataset,
                    "pretrained": init,
                    "pretrained_fraction": smallest,
                    "scratch_fraction": largest,
                    "n_models": len(both),
                    "mean_pretrained": treated[both].mean(),
                    "mean_scratch": baseline[both].mean(),
                    "mean_diff": effect.estimate,
                    "ci_low": effect.ci_low,
                    "ci_high": effect.ci_high,
                    "p": effect.p,
                    "p_tost": effect.p_tost,
                    "margin": cfg.equivalence_margin,
                    "note": effect.note,
                }
            )
    table = pd.DataFrame(rows, columns=DATA_NEED_COLUMNS)
    if table.empty:
        return table
    table["p_holm"] = holm(table["p"].to_numpy(dtype=float))
    table["p_tost_holm"] = holm(table["p_tost"].to_numpy(dtype=float))
    table["verdict"] = [verdict(p, q, cfg.alpha) for p, q in zip(table["p_holm"], table["p_tost_holm"])]
    return table


def seed_table(df: pd.DataFrame, cfg: ReportConfig) -> pd.DataFrame:
    """Per group and model: mean and (1 - alpha) Student-t CI over seeds of the performance and
    of the headline PePR variant (CI empty with a single seed); as :func:`stats.mean_ci`,
    computed for all models at once."""
    from scipy import stats as scipy_stats

    headline = f"pepr_{cfg.resource}"
    keys = [*cfg.group, "model"]
    grouped = df[df["ok"]].groupby(keys, sort=False)
    out = grouped.size().rename("n_seeds").to_frame()
    for column, name in [(cfg.performance, "performance"), (headline, headline)]:
        values = grouped[column]
        n, mean, sd = values.count(), values.mean(), values.std(ddof=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            half = scipy_stats.t.ppf(1 - cfg.alpha / 2, n - 1) * sd / np.sqrt(n)
        half = half.where(n >= 2)
        out[f"{name}_mean"], out[f"{name}_ci_low"], out[f"{name}_ci_high"] = mean, mean - half, mean + half
    columns = [
        *keys,
        "n_seeds",
        "performance_mean",
        "performance_ci_low",
        "performance_ci_high",
        f"{headline}_mean",
        f"{headline}_ci_low",
        f"{headline}_ci_high",
    ]
    return out.reset_index()[columns]


def rank_table(df: pd.DataFrame, cfg: ReportConfig) -> pd.DataFrame:
    """Bootstrap rank intervals per cell and standard PePR variant (cells with >= 2 seeds for
    some model only), and whether the top-k is separable from the rest."""
    rows = []
    standard = [v for v in report_variants(df) if v.resource in STANDARD_RESOURCES]
    ok = df[df["ok"]]
    for key, group in ok.groupby(list(cfg.group), sort=False):
        key = key if isinstance(key, tuple) else (key,)
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
                        **dict(zip(cfg.group, key)),
                        "variant": variant.label,
                        "model": row["model"],
                        "n_seeds": int(counts[row["model"]]),
                        "rank": int(row["rank"]),
                        "rank_ci_low": int(row["rank_low"]),
                        "rank_ci_high": int(row["rank_high"]),
                        "top_k_separable": "n/a (no more than top_k models)"
                        if separable is None
                        else ("yes" if separable else "no"),
                    }
                )
    columns = [*cfg.group, "variant", "model", "n_seeds", "rank", "rank_ci_low", "rank_ci_high", "top_k_separable"]
    return pd.DataFrame(rows, columns=columns)


def failed_table(df: pd.DataFrame, cfg: ReportConfig) -> pd.DataFrame:
    """The failed runs with their reasons (an adaptive sweep's stopped runs are listed apart)."""
    return df.loc[~df["ok"] & (df["status"] != "stopped"), [*run_columns(cfg), "reason"]].reset_index(drop=True)


def missing_table(df: pd.DataFrame, cfg: ReportConfig, expected: pd.DataFrame | None = None) -> pd.DataFrame:
    """What the sweep lacks: groups with no successful run, and runs absent or failed per group.

    ``expected`` lists the planned runs (the group columns, model, seed); None means the full
    product of the values seen in the table (every combination of group keys, model and seed
    that appears anywhere). Rows: kind ("group without successful run", "run not in results",
    "model without successful run in group"), the group, model, detail.
    """
    group, run = list(cfg.group), run_columns(cfg)
    n = len(group)
    if expected is None:
        expected = pd.DataFrame(list(itertools.product(*[sorted(set(df[c])) for c in run])), columns=run)
    else:
        expected = expected[run].astype({**{c: str for c in group}, "model": str, "seed": int}).copy()
    present = set(map(tuple, df[run].itertuples(index=False)))
    ok_models = set(map(tuple, df.loc[df["ok"], [*group, "model"]].itertuples(index=False)))
    ok_groups = set(map(tuple, df.loc[df["ok"], group].itertuples(index=False)))
    rows = []
    for key in sorted(set(map(tuple, expected[group].itertuples(index=False)))):
        if key not in ok_groups:
            rows.append({**dict(zip(group, key)), "kind": "group without successful run", "model": "", "detail": ""})
    for planned in expected.itertuples(index=False):
        planned = tuple(planned)
        if planned not in present:
            rows.append(
                {
                    **dict(zip(group, planned[:n])),
                    "kind": "run not in results",
                    "model": planned[n],
                    "detail": f"seed {planned[n + 1]}",
                }
            )
    reasons = df[~df["ok"]].groupby([*group, "model"])["reason"].agg(lambda s: "; ".join(sorted(set(s))))
    for key in sorted(set(map(tuple, expected[[*group, "model"]].itertuples(index=False)))):
        if key[:n] in ok_groups and key not in ok_models:
            rows.append(
                {
                    **dict(zip(group, key[:n])),
                    "kind": "model without successful run in group",
                    "model": key[n],
                    "detail": reasons.get(key if n else key[0], ""),
                }
            )
    return pd.DataFrame(rows, columns=[*group, "kind", "model", "detail"])


def energy_method_table(df: pd.DataFrame, cfg: ReportConfig) -> pd.DataFrame:
    """Per group: how energy was obtained (counts of each ``energy_method``)."""
    rows = []
    for key in groups(df, cfg.group):
        rows.append({**dict(zip(cfg.group, key)), "energy_method": energy_methods(group_rows(df, key, cfg.group))})
    return pd.DataFrame(rows, columns=[*cfg.group, "energy_method"])
