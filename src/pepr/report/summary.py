"""``summary.md``: the sweep's findings in plain sentences, every number computed from the
tables (nothing is asserted that the data do not show; untestable claims say so)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pepr.report.data import CELL, cell_label, cells, energy_methods, fraction_label, variants
from pepr.report.stats import describe, format_p, paired_test
from pepr.report.tables import model_means

if TYPE_CHECKING:
    from pepr.report.build import ReportData


def _num(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}g}"


def _cell(df: pd.DataFrame, key: tuple) -> pd.DataFrame:
    return df[(df[CELL] == pd.Series(key, index=CELL)).all(axis=1)]


def md_table(table: pd.DataFrame, columns: list[str] | None = None) -> str:
    """A small Markdown table (numbers with 4 significant digits)."""
    table = table[columns] if columns else table
    if table.empty:
        return "(none)\n"
    def fmt(value: object) -> str:
        if isinstance(value, (float, np.floating)):
            return "" if np.isnan(value) else f"{value:.4g}"
        return str(value).replace("|", "/")
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def best_per_cell(data: "ReportData", tables: dict[str, pd.DataFrame]) -> list[str]:
    """Sentences naming each cell's best model for each PePR variant."""
    top = tables["top_k"]
    cfg = data.cfg
    lines = []
    for key in cells(data.results[data.results["ok"]]):
        cell_top = _cell(top, key)
        parts = []
        for variant in variants(data.results):
            first = cell_top[(cell_top["variant"] == variant.label) & (cell_top["rank"] == 1)]
            if len(first):
                row = first.iloc[0]
                parts.append(f"{variant.label}: **{row['model']}** ({_num(row['score'])})")
        head = cell_top[(cell_top["variant"] == cfg.resource_label) & (cell_top["rank"] == 1)].iloc[0]
        lines.append(
            f"- {cell_label(key)}: " + "; ".join(parts)
            + f". The best {cfg.resource_label} model has {cfg.performance} {_num(head[cfg.performance])}, "
            f"{_num(head[cfg.resource])} {cfg.resource} and {int(head['params']):,} parameters."
        )
    return lines


def small_vs_large_lines(data: "ReportData", tables: dict[str, pd.DataFrame]) -> tuple[list[str], dict]:
    """Best small vs best large model per cell (by performance), plus the Mann-Whitney tests.

    Returns the sentences and, per cell, whether the best-headline-PePR model is small and
    whether large models significantly outperform small ones (None: no test)."""
    cfg, df = data.cfg, data.results
    means = model_means(df, cfg)
    lines, facts = [], {}
    svl = tables["small_vs_large"]
    for key in cells(df[df["ok"]]):
        group = _cell(means, key)
        small = group[group["params"] <= data.median_params]
        large = group[group["params"] > data.median_params]
        best_pepr = group.sort_values([f"pepr_{cfg.resource}", "model"], ascending=[False, True]).iloc[0]
        row = _cell(svl, key).iloc[0]
        significant_large = None
        if not np.isnan(row["p_performance"]):
            significant_large = bool(row["p_performance"] < cfg.alpha and row["large_mean_performance"] > row["small_mean_performance"])
        # With only small (or only large) models in the cell, "the best is small" says nothing.
        best_is_small = bool(best_pepr["params"] <= data.median_params) if len(small) and len(large) else None
        facts[key] = {"best_is_small": best_is_small, "large_better": significant_large}
        if small.empty or large.empty:
            lines.append(f"- {cell_label(key)}: only {'small' if large.empty else 'large'} models succeeded; no comparison.")
            continue
        bs = small.sort_values([cfg.performance, "model"], ascending=[False, True]).iloc[0]
        bl = large.sort_values([cfg.performance, "model"], ascending=[False, True]).iloc[0]
        saving = 1 - bs[cfg.resource] / bl[cfg.resource] if bl[cfg.resource] > 0 else np.nan
        cost = bl[cfg.performance] - bs[cfg.performance]
        verb = "uses" if not np.isnan(saving) else "has"
        amount = f"{abs(saving):.0%} {'less' if saving >= 0 else 'more'} {cfg.resource}" if not np.isnan(saving) else "unknown relative cost"
        trade = f"at an accuracy cost of {cost:.3f}" if cost > 0 else f"and is {-cost:.3f} better in {cfg.performance}"
        lines.append(
            f"- {cell_label(key)}: the best small model **{bs['model']}** ({cfg.performance} {_num(bs[cfg.performance])}, "
            f"{_num(bs[cfg.resource])} {cfg.resource}) {verb} {amount} than the best large model **{bl['model']}** "
            f"({_num(bl[cfg.performance])}, {_num(bl[cfg.resource])}) {trade}. Small vs large {cfg.performance} "
            f"(means {_num(row['small_mean_performance'])} vs {_num(row['large_mean_performance'])}): {row['test_performance']}."
        )
    return lines, facts


def paired_lines(table: pd.DataFrame, cfg, label=str) -> list[str]:
    """Sentences for the pooled (or single-context) rows of a paired comparison table."""
    lines = []
    if table.empty:
        return ["- nothing to compare: the sweep has a single level."]
    for (treatment, baseline), group in table.groupby(["treatment", "baseline"], sort=False):
        contexts = list(dict.fromkeys(group["context"]))
        pooled = group[group["context"] == contexts[0]]
        for _, row in pooled.iterrows():
            if row["note"]:
                result = f"{row['note']} (n = {row['n_pairs']})"
            else:
                result = f"Wilcoxon n = {row['n_pairs']}, {format_p(row['p'])}"
            lines.append(
                f"- {label(treatment)} vs {label(baseline)} ({contexts[0]}), {row['metric']}: mean "
                f"{_num(row['mean_treatment'])} vs {_num(row['mean_baseline'])} (mean difference {row['mean_diff']:+.3g}); {result}."
            )
    return lines


def claims(data: "ReportData", tables: dict[str, pd.DataFrame], facts: dict) -> list[str]:
    """Check the paper's headline claims against this sweep; each line says holds / does not
    hold / cannot tell, and why."""
    cfg, df = data.cfg, data.results
    lines = []
    decided = {k: f["best_is_small"] for k, f in facts.items() if f["best_is_small"] is not None}
    not_small = [cell_label(k) for k, small in decided.items() if not small]
    claim = f"*The best {cfg.resource_label} model is a small one*"
    if not decided:
        lines.append(f"- {claim}: **cannot tell** (no cell has successful small and large models).")
    elif not_small:
        lines.append(f"- {claim}: **does not hold** in {len(not_small)} of {len(decided)} cells with small and large "
                     f"models ({'; '.join(not_small)}).")
    else:
        lines.append(f"- {claim}: **holds** in all {len(decided)} cells with small and large models.")
    tested = {k: f["large_better"] for k, f in facts.items() if f["large_better"] is not None}
    if not tested:
        lines.append(f"- *Small models perform on par with large ones*: **cannot tell** (too few models per group for a test; "
                     f"report.min_group = {cfg.min_group}).")
    else:
        worse = [cell_label(k) for k, v in tested.items() if v]
        verdict = "does not hold" if worse else "holds"
        detail = f"large models are significantly better in {'; '.join(worse)}" if worse else \
            f"no cell shows large models significantly better (alpha = {cfg.alpha})"
        lines.append(f"- *Small models perform on par with large ones*: **{verdict}** in the {len(tested)} tested cells: {detail}.")
    paired = tables["paired_init"]
    pre = paired[(paired["treatment"] != "scratch") & (paired["baseline"] == "scratch") & (paired["metric"] == cfg.performance)]
    if pre.empty:
        lines.append("- *Pretraining improves performance*: **cannot tell** (the sweep has no pretrained/scratch pairs).")
    for treatment, group in pre.groupby("treatment"):
        row = group.iloc[0]
        if row["note"]:
            lines.append(f"- *{treatment} improves {cfg.performance} over scratch*: **cannot tell** ({row['note']}, n = {row['n_pairs']}).")
        else:
            holds = row["mean_diff"] > 0 and row["p"] < cfg.alpha
            lines.append(f"- *{treatment} improves {cfg.performance} over scratch*: **{'holds' if holds else 'does not hold'}** "
                         f"(mean difference {row['mean_diff']:+.3g}, Wilcoxon n = {row['n_pairs']}, {format_p(row['p'])}).")
    lines.append(_data_claim(df, cfg))
    return lines


def _data_claim(df: pd.DataFrame, cfg) -> str:
    """Does pretraining lose less performance than scratch when the data shrink? Paired by
    (dataset, smaller fraction, model, seed): drop under pretraining vs drop from scratch."""
    ok = df[df["ok"]]
    inits = set(ok["init"])
    fractions = sorted(set(ok["fraction_value"]))
    if "scratch" not in inits or len(inits) < 2 or len(fractions) < 2:
        return "- *Pretraining reduces the data needed*: **cannot tell** (needs scratch and a pretrained init at two data fractions)."
    full = fractions[-1]
    lines = []
    for pretrained in sorted(inits - {"scratch"}):
        drops = {}
        for init in ("scratch", pretrained):
            runs = ok[ok["init"] == init]
            big = runs[runs["fraction_value"] == full]
            small = runs[runs["fraction_value"] < full]
            merged = small.merge(big, on=["dataset", "model", "seed"], suffixes=("", "_full"))
            merged["drop"] = merged[f"{cfg.performance}_full"] - merged[cfg.performance]
            drops[init] = merged.set_index(["dataset", "fraction", "model", "seed"])["drop"]
        joined = pd.concat(drops, axis=1, join="inner").dropna()
        result = paired_test(joined[pretrained].to_numpy(), joined["scratch"].to_numpy(), cfg.min_pairs)
        if not result.tested:
            lines.append(f"- *{pretrained} loses less {cfg.performance} than scratch with less data*: **cannot tell** ({result.note}, n = {result.n}).")
            continue
        holds = joined[pretrained].mean() < joined["scratch"].mean() and result.p < cfg.alpha
        lines.append(
            f"- *{pretrained} loses less {cfg.performance} than scratch with less data*: **{'holds' if holds else 'does not hold'}** "
            f"(mean drop {joined[pretrained].mean():.3g} vs {joined['scratch'].mean():.3g}; {describe(result)})."
        )
    return "\n".join(lines)


def summary_markdown(data: "ReportData", tables: dict[str, pd.DataFrame]) -> str:
    """The whole ``summary.md`` text."""
    cfg, df = data.cfg, data.results
    ok = df[df["ok"]]
    out = ["# pepr sweep: findings", ""]
    out.append(
        f"{len(df)} runs ({int(df['ok'].sum())} successful, {int((~df['ok']).sum())} failed) over "
        f"{df['dataset'].nunique()} dataset(s), {df['init'].nunique()} init strateg(ies) "
        f"({', '.join(sorted(set(df['init'])))}), {df['fraction'].nunique()} data fraction(s) "
        f"({', '.join(fraction_label(f) for f in sorted(set(df['fraction']), key=float, reverse=True))}), "
        f"{df['model'].nunique()} models and {df['seed'].nunique()} seed(s). Performance: `{cfg.performance}`; "
        f"headline variant {cfg.resource_label} (`{cfg.resource}`). Small models: at most {data.median_params:,.0f} "
        "parameters (the sweep's median)."
    )
    out += ["", f"**Measurement.** {energy_methods(df)} Energy and CO2 figures are only as good as this method.", ""]
    out += ["## Best model per cell", "", *best_per_cell(data, tables), ""]
    sl_lines, facts = small_vs_large_lines(data, tables)
    out += ["## Small vs large models", "", *sl_lines, ""]
    out += ["## Pretrained vs scratch", "", *paired_lines(tables["paired_init"], cfg), ""]
    out += ["## Data fractions", "", *paired_lines(tables["paired_fraction"], cfg, fraction_label), ""]
    out += ["## Seeds and statistical separability", ""]
    ranks = tables["rank_ci"]
    if ranks.empty:
        out.append("Every model ran with a single seed: no confidence intervals, and the top-k order is not tested.")
    else:
        for key_variant, group in ranks.groupby([*CELL, "variant"], sort=False):
            key, variant = tuple(key_variant[:3]), key_variant[3]
            if variant != cfg.resource_label:
                continue
            separable = group["top_k_separable"].iloc[0]
            top = group.head(cfg.top_k)
            ranks_text = ", ".join(f"{r.model} {r.rank} [{r.rank_ci_low}-{r.rank_ci_high}]" for r in top.itertuples())
            verdict = {"yes": "is statistically separable from the rest", "no": "is **not** statistically separable from the rest",
                       }.get(separable, "covers every model (nothing to separate)")
            out.append(f"- {cell_label(key)}: {variant} rank with bootstrap {1 - cfg.alpha:.0%} CI: {ranks_text}; the top-{cfg.top_k} {verdict}.")
    out.append("")
    peaks = data.peaks
    out += ["## When to stop training", ""]
    if peaks.empty:
        out.append("No epoch histories: no epoch curves.")
    else:
        for key in cells(ok):
            group = _cell(peaks, key)
            saved, total = group["resource_saved"].sum(), group["resource_at_last"].sum()
            early = int((group["peak_epoch"] < group["last_epoch"]).sum())
            out.append(
                f"- {cell_label(key)}: {early} of {len(group)} runs peak in epoch PePR before their last epoch "
                f"(median peak epoch {group['peak_epoch'].median():g} of {group['last_epoch'].median():g}); stopping each at its peak "
                f"would save {_num(saved)} {cfg.history_resource} ({(saved / total if total else 0):.0%}) at a mean "
                f"{cfg.history_performance} cost of {group['performance_cost'].mean():+.3f}."
            )
    out.append("")
    out += ["## The paper's claims in this sweep", "", *claims(data, tables, facts), ""]
    out += ["## Failed runs", ""]
    out.append(md_table(tables["failed"]))
    out += ["## Missing cells and runs", ""]
    missing = tables["missing"]
    if data.expected is None:
        out.append("The planned grid was not given: expected = every dataset x init x fraction x model x seed seen in the results.\n")
    out.append(md_table(missing) if not missing.empty else "Nothing missing: every planned cell has successful runs of every model.\n")
    return "\n".join(out).rstrip() + "\n"
