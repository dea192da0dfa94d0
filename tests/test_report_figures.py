"""The report's figures at both ends of the scale the report must hold (issue 15): 5 models in
1 group up to 200 models in 12 groups. Held: legend size, bounded and non-overlapping labels,
the log-axis rule, a trend with Spearman's rho in every scatter panel, panels that keep their
size, tick labels legible (>= 9 px) in report.html at a 1400 px window, the pooled figure, and
no empty panels when there are no histories."""

from __future__ import annotations

import os
import re

os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from pepr.report import figures
from pepr.report.build import load
from pepr.report.config import ReportConfig
from pepr.report.data import group_label, group_rows, groups
from pepr.report.html import STYLE
from pepr.report.tables import paired_table
from report_scale import scaled_sweep

CFG = ReportConfig(figure_formats=("png",), bootstrap_resamples=100)
#: The figures that draw scatter panels with labels, trend and rho.
SCATTERS = {
    "performance_vs_params": figures.performance_vs_params,
    "performance_vs_resource": figures.performance_vs_resource,
    "model_space": figures.model_space,
}


@pytest.fixture(scope="module", params=[(5, 1, 1), (200, 12, 1)], ids=["5models-1group", "200models-12groups"])
def scale(request, tmp_path_factory):
    n_models, n_groups, n_seeds = request.param
    pepr_csv, histories = scaled_sweep(
        tmp_path_factory.mktemp(f"scale{n_models}"), n_models, n_groups, n_seeds, epochs=3
    )
    data = load(pepr_csv, histories, CFG)
    drawn = {name: draw(data.results, CFG) for name, draw in SCATTERS.items()}
    drawn["pepr_profile"] = figures.pepr_profile(data.results, CFG)
    for fig in drawn.values():
        FigureCanvasAgg(fig).draw()  # the canvas savefig renders PNG with
    return data, drawn, n_groups


def panels(fig):
    """The visible data panels (not the colour bar)."""
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>" and ax.get_title()]


def test_needs_log_is_a_span_of_more_than_a_decade():
    assert not figures.needs_log([1.0, 10.0])
    assert figures.needs_log([1.0, 10.5])
    assert not figures.needs_log([0.0, 100.0]) and not figures.needs_log([-1.0, 100.0])  # a log axis cannot show them
    assert not figures.needs_log([5.0]) and figures.needs_log([np.nan, 2e-4, 3e-2])


def test_classes_are_a_handful_from_the_paper_table_or_size_bins():
    df = pd.DataFrame({"model": ["resnet18", "vgg13", "mobilenetv2_050", "my_net"], "params": [11e6, 130e6, 2e6, 5e5]})
    classes = figures.model_classes(df, CFG)
    assert classes["my_net"] == figures.NOT_IN_TABLE and classes["mobilenetv2_050"] == "CNN, efficient"
    unknown = pd.DataFrame({"model": [f"net{i}" for i in range(300)], "params": np.geomspace(2e5, 5e8, 300)})
    bins = figures.model_classes(unknown, CFG)
    assert set(bins.values()) == {label for _, label in figures.SIZE_BINS}


def test_legend_has_at_most_12_entries_and_no_panel_has_its_own(scale):
    _, drawn, _ = scale
    for name, fig in drawn.items():
        assert len(fig.legends) == 1, name
        assert 2 <= len(fig.legends[0].get_texts()) <= figures.MAX_LEGEND, name
        assert all(ax.get_legend() is None for ax in fig.axes), name


def test_labels_are_bounded_and_never_overprint(scale):
    _, drawn, n_groups = scale
    for name, fig in drawn.items():
        renderer = fig.canvas.get_renderer()
        for ax in panels(fig):
            labels = [t for t in ax.texts if t.get_gid() == figures.LABEL_GID]
            assert 1 <= len(labels) <= figures.MAX_LABELS, (name, ax.get_title())
            # The numbers' circles (an annotation's own extent includes its leader line).
            boxes = [t.get_bbox_patch().get_window_extent(renderer) for t in labels]
            for i, box in enumerate(boxes):
                assert not any(box.overlaps(other) for other in boxes[i + 1 :]), (
                    name,
                    ax.get_title(),
                    labels[i].get_text(),
                )
            assert sorted(int(t.get_text()) for t in labels) == list(range(1, len(labels) + 1))


def test_axes_are_log_exactly_when_the_values_span_more_than_a_decade(scale):
    data, drawn, n_groups = scale
    ok = data.results[data.results["ok"]]
    keys = groups(ok, data.cfg.group)
    scales = set()
    for name, x, y in [
        ("performance_vs_params", "params", None),
        ("performance_vs_resource", data.cfg.resource, None),
        ("model_space", "params", "energy_kwh"),
    ]:
        axes = panels(drawn[name])
        assert len(axes) == len(keys)
        for ax, key in zip(axes, keys):
            frame = group_rows(ok, key, data.cfg.group)
            assert ax.get_xscale() == ("log" if figures.needs_log(frame[x]) else "linear"), (name, key)
            if y:
                assert ax.get_yscale() == ("log" if figures.needs_log(frame[y]) else "linear"), (name, key)
            scales.add(ax.get_xscale())
    # The paper's first five models span less than a decade of parameters; 200 models span three.
    assert scales == {"log"} if n_groups > 1 else "linear" in scales


def test_every_scatter_panel_has_a_trend_and_spearman_rho(scale):
    data, drawn, _ = scale
    for name in SCATTERS:
        for ax in panels(drawn[name]):
            rho = [t.get_text() for t in ax.texts if t.get_text().startswith("Spearman rho")]
            assert len(rho) == 1, (name, ax.get_title())
            assert any(line.get_linestyle() == "--" and line.get_color() == "black" for line in ax.get_lines()), name


def test_spearman_and_trend_match_scipy_and_medians():
    from scipy import stats

    rng = np.random.default_rng(0)
    x, y = np.geomspace(1e5, 1e8, 60), rng.normal(size=60)
    rho, p, n = figures.spearman(x, y)
    expected = stats.spearmanr(x, y)
    assert (rho, p, n) == pytest.approx((expected.statistic, expected.pvalue, 60))
    xs, ys = figures.trend(x, y, log_x=True)
    assert (
        len(xs) == 6
        and ys[0] == pytest.approx(np.median(y[:10]))
        and xs[0] == pytest.approx(np.exp(np.median(np.log(x[:10]))))
    )
    assert figures.spearman([1, 2], [3, 4])[0] != figures.spearman([1, 2], [3, 4])[0]  # NaN: too few points
    # three points in order: the exact p of the tables (2 of 3! pairings), never scipy's p = 0
    assert figures.spearman([1, 2, 3], [1, 2, 3]) == pytest.approx((1.0, 1 / 3, 3))


def page_width_px(window: int) -> float:
    """Width report.html gives a figure in a browser window ``window`` px wide: main's
    max-width less its side padding (figures are shown at most at their own size)."""
    main = re.search(r"main\{padding:(\d+)px (\d+)px[^}]*max-width:(\d+)px", STYLE)
    assert main, "report.html's CSS no longer sets main's padding and max-width"
    scrollbar = 17
    return min(window - scrollbar, int(main.group(3))) - 2 * int(main.group(2))


@pytest.fixture(scope="module")
def every_figure(scale):
    """The scatter figures and the rest the page shows (every variant, pooled, paired)."""
    data, drawn, _ = scale
    others = {
        "pepr_vs_params": figures.pepr_vs_params(data.results, CFG),
        "pooled": figures.pooled(data.results, CFG),
        "init_comparison": figures.paired_comparison(
            paired_table(data.results, CFG, "init"), data.results, CFG, "init"
        ),
        "fraction_comparison": figures.paired_comparison(
            paired_table(data.results, CFG, "fraction"), data.results, CFG, "fraction"
        ),
    }
    for fig in others.values():
        FigureCanvasAgg(fig).draw()
    return {**drawn, **others}


def test_tick_labels_are_at_least_9px_in_a_1400px_window(every_figure):
    shown = page_width_px(1400)
    for name, fig in every_figure.items():
        width_px = fig.get_figwidth() * figures.DPI
        scale_factor = min(1.0, shown / width_px)  # max-width:100%: shrunk to the page, never enlarged
        ticks = [
            label for ax in panels(fig) for label in ax.get_xticklabels() + ax.get_yticklabels() if label.get_text()
        ]
        assert ticks or not any(ax.axison for ax in fig.axes), f"{name}: no tick labels drawn"
        if not ticks:  # a note in place of panels (nothing to compare at this grid)
            continue
        smallest = min(label.get_fontsize() for label in ticks) * figures.DPI / 72 * scale_factor
        assert smallest >= 9, f"{name}: tick labels {smallest:.1f} px at a 1400 px window ({width_px:.0f} px figure)"


def test_pooled_figure_has_every_group_in_one_panel_per_claim(scale, every_figure):
    data, _, n_groups = scale
    drawn = every_figure
    axes = panels(drawn["pooled"])
    assert len(axes) == 2
    for ax in axes:
        # one scatter per group, each holding that group's models
        assert len(ax.collections) == n_groups
    legend = drawn["pooled"].legends[0]
    labels = [group_label(k) for k in groups(data.results[data.results["ok"]])][: figures.MAX_LEGEND - 1]
    assert [t.get_text() for t in legend.get_texts()][:-1] == labels


def test_panels_keep_their_size_and_wrap_at_two_columns(scale):
    _, drawn, n_groups = scale
    fig = drawn["performance_vs_resource"]
    axes = panels(fig)
    assert len(axes) == n_groups
    widths = [ax.get_window_extent().width / fig.dpi for ax in axes]
    heights = [ax.get_window_extent().height / fig.dpi for ax in axes]
    assert min(widths) > 0.6 * figures.PANEL[0] and min(heights) > 0.45 * figures.PANEL[1]
    columns = {round(ax.get_position().x0, 3) for ax in axes}
    assert len(columns) == min(n_groups, figures.MAX_COLUMNS)


def test_epoch_figure_without_histories_is_a_note_not_empty_panels(scale):
    data, _, _ = scale
    fig = figures.epoch_pepr(data.histories.iloc[:0], data.peaks, data.results, CFG)
    assert all(not ax.axison for ax in fig.axes)
    assert any("No per-epoch histories" in t.get_text() for ax in fig.axes for t in ax.texts)
    with_histories = figures.epoch_pepr(data.histories, data.peaks, data.results, CFG)
    FigureCanvasAgg(with_histories).draw()
    ax = panels(with_histories)[0]
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert len(with_histories.legends[0].get_texts()) <= figures.MAX_LEGEND
