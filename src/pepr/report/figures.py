"""The report's figures, drawn with seaborn/matplotlib on ``Figure`` objects (no pyplot state,
no display needed: the Agg canvas renders PNG, PDF and SVG).

The figures hold from 5 to 200 models and 1 to 12 groups (experiment cells):

- models are coloured by a handful of classes (:func:`model_classes`): the paper's
  architecture type and efficiency flag where the model table knows the models, else
  parameter-size bins; the legend never has more than :data:`MAX_LEGEND` entries;
- only the models that matter are labelled (:func:`labelled_models`: best performance, best
  headline PePR, the top-k, the Pareto front; at most :data:`MAX_LABELS` per panel), with
  numbers placed around their points so that none overprints another, and a key beside the panel;
- an axis is logarithmic when its values span more than a decade (:func:`needs_log`);
- each scatter panel carries a trend (binned medians over x quantiles, a rank-based fit) and
  Spearman's rho;
- panels keep their size: the figure grows with the groups, wrapping at :data:`MAX_COLUMNS`.

Every figure that shows energy or CO2 prints how it was obtained (``energy_method``) under the
plot, and says where the colouring comes from.
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
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter
from matplotlib.transforms import Bbox

from pepr.columns import GROUP_COLUMNS
from pepr.report.config import ReportConfig
from pepr.report.data import (
    co2_note,
    energy_methods,
    fraction_label,
    group_label,
    groups,
    load_model_metadata,
    report_variants,
)
from pepr.report.stats import epoch_curves, format_p, pareto_front, spearman_trend
from pepr.report.tables import comparisons, model_means, model_pairs
from pepr.results.runs import remove_stale_temporaries

#: Most entries any legend may have (classes plus the line keys).
MAX_LEGEND = 12
#: Most models labelled in one panel.
MAX_LABELS = 8
#: Most panels side by side; more groups wrap onto further rows (panels never shrink). Two
#: panels with their keys make a figure about 14 in (1,400 px) wide, which report.html shows at
#: nearly its full size, so tick labels stay legible (>= 9 px) in a 1,400 px window.
MAX_COLUMNS = 2
#: Widest a figure may be (inches): wider ones would be shrunk in the page below legible size.
MAX_WIDTH = 16.0
#: Resolution of the saved PNGs (pixels per inch); the page shows them at most at this size.
DPI = 100
#: Size of one panel in inches (width, height), whatever the number of groups.
PANEL = (4.0, 3.2)
#: Extra width beside a panel for its key of labelled models.
KEY_WIDTH = 2.15
#: Parameter-size bins (upper bounds) used for colouring when the paper's table knows no model.
SIZE_BINS = [(1e6, "< 1M params"), (1e7, "1M-10M params"), (1e8, "10M-100M params"), (math.inf, ">= 100M params")]
NOT_IN_TABLE = "not in paper table"


def needs_log(values) -> bool:
    """Whether an axis of ``values`` should be logarithmic: all finite values positive and the
    largest more than 10x the smallest (a span of more than a decade)."""
    v = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 2 or (v <= 0).any():
        return False
    return bool(v.max() / v.min() > 10)


def model_classes(df: pd.DataFrame, cfg: ReportConfig) -> dict[str, str]:
    """Model -> colour class (a handful of classes, never one per model).

    With the paper's model table (``cfg.model_metadata`` or the packaged copy) knowing at least
    one model: "<type>, efficient" / "<type>" (type CNN or Other, efficiency flag of the
    paper), and "not in paper table" for the others. Otherwise: parameter-size bins of the
    model's median parameter count (``< 1M``, ``1M-10M``, ``10M-100M``, ``>= 100M``).
    """
    models = df.dropna(subset=["model"]).groupby("model")["params"].median()
    metadata = load_model_metadata(cfg.model_metadata)
    known = (
        {}
        if metadata is None
        else {
            str(m): (str(t), int(e) == 1)
            for m, t, e in metadata[["model", "type", "efficient"]].itertuples(index=False)
        }
    )
    if any(m in known for m in models.index):
        return {
            m: (f"{known[m][0]}, efficient" if known[m][1] else known[m][0]) if m in known else NOT_IN_TABLE
            for m in models.index
        }
    out = {}
    for model, params in models.items():
        out[model] = (
            next(label for bound, label in SIZE_BINS if params < bound) if np.isfinite(params) else "unknown size"
        )
    return out


def class_colours(classes: dict[str, str]) -> dict[str, tuple]:
    """A fixed colour per class, in a stable order (sorted; "not in paper table" last, grey)."""
    order = class_order(classes)
    palette = sns.color_palette("colorblind", max(len(order), 1))
    colours = {name: palette[i] for i, name in enumerate(order)}
    for grey in (NOT_IN_TABLE, "unknown size"):
        if grey in colours:
            colours[grey] = (0.6, 0.6, 0.6)
    return colours


def class_order(classes: dict[str, str]) -> list[str]:
    """The classes present, in legend order."""
    size_rank = {label: i for i, (_, label) in enumerate(SIZE_BINS)}
    return sorted(set(classes.values()), key=lambda c: (c in (NOT_IN_TABLE, "unknown size"), size_rank.get(c, -1), c))


def _class_note(classes: dict[str, str]) -> str:
    if any(c in SIZE_BINS_LABELS for c in classes.values()):
        return "Colour: parameter-size bin (the paper's model table lists none of these models)."
    return "Colour: architecture type and efficiency flag from the paper's model table (Selvan et al., table of 131 timm models)."


SIZE_BINS_LABELS = {label for _, label in SIZE_BINS}


#: Fixed margins in inches. The layout is computed, not solved (no constrained layout): panels
#: keep their size at any grid, and 36 panels cost no layout passes.
_LEFT, _GAP_X, _BOTTOM, _TITLE_LINE, _LEGEND, _XLABEL = 0.85, 0.85, 0.2, 0.16, 0.55, 0.62
_FOOT_LINE = 0.12


def _panels(
    n: int,
    ncols: int | None = None,
    size: tuple[float, float] = PANEL,
    key: bool = False,
    title_lines: int = 2,
    colorbar: bool = False,
) -> tuple[Figure, list]:
    """A figure of ``n`` panels of constant ``size``, ``ncols`` per row (default: up to
    :data:`MAX_COLUMNS`): the figure grows with n, never the panels shrink. ``key`` leaves
    :data:`KEY_WIDTH` beside each panel for its key; ``title_lines`` the lines of the panel
    titles; ``colorbar`` room on the right for one. The footnote (:func:`_footnote`) grows the
    figure downwards."""
    ncols = ncols or min(n, MAX_COLUMNS)
    nrows = math.ceil(n / ncols)
    beside = KEY_WIDTH if key else 0.3
    gap_x = _GAP_X + beside
    gap_y = _XLABEL + _TITLE_LINE * title_lines + 0.1
    top = _LEGEND + _TITLE_LINE * title_lines + 0.1
    right = beside + (1.1 if colorbar else 0.0)
    width = _LEFT + ncols * size[0] + (ncols - 1) * gap_x + right
    height = top + nrows * size[1] + (nrows - 1) * gap_y + _XLABEL + _BOTTOM
    fig = Figure(figsize=(width, height))
    margins = {"left": _LEFT, "right": right, "top": top, "bottom": _XLABEL + _BOTTOM}
    fig.subplots_adjust(
        left=_LEFT / width,
        right=1 - right / width,
        top=1 - top / height,
        bottom=margins["bottom"] / height,
        wspace=gap_x / size[0],
        hspace=gap_y / size[1],
    )
    fig.pepr_margins = margins  # read by _footnote, which grows the figure downwards
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def _title_lines(titles: Sequence[str]) -> int:
    return max((t.count("\n") + 1 for t in titles), default=1)


def _panel_title(key: tuple, extra: str = "", group: Sequence[str] = GROUP_COLUMNS) -> str:
    """A group's panel title on short lines (first key; the others), wrapped to the panel's
    width so that neighbouring titles never run into each other."""
    label = group_label(key, group).split(" / ")
    lines = textwrap.wrap(label[0], 34) or [""]
    if len(label) > 1:
        lines.append(" / ".join(label[1:]))
    if extra:
        lines += textwrap.wrap(extra, 44)
    return "\n".join(lines)


def _cell_frame(df: pd.DataFrame, key: tuple, group: Sequence[str] = GROUP_COLUMNS) -> pd.DataFrame:
    group = list(group)
    return df[(df[group] == pd.Series(key, index=group)).all(axis=1)]


def _footnote(fig: Figure, lines: Sequence[str]) -> None:
    """The notes under the panels; the figure grows downwards by their height (panels keep
    their size and the legend stays on top)."""
    width = max(100, int(fig.get_figwidth() * 17))
    text = "\n".join(textwrap.fill(line, width) for line in lines if line)
    if not text:
        return
    extra = _FOOT_LINE * (text.count("\n") + 1) + 0.1
    margins = getattr(fig, "pepr_margins", None)
    w, h = fig.get_size_inches()
    if margins is not None:
        fig.set_size_inches(w, h + extra)
        fig.subplots_adjust(bottom=(margins["bottom"] + extra) / (h + extra), top=1 - margins["top"] / (h + extra))
        for legend in fig.legends:
            legend.set_bbox_to_anchor((0.5, 1 - 0.05 / (h + extra)), transform=fig.transFigure)
        h += extra
    fig.text(0.01, 0.08 / h, text, fontsize=7, ha="left", va="bottom")


def _legend(
    fig: Figure, classes: dict[str, str], shown: set[str], extra: Sequence[Line2D] = (), lines: bool = False
) -> None:
    """One figure-level legend above the panels: the colour classes of the models drawn, then
    the line keys (trend, Pareto front, ...). At most :data:`MAX_LEGEND` entries."""
    colours = class_colours(classes)
    present = [c for c in class_order(classes) if any(classes.get(m) == c for m in shown)]
    handles = [
        Line2D(
            [],
            [],
            color=colours[c],
            marker=None if lines else "o",
            linestyle="-" if lines else "",
            markersize=6,
            label=c,
        )
        for c in present
    ]
    flagged = any(c.get_gid() == FLAGGED_GID for ax in fig.axes for c in ax.collections)
    key = (
        [Line2D([], [], color="black", marker="x", linestyle="", markersize=6, label="flagged by a measurement check")]
        if flagged
        else []
    )
    handles = (handles + list(extra))[: MAX_LEGEND - len(key)] + key
    if handles:
        _legend_above(fig, handles, max_columns=6)


def _legend_above(fig: Figure, handles: Sequence[Line2D], max_columns: int) -> None:
    """``handles`` as one figure-level legend centred above the panels (in the room their
    title lines leave), at most ``max_columns`` entries a row."""
    h = fig.get_figheight()
    fig.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, 1 - 0.05 / h),
        bbox_transform=fig.transFigure,
        fontsize=8,
        frameon=False,
        ncols=min(len(handles), max_columns),
    )


def save(fig: Figure, stem: str | os.PathLike, formats: Sequence[str]) -> list[Path]:
    """Write ``fig`` as ``stem.<format>`` for each format; returns the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        # through a temp file: a full disk leaves the previous figure, not a truncated one
        remove_stale_temporaries(path)  # left by a report job killed mid-write
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            fig.savefig(tmp, dpi=DPI, format=fmt)  # constrained layout already fits the figure: no "tight" re-draw
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        paths.append(path)
    return paths


def short_number(value: float, _position=None) -> str:
    """A short tick label: 500k, 2M, 0.005, 12."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.2g}"


def _log_axis(axis, values) -> None:
    """Log scale on ``axis`` with short labels at 1, 2, 5 x 10^k (only 10^k beyond two
    decades), minor ticks unlabelled: labels never run into each other."""
    v = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    decades = math.log10(v.max() / v.min()) if len(v) else 1.0
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades <= 2 else (1.0,)))
    axis.set_major_formatter(FuncFormatter(short_number))
    axis.set_minor_formatter(NullFormatter())


def _set_log_axes(ax, x, y) -> None:
    """Logarithmic x and/or y where the values span more than a decade (:func:`needs_log`);
    a linear axis of given values gets at most 5 short labels (1.5M, 0.0035), never an offset."""
    for axis, values, set_scale in ((ax.xaxis, x, ax.set_xscale), (ax.yaxis, y, ax.set_yscale)):
        if needs_log(values):
            set_scale("log")
            _log_axis(axis, values)
        elif len(values):
            axis.set_major_locator(MaxNLocator(nbins=5))
            axis.set_major_formatter(FuncFormatter(short_number))


def trend(x: np.ndarray, y: np.ndarray, log_x: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A rank-based trend of y over x: medians of x and y within bins of equal counts (x
    quantiles; 3 to 12 bins, about 10 points each). Bins are formed on log x when ``log_x``."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y) & ((x > 0) if log_x else True)
    x, y = x[keep], y[keep]
    if len(x) < 4 or np.ptp(x) == 0:
        return np.array([]), np.array([])
    order = np.argsort(x, kind="stable")
    bins = np.array_split(order, int(np.clip(len(x) // 10, 3, 12)))
    xs = np.array([np.exp(np.median(np.log(x[b]))) if log_x else np.median(x[b]) for b in bins if len(b)])
    ys = np.array([np.median(y[b]) for b in bins if len(b)])
    return xs, ys


def spearman(x, y) -> tuple[float, float, int]:
    """Spearman's rho, its p-value and n over the finite pairs (NaN when undefined), by
    :func:`pepr.report.stats.spearman_trend` as the size-trend table computes it (unadjusted:
    the table adds Holm over the groups)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    # the tables' test (exact p for few points), so a figure never prints another p than they do
    result = spearman_trend(x[keep], y[keep], 3)
    return result.rho, result.p, result.n


def _draw_trend(ax, x, y) -> None:
    xs, ys = trend(x, y, log_x=ax.get_xscale() == "log")
    if len(xs):
        ax.plot(xs, ys, color="black", linewidth=1.3, linestyle="--", zorder=4)
    rho, p, n = spearman(x, y)
    text = (
        f"Spearman rho = {rho:+.2f}, {format_p(p)}, n = {n}"
        if np.isfinite(rho)
        else f"Spearman rho: undefined (n = {n})"
    )
    # Beside the panel, under the key: never over the data.
    ax.text(
        1.03,
        0.0,
        text.replace(", p", "\np").replace(", n", ", n"),
        transform=ax.transAxes,
        fontsize=6.5,
        va="bottom",
        ha="left",
        color="0.15",
    )


TREND_HANDLE = Line2D([], [], color="black", linestyle="--", linewidth=1.3, label="trend (binned medians)")
PARETO_HANDLE = Line2D([], [], color="tab:red", linewidth=1.2, label="Pareto front")
MEDIAN_HANDLE = Line2D([], [], color="0.5", linestyle=":", linewidth=0.9, label="median params (small | large)")


def _scatter(ax, frame: pd.DataFrame, x: str, y: str, classes: dict[str, str], size: float | None = None) -> None:
    """One point per row of ``frame``, coloured by its model's class (smaller with more points)."""
    colours = class_colours(classes)
    n = len(frame)
    size = size or float(np.clip(2500 / max(n, 1), 8, 36))
    ax.scatter(
        frame[x],
        frame[y],
        s=size,
        c=[colours[classes[m]] for m in frame["model"]],
        alpha=0.75,
        linewidths=0.3,
        edgecolors="white",
        zorder=3,
    )
    if "flags" in frame.columns:
        # runs a measurement check flagged: marked, so a reader sees which points to doubt
        marked = frame[frame["flags"].astype(str) != ""]
        if len(marked):
            ax.scatter(
                marked[x], marked[y], s=size * 1.3, marker="x", c="black", linewidths=0.9, zorder=4, gid=FLAGGED_GID
            )


#: The gid of the markers of flagged runs (the legend adds their key when a figure has them).
FLAGGED_GID = "pepr-flagged"


def labelled_models(
    means: pd.DataFrame, performance: str, pepr: str | None, resource: str | None, top_k: int, limit: int = MAX_LABELS
) -> list[tuple[str, str]]:
    """The models worth a label in one panel, most important first, at most ``limit``:
    the best-performance model, the best by ``pepr``, the rest of the top-k by ``pepr`` and
    the Pareto front of (performance, ``resource``) (cheapest first). ``means``: one row per
    model (seed means). Returns (model, why) pairs."""
    if means.empty:
        return []
    chosen: dict[str, list[str]] = {}

    def add(model: str, why: str) -> None:
        chosen.setdefault(model, []).append(why)

    add(means.sort_values([performance, "model"], ascending=[False, True])["model"].iloc[0], "best P")
    if pepr and pepr in means:
        ranked = means.sort_values([pepr, "model"], ascending=[False, True])["model"].tolist()
        add(ranked[0], "best PePR")
        for model in ranked[1:top_k]:
            add(model, f"top-{top_k}")
    if resource and resource in means:
        front = means[pareto_front(means[performance].to_numpy(), means[resource].to_numpy())]
        for model in front.sort_values(resource)["model"]:
            add(model, "Pareto")
    items = [(model, ", ".join(dict.fromkeys(why))) for model, why in chosen.items()]
    return items[:limit]


def _label_panel(ax, means: pd.DataFrame, x: str, y: str, labels: list[tuple[str, str]]) -> list[tuple]:
    """Ring the labelled models' points and write a key of their numbers beside the panel;
    returns the numbered labels still to place (:func:`_place_labels`, once the layout is set)."""
    if not labels:
        return []
    position = means.set_index("model")
    pending = []
    for number, (model, _) in enumerate(labels, start=1):
        px, py = float(position.at[model, x]), float(position.at[model, y])
        ax.scatter([px], [py], s=42, facecolors="none", edgecolors="black", linewidths=0.9, zorder=5)
        pending.append((ax, number, px, py))
    key = "\n".join(
        textwrap.shorten(f"{n:>2} {model} ({why})", 40, placeholder="...")
        for n, (model, why) in enumerate(labels, start=1)
    )
    ax.text(1.03, 1.0, key, transform=ax.transAxes, fontsize=6.3, va="top", ha="left", family="monospace")
    return pending


#: Offsets tried for a numbered label, in points from its point: 12 directions at 5 distances,
#: nearest first (diagonals first at each distance: they cover the fewest neighbours).
_OFFSETS = [
    (r * math.cos(a), r * math.sin(a))
    for r in (11, 19, 28, 38, 50)
    for a in np.deg2rad([45, 135, 315, 225, 90, 270, 0, 180, 20, 160, 200, 340])
]


def _place_labels(fig: Figure, pending: list[tuple]) -> None:
    """Place the numbered labels so that none overprints another.

    The layout is fixed (:func:`_panels`), so the positions measured here are the ones saved. Each label takes the first free offset around its point inside its panel (greedy,
    most important label first); when none is free inside the panel, the first free one
    outside it; when none at all, the one overlapping least. One pass over the figure, not one
    redraw per panel, so 36 panels cost one layout."""
    if not pending:
        return
    # The layout is fixed (see _panels): the data transforms are final once the limits are.
    points = fig.dpi / 72
    placed: dict[int, list] = {}
    for ax, number, px, py in pending:
        anchor = ax.transData.transform((px, py))
        frame = ax.get_window_extent()
        size = (7 + 2 * 3) * points * (1.0 if number < 10 else 1.3)  # a 7 pt number in its circle
        taken = placed.setdefault(id(ax), [])

        def box_at(offset):
            return Bbox.from_bounds(
                anchor[0] + offset[0] * points - size / 2, anchor[1] + offset[1] * points - size / 2, size, size
            )

        def overlap(box):
            return sum(
                max(0.0, min(box.x1, o.x1) - max(box.x0, o.x0)) * max(0.0, min(box.y1, o.y1) - max(box.y0, o.y0))
                for o in taken
            )

        def inside(box):
            return frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1

        free = [o for o in _OFFSETS if overlap(box_at(o)) == 0]
        choice = next(
            (o for o in free if inside(box_at(o))), free[0] if free else min(_OFFSETS, key=lambda o: overlap(box_at(o)))
        )
        taken.append(box_at(choice))
        ax.annotate(
            str(number),
            (px, py),
            xytext=choice,
            textcoords="offset points",
            ha="center",
            va="center",
            fontsize=7,
            fontweight="bold",
            zorder=7,
            gid=LABEL_GID,
            annotation_clip=False,
            bbox={"boxstyle": "circle,pad=0.15", "facecolor": "white", "edgecolor": "0.3", "linewidth": 0.5},
            arrowprops={"arrowstyle": "-", "color": "0.3", "linewidth": 0.5, "shrinkA": 0, "shrinkB": 2},
        )


#: gid of the numbered model labels (tests count them and check they do not overlap).
LABEL_GID = "pepr-model-label"


def _means(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    columns = list(dict.fromkeys(c for c in columns if c in frame))
    return frame.groupby("model", sort=True)[columns].mean(numeric_only=True).reset_index()


def pepr_profile(df: pd.DataFrame, cfg: ReportConfig) -> Figure:
    """Figure 1: contours of P / (1 + R) over (R, P), each group's runs as points on them,
    the top models numbered."""
    keys = groups(df[df["ok"]], cfg.group)
    fig, axes = _panels(
        max(len(keys), 1),
        key=True,
        title_lines=_title_lines([_panel_title(k, group=cfg.group) for k in keys]),
        colorbar=True,
    )
    pending: list[tuple] = []
    grid_r, grid_p = np.meshgrid(np.linspace(0, 1, 201), np.linspace(0, 1, 201))
    classes = model_classes(df, cfg)
    ok = df[df["ok"]]
    r_col, pepr = f"{cfg.resource}_norm", f"pepr_{cfg.resource}"
    contours = None
    for ax, key in zip(axes, keys):
        contours = ax.contourf(
            grid_r, grid_p, grid_p / (1 + grid_r), levels=np.linspace(0, 1, 11), cmap="YlGn", alpha=0.6
        )
        ax.contour(
            grid_r, grid_p, grid_p / (1 + grid_r), levels=np.linspace(0.1, 0.9, 9), colors="grey", linewidths=0.4
        )
        frame = _cell_frame(ok, key, cfg.group)
        _scatter(ax, frame, r_col, cfg.performance, classes)
        means = _means(frame, [r_col, cfg.performance, pepr])
        pending += _label_panel(
            ax, means, r_col, cfg.performance, labelled_models(means, cfg.performance, pepr, None, cfg.top_k)
        )
        ax.set(
            xlim=(-0.02, 1.02),
            ylim=(max(0.0, frame[cfg.performance].min() - 0.05), 1.0),
            xlabel=f"R = normalised {cfg.resource}",
            ylabel=f"P = {cfg.performance}",
            title=_panel_title(key, group=cfg.group),
        )
        ax.title.set_fontsize(9)
    if contours is not None:
        # Beside the first row's last panel, past its key: it moves with the panels.
        corner = axes[min(len(axes), MAX_COLUMNS) - 1]
        cax = corner.inset_axes([1.0 + (KEY_WIDTH + 0.25) / PANEL[0], 0.0, 0.14 / PANEL[0], 1.0])
        fig.colorbar(contours, cax=cax, label=f"{cfg.resource_label} = P / (1 + R)")
    _legend(fig, classes, set(ok["model"]))
    _footnote(
        fig,
        [
            "Numbered: the best-performance model, the best by the headline PePR and the rest of the top-k "
            "(seed means; the key beside each panel). Points: every successful run.",
            energy_methods(df),
            _class_note(classes),
        ],
    )
    _place_labels(fig, pending)
    return fig


def _params_panels(df: pd.DataFrame, cfg: ReportConfig, columns: list[tuple[str, str]]) -> Figure:
    """Panels of ``columns`` vs trainable parameters (log axis when they span a decade): one
    panel per group and column; with several columns, one figure row per group."""
    keys = groups(df[df["ok"]], cfg.group)
    ok = df[df["ok"]]
    ncols = min(len(columns), MAX_COLUMNS) if len(columns) > 1 else None
    lines = _title_lines([_panel_title(k, group=cfg.group) for k in keys]) + (1 if len(columns) > 1 else 0)
    fig, axes = _panels(max(len(keys) * len(columns), 1), ncols=ncols, key=True, title_lines=lines)
    pending: list[tuple] = []
    classes = model_classes(df, cfg)
    pepr = f"pepr_{cfg.resource}"
    for index, (key, (column, label)) in enumerate(itertools.product(keys, columns)):
        ax = axes[index]
        frame = _cell_frame(ok, key, cfg.group).dropna(subset=[column])
        _set_log_axes(ax, frame["params"], [])
        # Each group's own split: a model's parameter count depends on the group (head, channels).
        split = float(_cell_frame(df, key, cfg.group)["median_params"].iloc[0])
        ax.axvline(split, color="0.5", linestyle=":", linewidth=0.9)
        _scatter(ax, frame, "params", column, classes)
        _draw_trend(ax, frame["params"], frame[column])
        means = _means(frame, ["params", column, cfg.performance, pepr])
        # Label by what this panel shows: performance panels the best P and best PePR; PePR
        # panels the top-k of that variant.
        score = column if column.startswith("pepr_") else pepr
        pending += _label_panel(
            ax, means, "params", column, labelled_models(means, cfg.performance, score, None, cfg.top_k)
        )
        ax.set(
            xlabel="trainable parameters" + (" (log)" if ax.get_xscale() == "log" else ""),
            ylabel=label,
            title=_panel_title(key, group=cfg.group)
            if len(columns) == 1
            else f"{label}\n{_panel_title(key, group=cfg.group)}",
        )
        ax.title.set_fontsize(9)
    _legend(fig, classes, set(ok["model"]), [TREND_HANDLE, MEDIAN_HANDLE])
    _footnote(
        fig,
        [
            "Dotted line: the group's median parameter count (small models at or left of it). Numbered: best "
            "performance, best PePR and the top-k (seed means; key beside each panel).",
            co2_note(df) if len(columns) > 1 else "",
            energy_methods(df),
            _class_note(classes),
        ],
    )
    _place_labels(fig, pending)
    return fig


def performance_vs_params(df: pd.DataFrame, cfg: ReportConfig) -> Figure:
    """Figure 2: test performance vs parameters per group, trend and Spearman's rho."""
    return _params_panels(df, cfg, [(cfg.performance, cfg.performance)])


def pepr_vs_params(df: pd.DataFrame, cfg: ReportConfig) -> Figure:
    """Figure 3: every PePR variant shown (columns) vs parameters, one row per group."""
    return _params_panels(df, cfg, [(v.column, v.label) for v in report_variants(df)])


def pooled(df: pd.DataFrame, cfg: ReportConfig) -> Figure:
    """Figure 9, compact for a paper: performance and the headline PePR vs parameters, every
    group's models (seed means) in one panel per claim, the group as hue and a trend per group."""
    ok = df[df["ok"]]
    keys = groups(ok, cfg.group)
    pepr = f"pepr_{cfg.resource}"
    columns = [(cfg.performance, cfg.performance), (pepr, cfg.resource_label)]
    # The legend lists the groups (3 a row) and the trend key: room above the panels for its rows.
    rows = math.ceil((min(len(keys), MAX_LEGEND - 1) + 1) / 3)
    fig, axes = _panels(len(columns), title_lines=1 + math.ceil(1.4 * (rows - 1)))
    palette = sns.color_palette("husl" if len(keys) > 10 else "tab10", max(len(keys), 1))
    handles = []
    for colour, key in zip(palette, keys):
        label = group_label(key, cfg.group)
        handles.append(Line2D([], [], color=colour, marker="o", linestyle="-", markersize=6, label=label))
        means = _means(_cell_frame(ok, key, cfg.group), ["params", *(c for c, _ in columns)])
        for ax, (column, _) in zip(axes, columns):
            frame = means.dropna(subset=["params", column])
            ax.scatter(
                frame["params"],
                frame[column],
                s=float(np.clip(1500 / max(len(frame), 1), 6, 24)),
                color=colour,
                alpha=0.7,
                linewidths=0.3,
                edgecolors="white",
                zorder=3,
            )
            if len(frame) >= 3:
                tx, ty = trend(frame["params"].to_numpy(float), frame[column].to_numpy(float), log_x=True)
                ax.plot(tx, ty, color=colour, linewidth=1.2, zorder=4)
    for ax, (_, label) in zip(axes, columns):
        _set_log_axes(ax, ok["params"], [])
        ax.set(
            xlabel="trainable parameters" + (" (log)" if ax.get_xscale() == "log" else ""),
            ylabel=label,
            title=f"{label} vs model size, all groups",
        )
        ax.title.set_fontsize(9)
    trend_key = Line2D([], [], color="black", linewidth=1.2, label="trend per group (binned medians)")
    handles = handles[: MAX_LEGEND - 1] + [trend_key]
    if keys:
        _legend_above(fig, handles, max_columns=3)
    _footnote(
        fig,
        [
            "One point per model and group (seed means), coloured by group; lines: each group's trend "
            "(binned medians). PePR is normalised within each group, so compare its shape across groups, "
            "not its level."
            + (f" Legend: the first {MAX_LEGEND - 1} of {len(keys)} groups." if len(keys) >= MAX_LEGEND else "")
        ],
    )
    return fig


def paired_comparison(table: pd.DataFrame, df: pd.DataFrame, cfg: ReportConfig, factor: str) -> Figure:
    """Figures 4 and 5: each level of ``factor`` against its baseline, per context, on raw
    performance (difference) and the raw headline resource (ratio): one point per model (its
    seed means), the mean with its t CI, and the Holm-adjusted p / TOST verdict of
    ``table`` (the paired table). PePR is not shown: it is normalised within each group.
    """
    pairs_list = comparisons(df, factor)
    metrics = [
        (cfg.performance, f"{cfg.performance}: treatment - baseline", "diff"),
        (cfg.resource, f"{cfg.resource}: treatment / baseline", "ratio"),
    ]
    context = [c for c in cfg.group if c != factor]
    n_contexts = df[context].drop_duplicates().shape[0]
    # Panels widen with the contexts on their x axis, so the context labels never overlap.
    size = (max(5.2, 1.6 * n_contexts), 3.8)
    # The two metrics side by side while that fits the page; one under the other beyond.
    ncols = len(metrics) if _LEFT + len(metrics) * (size[0] + _GAP_X + 0.3) <= MAX_WIDTH else 1
    fig, axes = _panels(
        max(len(pairs_list), 1) * len(metrics), ncols=ncols, size=size, title_lines=4
    )  # room for context tick labels of up to three lines
    label = fraction_label if factor == "fraction" else str
    classes = model_classes(df, cfg)
    colours = class_colours(classes)
    if not pairs_list:  # a short note, not a page of empty panels
        only = sorted(set(df[factor]))
        return _note_figure(
            f"{factor} comparison: not drawn",
            f"Only one {factor} level in this sweep ({', '.join(only)}): nothing to compare.",
        )
    shown = set()
    for row, (treatment, baseline) in enumerate(pairs_list):
        pairs = model_pairs(df, cfg, factor, treatment, baseline)
        contexts = sorted(set(pairs[context].astype(str).agg(" / ".join, axis=1))) if len(pairs) else []
        pairs = pairs.assign(context=pairs[context].astype(str).agg(" / ".join, axis=1)) if len(pairs) else pairs
        for col, (metric, ylabel, kind) in enumerate(metrics):
            ax = axes[row * len(metrics) + col]
            rows = table[
                (table["treatment"] == treatment) & (table["baseline"] == baseline) & (table["metric"] == metric)
            ]
            all_values = []
            for x, name in enumerate(contexts):
                group = pairs[pairs["context"] == name]
                values = (
                    group[f"{metric}_a"] - group[f"{metric}_b"]
                    if kind == "diff"
                    else group[f"{metric}_a"] / group[f"{metric}_b"]
                )
                all_values.extend(values)
                jitter = np.random.default_rng(x).uniform(-0.18, 0.18, len(group))
                shown.update(group["model"])
                ax.scatter(
                    x + jitter,
                    values,
                    s=float(np.clip(1200 / max(len(group), 1), 8, 30)),
                    alpha=0.75,
                    c=[colours[classes[m]] for m in group["model"]],
                    linewidths=0.3,
                    edgecolors="white",
                    zorder=3,
                )
                stat = rows[rows["context"] == name]
                if len(stat):
                    r = stat.iloc[0]
                    if kind == "diff":
                        centre, low, high = r["mean_diff"], r["ci_low"], r["ci_high"]
                        shown_p = (
                            f"TOST {format_p(r['p_tost_holm'])}"
                            if r["verdict"] == "equivalent"
                            else format_p(r["p_holm"])
                        )
                        text = f"{r['verdict']}\n{shown_p}"
                    else:
                        centre, low, high = r["ratio"], r["ratio_ci_low"], r["ratio_ci_high"]
                        text = f"x{r['ratio']:.3g}\n{format_p(r['p_holm'])}"
                    if not np.isnan(low):
                        ax.errorbar(
                            x + 0.3,
                            centre,
                            yerr=[[centre - low], [high - centre]],
                            fmt="_",
                            color="black",
                            capsize=3,
                            zorder=4,
                        )
                    else:
                        ax.plot(x + 0.3, centre, "_", color="black", markersize=10, zorder=4)
                    ax.annotate(text, (x, 1.0), xycoords=("data", "axes fraction"), fontsize=6.5, ha="center", va="top")
            if kind == "diff":
                ax.axhline(0, color="0.5", linewidth=0.8)
                ax.axhspan(-cfg.equivalence_margin, cfg.equivalence_margin, color="tab:green", alpha=0.12, zorder=0)
            else:
                ax.axhline(1, color="0.5", linewidth=0.8)
                if needs_log(all_values):  # log only when ratios span decades
                    ax.set_yscale("log")
            ax.set_xticks(
                range(len(contexts)),
                ["\n".join(textwrap.fill(part, 16) for part in c.split(" / ")) for c in contexts],
                fontsize=8,
            )
            ax.set_xlim(-0.6, max(len(contexts), 1) - 0.4)
            ax.margins(y=0.3)
            ax.set(ylabel=ylabel, title=f"{label(treatment)} vs {label(baseline)}")
            ax.title.set_fontsize(9)
    _legend(fig, classes, shown)
    _footnote(
        fig,
        [
            f"One point per model: its seed mean under both levels, within the same {' and '.join(context)} (the x axis); "
            "successful under both. Bar: mean difference with its t CI; text: verdict of the paired t test and TOST "
            f"(green band: equivalence margin +/-{cfg.equivalence_margin:g}), every p Holm-adjusted over the contexts; "
            "resources: geometric-mean ratio with its CI, tested on the log scale. PePR is not compared across levels: it is normalised within each group.",
            energy_methods(df),
            _class_note(classes),
        ],
    )
    return fig


def performance_vs_resource(df: pd.DataFrame, cfg: ReportConfig) -> Figure:
    """Figure 6: performance vs the headline resource per group (log axis when it spans a
    decade), Pareto front, PePR iso-lines, trend and Spearman's rho."""
    keys = groups(df[df["ok"]], cfg.group)
    fig, axes = _panels(
        max(len(keys), 1), key=True, title_lines=_title_lines([_panel_title(k, group=cfg.group) for k in keys])
    )
    pending: list[tuple] = []
    classes = model_classes(df, cfg)
    ok = df[df["ok"]]
    pepr = f"pepr_{cfg.resource}"
    for ax, key in zip(axes, keys):
        frame = _cell_frame(ok, key, cfg.group).dropna(subset=[cfg.resource])
        r, p = frame[cfg.resource].to_numpy(dtype=float), frame[cfg.performance].to_numpy(dtype=float)
        _set_log_axes(ax, r, [])
        low, high = (r.min(), r.max()) if len(r) else (0.0, 1.0)
        span = high - low if high > low else 1.0
        xs = (
            np.geomspace(low, high, 100)
            if ax.get_xscale() == "log"
            else np.linspace(low, high if high > low else low + 1e-12, 100)
        )
        bottom = max(0.0, float(p.min()) - 0.05) if len(p) else 0.0
        for level in np.round(np.linspace(0.1, 1.0, 10), 2):
            ys = level * (1 + (xs - low) / span)
            ax.plot(xs, ys, color="0.82", linewidth=0.6, zorder=0)
            visible = np.nonzero((ys >= bottom) & (ys <= 1.0))[0]
            if len(visible):  # label each iso-line where it leaves the plotted box
                ax.text(xs[visible[-1]], ys[visible[-1]], f"{level:g}", fontsize=6, color="0.55", clip_on=True)
        _scatter(ax, frame, cfg.resource, cfg.performance, classes)
        means = _means(frame, [cfg.resource, cfg.performance, pepr])
        if len(means):
            front = pareto_front(means[cfg.performance].to_numpy(), means[cfg.resource].to_numpy())
            on_front = means[front].sort_values(cfg.resource)
            ax.step(
                on_front[cfg.resource],
                on_front[cfg.performance],
                where="post",
                color="tab:red",
                linewidth=1.2,
                zorder=4,
            )
        _draw_trend(ax, r, p)
        pending += _label_panel(
            ax,
            means,
            cfg.resource,
            cfg.performance,
            labelled_models(means, cfg.performance, pepr, cfg.resource, cfg.top_k),
        )
        ax.set(
            xlabel=cfg.resource + (" (log)" if ax.get_xscale() == "log" else ""),
            ylabel=cfg.performance,
            title=_panel_title(key, group=cfg.group),
            ylim=(bottom, 1.01),
        )
        ax.title.set_fontsize(9)
    _legend(fig, classes, set(ok["model"]), [TREND_HANDLE, PARETO_HANDLE])
    _footnote(
        fig,
        [
            f"Grey lines: {cfg.resource_label} iso-lines P / (1 + R) = const (value printed at the end), "
            "R min-max normalised within the group. Red: Pareto front of the models' seed means (no model has higher "
            "performance at lower cost). Numbered: best performance, best PePR, top-k, Pareto front (key beside each panel).",
            energy_methods(df),
            _class_note(classes),
        ],
    )
    _place_labels(fig, pending)
    return fig


def _note_figure(title: str, note: str) -> Figure:
    """A small figure that says why there is nothing to draw (never empty panels)."""
    fig = Figure(figsize=(7.5, 1.6))
    ax = fig.subplots()
    ax.axis("off")
    ax.text(0.0, 0.9, title, fontsize=11, fontweight="bold", va="top", transform=ax.transAxes)
    ax.text(0.0, 0.55, textwrap.fill(note, 100), fontsize=9, va="top", transform=ax.transAxes)
    return fig


def epoch_pepr(history: pd.DataFrame, peaks: pd.DataFrame, df: pd.DataFrame, cfg: ReportConfig) -> Figure:
    """Figure 7: PePR per epoch (scored over all runs and epochs of the group), peaks marked.
    Without per-epoch histories: a note saying so, no empty panels."""
    if history is None or len(history) == 0 or history["epoch"].nunique() < 2:
        return _note_figure(
            "Epoch PePR: not drawn",
            "No per-epoch histories with two or more epochs were given, so PePR per epoch cannot be drawn. "
            "The workflow gathers every run's history.csv; `pepr report` takes them with --histories TABLE.",
        )
    keys = groups(df[df["ok"]], cfg.group)
    fig, axes = _panels(
        max(len(keys), 1), title_lines=_title_lines([_panel_title(k, group=cfg.group) for k in keys]) + 2
    )
    classes = model_classes(df, cfg)
    colours = class_colours(classes)
    curves = epoch_curves(history, cfg.history_performance, cfg.history_resource, list(cfg.group))
    n_runs = curves.groupby(["model", "seed", *cfg.group]).ngroups
    width, alpha = (0.9, 0.85) if n_runs < 200 else (0.5, 0.35)
    for ax, key in zip(axes, keys):
        frame = _cell_frame(curves, key, cfg.group)
        cell_peaks = _cell_frame(peaks, key, cfg.group)
        # One LineCollection per panel: thousands of runs cost one artist, not one Line2D each.
        segments, run_colours = [], []
        for (model, _seed), run in frame.sort_values("epoch").groupby(["model", "seed"]):
            segments.append(run[["epoch", "epoch_pepr"]].to_numpy(dtype=float))
            run_colours.append(colours[classes.get(model, NOT_IN_TABLE)])
        ax.add_collection(LineCollection(segments, colors=run_colours, linewidths=width, alpha=alpha))
        ax.autoscale_view()
        ax.scatter(cell_peaks["peak_epoch"], cell_peaks["peak_pepr"], marker="*", s=30, color="black", zorder=3)
        saved = cell_peaks["resource_saved"].sum()
        total = cell_peaks["resource_at_last"].sum()
        share = saved / total if total > 0 else 0.0
        cost = cell_peaks["performance_cost"].mean() if len(cell_peaks) else 0.0
        # performance_cost = last epoch's performance - the peak's: what stopping at the peak gives up.
        resource = cfg.history_resource.removeprefix("cumulative_")
        outcome = (
            f"a mean {cfg.history_performance} loss of {cost:.3f}"
            if cost >= 0
            else f"a mean {cfg.history_performance} gain of {-cost:.3f}"
        )
        ax.set(
            xlabel="epoch",
            ylabel=f"epoch PePR ({cfg.history_resource})",
            title=_panel_title(
                key, f"stopping at the peaks saves {saved:.3g} {resource} ({share:.0%}) for {outcome}", cfg.group
            ),
        )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.title.set_fontsize(8)
    star = Line2D([], [], color="black", marker="*", linestyle="", label="peak of a run")
    _legend(fig, classes, set(curves["model"]), [star], lines=True)
    _footnote(
        fig,
        [
            f"At each epoch: P = {cfg.history_performance} at that epoch, R = {cfg.history_resource} up to it, "
            "min-max normalised over all runs and epochs of the group; black star: each run's peak (diminishing returns beyond).",
            energy_methods(df),
            _class_note(classes),
        ],
    )
    return fig


def model_space(df: pd.DataFrame, cfg: ReportConfig) -> Figure:
    """Figure 8 (the paper's model-space figure): training energy vs trainable parameters, log
    axes where they span a decade, one point per model (seed mean) and group, trend and rho."""
    keys = groups(df[df["ok"]], cfg.group)
    fig, axes = _panels(
        max(len(keys), 1), key=True, title_lines=_title_lines([_panel_title(k, group=cfg.group) for k in keys])
    )
    pending: list[tuple] = []
    classes = model_classes(df, cfg)
    means = model_means(df, cfg)
    resource = "energy_kwh" if "energy_kwh" in means else cfg.resource
    valid = means[(means["params"] > 0) & (means[resource] > 0)] if resource in means else means.iloc[:0]
    for ax, key in zip(axes, keys):
        frame = _cell_frame(valid, key, cfg.group)
        _set_log_axes(ax, frame["params"], frame[resource])
        _scatter(ax, frame, "params", resource, classes)
        _draw_trend(ax, frame["params"], frame[resource])
        median = float(_cell_frame(df, key, cfg.group)["median_params"].iloc[0])
        ax.axvline(median, color="0.5", linestyle=":", linewidth=0.9)
        biggest = frame.sort_values([resource, "model"], ascending=[False, True])["model"].head(2)
        cheapest = frame.sort_values([resource, "model"])["model"].head(2)
        labels = [(m, "most energy") for m in biggest] + [
            (m, "least energy") for m in cheapest if m not in set(biggest)
        ]
        labels = labelled_models(frame, cfg.performance, f"pepr_{cfg.resource}", None, 1, limit=2) + labels
        labels = list({m: (m, w) for m, w in reversed(labels)}.values())[::-1][:MAX_LABELS]
        pending += _label_panel(ax, frame, "params", resource, labels)
        log = " (log)"
        ax.set(
            xlabel="trainable parameters" + (log if ax.get_xscale() == "log" else ""),
            ylabel=f"training {resource}" + (log if ax.get_yscale() == "log" else ""),
            title=_panel_title(key, group=cfg.group),
        )
        ax.title.set_fontsize(9)
    _legend(fig, classes, set(valid["model"]), [TREND_HANDLE, MEDIAN_HANDLE])
    _footnote(
        fig,
        [
            "One point per model: its seed mean in the group. Dotted: the group's median parameter count (small models "
            "left of it). Numbered: best P, best PePR and the most and least energy-hungry models (key beside each panel).",
            energy_methods(df),
            _class_note(classes),
        ],
    )
    _place_labels(fig, pending)
    return fig
