"""``summary.md``: the sweep's findings in plain sentences, every number read from the tables the
tables rule wrote (nothing is recomputed that a table holds, nothing asserted that the data do
not show; claims a test cannot decide say "cannot tell").

This module imports no other report entry point: :mod:`pepr.report.build` calls it with the
loaded :class:`~pepr.report.data.ReportData` and the tables read back from disk.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pepr.report.data import CELL, ReportData, cell_label, cells, co2_note, energy_methods, fraction_label, report_variants
from pepr.report.stats import CANNOT_TELL, DIFFERENT, EQUIVALENT, format_p, holm, paired_effect, verdict
from pepr.report.tables import BEST_PERFORMANCE, model_means


def _num(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}g}"


def _cell(df: pd.DataFrame, key: tuple) -> pd.DataFrame:
    return df[(df[CELL] == pd.Series(key, index=CELL)).all(axis=1)]


def _ci(low: float, high: float) -> str:
    return "no CI" if np.isnan(low) else f"CI [{low:+.3g}, {high:+.3g}]"


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


def best_per_cell(data: ReportData, tables: dict[str, pd.DataFrame]) -> list[str]:
    """Sentences naming each cell's best model for each PePR variant shown, and (as the paper's
    table) the best-performance model with its rank by the headline variant."""
    top = tables["top_k"]
    cfg = data.cfg
    lines = []
    for key in cells(data.results[data.results["ok"]]):
        cell_top = _cell(top, key)
        parts = []
        for variant in report_variants(data.results):
            first = cell_top[(cell_top["variant"] == variant.label) & (cell_top["rank"] == 1)]
            if len(first):
                row = first.iloc[0]
                parts.append(f"{variant.label}: **{row['model']}** ({_num(row['score'])})")
        head = cell_top[(cell_top["variant"] == cfg.resource_label) & (cell_top["rank"] == 1)].iloc[0]
        best = cell_top[cell_top["variant"] == BEST_PERFORMANCE].iloc[0]
        best_text = (
            "it is also the best-performance model" if best["model"] == head["model"] else
            f"the best-performance model is **{best['model']}** ({cfg.performance} {_num(best[cfg.performance])}, "
            f"{_num(best[cfg.resource])} {cfg.resource}, {int(best['params']):,} parameters, {cfg.resource_label} rank "
            f"{int(best['headline_rank'])})"
        )
        lines.append(
            f"- {cell_label(key)}: " + "; ".join(parts)
            + f". The best {cfg.resource_label} model has {cfg.performance} {_num(head[cfg.performance])}, "
            f"{_num(head[cfg.resource])} {cfg.resource} and {int(head['params']):,} parameters; {best_text}."
        )
    return lines


def small_vs_large_lines(data: ReportData, tables: dict[str, pd.DataFrame]) -> list[str]:
    """Per cell: best small vs best large model (by performance), then the Welch test of the
    model means with its CI, Holm-adjusted p and TOST verdict (from small_vs_large.csv)."""
    cfg, df = data.cfg, data.results
    means = model_means(df, cfg)
    svl = tables["small_vs_large"]
    lines = []
    for key in cells(df[df["ok"]]):
        group = _cell(means, key)
        small, large = group[group["small"]], group[~group["small"]]
        row = _cell(svl, key).iloc[0]
        split = f"split at {row['median_params']:,.0f} parameters"
        if small.empty or large.empty:
            lines.append(f"- {cell_label(key)} ({split}): only {'small' if large.empty else 'large'} models succeeded; no comparison.")
            continue
        bs = small.sort_values([cfg.performance, "model"], ascending=[False, True]).iloc[0]
        bl = large.sort_values([cfg.performance, "model"], ascending=[False, True]).iloc[0]
        saving = 1 - bs[cfg.resource] / bl[cfg.resource] if bl[cfg.resource] > 0 else np.nan
        cost = bl[cfg.performance] - bs[cfg.performance]
        verb = "uses" if not np.isnan(saving) else "has"
        amount = f"{abs(saving):.0%} {'less' if saving >= 0 else 'more'} {cfg.resource}" if not np.isnan(saving) else "unknown relative cost"
        trade = f"at a {cfg.performance} cost of {cost:.3f}" if cost > 0 else f"and is {-cost:.3f} better in {cfg.performance}"
        lines.append(
            f"- {cell_label(key)} ({split}): the best small model **{bs['model']}** ({cfg.performance} {_num(bs[cfg.performance])}, "
            f"{_num(bs[cfg.resource])} {cfg.resource}) {verb} {amount} than the best large model **{bl['model']}** "
            f"({_num(bl[cfg.performance])}, {_num(bl[cfg.resource])}) {trade}. {_svl_test(row, cfg)}"
        )
    return lines


def _svl_test(row: pd.Series, cfg) -> str:
    means = f"means {_num(row['small_mean_performance'])} vs {_num(row['large_mean_performance'])}, {int(row['n_small'])} vs {int(row['n_large'])} models"
    if np.isnan(row["p_performance"]):
        return f"Small - large {cfg.performance} ({means}): {row['note_performance']}: **{CANNOT_TELL}**."
    return (
        f"Small - large {cfg.performance} ({means}): {row['diff_performance']:+.3g}, {_ci(row['ci_low_performance'], row['ci_high_performance'])}; "
        f"Welch t Holm {format_p(row['p_holm_performance'])}, TOST (margin {row['margin']:g}) Holm {format_p(row['p_tost_holm_performance'])}: "
        f"**{row['verdict_performance']}**."
    )


def paired_lines(table: pd.DataFrame, cfg, label=str) -> list[str]:
    """Per comparison and context: the performance difference (CI, Holm p, TOST verdict) and
    the headline resource's ratio, from a paired table (paired_init.csv / paired_fraction.csv)."""
    if table.empty:
        return ["- nothing to compare: the sweep has a single level."]
    lines = []
    for (treatment, baseline), group in table.groupby(["treatment", "baseline"], sort=False):
        for context, rows in group.groupby("context", sort=False):
            perf = rows[rows["metric"] == cfg.performance].iloc[0]
            resource = rows[rows["metric"] == cfg.resource]
            n = int(perf["n_models"])
            text = f"- {label(treatment)} vs {label(baseline)} ({context}, {n} model{'' if n == 1 else 's'}): {cfg.performance} "
            if perf["note"]:
                text += f"{_num(perf['mean_treatment'])} vs {_num(perf['mean_baseline'])}; {perf['note']}: **{CANNOT_TELL}**"
            else:
                text += (f"{perf['mean_diff']:+.3g} ({_ci(perf['ci_low'], perf['ci_high'])}), paired t Holm {format_p(perf['p_holm'])}, "
                         f"TOST (margin {perf['margin']:g}) Holm {format_p(perf['p_tost_holm'])}: **{perf['verdict']}**")
            if len(resource):
                r = resource.iloc[0]
                test = r["note"] if r["note"] else f"CI [x{_num(r['ratio_ci_low'])}, x{_num(r['ratio_ci_high'])}], Holm {format_p(r['p_holm'])}"
                text += f"; {cfg.resource} x{_num(r['ratio'])} ({test})"
            lines.append(text + ".")
    return lines


def claims(data: ReportData, tables: dict[str, pd.DataFrame]) -> list[str]:
    """Check the paper's headline claims against this sweep; each line says holds / does not
    hold / cannot tell, and why."""
    cfg, df = data.cfg, data.results
    lines = []
    top, svl = tables["top_k"], tables["small_vs_large"]
    mixed = svl[(svl["n_small"] > 0) & (svl["n_large"] > 0)]
    decided = {}
    for row in mixed.itertuples(index=False):
        key = tuple(getattr(row, c) for c in CELL)
        first = _cell(top, key).query("variant == @cfg.resource_label and rank == 1")
        if len(first):
            decided[key] = bool(str(first.iloc[0]["small"]) == "True")
    not_small = [cell_label(k) for k, small in decided.items() if not small]
    claim = f"*The best {cfg.resource_label} model is a small one*"
    if not decided:
        lines.append(f"- {claim}: **cannot tell** (no cell has successful small and large models).")
    elif not_small:
        lines.append(f"- {claim}: **does not hold** in {len(not_small)} of {len(decided)} cells with small and large "
                     f"models ({'; '.join(not_small)}).")
    else:
        lines.append(f"- {claim}: **holds** in all {len(decided)} cells with small and large models.")
    verdicts = mixed["verdict_performance"].value_counts() if len(mixed) else pd.Series(dtype=int)
    counts = ", ".join(f"{v} in {int(verdicts.get(v, 0))}" for v in (EQUIVALENT, DIFFERENT, CANNOT_TELL))
    claim = f"*Small models perform on par with large ones* (TOST, margin {cfg.equivalence_margin:g} {cfg.performance}, Holm over cells)"
    if mixed.empty:
        lines.append(f"- {claim}: **cannot tell** (no cell has successful small and large models).")
    elif verdicts.get(DIFFERENT, 0):
        lines.append(f"- {claim}: **does not hold** ({counts} of {len(mixed)} cells).")
    elif verdicts.get(EQUIVALENT, 0) == len(mixed):
        lines.append(f"- {claim}: **holds** in all {len(mixed)} cells.")
    else:
        lines.append(f"- {claim}: **cannot tell** ({counts} of {len(mixed)} cells; too few models or too much spread "
                     f"to show equivalence; report.min_group = {cfg.min_group}).")
    paired = tables["paired_init"]
    pre = paired[(paired["treatment"] != "scratch") & (paired["baseline"] == "scratch") & (paired["metric"] == cfg.performance)]
    if pre.empty:
        lines.append("- *Pretraining improves performance*: **cannot tell** (the sweep has no pretrained/scratch pairs).")
    for treatment, group in pre.groupby("treatment"):
        better = group[(group["verdict"] == DIFFERENT) & (group["mean_diff"] > 0)]
        untested = group[group["verdict"] == CANNOT_TELL]
        if len(better) == len(group):
            state = f"**holds** in all {len(group)} contexts"
        elif len(better):
            state = f"**holds** in {len(better)} of {len(group)} contexts ({'; '.join(better['context'])})"
        elif len(untested) == len(group):
            state = f"**cannot tell** in all {len(group)} contexts"
        else:
            state = f"**does not hold** in any of {len(group)} contexts"
        lines.append(f"- *{treatment} improves {cfg.performance} over scratch* (paired t on model means, Holm over contexts): {state}.")
    lines.extend(_data_claim(df, cfg))
    return lines


def _data_claim(df: pd.DataFrame, cfg) -> list[str]:
    """Does pretraining lose less performance than scratch when the data shrink? Per dataset
    and smaller fraction, one value per model: its drop (full - smaller, seed means) under the
    pretrained init minus its drop from scratch; paired t, Holm over the contexts."""
    ok = df[df["ok"]]
    inits = set(ok["init"])
    fractions = sorted(set(ok["fraction_value"]))
    if "scratch" not in inits or len(inits) < 2 or len(fractions) < 2:
        return ["- *Pretraining reduces the data needed*: **cannot tell** (needs scratch and a pretrained init at two data fractions)."]
    means = model_means(df, cfg).merge(df[["fraction", "fraction_value"]].drop_duplicates(), on="fraction")
    full = fractions[-1]
    lines = []
    for pretrained in sorted(inits - {"scratch"}):
        drops = {}
        for init in ("scratch", pretrained):
            runs = means[means["init"] == init]
            big = runs[runs["fraction_value"] == full]
            small = runs[runs["fraction_value"] < full]
            merged = small.merge(big, on=["dataset", "model"], suffixes=("", "_full"))
            merged["drop"] = merged[f"{cfg.performance}_full"] - merged[cfg.performance]
            drops[init] = merged.set_index(["dataset", "fraction", "model"])["drop"]
        joined = pd.concat(drops, axis=1, join="inner").dropna()
        results = []
        for (dataset, fraction), group in joined.groupby(level=["dataset", "fraction"]):
            effect = paired_effect(group[pretrained].to_numpy(), group["scratch"].to_numpy(), cfg.alpha, cfg.min_pairs)
            results.append((f"{dataset} / {fraction_label(fraction)}", effect))
        adjusted = holm(np.array([e.p for _, e in results])) if results else np.array([])
        claim = f"*{pretrained} loses less {cfg.performance} than scratch with less data*"
        if not results or np.isnan(adjusted).all():
            note = results[0][1].note if results else "no model ran under both inits at both fractions"
            lines.append(f"- {claim}: **cannot tell** ({note}).")
            continue
        parts = []
        for (context, effect), p in zip(results, adjusted):
            holds = verdict(p, np.nan, cfg.alpha) == DIFFERENT and effect.estimate < 0
            parts.append(f"{context}: drop difference {effect.estimate:+.3g} ({_ci(effect.ci_low, effect.ci_high)}, "
                         f"Holm {format_p(p)}) -> {'holds' if holds else ('cannot tell' if np.isnan(p) or p >= cfg.alpha else 'does not hold')}")
        lines.append(f"- {claim}: " + "; ".join(parts) + ".")
    return lines


def summary_markdown(data: ReportData, tables: dict[str, pd.DataFrame]) -> str:
    """The whole ``summary.md`` text, from the loaded results and the written tables."""
    cfg, df = data.cfg, data.results
    out = ["# pepr sweep: findings", ""]
    out.append(
        f"{len(df)} runs ({int(df['ok'].sum())} successful, {int((~df['ok']).sum())} failed) over "
        f"{df['dataset'].nunique()} dataset(s), {df['init'].nunique()} init strateg(ies) "
        f"({', '.join(sorted(set(df['init'])))}), {df['fraction'].nunique()} data fraction(s) "
        f"({', '.join(fraction_label(f) for f in sorted(set(df['fraction']), key=float, reverse=True))}), "
        f"{df['model'].nunique()} models and {df['seed'].nunique()} seed(s). Performance: `{cfg.performance}`; "
        f"headline variant {cfg.resource_label} (`{cfg.resource}`). Small models: at most the median parameter "
        "count of their cell's models. Comparisons use one seed mean per model, p-values are Holm-adjusted over "
        f"cells (the {1 - cfg.alpha:.0%} confidence intervals are per cell, not adjusted: read the p-value for "
        f"significance), and \"on par\" means the TOST equivalence test with margin {cfg.equivalence_margin:g} rejects a larger "
        "difference. PePR is compared only within a cell; across init strategies and data fractions the summary "
        "compares raw performance and resources."
    )
    measurement = f"**Measurement.** {energy_methods(df)} Energy and CO2 figures are only as good as this method."
    note = co2_note(df)
    out += ["", measurement + (f" {note}" if note else ""), ""]
    out += ["## Best model per cell", "", *best_per_cell(data, tables), ""]
    out += ["## Small vs large models", "", *small_vs_large_lines(data, tables), ""]
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
            verdict_text = {"yes": "is statistically separable from the rest", "no": "is **not** statistically separable from the rest",
                            }.get(separable, "covers every model (nothing to separate)")
            out.append(f"- {cell_label(key)}: {variant} rank with bootstrap {1 - cfg.alpha:.0%} CI: {ranks_text}; the top-{cfg.top_k} {verdict_text}.")
    out.append("")
    peaks = tables["peaks"]
    out += ["## When to stop training", ""]
    if peaks.empty:
        out.append("No epoch histories: no epoch curves.")
    else:
        for key in cells(df[df["ok"]]):
            group = _cell(peaks, key)
            if group.empty:
                continue
            saved, total = group["resource_saved"].sum(), group["resource_at_last"].sum()
            early = int((group["peak_epoch"] < group["last_epoch"]).sum())
            out.append(
                f"- {cell_label(key)}: {early} of {len(group)} runs peak in epoch PePR before their last epoch "
                f"(median peak epoch {group['peak_epoch'].median():g} of {group['last_epoch'].median():g}); stopping each at its peak "
                f"would save {_num(saved)} {cfg.history_resource} ({(saved / total if total else 0):.0%}) at a mean "
                f"{cfg.history_performance} cost of {group['performance_cost'].mean():+.3f}."
            )
    out.append("")
    out += ["## The paper's claims in this sweep", "", *claims(data, tables), ""]
    out += ["## Failed runs", ""]
    out.append(md_table(tables["failed"]))
    out += ["## Missing cells and runs", ""]
    missing = tables["missing"]
    if data.expected is None:
        out.append("The planned grid was not given: expected = every dataset x init x fraction x model x seed seen in the results.\n")
    out.append(md_table(missing) if not missing.empty else "Nothing missing: every planned cell has successful runs of every model.\n")
    return "\n".join(out).rstrip() + "\n"
