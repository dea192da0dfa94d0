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
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pepr.report.config import ReportConfig
from pepr.report.data import CELL, Variant, cell_label, cells, energy_methods, fraction_label, variants
from pepr.report.stats import describe, epoch_curves, paired_test, pareto_front
from pepr.report.tables import comparisons

#: Marker per efficiency flag (the paper's ``efficient`` column).
MARKERS = {"efficient (paper)": "o", "not efficient (paper)": "s", "not in paper table": "X"}
PANEL = (4.2, 3.4)


def _panels(n: int, ncols: int | None = None, size: tuple[float, float] = PANEL) -> tuple[Figure, list]:
    ncols = ncols or min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def _panel_title(key: tuple) -> str:
    """A cell's panel title; a long dataset name gets its own line so titles do not collide."""
    label = cell_label(key)
    return label if len(label) <= 45 else label.replace(" / ", "\n", 1)


def _cell_frame(df: pd.DataFrame, key: tuple) -> pd.DataFrame:
    return df[(df[CELL] == pd.Series(key, index=CELL)).all(axis=1)]


def _footnote(fig: Figure, lines: Sequence[str]) -> None:
    text = "\n".join(textwrap.fill(line, 160) for line in lines if line)
    if text:
        fig.supxlabel(text, fontsize=7, ha="left", x=0.01)


def _palette(df: pd.DataFrame) -> dict[str, tuple]:
    families = sorted(set(df.loc[df["ok"], "family"]))
    colours = sns.color_palette("tab10" if len(families) <= 10 else "husl", len(families))
    return dict(zip(families, colours))


def _colouring_note(df: pd.DataFrame) -> str:
    outside = sorted(set(df.loc[~df["in_paper_table"], "model"]))
    note = "Colour: model family (from the timm name); marker: the paper's efficiency flag."
    if outside:
        note += f" Not in the paper's model table (marker X, family from the name only): {', '.join(outside)}."
    return note


def _scatter_models(ax, frame: pd.DataFrame, x: str, y: str, palette: dict, legend: bool) -> None:
    sns.scatterplot(
        data=frame, x=x, y=y, hue="family", style="efficiency", markers=MARKERS, palette=palette,
        hue_order=list(palette), style_order=[m for m in MARKERS if m in set(frame["efficiency"])] or None,
        s=45, alpha=0.85, ax=ax, legend=legend,
    )


def _legend_outside(fig: Figure, axes: list) -> None:
    handles, labels = [], []
    for ax in axes:
        legend = ax.get_legend()
        if legend is not None:
            h, l = ax.get_legend_handles_labels()
            handles, labels = h, l
            legend.remove()
    if handles:
        fig.legend(handles, labels, loc="outside right upper", fontsize=7, frameon=False)


def save(fig: Figure, stem: str | os.PathLike, formats: Sequence[str]) -> list[Path]:
    """Write ``fig`` as ``stem.<format>`` for each format; returns the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        fig.savefig(path, dpi=110, bbox_inches="tight")
        paths.append(path)
    return paths


def pepr_profile(df: pd.DataFrame, cfg: ReportConfig) -> Figure:
    """Figure 1: contours of P / (1 + R) over (R, P), each cell's runs as points on them."""
    keys = cells(df[df["ok"]])
    fig, axes = _panels(max(len(keys), 1))
    grid_r, grid_p = np.meshgrid(np.linspace(0, 1, 201), np.linspace(0, 1, 201))
    palette = _palette(df)
    for ax, key in zip(axes, keys):
        contours = ax.contourf(grid_r, grid_p, grid_p / (1 + grid_r), levels=np.linspace(0, 1, 11), cmap="YlGn", alpha=0.7)
        ax.contour(grid_r, grid_p, grid_p / (1 + grid_r), levels=np.linspace(0.1, 0.9, 9), colors="grey", linewidths=0.4)
        frame = _cell_frame(df[df["ok"]], key)
        _scatter_models(ax, frame, f"{cfg.resource}_norm", cfg.performance, palette, legend=True)
        best = frame.loc[frame[f"pepr_{cfg.resource}"].idxmax()]
        ax.annotate(best["model"], (best[f"{cfg.resource}_norm"], best[cfg.performance]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
        ax.set(xlim=(-0.02, 1.02), ylim=(max(0.0, frame[cfg.performance].min() - 0.1), 1.0),
               xlabel=f"R = normalised {cfg.resource}", ylabel=f"P = {cfg.performance}", title=_panel_title(key))
        ax.title.set_fontsize(9)
    if keys:
        fig.colorbar(contours, ax=axes, label=f"{cfg.resource_label} = P / (1 + R)", shrink=0.8)
    _legend_outside(fig, axes)
    _footnote(fig, [energy_methods(df), _colouring_note(df)])
    return fig


def _params_panels(df: pd.DataFrame, cfg: ReportConfig, columns: list[tuple[str, str]], median_params: float) -> Figure:
    keys = cells(df[df["ok"]])
    ok = df[df["ok"]].assign(log10_params=lambda d: np.log10(d["params"]))
    fig, axes = _panels(max(len(keys) * len(columns), 1), ncols=max(len(keys), 1) if len(columns) > 1 else None)
    palette = _palette(df)
    split = math.log10(median_params)
    low = ok["log10_params"].min() - 0.1
    # Row-major: one figure row per plotted column (PePR variant), one panel column per cell.
    for index, ((column, label), key) in enumerate(itertools.product(columns, keys)):
        ax = axes[index]
        frame = _cell_frame(ok, key).dropna(subset=[column])
        ax.axvspan(low, split, color="0.9", zorder=0)
        ax.axvline(split, color="0.5", linestyle="--", linewidth=0.8)
        ax.text(split, 1.0, " median", transform=ax.get_xaxis_transform(), fontsize=7, va="top", color="0.4")
        _scatter_models(ax, frame, "log10_params", column, palette, legend=True)
        ax.set(xlabel="log10(trainable parameters)", ylabel=label, title=_panel_title(key))
        ax.set_xlim(left=low)
        ax.title.set_fontsize(9)
    _legend_outside(fig, axes)
    _footnote(fig, [f"Shaded: small models (parameters <= the sweep's median, {median_params:,.0f}).",
                    energy_methods(df), _colouring_note(df)])
    return fig


def performance_vs_params(df: pd.DataFrame, cfg: ReportConfig, median_params: float) -> Figure:
    """Figure 2: test performance vs log10 parameters per cell, small models shaded."""
    return _params_panels(df, cfg, [(cfg.performance, cfg.performance)], median_params)


def pepr_vs_params(df: pd.DataFrame, cfg: ReportConfig, median_params: float) -> Figure:
    """Figure 3: every PePR variant (rows) vs log10 parameters per cell (columns)."""
    return _params_panels(df, cfg, [(v.column, v.label) for v in variants(df)], median_params)


def paired_comparison(df: pd.DataFrame, cfg: ReportConfig, factor: str) -> Figure:
    """Figures 4 and 5: each level of ``factor`` against its baseline, pairs joined by lines,
    with the Wilcoxon signed-rank test computed on the pairs (pooled over contexts)."""
    pairs_list = comparisons(df, factor)
    metrics = [(cfg.performance, cfg.performance), (f"pepr_{cfg.resource}", cfg.resource_label)]
    fig, axes = _panels(max(len(pairs_list), 1) * len(metrics), ncols=len(metrics))
    context = [c for c in CELL if c != factor]
    ok = df[df["ok"]]
    if not pairs_list:
        only = sorted(set(df[factor]))
        for ax in axes:
            ax.axis("off")
        axes[0].text(0, 0.5, f"Only one {factor} level in this sweep ({', '.join(only)}): nothing to compare.",
                     fontsize=10, transform=axes[0].transAxes)
    label = fraction_label if factor == "fraction" else str
    for row, (treatment, baseline) in enumerate(pairs_list):
        merged = ok[ok[factor] == treatment].merge(ok[ok[factor] == baseline], on=[*context, "model", "seed"], suffixes=("_a", "_b"))
        for col, (metric, metric_label) in enumerate(metrics):
            ax = axes[row * len(metrics) + col]
            long = pd.DataFrame({
                "level": [label(baseline)] * len(merged) + [label(treatment)] * len(merged),
                "value": np.concatenate([merged[f"{metric}_b"], merged[f"{metric}_a"]]),
            })
            if len(merged):
                sns.violinplot(data=long, x="level", y="value", ax=ax, inner=None, color="0.85", cut=0, linewidth=0.6)
                for _, pair in merged.iterrows():
                    ax.plot([0, 1], [pair[f"{metric}_b"], pair[f"{metric}_a"]], color="0.5", linewidth=0.5, alpha=0.6)
                sns.stripplot(data=long, x="level", y="value", ax=ax, size=3, jitter=False, color="tab:blue")
            result = paired_test(merged[f"{metric}_a"].to_numpy(), merged[f"{metric}_b"].to_numpy(), cfg.min_pairs)
            ax.set(xlabel="", ylabel=metric_label, title=f"{label(treatment)} vs {label(baseline)}\n{describe(result)}")
            ax.title.set_fontsize(9)
    _footnote(fig, [
        f"Pairs: the same model and seed (and the same {' and '.join(context)}) under both levels, successful under both; "
        "pooled over all contexts. Two-sided Wilcoxon signed-rank test computed on these pairs.",
        f"{cfg.resource_label} is normalised within each cell, so across levels it compares ranks within cells, not raw cost.",
        energy_methods(df),
    ])
    return fig


def performance_vs_resource(df: pd.DataFrame, cfg: ReportConfig) -> Figure:
    """Figure 6: performance vs the headline resource per cell, Pareto front and PePR iso-lines."""
    keys = cells(df[df["ok"]])
    fig, axes = _panels(max(len(keys), 1))
    palette = _palette(df)
    for ax, key in zip(axes, keys):
        frame = _cell_frame(df[df["ok"]], key)
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
        ax.step(r[front][order], p[front][order], where="post", color="tab:red", linewidth=1.2, label="Pareto front")
        _scatter_models(ax, frame, cfg.resource, cfg.performance, palette, legend=True)
        for _, run in frame[front].drop_duplicates("model").iterrows():
            ax.annotate(run["model"], (run[cfg.resource], run[cfg.performance]), fontsize=6, xytext=(3, -8), textcoords="offset points")
        ax.set(xlabel=cfg.resource, ylabel=cfg.performance, title=_panel_title(key),
               ylim=(bottom, 1.01))
        ax.title.set_fontsize(9)
    _legend_outside(fig, axes)
    _footnote(fig, [f"Grey lines: {cfg.resource_label} iso-lines P / (1 + R) = const (value printed at the end), "
                    "R min-max normalised within the cell. Red: Pareto front (no run has higher performance at lower cost).",
                    energy_methods(df), _colouring_note(df)])
    return fig


def epoch_pepr(history: pd.DataFrame, peaks: pd.DataFrame, df: pd.DataFrame, cfg: ReportConfig) -> Figure:
    """Figure 7: PePR per epoch (scored over all runs and epochs of the cell), peaks marked."""
    keys = cells(df[df["ok"]])
    fig, axes = _panels(max(len(keys), 1))
    palette = _palette(df)
    family = dict(zip(df["model"], df["family"]))
    curves = epoch_curves(history, cfg.history_performance, cfg.history_resource, CELL) if len(history) else history
    for ax, key in zip(axes, keys):
        frame = _cell_frame(curves, key)
        cell_peaks = _cell_frame(peaks, key)
        for (model, seed), run in frame.sort_values("epoch").groupby(["model", "seed"]):
            ax.plot(run["epoch"], run["epoch_pepr"], color=palette[family[model]], linewidth=0.8, alpha=0.8)
        ax.scatter(cell_peaks["peak_epoch"], cell_peaks["peak_pepr"], marker="*", s=60, color="black", zorder=3, label="peak epoch")
        saved = cell_peaks["resource_saved"].sum()
        total = cell_peaks["resource_at_last"].sum()
        share = saved / total if total > 0 else 0.0
        ax.set(xlabel="epoch", ylabel=f"epoch PePR ({cfg.history_resource})",
               title=f"{_panel_title(key)}\nstopping at peaks saves {saved:.3g} ({share:.0%}); "
                     f"mean {cfg.history_performance} cost {cell_peaks['performance_cost'].mean():+.3f}")
        ax.title.set_fontsize(8)
    handles = [Line2D([], [], color=colour, label=name) for name, colour in palette.items()]
    handles.append(Line2D([], [], marker="*", color="black", linestyle="", markersize=9, label="peak epoch"))
    fig.legend(handles=handles, loc="outside right upper", fontsize=7, frameon=False, title="family", title_fontsize=7)
    _footnote(fig, [
        f"At each epoch: P = {cfg.history_performance} at that epoch, R = {cfg.history_resource} up to it, "
        "min-max normalised over all runs and epochs of the cell; star: the run's peak (diminishing returns beyond).",
        "Colour: model family. " + energy_methods(df),
    ])
    return fig
