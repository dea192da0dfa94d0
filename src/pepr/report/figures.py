"""The report's figures, drawn with seaborn on matplotlib ``Figure`` objects (no pyplot state,
no display needed: the Agg canvas renders PNG, PDF and SVG).

Every figure that shows energy or CO2 prints how it was obtained (``energy_method``) under the
plot, and every figure that colours models says where the colouring comes from.
"""

from __future__ import annotations

import itertools
import math
import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogLocator, MaxNLocator

from pepr.report.config import ReportConfig
from pepr.report.data import CELL, cells, co2_note, energy_methods, fraction_label, report_variants
from pepr.report.stats import epoch_curves, format_p, pareto_front
from pepr.report.tables import comparisons, model_means, model_pairs

#: Markers and line styles given to the models of one family in turn (colour = family), so two
#: models of a family differ in marker (scatter) and line style (curves) as well as in shade.
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "p", "*"]
LINESTYLES = ["-", "--", ":", "-.", (0, (5, 1, 1, 1)), (0, (1, 2))]
PANEL = (4.2, 3.4)


@dataclass(frozen=True)
class ModelStyle:
    """How one model is drawn: colour (family hue, shaded per model), marker, line style, and
    whether its marker is filled (filled: efficient in the paper's table or not in it)."""

    colour: tuple
    marker: str
    linestyle: object
    filled: bool
    label: str


def _panels(n: int, ncols: int | None = None, size: tuple[float, float] = PANEL) -> tuple[Figure, list]:
    ncols = ncols or min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def _panel_title(key: tuple, extra: str = "") -> str:
    """A cell's panel title on two short lines (dataset; init / fraction), wrapped to the
    panel's width so that neighbouring titles never run into each other at 3 columns."""
    dataset, init, fraction = key
    lines = textwrap.wrap(str(dataset), 34) or [""]
    lines.append(f"{init} / {fraction_label(fraction)}")
    if extra:
        lines += textwrap.wrap(extra, 44)
    return "\n".join(lines)


def _cell_frame(df: pd.DataFrame, key: tuple) -> pd.DataFrame:
    return df[(df[CELL] == pd.Series(key, index=CELL)).all(axis=1)]


def _footnote(fig: Figure, lines: Sequence[str]) -> None:
    text = "\n".join(textwrap.fill(line, 160) for line in lines if line)
    if text:
        fig.supxlabel(text, fontsize=7, ha="left", x=0.01)


def _shade(colour: tuple, k: int, n: int) -> tuple:
    """The k-th of n shades of ``colour``: from darker to lighter, the family hue kept."""
    base = np.asarray(colour[:3], dtype=float)
    if n <= 1:
        return tuple(base)
    t = -0.35 + 0.7 * k / (n - 1)
    return tuple(base * (1 + t) if t < 0 else base + (1 - base) * t)


def model_styles(df: pd.DataFrame) -> dict[str, ModelStyle]:
    """A style per model: colour by family (tab10, husl beyond 10 families), and within a
    family, models (by parameter count) get their own shade, marker and line style."""
    models = df.dropna(subset=["model"]).groupby("model").agg(family=("family", "first"), params=("params", "median"),
                                                             efficiency=("efficiency", "first"))
    families = sorted(set(models["family"]))
    # Without the paper's model table every model is "not in paper table": saying so per model is noise.
    any_known = bool((models["efficiency"] != "not in paper table").any())
    colours = dict(zip(families, sns.color_palette("tab10" if len(families) <= 10 else "husl", len(families))))
    styles = {}
    for family in families:
        members = models[models["family"] == family].sort_values(["params", "model"], na_position="last")
        for k, (model, row) in enumerate(members.iterrows()):
            label = f"{model} (not in paper table)" if any_known and row["efficiency"] == "not in paper table" else model
            styles[model] = ModelStyle(
                colour=_shade(colours[family], k, len(members)), marker=MARKERS[k % len(MARKERS)],
                linestyle=LINESTYLES[k % len(LINESTYLES)], filled=row["efficiency"] != "not efficient (paper)", label=label,
            )
    return styles


def _styling_note(df: pd.DataFrame) -> str:
    return ("Colour: model family (from the timm name); models of one family differ in shade, marker and line style. "
            "Hollow markers: not efficient in the paper's model table.")


def _scatter_models(ax, frame: pd.DataFrame, x: str, y: str, styles: dict[str, ModelStyle]) -> None:
    for model, points in frame.groupby("model", sort=True):
        style = styles[model]
        ax.scatter(points[x], points[y], s=40, marker=style.marker, alpha=0.9, linewidths=1.0,
                   facecolors=style.colour if style.filled else "white", edgecolors=style.colour, label=style.label)


def _model_legend(fig: Figure, styles: dict[str, ModelStyle], shown: set[str], lines: bool = False) -> None:
    """One figure-level legend of the models drawn (grouped by family), outside the panels."""
    handles = [
        Line2D([], [], color=s.colour, marker=None if lines else s.marker, linestyle=s.linestyle if lines else "",
               markerfacecolor=s.colour if s.filled else "white", markeredgecolor=s.colour, label=s.label)
        for model, s in styles.items() if model in shown
    ]
    if handles:
        fig.legend(handles=handles, loc="outside right upper", fontsize=7, frameon=False,
                   ncols=max(1, math.ceil(len(handles) / 40)))


def save(fig: Figure, stem: str | os.PathLike, formats: Sequence[str]) -> list[Path]:
    """Write ``fig`` as ``stem.<format>`` for each format; returns the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        # through a temp file: a full disk leaves the previous figure, not a truncated one
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            fig.savefig(tmp, dpi=110, bbox_inches="tight", format=fmt)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        paths.append(path)
    return paths


def pepr_profile(df: pd.DataFrame, cfg: ReportConfig) -> Figure:
    """Figure 1: contours of P / (1 + R) over (R, P), each cell's runs as points on them."""
    keys = cells(df[df["ok"]])
    fig, axes = _panels(max(len(keys), 1))
    grid_r, grid_p = np.meshgrid(np.linspace(0, 1, 201), np.linspace(0, 1, 201))
    styles = model_styles(df)
    ok = df[df["ok"]]
    for ax, key in zip(axes, keys):
        contours = ax.contourf(grid_r, grid_p, grid_p / (1 + grid_r), levels=np.linspace(0, 1, 11), cmap="YlGn", alpha=0.7)
        ax.contour(grid_r, grid_p, grid_p / (1 + grid_r), levels=np.linspace(0.1, 0.9, 9), colors="grey", linewidths=0.4)
        frame = _cell_frame(ok, key)
        _scatter_models(ax, frame, f"{cfg.resource}_norm", cfg.performance, styles)
        best = frame.loc[frame[f"pepr_{cfg.resource}"].idxmax()]
        ax.annotate(best["model"], (best[f"{cfg.resource}_norm"], best[cfg.performance]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
        ax.set(xlim=(-0.02, 1.02), ylim=(max(0.0, frame[cfg.performance].min() - 0.1), 1.0),
               xlabel=f"R = normalised {cfg.resource}", ylabel=f"P = {cfg.performance}", title=_panel_title(key))
        ax.title.set_fontsize(9)
    if keys:
        # A short bar when the panels span several rows: it need not run the full height.
        fig.colorbar(contours, ax=axes, label=f"{cfg.resource_label} = P / (1 + R)", shrink=0.8 if len(keys) <= 3 else 0.35)
    _model_legend(fig, styles, set(ok["model"]))
    _footnote(fig, [energy_methods(df), _styling_note(df)])
    return fig


def _params_panels(df: pd.DataFrame, cfg: ReportConfig, columns: list[tuple[str, str]]) -> Figure:
    """Panels of ``columns`` vs log10 parameters: one panel per cell and column; with several
    columns, one figure row per cell (so 12 cells stay 12 readable rows, not 12 columns)."""
    keys = cells(df[df["ok"]])
    ok = df[df["ok"]].assign(log10_params=lambda d: np.log10(d["params"]))
    ncols = len(columns) if len(columns) > 1 else None
    fig, axes = _panels(max(len(keys) * len(columns), 1), ncols=ncols)
    styles = model_styles(df)
    low = ok["log10_params"].min() - 0.1
    for index, (key, (column, label)) in enumerate(itertools.product(keys, columns)):
        ax = axes[index]
        frame = _cell_frame(ok, key).dropna(subset=[column])
        # Each cell's own split: a model's parameter count depends on the cell (head, channels).
        split = math.log10(float(_cell_frame(df, key)["median_params"].iloc[0]))
        ax.axvspan(low, split, color="0.9", zorder=0)
        ax.axvline(split, color="0.5", linestyle="--", linewidth=0.8)
        ax.text(split, 1.0, " median", transform=ax.get_xaxis_transform(), fontsize=7, va="top", color="0.4")
        _scatter_models(ax, frame, "log10_params", column, styles)
        ax.set(xlabel="log10(trainable parameters)", ylabel=label, title=_panel_title(key))
        ax.set_xlim(left=low)
        ax.title.set_fontsize(9)
    _model_legend(fig, styles, set(ok["model"]))
    _footnote(fig, ["Shaded: small models (parameters <= the median of the cell's models; dashed line).",
                    co2_note(df) if len(columns) > 1 else "", energy_methods(df), _styling_note(df)])
    return fig


def performance_vs_params(df: pd.DataFrame, cfg: ReportConfig) -> Figure:
    """Figure 2: test performance vs log10 parameters per cell, small models shaded."""
    return _params_panels(df, cfg, [(cfg.performance, cfg.performance)])


def pepr_vs_params(df: pd.DataFrame, cfg: ReportConfig) -> Figure:
    """Figure 3: every PePR variant shown (columns) vs log10 parameters, one row per cell."""
    return _params_panels(df, cfg, [(v.column, v.label) for v in report_variants(df)])


def paired_comparison(table: pd.DataFrame, df: pd.DataFrame, cfg: ReportConfig, factor: str) -> Figure:
    """Figures 4 and 5: each level of ``factor`` against its baseline, per context, on raw
    performance (difference) and the raw headline resource (ratio): one point per model (its
    seed means), the mean with its t CI, and the Holm-adjusted p / TOST verdict of
    ``table`` (the paired table). PePR is not shown: it is normalised within each cell.
    """
    pairs_list = comparisons(df, factor)
    metrics = [(cfg.performance, f"{cfg.performance}: treatment - baseline", "diff"),
               (cfg.resource, f"{cfg.resource}: treatment / baseline", "ratio")]
    context = [c for c in CELL if c != factor]
    n_contexts = df[context].drop_duplicates().shape[0]
    # Panels widen with the contexts on their x axis, so the context labels never overlap.
    fig, axes = _panels(max(len(pairs_list), 1) * len(metrics), ncols=len(metrics), size=(max(5.2, 1.5 * n_contexts), 3.8))
    context = [c for c in CELL if c != factor]
    label = fraction_label if factor == "fraction" else str
    styles = model_styles(df)
    if not pairs_list:
        only = sorted(set(df[factor]))
        for ax in axes:
            ax.axis("off")
        axes[0].text(0, 0.5, f"Only one {factor} level in this sweep ({', '.join(only)}): nothing to compare.",
                     fontsize=10, transform=axes[0].transAxes)
    shown = set()
    for row, (treatment, baseline) in enumerate(pairs_list):
        pairs = model_pairs(df, cfg, factor, treatment, baseline)
        contexts = sorted(set(pairs[context].astype(str).agg(" / ".join, axis=1))) if len(pairs) else []
        pairs = pairs.assign(context=pairs[context].astype(str).agg(" / ".join, axis=1)) if len(pairs) else pairs
        for col, (metric, ylabel, kind) in enumerate(metrics):
            ax = axes[row * len(metrics) + col]
            rows = table[(table["treatment"] == treatment) & (table["baseline"] == baseline) & (table["metric"] == metric)]
            for x, name in enumerate(contexts):
                group = pairs[pairs["context"] == name]
                values = group[f"{metric}_a"] - group[f"{metric}_b"] if kind == "diff" else group[f"{metric}_a"] / group[f"{metric}_b"]
                jitter = np.linspace(-0.15, 0.15, len(group)) if len(group) > 1 else np.zeros(len(group))
                for offset, (model, value) in zip(jitter, zip(group["model"], values)):
                    style = styles[model]
                    shown.add(model)
                    ax.scatter(x + offset, value, marker=style.marker, s=30, facecolors=style.colour if style.filled else "white",
                               edgecolors=style.colour, linewidths=1.0, zorder=3)
                stat = rows[rows["context"] == name]
                if len(stat):
                    r = stat.iloc[0]
                    if kind == "diff":
                        centre, low, high = r["mean_diff"], r["ci_low"], r["ci_high"]
                        shown_p = f"TOST {format_p(r['p_tost_holm'])}" if r["verdict"] == "equivalent" else format_p(r["p_holm"])
                        text = f"{r['verdict']}\n{shown_p}"
                    else:
                        centre, low, high = r["ratio"], r["ratio_ci_low"], r["ratio_ci_high"]
                        text = f"x{r['ratio']:.3g}\n{format_p(r['p_holm'])}"
                    if not np.isnan(low):
                        ax.errorbar(x + 0.3, centre, yerr=[[centre - low], [high - centre]], fmt="_", color="black", capsize=3, zorder=4)
                    else:
                        ax.plot(x + 0.3, centre, "_", color="black", markersize=10, zorder=4)
                    ax.annotate(text, (x, 1.0), xycoords=("data", "axes fraction"), fontsize=6, ha="center", va="top")
            if kind == "diff":
                ax.axhline(0, color="0.5", linewidth=0.8)
                ax.axhspan(-cfg.equivalence_margin, cfg.equivalence_margin, color="tab:green", alpha=0.12, zorder=0)
            else:
                ax.axhline(1, color="0.5", linewidth=0.8)
                ratios = (pairs[f"{metric}_a"] / pairs[f"{metric}_b"]).to_numpy() if len(pairs) else np.array([1.0])
                ratios = ratios[np.isfinite(ratios) & (ratios > 0)]
                if len(ratios) and ratios.max() / ratios.min() > 10:  # log only when ratios span decades
                    ax.set_yscale("log")
            ax.set_xticks(range(len(contexts)), ["\n".join(textwrap.fill(part, 16) for part in c.split(" / ")) for c in contexts],
                          fontsize=7)
            ax.set_xlim(-0.6, max(len(contexts), 1) - 0.4)
            ax.margins(y=0.25)
            ax.set(ylabel=ylabel, title=f"{label(treatment)} vs {label(baseline)}")
            ax.title.set_fontsize(9)
    _model_legend(fig, styles, shown)
    _footnote(fig, [
        f"One point per model: its seed mean under both levels, within the same {' and '.join(context)} (the x axis); "
        "successful under both. Bar: mean difference with its t CI; text: verdict of the paired t test and TOST "
        f"(green band: equivalence margin +/-{cfg.equivalence_margin:g}), every p Holm-adjusted over the contexts; "
        "resources: geometric-mean ratio with its CI, tested on the log scale. PePR is not compared across levels: it is normalised within each cell.",
        energy_methods(df), _styling_note(df),
    ])
    return fig


def performance_vs_resource(df: pd.DataFrame, cfg: ReportConfig) -> Figure:
    """Figure 6: performance vs the headline resource per cell, Pareto front and PePR iso-lines."""
    keys = cells(df[df["ok"]])
    fig, axes = _panels(max(len(keys), 1))
    styles = model_styles(df)
    ok = df[df["ok"]]
    for ax, key in zip(axes, keys):
        frame = _cell_frame(ok, key)
        r, p = frame[cfg.resource].to_numpy(), frame[cfg.performance].to_numpy()
        low, high = r.min(), r.max()
        span = high - low if high > low else 1.0
        xs = np.linspace(low, high if high > low else low + 1e-12, 100)
        bottom = max(0.0, p.min() - 0.1)
        for level in np.round(np.linspace(0.1, 1.0, 10), 2):
            ys = level * (1 + (xs - low) / span)
            ax.plot(xs, ys, color="0.8", linewidth=0.6, zorder=0)
            visible = np.nonzero((ys >= bottom) & (ys <= 1.0))[0]
            if len(visible):  # label each iso-line where it leaves the plotted box
                ax.text(xs[visible[-1]], ys[visible[-1]], f"{level:g}", fontsize=6, color="0.55", clip_on=True)
        front = pareto_front(p, r)
        order = np.argsort(r[front])
        ax.step(r[front][order], p[front][order], where="post", color="tab:red", linewidth=1.2)
        _scatter_models(ax, frame, cfg.resource, cfg.performance, styles)
        for _, run in frame[front].drop_duplicates("model").iterrows():
            ax.annotate(run["model"], (run[cfg.resource], run[cfg.performance]), fontsize=6, xytext=(3, -8), textcoords="offset points")
        ax.set(xlabel=cfg.resource, ylabel=cfg.performance, title=_panel_title(key), ylim=(bottom, 1.01))
        ax.title.set_fontsize(9)
    _model_legend(fig, styles, set(ok["model"]))
    _footnote(fig, [f"Grey lines: {cfg.resource_label} iso-lines P / (1 + R) = const (value printed at the end), "
                    "R min-max normalised within the cell. Red: Pareto front (no run has higher performance at lower cost).",
                    energy_methods(df), _styling_note(df)])
    return fig


def epoch_pepr(history: pd.DataFrame, peaks: pd.DataFrame, df: pd.DataFrame, cfg: ReportConfig) -> Figure:
    """Figure 7: PePR per epoch (scored over all runs and epochs of the cell), peaks marked."""
    keys = cells(df[df["ok"]])
    fig, axes = _panels(max(len(keys), 1))
    styles = model_styles(df)
    curves = epoch_curves(history, cfg.history_performance, cfg.history_resource, CELL) if len(history) else history
    for ax, key in zip(axes, keys):
        frame = _cell_frame(curves, key)
        cell_peaks = _cell_frame(peaks, key)
        for (model, seed), run in frame.sort_values("epoch").groupby(["model", "seed"]):
            style = styles[model]
            ax.plot(run["epoch"], run["epoch_pepr"], color=style.colour, linestyle=style.linestyle, linewidth=0.9, alpha=0.85)
        ax.scatter(cell_peaks["peak_epoch"], cell_peaks["peak_pepr"], marker="*", s=60, color="black", zorder=3)
        saved = cell_peaks["resource_saved"].sum()
        total = cell_peaks["resource_at_last"].sum()
        share = saved / total if total > 0 else 0.0
        cost = cell_peaks["performance_cost"].mean() if len(cell_peaks) else 0.0
        ax.set(xlabel="epoch", ylabel=f"epoch PePR ({cfg.history_resource})",
               title=_panel_title(key, f"stopping at peaks saves {saved:.3g} ({share:.0%}), mean cost {cost:+.3f}"))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.title.set_fontsize(8)
    shown = set(curves["model"]) if len(curves) else set()
    _model_legend(fig, styles, shown, lines=True)
    _footnote(fig, [
        f"At each epoch: P = {cfg.history_performance} at that epoch, R = {cfg.history_resource} up to it, "
        "min-max normalised over all runs and epochs of the cell; black star: each run's peak (diminishing returns beyond).",
        energy_methods(df), _styling_note(df),
    ])
    return fig


def model_space(df: pd.DataFrame, cfg: ReportConfig) -> Figure:
    """Figure 8 (the paper's model-space figure): training energy vs trainable parameters, both
    on log axes, one point per model (seed mean) and cell, small models shaded per cell."""
    keys = cells(df[df["ok"]])
    fig, axes = _panels(max(len(keys), 1))
    styles = model_styles(df)
    means = model_means(df, cfg)
    for ax, key in zip(axes, keys):
        frame = _cell_frame(means, key)
        frame = frame[(frame["params"] > 0) & (frame["energy_kwh"] > 0)] if "energy_kwh" in frame else frame.iloc[:0]
        _scatter_models(ax, frame, "params", "energy_kwh", styles)
        median = float(_cell_frame(df, key)["median_params"].iloc[0])
        ax.axvline(median, color="0.5", linestyle="--", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10))
        ax.set(xlabel="trainable parameters (log)", ylabel="training energy, kWh (log)", title=_panel_title(key))
        ax.title.set_fontsize(9)
    _model_legend(fig, styles, set(means["model"]))
    _footnote(fig, ["One point per model: its seed mean in the cell. Dashed: the cell's median parameter count (small models left of it).",
                    energy_methods(df), _styling_note(df)])
    return fig
