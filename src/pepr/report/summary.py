"""``summary.md``: the sweep's findings in plain sentences, every number read from the tables the
tables rule wrote (nothing is recomputed that a table holds, nothing asserted that the data do
not show; claims a test cannot decide say "cannot tell").

This module imports no other report entry point: :mod:`pepr.report.build` calls it with the
loaded :class:`~pepr.report.data.ReportData` and the tables read back from disk.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pepr.report.data import (
    ReportData,
    co2_note,
    energy_methods,
    fraction_label,
    group_label,
    group_rows,
    groups,
    report_variants,
)
from pepr.report.stats import CANNOT_TELL, DIFFERENT, NOT_WORSE, WORSE, format_p, holm, paired_effect, verdict
from pepr.report.tables import BEST_PERFORMANCE, model_means


def _rows(table: pd.DataFrame):
    """The rows of ``table`` as Series (by column name: any group column, ``class`` or
    ``body part`` too, where itertuples would rename it)."""
    return (row for _, row in table.iterrows())


def _num(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}g}"


def _pct(value: float) -> str:
    return "n/a" if value is None or np.isnan(value) else f"{value:.0%}"


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


def best_per_group(data: ReportData, tables: dict[str, pd.DataFrame]) -> list[str]:
    """Sentences naming each group's best model for each PePR variant shown, and (as the paper's
    table) the best-performance model with its rank by the headline variant."""
    top = tables["top_k"]
    cfg = data.cfg
    lines = []
    for key in groups(data.results[data.results["ok"]], cfg.group):
        group_top = group_rows(top, key, cfg.group)
        parts = []
        for variant in report_variants(data.results):
            first = group_top[(group_top["variant"] == variant.label) & (group_top["rank"] == 1)]
            if len(first):
                row = first.iloc[0]
                parts.append(f"{variant.label}: **{row['model']}** ({_num(row['score'])})")
        head = group_top[(group_top["variant"] == cfg.resource_label) & (group_top["rank"] == 1)].iloc[0]
        best = group_top[group_top["variant"] == BEST_PERFORMANCE].iloc[0]
        best_text = (
            "it is also the best-performance model"
            if best["model"] == head["model"]
            else f"the best-performance model is **{best['model']}** ({cfg.performance} {_num(best[cfg.performance])}, "
            f"{_num(best[cfg.resource])} {cfg.resource}{_params(best, ', ')}, {cfg.resource_label} rank "
            f"{int(best['headline_rank'])})"
        )
        lines.append(
            f"- {group_label(key, cfg.group)}: "
            + "; ".join(parts)
            + f". The best {cfg.resource_label} model has {cfg.performance} {_num(head[cfg.performance])}, "
            f"{_num(head[cfg.resource])} {cfg.resource}{_params(head, ' and ')}; {best_text}."
        )
    return lines


def _params(row: pd.Series, joiner: str) -> str:
    """``", 1,234 parameters"`` when the table has parameter counts, else ""."""
    try:
        count = float(row["params"])
    except (KeyError, TypeError, ValueError):
        return ""
    return "" if np.isnan(count) else f"{joiner}{int(count):,} parameters"


def small_vs_large_lines(data: ReportData, tables: dict[str, pd.DataFrame]) -> list[str]:
    """Per group: best small vs best large model (by performance), then the Welch test of the
    model means with its CI, Holm-adjusted p and TOST verdict (from small_vs_large.csv)."""
    cfg, df = data.cfg, data.results
    if not cfg.params_known:
        return [NO_PARAMS]
    means = model_means(df, cfg)
    svl = tables["small_vs_large"]
    lines = []
    for key in groups(df[df["ok"]], cfg.group):
        group = group_rows(means, key, cfg.group)
        small, large = group[group["small"] == True], group[group["small"] == False]  # noqa: E712 (nullable)
        row = group_rows(svl, key, cfg.group).iloc[0]
        split = f"split at {row['median_params']:,.0f} parameters"
        if small.empty or large.empty:
            lines.append(
                f"- {group_label(key, cfg.group)} ({split}): only {'small' if large.empty else 'large'} models succeeded; no comparison."
            )
            continue
        bs = small.sort_values([cfg.performance, "model"], ascending=[False, True]).iloc[0]
        bl = large.sort_values([cfg.performance, "model"], ascending=[False, True]).iloc[0]
        saving = 1 - bs[cfg.resource] / bl[cfg.resource] if bl[cfg.resource] > 0 else np.nan
        cost = bl[cfg.performance] - bs[cfg.performance]
        verb = "uses" if not np.isnan(saving) else "has"
        amount = (
            f"{abs(saving):.0%} {'less' if saving >= 0 else 'more'} {cfg.resource}"
            if not np.isnan(saving)
            else "unknown relative cost"
        )
        trade = (
            f"at a {cfg.performance} cost of {cost:.3f}"
            if cost > 0
            else f"and is {-cost:.3f} better in {cfg.performance}"
        )
        lines.append(
            f"- {group_label(key, cfg.group)} ({split}): the best small model **{bs['model']}** ({cfg.performance} {_num(bs[cfg.performance])}, "
            f"{_num(bs[cfg.resource])} {cfg.resource}) {verb} {amount} than the best large model **{bl['model']}** "
            f"({_num(bl[cfg.performance])}, {_num(bl[cfg.resource])}) {trade}. {_svl_test(row, cfg)} "
            f"{_not_worse_text(row, cfg)} {_pepr_svl_text(row, cfg)}"
        )
    return lines


#: What the summary says where a table has no parameter counts.
NO_PARAMS = (
    "- The table has no parameter counts (no `params` column; name one with `--params COL`): "
    "the size-based analyses (small vs large, the size trend) are skipped."
)


def _not_worse_text(row: pd.Series, cfg) -> str:
    """The non-inferiority verdict of one group, with the sign and size of the difference."""
    family = {
        "pretrained": "Holm over the pretrained groups",
        "scratch": "Holm over the scratch groups",
        "all": "Holm over all groups",
    }.get(row["family"], "Holm")
    if np.isnan(row["p_not_worse"]):
        return f"Non-inferiority (margin {row['margin']:g}): {row['note_performance']}: **{CANNOT_TELL}**."
    worded = {
        NOT_WORSE: f"small models are **not worse** than large by {row['margin']:g} or more",
        WORSE: f"small models are **worse** than large by more than {row['margin']:g}",
        CANNOT_TELL: f"**cannot tell** whether small models are within {row['margin']:g} of large",
    }[row["verdict_not_worse"]]
    return (
        f"Non-inferiority ({family}): {worded} (difference {row['diff_performance']:+.3g}, "
        f"{row['direction_performance']}; non-inferiority Holm {format_p(row['p_not_worse_holm'])})."
    )


def _pepr_svl_text(row: pd.Series, cfg) -> str:
    """PePR of small vs large in one group: difference, Holm p, direction."""
    headline = f"pepr_{cfg.resource}"
    if np.isnan(row[f"p_{headline}"]):
        return f"{cfg.resource_label} small - large: {row[f'note_{headline}']}."
    return (
        f"{cfg.resource_label} small - large {row[f'diff_{headline}']:+.3g} ({_ci(row[f'ci_low_{headline}'], row[f'ci_high_{headline}'])}, "
        f"Welch t Holm {format_p(row[f'p_holm_{headline}'])}): **{row[f'direction_{headline}']}**."
    )


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
                text += (
                    f"{perf['mean_diff']:+.3g} ({_ci(perf['ci_low'], perf['ci_high'])}), paired t Holm {format_p(perf['p_holm'])}, "
                    f"TOST (margin {perf['margin']:g}) Holm {format_p(perf['p_tost_holm'])}: **{perf['verdict']}**"
                )
            if len(resource):
                r = resource.iloc[0]
                test = (
                    r["note"]
                    if r["note"]
                    else f"CI [x{_num(r['ratio_ci_low'])}, x{_num(r['ratio_ci_high'])}], Holm {format_p(r['p_holm'])}"
                )
                text += f"; {cfg.resource} x{_num(r['ratio'])} ({test})"
            lines.append(text + ".")
    return lines


def _groups_text(rows: pd.DataFrame, cfg) -> str:
    return "; ".join(group_label(tuple(r[c] for c in cfg.group), cfg.group) for r in _rows(rows))


def uninformative_groups(tables: dict[str, pd.DataFrame], cfg) -> set[tuple]:
    """The group keys whose best performance lies within the interval of guessing (the
    decision table's ``uninformative``): they count toward no claim."""
    decision = tables["decision"]
    if "uninformative" not in decision.columns or decision.empty:
        return set()
    flagged = decision[decision["uninformative"].astype(str).str.lower() == "true"]
    return {tuple(k) for k in flagged[list(cfg.group)].itertuples(index=False)}


def size_claims(data: ReportData, tables: dict[str, pd.DataFrame]) -> list[str]:
    """The paper's size claims, each with its direction: the best PePR model is small; small
    models are not worse than large (non-inferiority, pretrained groups only when the table
    says which init each group used); PePR is higher for small models; diminishing returns."""
    cfg = data.cfg
    if not cfg.params_known:
        return [NO_PARAMS]
    lines = []
    top, svl, trend = tables["top_k"], tables["small_vs_large"], tables["size_trend"]
    guessing = uninformative_groups(tables, cfg)
    if guessing:
        lines.append(
            f"- Not counted toward any claim: {len(guessing)} group(s) where no model beats guessing "
            f"({'; '.join(group_label(k, cfg.group) for k in guessing)})."
        )
        svl = svl[[tuple(k) not in guessing for k in svl[list(cfg.group)].itertuples(index=False)]]
        trend = (
            trend[[tuple(k) not in guessing for k in trend[list(cfg.group)].itertuples(index=False)]]
            if len(trend)
            else trend
        )
    mixed = svl[(svl["n_small"] > 0) & (svl["n_large"] > 0)]
    decided = {}
    for row in _rows(mixed):
        key = tuple(row[c] for c in cfg.group)
        first = group_rows(top, key, cfg.group).query("variant == @cfg.resource_label and rank == 1")
        if len(first):
            decided[key] = bool(str(first.iloc[0]["small"]) == "True")
    not_small = [group_label(k, cfg.group) for k, small in decided.items() if not small]
    claim = f"*The best {cfg.resource_label} model is a small one*"
    if not decided:
        lines.append(f"- {claim}: **cannot tell** (no group has successful small and large models).")
    elif not_small:
        lines.append(
            f"- {claim}: **does not hold** in {len(not_small)} of {len(decided)} groups with small and large "
            f"models ({'; '.join(not_small)})."
        )
    else:
        lines.append(f"- {claim}: **holds** in all {len(decided)} groups with small and large models.")

    # Non-inferiority: the claim is about pretrained models when the table names the init.
    family = "pretrained" if "init" in cfg.group else "all"
    counted = mixed[mixed["family"] == family]
    others = mixed[mixed["family"] != family]
    scope = "pretrained groups" if family == "pretrained" else "groups (the table does not say which init each used)"
    claim = (
        f"*Small models are not worse than large ones* (non-inferiority: small - large > -{cfg.equivalence_margin:g} "
        f"{cfg.performance}, Welch t on model means, Holm over the {scope})"
    )
    if counted.empty:
        lines.append(f"- {claim}: **cannot tell** (no {scope.split(' (')[0]} with successful small and large models).")
    else:
        holds = counted[counted["verdict_not_worse"] == NOT_WORSE]
        worse = counted[counted["verdict_not_worse"] == WORSE]
        state = "**holds**" if len(holds) == len(counted) else "**does not hold**" if len(worse) else "**cannot tell**"
        parts = []
        for row in _rows(counted):
            key = tuple(row[c] for c in cfg.group)
            parts.append(
                f"{group_label(key, cfg.group)}: {row.verdict_not_worse}, small - large {row.diff_performance:+.3g} "
                f"({row.direction_performance}, difference Holm {format_p(row.p_holm_performance)})"
            )
        lines.append(
            f"- {claim}: {state}: not worse in {len(holds)}, worse in {len(worse)}, cannot tell in "
            f"{len(counted) - len(holds) - len(worse)} of {len(counted)} ({'; '.join(parts)})."
        )
        if "margin_not_worse_from" in counted.columns:
            flips = [
                f"{group_label(tuple(r[c] for c in cfg.group), cfg.group)}: "
                + ("no margin up to 1" if pd.isna(r.margin_not_worse_from) else f"{r.margin_not_worse_from:.3g}")
                for r in _rows(counted)
            ]
            lines.append(
                f"  Sensitivity (the margin from which each group's verdict is *not worse*; now "
                f"{cfg.equivalence_margin:g}, `--margin` / `report.equivalence_margin`): {'; '.join(flips)}."
            )
    if len(others):
        lines.append(
            f"  Not counted toward it ({', '.join(sorted(set(others['family'])))} groups): "
            + "; ".join(
                f"{group_label(tuple(r[c] for c in cfg.group), cfg.group)}: {r.verdict_not_worse}, "
                f"{r.diff_performance:+.3g}"
                for r in _rows(others)
            )
            + "."
        )

    headline = f"pepr_{cfg.resource}"
    claim = f"*{cfg.resource_label} is higher for small models* (Welch t on model means, Holm over groups)"
    tested = mixed[mixed[f"p_holm_{headline}"].notna()] if len(mixed) else mixed
    if tested.empty:
        lines.append(f"- {claim}: **cannot tell** (no group has enough small and large models for a test).")
    else:
        higher = tested[tested[f"direction_{headline}"] == "higher for small"]
        lower = tested[tested[f"direction_{headline}"] == "lower for small"]
        state = (
            "**holds**"
            if len(higher) == len(tested)
            else "**does not hold**"
            if len(lower)
            else (f"**holds** in {len(higher)} of {len(tested)} groups" if len(higher) else "**cannot tell**")
        )
        parts = [
            f"{group_label(tuple(r[c] for c in cfg.group), cfg.group)}: {getattr(r, f'diff_{headline}'):+.3g} "
            f"(Holm {format_p(getattr(r, f'p_holm_{headline}'))})"
            for r in _rows(tested)
        ]
        lines.append(f"- {claim}: {state} ({'; '.join(parts)}).")

    claim = (
        f"*Diminishing returns with scale* ({cfg.performance} levels off as parameters grow: a quadratic in "
        f"log10 parameters against a line per group, one-sided test of its curvature, Holm over groups)"
    )
    tested = trend[trend["p_holm_levels_off"].notna()] if len(trend) else trend
    if tested.empty:
        note = trend["note"].iloc[0] if len(trend) else "no group with models"
        lines.append(f"- {claim}: **cannot tell** ({note}).")
    else:
        yes = tested[tested["diminishing_returns"] == "yes"]
        no = tested[tested["diminishing_returns"] == "no"]
        state = (
            "**holds**"
            if len(yes) == len(tested)
            else (
                f"**holds** in {len(yes)} of {len(tested)} groups"
                if len(yes)
                else "**does not hold**"
                if len(no)
                else "**cannot tell**"
            )
        )
        parts = [
            f"{group_label(tuple(r[c] for c in cfg.group), cfg.group)}: {r.diminishing_returns}, rho({cfg.performance}) "
            f"{r.rho_performance:+.2f} ({r.trend_performance}, Holm {format_p(r.p_holm_performance)}), curvature "
            f"{r.curvature_performance:+.3g} (levels off: Holm {format_p(r.p_holm_levels_off)})"
            for r in _rows(tested)
        ]
        lines.append(f"- {claim}: {state} ({'; '.join(parts)}).")
    if len(trend) and trend["p_holm_pepr"].notna().any():
        parts = [
            f"{group_label(tuple(r[c] for c in cfg.group), cfg.group)}: rho {r.rho_pepr:+.2f} (Holm "
            f"{format_p(r.p_holm_pepr)}, {r.trend_pepr})"
            for r in _rows(trend[trend["p_holm_pepr"].notna()])
        ]
        lines.append(
            f"  Separately, {cfg.resource_label} vs parameters (Spearman, Holm; it falls with size almost by "
            f"construction, as the resource grows with size): {'; '.join(parts)}."
        )
    return lines


def claims(data: ReportData, tables: dict[str, pd.DataFrame]) -> list[str]:
    """Check the paper's headline claims against this sweep; each line says holds / does not
    hold / cannot tell, which way and why."""
    cfg, df = data.cfg, data.results
    lines = size_claims(data, tables)
    paired = tables["paired_init"]
    if "init" not in cfg.group:
        lines.append(
            "- *Pretraining improves performance*: **cannot tell** (the table has no `init` group column; "
            "`--rename` yours to `init`, with `scratch` for no pretraining)."
        )
        return lines
    pre = paired[
        (paired["treatment"] != "scratch") & (paired["baseline"] == "scratch") & (paired["metric"] == cfg.performance)
    ]
    if pre.empty:
        lines.append(
            "- *Pretraining improves performance*: **cannot tell** (the sweep has no pretrained/scratch pairs)."
        )
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
        lines.append(
            f"- *{treatment} improves {cfg.performance} over scratch* (paired t on model means, Holm over contexts): {state}."
        )
    lines.extend(_data_claim(df, cfg))
    lines.extend(_data_need_lines(tables.get("data_need", pd.DataFrame()), cfg))
    return lines


def _data_need_lines(table: pd.DataFrame, cfg) -> list[str]:
    """The data-need claim (tables/data_need.csv): pretrained on the smallest fraction is on
    par with scratch on the largest, paired by model."""
    claim = (
        f"*Pretrained on the least data is on par with scratch on the most* (paired by model, {cfg.performance}, "
        f"TOST margin {cfg.equivalence_margin:g}, Holm)"
    )
    if table.empty:
        return [
            f"- {claim}: **cannot tell** (the sweep lacks pretrained runs on a smaller fraction or scratch runs on a larger one)."
        ]
    parts = [
        f"{r['dataset']}: {r['pretrained']} on {fraction_label(str(r['pretrained_fraction']))} vs scratch on "
        f"{fraction_label(str(r['scratch_fraction']))}, {int(r['n_models'])} models, difference {r['mean_diff']:+.3g} "
        f"({_ci(r['ci_low'], r['ci_high'])}): **{r['verdict']}**"
        + (f" ({r['note']})" if str(r["note"]) not in ("", "nan") else "")
        for r in _rows(table)
    ]
    return [f"- {claim}: {'; '.join(parts)}."]


def _data_claim(df: pd.DataFrame, cfg) -> list[str]:
    """Does pretraining lose less performance than scratch when the data shrink? Per dataset
    and smaller fraction, one value per model: its drop (full - smaller, seed means) under the
    pretrained init minus its drop from scratch; paired t, Holm over the contexts."""
    ok = df[df["ok"]]
    if "fraction" not in cfg.group or "init" not in cfg.group:
        return ["- *Pretraining reduces the data needed*: **cannot tell** (needs `init` and `fraction` group columns)."]
    context = [c for c in cfg.group if c not in ("init", "fraction")]
    inits = set(ok["init"])
    fractions = sorted(set(ok["fraction_value"]))
    if "scratch" not in inits or len(inits) < 2 or len(fractions) < 2:
        return [
            "- *Pretraining reduces the data needed*: **cannot tell** (needs scratch and a pretrained init at two data fractions)."
        ]
    means = model_means(df, cfg).merge(df[["fraction", "fraction_value"]].drop_duplicates(), on="fraction")
    full = fractions[-1]
    lines = []
    for pretrained in sorted(inits - {"scratch"}):
        drops = {}
        for init in ("scratch", pretrained):
            runs = means[means["init"] == init]
            big = runs[runs["fraction_value"] == full]
            small = runs[runs["fraction_value"] < full]
            merged = small.merge(big, on=[*context, "model"], suffixes=("", "_full"))
            merged["drop"] = merged[f"{cfg.performance}_full"] - merged[cfg.performance]
            drops[init] = merged.set_index([*context, "fraction", "model"])["drop"]
        joined = pd.concat(drops, axis=1, join="inner").dropna()
        results = []
        for key, group in joined.groupby(level=[*context, "fraction"]):
            key = key if isinstance(key, tuple) else (key,)
            effect = paired_effect(group[pretrained].to_numpy(), group["scratch"].to_numpy(), cfg.alpha, cfg.min_pairs)
            results.append((" / ".join([*map(str, key[:-1]), fraction_label(key[-1])]), effect))
        adjusted = holm(np.array([e.p for _, e in results])) if results else np.array([])
        claim = f"*{pretrained} loses less {cfg.performance} than scratch with less data*"
        if not results or np.isnan(adjusted).all():
            note = results[0][1].note if results else "no model ran under both inits at both fractions"
            lines.append(f"- {claim}: **cannot tell** ({note}).")
            continue
        parts = []
        for (context, effect), p in zip(results, adjusted):
            holds = verdict(p, np.nan, cfg.alpha) == DIFFERENT and effect.estimate < 0
            parts.append(
                f"{context}: drop difference {effect.estimate:+.3g} ({_ci(effect.ci_low, effect.ci_high)}, "
                f"Holm {format_p(p)}) -> {'holds' if holds else ('cannot tell' if np.isnan(p) or p >= cfg.alpha else 'does not hold')}"
            )
        lines.append(f"- {claim}: " + "; ".join(parts) + ".")
    return lines


def _interval(low: object, high: object) -> str:
    if pd.isna(low) or pd.isna(high):
        return "unknown"
    return f"[{_num(float(low))}, {_num(float(high))}]"


def _contenders_cell(row) -> str:
    names = "" if pd.isna(row.contenders) else str(row.contenders)
    if names == "unknown" or pd.isna(row.n_contenders):
        return "unknown"
    if not names:
        return "none"
    listed = names.split("; ")
    shown = ", ".join(listed[:5]) + (f" and {len(listed) - 5} more" if len(listed) > 5 else "")
    return f"{len(listed)}: {shown}"


def decision_lines(tables: dict[str, pd.DataFrame], data: ReportData) -> list[str]:
    """The decision table as Markdown: per group, the recommended model with its performance,
    its (1 - alpha) interval and its contenders (models not distinguishable from the best
    PePR), the best-performance model and the recommended one's share of its performance and
    resource; then how the intervals were obtained."""
    cfg = data.cfg
    decision = tables["decision"]
    if decision.empty:
        return ["No group has a successful run: there is nothing to recommend."]
    level = f"{1 - cfg.alpha:.0%}"
    header = [
        "group",
        f"recommended (by {cfg.resource_label})",
        cfg.performance,
        f"{level} interval",
        f"{cfg.resource_label} {level} interval",
        "contenders",
        cfg.resource,
        f"best-{cfg.performance} model",
        f"its {cfg.performance}",
        f"its {cfg.resource}",
        "in short",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in _rows(decision):
        key = tuple(row[c] for c in cfg.group)
        none = str(getattr(row, "uninformative", False)).lower() == "true"
        cells = [
            group_label(key, cfg.group),
            "none: no model beats guessing" if none else f"**{row.recommended_model}**",
            _num(row.recommended_performance),
            _interval(row.recommended_performance_ci_low, row.recommended_performance_ci_high),
            _interval(row.recommended_pepr_ci_low, row.recommended_pepr_ci_high),
            _contenders_cell(row),
            _num(row.recommended_resource),
            row.best_model,
            _num(row.best_performance),
            _num(row.best_resource),
            (
                f"{_pct(row.performance_share)} of the best {cfg.performance} at {_pct(row.resource_share)} of its {cfg.resource}"
                if row.recommended_model != row.best_model
                else "the best-performance model itself"
            ),
        ]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    methods = sorted({str(m) for m in decision["interval_method"].dropna()})
    lines += [
        "",
        f"*Intervals ({level}):* {'; '.join(methods)}. Contenders are the models whose {cfg.resource_label} "
        "cannot be told apart from the best one's (paired bootstrap over the same test images where every run "
        "saved its test predictions, else Welch's t over seeds, else a binomial interval from the test-set size); "
        "the recommended model is the cheapest of them.",
    ]
    if any(m.startswith("unknown") for m in methods):
        lines.append(
            "Where the uncertainty is unknown (one run per model, no test predictions), give the test-set "
            "size (`pepr report --n-test COL`) or run several seeds."
        )
    return lines


def footprint_line(tables: dict[str, pd.DataFrame]) -> str:
    """The sweep's own cost in one sentence (total kWh, kg CO2, device-hours; measured or estimated)."""
    row = tables["footprint"].iloc[0]
    if all(pd.isna(row[c]) for c in ("energy_kwh", "co2_kg", "device_hours")):
        return (
            f"**This sweep's footprint:** not known from this table ({int(row['n_runs'])} runs; it has none of the "
            "columns energy_kwh, co2_kg, train_time_s: `--rename` yours to them to get the totals)."
        )
    parts = []
    for column, unit in [("energy_kwh", "kWh"), ("co2_kg", "kg CO2"), ("device_hours", "device-hours")]:
        value = row[column]
        parts.append(f"{_num(float(value), 3)} {unit}" if pd.notna(value) else f"{unit}: not recorded")
    pre = float(row["pretraining_energy_kwh"]) if pd.notna(row["pretraining_energy_kwh"]) else 0.0
    pretraining = f", pretraining included ({_num(pre)} kWh)" if pre > 0 else ""
    return (
        f"**This sweep's footprint:** {', '.join(parts)} over {int(row['n_runs'])} runs{pretraining}; "
        f"energy {row['measurement']} ({row['energy_method']})."
    )


#: A group's range is dominated when at least this share of its runs get R below DOMINATED_R.
DOMINATED_SHARE, DOMINATED_R = 0.8, 0.05


def dominated_line(data: ReportData) -> str:
    """One sentence naming the groups where one run's headline resource dominates the range
    (most runs get R near 0, so PePR there ranks almost by performance alone); "" when none."""
    cfg, df = data.cfg, data.results
    norm = f"{cfg.resource}_norm"
    if norm not in df.columns:
        return ""
    ok = df[df["ok"]]
    found = []
    for key, group in ok.groupby(list(cfg.group), sort=False):
        values = pd.to_numeric(group[norm], errors="coerce").dropna()
        if len(values) >= 5 and (values < DOMINATED_R).mean() >= DOMINATED_SHARE:
            top = group.loc[pd.to_numeric(group[cfg.resource], errors="coerce").idxmax()]
            key = key if isinstance(key, tuple) else (key,)
            found.append(
                f"{group_label(key, cfg.group)} ({int((values < DOMINATED_R).sum())} of {len(values)} runs have "
                f"R < {DOMINATED_R:g}; the largest {cfg.resource} is {top['model']}'s, {_num(top[cfg.resource])})"
            )
    if not found:
        return ""
    return (
        f"**Dominated range:** in {len(found)} group(s) one run's {cfg.resource} dominates the range, so PePR there "
        f"ranks almost by performance alone: {'; '.join(found)}."
    )


def checks_line(tables: dict[str, pd.DataFrame]) -> str:
    """How many runs the measurement checks flagged, by check and severity, and what the report
    did with them: kept (a hint to ``--exclude-flagged``) or left out, with the verdicts that
    changed (tables measurement_checks, excluded_runs, verdict_changes)."""
    checks = tables["measurement_checks"]
    if checks.empty:
        return (
            "**Measurement checks:** no run flagged (identical values across groups, duplicated runs, implied power, "
            "non-positive values, contended runs, mixed devices)."
        )
    counts = checks["check"].value_counts()
    text = ", ".join(f"{name} {int(counts[name])}" for name in sorted(counts.index))
    severity = checks["severity"] if "severity" in checks.columns else pd.Series("harmful", index=checks.index)
    harmful = checks[severity == "harmful"]
    runs = len(harmful.drop_duplicates(subset=[c for c in harmful.columns if c not in ("check", "severity", "detail")]))
    line = (
        f"**Measurement checks:** {len(checks)} flag(s) ({text}; {len(harmful)} harmful, on {runs} run(s)); "
        "see `tables/measurement_checks.csv`."
    )
    excluded = tables.get("excluded_runs", pd.DataFrame())
    if excluded.empty:
        return line + (
            " Flagged runs are kept in every score; `--exclude-flagged` (`report.exclude_flagged`) scores "
            "without the harmful ones."
            if runs
            else " Every flag is harmless: all runs are scored."
        )
    changes = tables.get("verdict_changes", pd.DataFrame())
    shown = "; ".join(
        f"{r['table']} at {r['where']}: {r['with_flagged']} -> {r['without_flagged']}"
        for _, r in changes.head(10).iterrows()
    )
    more = f" and {len(changes) - 10} more" if len(changes) > 10 else ""
    return (
        line
        + f" **{len(excluded)} run(s) flagged harmful were left out** of every score (`tables/excluded_runs.csv`); "
        + (
            f"verdicts that changed: {shown}{more} (`tables/verdict_changes.csv`)."
            if len(changes)
            else "no recommendation or verdict changed."
        )
    )


def summary_markdown(data: ReportData, tables: dict[str, pd.DataFrame]) -> str:
    """The whole ``summary.md`` text, from the loaded results and the written tables: the
    decision table and the sweep's footprint first, then the evidence."""
    cfg, df = data.cfg, data.results
    out = ["# pepr sweep: findings", ""]
    out += [
        f"## Decision: which model per group (by {cfg.resource_label}, `{cfg.resource}`)",
        "",
        *decision_lines(tables, data),
        "",
    ]
    out += [footprint_line(tables), "", checks_line(tables), ""]
    dominated = dominated_line(data)
    if dominated:
        out += [dominated, ""]
    keys = groups(df, cfg.group)
    levels = "; ".join(
        f"{c}: {', '.join(fraction_label(v) if c == 'fraction' else str(v) for v in dict.fromkeys(k[i] for k in keys))}"
        for i, c in enumerate(cfg.group)
    )
    size = (
        "Small models: at most the median parameter count of their group's models. "
        if cfg.params_known
        else "The table has no parameter counts: the size-based analyses are skipped. "
    )
    stopped = int((df["status"] == "stopped").sum())  # an adaptive sweep's: neither successful nor failed
    runs_text = f"{int(df['ok'].sum())} successful, {int((~df['ok']).sum()) - stopped} failed" + (
        f", {stopped} stopped at a rung by the adaptive sweep" if stopped else ""
    )
    out.append(
        f"{len(df)} runs ({runs_text}) in {len(keys)} group(s) "
        f"({levels}), {df['model'].nunique()} models and {df['seed'].nunique()} seed(s). Performance: `{cfg.performance}`; "
        f"headline variant {cfg.resource_label} (`{cfg.resource}`). {size}Comparisons use one seed mean per model, p-values are Holm-adjusted over "
        f"groups (the {1 - cfg.alpha:.0%} confidence intervals are per group, not adjusted: read the p-value for "
        f'significance), and "on par" means the TOST equivalence test with margin {cfg.equivalence_margin:g} rejects a larger '
        "difference. PePR is compared only within a group (it is normalised there); across init strategies and data fractions the summary "
        "compares raw performance and resources."
    )
    measurement = f"**Measurement.** {energy_methods(df)} Energy and CO2 figures are only as good as this method."
    note = co2_note(df)
    out += ["", measurement + (f" {note}" if note else ""), ""]
    out += ["## Best model per group", "", *best_per_group(data, tables), ""]
    out += ["## Small vs large models", "", *small_vs_large_lines(data, tables), ""]
    for title, factor, label in [
        ("Pretrained vs scratch", "init", str),
        ("Data fractions", "fraction", fraction_label),
    ]:
        lines = (
            paired_lines(tables[f"paired_{factor}"], cfg, label)
            if factor in cfg.group
            else [
                f"- the table has no `{factor}` group column: nothing to compare (`--rename` yours to `{factor}` and `--by {factor}`)."
            ]
        )
        out += [f"## {title}", "", *lines, ""]
    out += ["## Seeds and statistical separability", ""]
    ranks = tables["rank_ci"]
    if ranks.empty:
        out.append("Every model ran with a single seed: no confidence intervals, and the top-k order is not tested.")
    else:
        n = len(cfg.group)
        for key_variant, group in ranks.groupby([*cfg.group, "variant"], sort=False):
            key, variant = tuple(key_variant[:n]), key_variant[n]
            if variant != cfg.resource_label:
                continue
            separable = group["top_k_separable"].iloc[0]
            top = group.head(cfg.top_k)
            ranks_text = ", ".join(f"{r.model} {r.rank} [{r.rank_ci_low}-{r.rank_ci_high}]" for r in top.itertuples())
            verdict_text = {
                "yes": "is statistically separable from the rest",
                "no": "is **not** statistically separable from the rest",
            }.get(separable, "covers every model (nothing to separate)")
            out.append(
                f"- {group_label(key, cfg.group)}: {variant} rank with bootstrap {1 - cfg.alpha:.0%} CI: {ranks_text}; the top-{cfg.top_k} {verdict_text}."
            )
    out.append("")
    peaks = tables["peaks"]
    out += ["## When to stop training", ""]
    if peaks.empty:
        out.append("No epoch histories: no epoch curves.")
    else:
        for key in groups(df[df["ok"]], cfg.group):
            group = group_rows(peaks, key, cfg.group)
            if group.empty:
                continue
            saved, total = group["resource_saved"].sum(), group["resource_at_last"].sum()
            early = int((group["peak_epoch"] < group["last_epoch"]).sum())
            out.append(
                f"- {group_label(key, cfg.group)}: {early} of {len(group)} runs peak in epoch PePR before their last epoch "
                f"(median peak epoch {group['peak_epoch'].median():g} of {group['last_epoch'].median():g}); stopping each at its peak "
                f"would save {_num(saved)} {cfg.history_resource} ({(saved / total if total else 0):.0%}) at a mean "
                f"{cfg.history_performance} cost of {group['performance_cost'].mean():+.3f}."
            )
    out.append("")
    out += ["## The paper's claims in this sweep", "", *claims(data, tables), ""]
    out += ["## Failed runs", ""]
    out.append(md_table(tables["failed"]))
    out += ["## Missing groups and runs", ""]
    missing = tables["missing"]
    if data.expected is None:
        axes = [*data.cfg.group, *(c for c in ("model", "seed") if c not in data.synthetic)]
        axes = [data.names.get(c, c) for c in axes if c not in data.synthetic]
        out.append(f"The planned grid was not given: expected = every {' x '.join(axes)} seen in the results.\n")
    out.append(
        md_table(missing)
        if not missing.empty
        else "Nothing missing: every planned group has successful runs of every model.\n"
    )
    return "\n".join(out).rstrip() + "\n"
