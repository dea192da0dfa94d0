"""Interactive versions of the report's scatter plots (plotly): performance vs parameters,
performance vs the headline resource, and PePR vs parameters.

Hovering a point shows the model, its group and seed, parameters, performance, every resource
and every PePR variant; the plots zoom and pan; a menu switches between groups (one group
shown at a time keeps 200 models x 12 groups readable). Colours are the static figures'
classes (:func:`pepr.report.figures.model_classes`), axes are logarithmic by the same rule
(:func:`pepr.report.figures.needs_log`).

The fragments carry no JavaScript library: the page that holds them embeds plotly.js once
(:func:`plotly_script`), so the report stays self-contained and offline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from pepr.report.config import STANDARD_RESOURCES, ReportConfig
from pepr.report.data import CELL, cell_label, cells, variants
from pepr.report.figures import class_colours, class_order, model_classes, needs_log


@dataclass(frozen=True)
class InteractiveFigure:
    """One interactive plot: a stable id (for the page's anchors), a title and the figure."""

    name: str
    title: str
    figure: go.Figure


def _hex(colour: tuple) -> str:
    return "#" + "".join(f"{int(round(255 * c)):02x}" for c in colour[:3])


def _hover_columns(df: pd.DataFrame, cfg: ReportConfig) -> list[tuple[str, str]]:
    """(column, label) pairs shown on hover after the model: params, performance, resources, PePR."""
    columns = [("params", "params"), (cfg.performance, cfg.performance)]
    columns += [(r, r) for r in STANDARD_RESOURCES if r in df.columns]
    if cfg.resource not in STANDARD_RESOURCES and cfg.resource in df.columns:
        columns.append((cfg.resource, cfg.resource))
    columns += [(v.column, v.label) for v in variants(df)]
    return list(dict.fromkeys(columns))


def _scatter_figure(df: pd.DataFrame, cfg: ReportConfig, x: str, y: str, x_label: str, y_label: str) -> go.Figure:
    """One figure with a trace per (group, class); a dropdown shows one group at a time."""
    ok = df[df["ok"]].dropna(subset=[x, y])
    classes = model_classes(df, cfg)
    colours = {name: _hex(c) for name, c in class_colours(classes).items()}
    hover = _hover_columns(ok, cfg)
    template = "<b>%{text}</b> (seed %{customdata[0]})<br>%{meta}<br>" + "<br>".join(
        f"{label}: %{{customdata[{i + 1}]:.4~g}}" for i, (_, label) in enumerate(hover)) + "<extra>%{fullData.name}</extra>"
    fig = go.Figure()
    keys = cells(ok)
    buttons = []
    trace_group = []
    for index, key in enumerate(keys):
        frame = ok[(ok[CELL] == pd.Series(key, index=CELL)).all(axis=1)]
        for name in class_order(classes):
            part = frame[frame["model"].map(classes) == name]
            if part.empty:
                continue
            # float32 (7 significant digits, the hover shows 4): half the page's bytes at 24,000 runs.
            custom = np.column_stack([part["seed"].to_numpy(dtype=float)] + [
                pd.to_numeric(part[c], errors="coerce").to_numpy(dtype=float) for c, _ in hover]).astype(np.float32)
            fig.add_trace(go.Scatter(
                x=part[x].to_numpy(dtype=np.float32), y=part[y].to_numpy(dtype=np.float32), mode="markers", name=name,
                text=part["model"].tolist(), customdata=custom,
                hovertemplate=template.replace("%{meta}", cell_label(key)),
                marker={"color": colours[name], "size": 7, "opacity": 0.8, "line": {"width": 0.5, "color": "white"}},
                visible=index == 0, legendgroup=name, showlegend=True,
            ))
            trace_group.append(index)
    for index, key in enumerate(keys):
        frame = ok[(ok[CELL] == pd.Series(key, index=CELL)).all(axis=1)]
        layout = {"xaxis.type": "log" if needs_log(frame[x]) else "linear",
                  "yaxis.type": "log" if needs_log(frame[y]) else "linear"}
        buttons.append({"label": cell_label(key), "method": "update",
                        "args": [{"visible": [g == index for g in trace_group]}, layout]})
    first = ok[(ok[CELL] == pd.Series(keys[0], index=CELL)).all(axis=1)] if keys else ok
    fig.update_layout(
        height=560, margin={"l": 60, "r": 20, "t": 70, "b": 55}, template="plotly_white",
        xaxis={"title": {"text": x_label}, "type": "log" if needs_log(first[x]) else "linear"},
        yaxis={"title": {"text": y_label}, "type": "log" if needs_log(first[y]) else "linear"},
        legend={"title": {"text": "colour"}, "orientation": "v"}, hovermode="closest",
        updatemenus=[{"buttons": buttons, "direction": "down", "x": 0.0, "xanchor": "left", "y": 1.14, "yanchor": "top",
                      "showactive": True}] if len(buttons) > 1 else [],
        annotations=[] if len(buttons) > 1 else [
            {"text": cell_label(keys[0]) if keys else "", "x": 0, "xref": "paper", "y": 1.08, "yref": "paper", "showarrow": False}],
    )
    return fig


def interactive_figures(df: pd.DataFrame, cfg: ReportConfig) -> list[InteractiveFigure]:
    """The three interactive scatter plots of ``df`` (a loaded results table, see
    :func:`pepr.report.build.load`): performance vs parameters, performance vs the headline
    resource, headline PePR vs parameters. Plots whose columns are absent are left out."""
    out = []
    pepr = f"pepr_{cfg.resource}"
    if "params" in df and df["params"].notna().any():
        out.append(InteractiveFigure("performance_vs_params", f"{cfg.performance} vs trainable parameters",
                                     _scatter_figure(df, cfg, "params", cfg.performance, "trainable parameters", cfg.performance)))
    if cfg.resource in df:
        out.append(InteractiveFigure("performance_vs_resource", f"{cfg.performance} vs {cfg.resource}",
                                     _scatter_figure(df, cfg, cfg.resource, cfg.performance, cfg.resource, cfg.performance)))
    if pepr in df and "params" in df and df["params"].notna().any():
        out.append(InteractiveFigure("pepr_vs_params", f"{cfg.resource_label} vs trainable parameters",
                                     _scatter_figure(df, cfg, "params", pepr, "trainable parameters", cfg.resource_label)))
    return out


#: plotly's options for every plot: no logo; zoom, pan, reset kept.
PLOT_CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "png"}}


def figure_fragment(item: InteractiveFigure) -> str:
    """The HTML ``<div>`` + ``<script>`` of one plot, without plotly.js (see :func:`plotly_script`)."""
    return item.figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{item.name}", config=PLOT_CONFIG)


def plotly_script() -> str:
    """plotly.js itself, inline in one ``<script>`` element: embed it once per page."""
    return f"<script>{get_plotlyjs()}</script>"
