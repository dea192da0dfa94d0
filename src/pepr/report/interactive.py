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

import html
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from pepr.report.config import STANDARD_RESOURCES
from pepr.report.data import ReportData, group_label, group_rows, groups, variants
from pepr.report.figures import class_colours, class_order, model_classes, needs_log


@dataclass(frozen=True)
class InteractiveFigure:
    """One interactive plot: a stable id (for the page's anchors), a title and the figure."""

    name: str
    title: str
    figure: go.Figure


def _hex(colour: tuple) -> str:
    return "#" + "".join(f"{int(round(255 * c)):02x}" for c in colour[:3])


def _input_name(data: ReportData, role: str) -> str:
    """The input table's name of a report column (``model`` -> ``name`` for ``--model name``)."""
    return data.names.get(role, role)


def _params_label(data: ReportData) -> str:
    name = _input_name(data, "params")
    return "trainable parameters" if name == "params" else f"parameters ({name})"


def _hover_columns(data: ReportData) -> list[tuple[str, str]]:
    """(column, label) pairs shown on hover after the model: parameters, performance, every
    scored resource, every PePR variant; labelled with the input table's column names."""
    df, cfg = data.results, data.cfg
    columns = [("params", _input_name(data, "params"))] if cfg.params_known else []
    columns.append((cfg.performance, cfg.performance))
    resources = [r for r in data.resources if r in df.columns] or [r for r in STANDARD_RESOURCES if r in df.columns]
    if cfg.resource not in resources and cfg.resource in df.columns:
        resources.insert(0, cfg.resource)
    columns += [(r, r) for r in resources]
    columns += [(v.column, v.label) for v in variants(df)]
    return list(dict.fromkeys(columns))


def _scatter_figure(data: ReportData, x: str, y: str, x_label: str, y_label: str) -> go.Figure:
    """One figure with a trace per (group, class); a dropdown shows one group at a time."""
    df, cfg = data.results, data.cfg
    group = list(cfg.group)
    ok = df[df["ok"]].dropna(subset=[x, y])
    classes = model_classes(df, cfg)
    colours = {name: _hex(c) for name, c in class_colours(classes).items()}
    hover = _hover_columns(data)
    # A seed the input did not have (one run per model and group) is not shown as if it were.
    seed = "" if "seed" in data.synthetic else f" ({_input_name(data, 'seed')} %{{customdata[0]}})"
    template = (
        f"<b>%{{text}}</b>{seed}<br>%{{meta}}<br>"
        + "<br>".join(f"{label}: %{{customdata[{i + 1}]:.4~g}}" for i, (_, label) in enumerate(hover))
        + "%{hovertext}<extra>%{fullData.name}</extra>"
    )
    fig = go.Figure()
    keys = groups(ok, group)
    frames = [group_rows(ok, key, group) for key in keys]
    labels = [html.escape(group_label(key, group)) for key in keys]  # data as text, never markup
    buttons = []
    trace_group = []
    for index, frame in enumerate(frames):
        for name in class_order(classes):
            part = frame[frame["model"].map(classes) == name]
            if part.empty:
                continue
            flags = [str(f) for f in part["flags"]] if "flags" in part.columns else [""] * len(part)
            # float32 (7 significant digits, the hover shows 4): half the page's bytes at 24,000 runs.
            custom = np.column_stack(
                [part["seed"].to_numpy(dtype=float)]
                + [pd.to_numeric(part[c], errors="coerce").to_numpy(dtype=float) for c, _ in hover]
            ).astype(np.float32)
            fig.add_trace(
                go.Scatter(
                    x=part[x].to_numpy(dtype=np.float32),
                    y=part[y].to_numpy(dtype=np.float32),
                    mode="markers",
                    name=name,
                    text=[html.escape(str(m)) for m in part["model"]],
                    customdata=custom,  # data as text, never markup
                    # why a measurement check flagged the run (shown on hover, as text: never markup); per
                    # point only where some run of the trace is flagged (24,000 empty strings cost bytes)
                    hovertext=[f"<br>flagged: {html.escape(f)}" if f else "" for f in flags] if any(flags) else "",
                    hovertemplate=template.replace("%{meta}", labels[index]),
                    marker={
                        "color": colours[name],
                        "size": 7,
                        "opacity": 0.8,
                        "line": {"width": 0.5, "color": "white"},
                        "symbol": ["x" if f else "circle" for f in flags] if any(flags) else "circle",
                    },
                    visible=index == 0,
                    legendgroup=name,
                    showlegend=True,
                )
            )
            trace_group.append(index)
    for index, frame in enumerate(frames):
        layout = {
            "xaxis.type": "log" if needs_log(frame[x]) else "linear",
            "yaxis.type": "log" if needs_log(frame[y]) else "linear",
        }
        buttons.append(
            {
                "label": labels[index],
                "method": "update",
                "args": [{"visible": [g == index for g in trace_group]}, layout],
            }
        )
    first = frames[0] if frames else ok
    fig.update_layout(
        height=560,
        margin={"l": 60, "r": 20, "t": 70, "b": 55},
        template="plotly_white",
        xaxis={"title": {"text": x_label}, "type": "log" if needs_log(first[x]) else "linear"},
        yaxis={"title": {"text": y_label}, "type": "log" if needs_log(first[y]) else "linear"},
        legend={"title": {"text": "colour"}, "orientation": "v"},
        hovermode="closest",
        updatemenus=[
            {
                "buttons": buttons,
                "direction": "down",
                "x": 0.0,
                "xanchor": "left",
                "y": 1.14,
                "yanchor": "top",
                "showactive": True,
            }
        ]
        if len(buttons) > 1
        else [],
        annotations=[]
        if len(buttons) > 1
        else [
            {
                "text": labels[0] if labels else "",
                "x": 0,
                "xref": "paper",
                "y": 1.08,
                "yref": "paper",
                "showarrow": False,
            }
        ],
    )
    return fig


def interactive_figures(data: ReportData) -> list[InteractiveFigure]:
    """The three interactive scatter plots of a loaded report (:func:`pepr.report.build.load`
    or :func:`~pepr.report.build.prepare`): performance vs parameters, performance vs the
    headline resource, headline PePR vs parameters, one group at a time (``cfg.group``).
    Hover and axis titles use the input table's column names. Plots whose columns are absent
    (no parameter counts) are left out."""
    df, cfg = data.results, data.cfg
    out = []
    pepr = f"pepr_{cfg.resource}"
    sized = cfg.params_known and "params" in df and df["params"].notna().any()
    params = _params_label(data)
    if sized:
        out.append(
            InteractiveFigure(
                "performance_vs_params",
                f"{cfg.performance} vs {params}",
                _scatter_figure(data, "params", cfg.performance, params, cfg.performance),
            )
        )
    if cfg.resource in df:
        out.append(
            InteractiveFigure(
                "performance_vs_resource",
                f"{cfg.performance} vs {cfg.resource}",
                _scatter_figure(data, cfg.resource, cfg.performance, cfg.resource, cfg.performance),
            )
        )
    if sized and pepr in df:
        out.append(
            InteractiveFigure(
                "pepr_vs_params",
                f"{cfg.resource_label} vs {params}",
                _scatter_figure(data, "params", pepr, params, cfg.resource_label),
            )
        )
    return out


#: plotly's options for every plot: no logo; zoom, pan, reset kept.
PLOT_CONFIG = {"displaylogo": False, "responsive": True, "toImageButtonOptions": {"format": "png"}}


def figure_fragment(item: InteractiveFigure) -> str:
    """The HTML ``<div>`` + ``<script>`` of one plot, without plotly.js (see :func:`plotly_script`)."""
    return item.figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"plot-{item.name}", config=PLOT_CONFIG)


def plotly_script() -> str:
    """plotly.js itself, inline in one ``<script>`` element: embed it once per page."""
    return f"<script>{get_plotlyjs()}</script>"
