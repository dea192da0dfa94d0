"""The report as one self-contained HTML page: ``out_dir/report.html``.

Rendered from the files of a report folder (the agreed layout of ``pepr report DIR`` and of
the workflow's ``results/``)::

    out_dir/pepr.csv            scored runs (for the interactive plots)
    out_dir/summary.md          the findings in sentences
    out_dir/tables/*.csv        decision.csv and footprint.csv first, then every other table
    out_dir/figures/*.png|svg   the static figures

The page reads top to bottom as a reader decides: the decision table and the sweep's totals
(energy, CO2, device-hours, measured or estimated) on the first screen, then the summary, the
interactive plots, the figures and every table (sortable by clicking a column header).
Everything is inline: images as base64 PNG (or inline SVG), plotly.js once, a few lines of
CSS and JavaScript of its own; nothing is loaded from the network, so the page opens offline
and inside Snakemake's report. A missing file leaves a note in its section, never a failure.
"""

from __future__ import annotations

import base64
import html
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from markdown_it import MarkdownIt

from pepr.errors import PeprInputError
from pepr.report.adaptive import savings_html as adaptive_savings_html
from pepr.report.config import FIGURES, TABLES, WORKFLOW_GROUP, ReportConfig
from pepr.results.runs import atomic_write_text

if TYPE_CHECKING:
    from pepr.report.data import ReportData

#: The first tables of the page, in order; the others follow by file name.
DECISION_TABLE = "decision.csv"
FOOTPRINT_TABLE = "footprint.csv"
#: Most rows of one table shown on the page (the CSV file beside it has them all).
MAX_TABLE_ROWS = 2000
#: ... and on the light page registered in Snakemake's single-file report.
LIGHT_TABLE_ROWS = 200
#: The most bytes Chromium accepts in a data: URL (Snakemake's report embeds results as such).
DATA_URL_LIMIT = 2 * 1024 * 1024
#: Headline totals of the footprint table: column -> (label, unit).
TOTALS = {"energy_kwh": ("Energy", "kWh"), "co2_kg": ("CO2", "kg"), "device_hours": ("Device-hours", "h")}
#: Short titles of the static figures (file stem -> title).
FIGURE_TITLES = {
    "1_pepr_profile": "1. PePR profile: every run on the score's contours",
    "2_performance_vs_params": "2. Performance vs model size",
    "3_pepr_vs_params": "3. PePR vs model size, every variant",
    "4_pretrained_vs_scratch": "4. Init strategies compared per model",
    "5_data_fraction": "5. Full data vs a fraction of it",
    "6_performance_vs_energy": "6. Performance vs energy, Pareto front",
    "7_epoch_pepr": "7. When training stops paying off (PePR per epoch)",
    "8_energy_vs_params": "8. The model space: energy vs model size",
    "9_pooled_vs_params": "9. All groups in one panel: performance and PePR vs model size (compact, for a paper)",
}

STYLE = """
body{font-family:-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;margin:0;color:#1d2330;background:#fff}
header{background:#1d3557;color:#fff;padding:14px 28px}header h1{margin:0;font-size:22px}header p{margin:4px 0 0;font-size:13px;opacity:.85}
nav{position:sticky;top:0;background:#f1f4f8;border-bottom:1px solid #d5dbe5;padding:6px 28px;font-size:13px;z-index:5}
nav a{margin-right:16px;color:#1d3557;text-decoration:none}main{padding:8px 28px 40px;max-width:1500px}
h2{border-bottom:2px solid #1d3557;padding-bottom:3px;margin-top:26px;font-size:19px}h3{font-size:15px;margin:18px 0 6px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:10px 0 6px}.card{border:1px solid #d5dbe5;border-radius:6px;padding:8px 14px;min-width:150px;background:#f8fafc}
.card .v{font-size:21px;font-weight:600}.card .l{font-size:12px;color:#4a5568}.note{font-size:12px;color:#4a5568}
.missing{background:#fff4e5;border-left:4px solid #f0a202;padding:6px 10px;font-size:13px}
.tablewrap{overflow:auto;max-height:560px;border:1px solid #e2e8f0;margin:6px 0 12px}
table{border-collapse:collapse;font-size:12.5px}th,td{padding:3px 8px;border-bottom:1px solid #e2e8f0;text-align:left;white-space:nowrap}
th{background:#eef2f7;position:sticky;top:0;cursor:pointer;user-select:none}th.asc::after{content:" \\25B2"}th.desc::after{content:" \\25BC"}
td.text{white-space:normal;min-width:260px;max-width:520px}td.num{text-align:right;font-variant-numeric:tabular-nums}tr:hover td{background:#f6f9ff}
table.decision{font-size:14px}table.decision td,table.decision th{padding:5px 10px}table.decision th{white-space:normal;max-width:120px;vertical-align:bottom}table.decision td{white-space:normal;overflow-wrap:break-word}table.decision td.num{white-space:nowrap}table.decision td.text{min-width:220px;max-width:440px}
details{margin:4px 0}summary{cursor:pointer;font-weight:600;font-size:14px;padding:3px 0}
figure{margin:10px 0 24px}figure img,figure svg{max-width:100%;height:auto;border:1px solid #e2e8f0}figure img{cursor:zoom-in}
figure img.enlarged{position:fixed;inset:0;width:100vw;height:100vh;max-width:none;object-fit:contain;background:#fff;z-index:20;cursor:zoom-out;border:0}figcaption{font-size:13px;font-weight:600;margin-bottom:4px}
.summary h1{font-size:20px;margin:10px 0 4px}.summary table{border-collapse:collapse;margin:6px 0}.summary td,.summary th{border:1px solid #e2e8f0;white-space:normal}.summary td{max-width:720px;overflow-wrap:break-word}
"""

#: Sorts a table by the clicked column (numbers numerically, text alphabetically); enlarges a clicked figure.
SORT_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0], index = Array.prototype.indexOf.call(th.parentNode.children, th);
    var ascending = !th.classList.contains("asc");
    th.parentNode.querySelectorAll("th").forEach(function (h) { h.classList.remove("asc", "desc"); });
    th.classList.add(ascending ? "asc" : "desc");
    var rows = Array.prototype.slice.call(body.rows);
    var key = function (row) { var t = row.cells[index] ? row.cells[index].textContent.trim() : ""; var n = parseFloat(t.replace(/,/g, ""));
      return isNaN(n) || !/^[-+]?[\\d.,]+(e[-+]?\\d+)?%?$/i.test(t) ? [1, t.toLowerCase()] : [0, n]; };
    rows.sort(function (a, b) { var x = key(a), y = key(b); var c = x[0] - y[0] || (x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0);
      return ascending ? c : -c; });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
// a figure enlarges to the whole window on click (and back on a second click or Escape)
document.querySelectorAll("figure img").forEach(function (img) {
  img.title = "click to enlarge";
  img.addEventListener("click", function () { img.classList.toggle("enlarged"); });
});
document.addEventListener("keydown", function (e) {
  if (e.key === "Escape") document.querySelectorAll("figure img.enlarged").forEach(function (i) { i.classList.remove("enlarged"); });
});
"""


#: Columns that name levels of a comparison or models: shown as written ("1.0" stays "1.0", not 1).
LEVEL_COLUMNS = ("context", "treatment", "baseline", "recommended_model", "best_model")


def key_columns(data: ReportData | None = None) -> tuple[list[str], list[str]]:
    """The group columns and the model / seed columns of the report's tables, in the input's
    names (``data`` None: the workflow's own, dataset / init / fraction, model, seed)."""
    if data is None:
        return list(WORKFLOW_GROUP), ["model", "seed"]
    names = data.names
    return list(data.cfg.group), [names.get("model", "model"), names.get("seed", "seed")]


def _read_csv(path: Path, text_columns: list[str]) -> pd.DataFrame | None:
    """A table of the folder, or None when it is absent or unreadable (the page says so).
    ``text_columns`` (group keys, model, seed, levels) are read as written: "1.0" stays "1.0"."""
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, keep_default_na=True, dtype={c: str for c in text_columns})
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError):
        return None


def _format(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


def table_html(table: pd.DataFrame, css_class: str = "sortable", max_rows: int = MAX_TABLE_ROWS) -> str:
    """``table`` as an HTML table (values escaped, numbers right-aligned, sortable headers)."""
    shown = table.head(max_rows)
    numeric = {
        c for c in shown.columns if pd.api.types.is_numeric_dtype(shown[c]) and not pd.api.types.is_bool_dtype(shown[c])
    }
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    rows = []
    for values in shown.itertuples(index=False):
        cells = "".join(
            f'<td class="num">{html.escape(_format(v))}</td>'
            if c in numeric
            else f'<td class="text">{html.escape(_format(v))}</td>'
            if len(_format(v)) > 40
            else f"<td>{html.escape(_format(v))}</td>"
            for c, v in zip(shown.columns, values)
        )
        rows.append(f"<tr>{cells}</tr>")
    more = (
        f'<p class="note">First {max_rows} of {len(table)} rows; the CSV file has them all.</p>'
        if len(table) > max_rows
        else ""
    )
    return (
        f'<div class="tablewrap"><table class="sortable {css_class}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>{more}"
    )


def _sentences_first(table: pd.DataFrame, group: list[str]) -> pd.DataFrame:
    """A table with its sentence columns (long text, e.g. "94% of the best accuracy at 8% of
    its energy") right after the group keys (``group``), where a reader looks first."""
    keys = [c for c in table.columns if c in group]
    # Text columns whatever their dtype (object, or pandas' string dtype).
    long = [
        c
        for c in table.columns
        if c not in keys
        and not pd.api.types.is_numeric_dtype(table[c])
        and not table[c].dropna().empty
        and table[c].dropna().astype(str).str.len().median() > 30
    ]
    return table[keys + long + [c for c in table.columns if c not in keys and c not in long]]


#: The decision table's columns shown on the first screen, in order (decision.csv has them all:
#: counts, PePR values and shares are in the Tables section).
DECISION_VIEW = (
    "statement",
    "recommended_model",
    "recommended_performance",
    "recommended_resource",
    "best_model",
    "best_performance",
    "best_resource",
)


def _interval_text(low: object, high: object) -> str:
    low, high = pd.to_numeric(pd.Series([low, high]), errors="coerce")
    return "unknown" if pd.isna(low) or pd.isna(high) else f"[{low:.3g}, {high:.3g}]"


def _contenders_text(names: object, count: object) -> str:
    text = "" if pd.isna(names) else str(names)
    if text == "unknown" or pd.isna(pd.to_numeric(pd.Series([count]), errors="coerce").iloc[0]):
        return "unknown"
    return "none" if not text else f"{len(text.split('; '))}: {text.replace('; ', ', ')}"


def decision_view(table: pd.DataFrame, group: list[str]) -> pd.DataFrame:
    """The decision as the first screen shows it: per group the sentence, the recommended
    model with its performance (and interval), its contenders, its resource, the
    best-performance model with its own; headers name the table's performance and resource
    (``acc``, ``kwh``). A table without the decision columns is shown whole, sentences first."""
    if not set(DECISION_VIEW) <= set(table.columns) or table.empty:
        return _sentences_first(table, group)
    first = table.iloc[0]
    perf = str(first.get("performance_metric", "performance"))
    resource = str(first.get("resource", "resource"))
    variant = str(first.get("variant", "PePR"))
    headers = {
        "statement": "decision",
        "recommended_model": f"recommended (by {variant})",
        "recommended_performance": perf,
        "recommended_resource": resource,
        "best_model": f"best-{perf} model",
        "best_performance": f"its {perf}",
        "best_resource": f"its {resource}",
    }
    keys = [c for c in group if c in table.columns]
    view = table[[*keys, *DECISION_VIEW]].copy()
    if {"recommended_performance_ci_low", "recommended_performance_ci_high", "contenders", "n_contenders"} <= set(
        table.columns
    ):
        view.insert(
            len(keys) + 3,
            f"{perf} interval",
            [
                _interval_text(lo, hi)
                for lo, hi in zip(table["recommended_performance_ci_low"], table["recommended_performance_ci_high"])
            ],
        )
        view.insert(
            len(keys) + 4,
            f"{variant} interval",
            [
                _interval_text(lo, hi)
                for lo, hi in zip(table["recommended_pepr_ci_low"], table["recommended_pepr_ci_high"])
            ],
        )
        view.insert(
            len(keys) + 5,
            "contenders (not distinguishable)",
            [_contenders_text(n, c) for n, c in zip(table["contenders"], table["n_contenders"])],
        )
    return view.rename(columns=headers)


def split_decision(summary: str) -> tuple[str, str]:
    """summary.md without its decision section (the page shows the decision table once, on
    top) and that section's notes on how the intervals were obtained (shown under it)."""
    lines = summary.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("## Decision")), None)
    if start is None:
        return summary, ""
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith(("## ", "**This sweep"))), len(lines))
    notes = [line for line in lines[start + 1 : end] if line.strip() and not line.startswith("|")]
    return "\n".join([*lines[:start], *lines[end:]]) + "\n", "\n\n".join(notes)


def _missing(what: str, how: str) -> str:
    return f'<p class="missing">{html.escape(what)} {html.escape(how)}</p>'


def _totals(footprint: pd.DataFrame) -> str:
    """Cards of the sweep's totals (runs, energy, CO2, device-hours) and how they were obtained."""
    total_rows = footprint[footprint.astype(str).apply(lambda col: col.str.lower().eq("total")).any(axis=1)]
    row = total_rows.iloc[0] if len(total_rows) else (footprint.iloc[0] if len(footprint) == 1 else None)

    def value(column: str) -> float:
        if row is not None:
            return pd.to_numeric(pd.Series([row[column]]), errors="coerce").iloc[0]
        return pd.to_numeric(footprint[column], errors="coerce").sum(min_count=1)

    cards, known = [], 0
    if "n_runs" in footprint and pd.notna(value("n_runs")):
        cards.append(f'<div class="card"><div class="v">{int(value("n_runs"))}</div><div class="l">Runs</div></div>')
    for column, (label, unit) in TOTALS.items():
        if column not in footprint:
            continue
        total = value(column)
        known += pd.notna(total)
        text = "unknown" if pd.isna(total) else f"{total:.4g} {unit}"
        pretraining = value(f"pretraining_{column}") if f"pretraining_{column}" in footprint else float("nan")
        if pd.notna(total) and pd.notna(pretraining) and pretraining > 0:
            label = f"{label} (incl. pretraining {pretraining:.3g} {unit})"
        cards.append(
            f'<div class="card"><div class="v">{html.escape(text)}</div><div class="l">{html.escape(label)}</div></div>'
        )
    if not any(column in footprint for column in TOTALS):
        return _missing("The footprint table has none of the columns", f"{', '.join(TOTALS)}: no totals to show.")
    notes = []
    if not known:
        notes.append(
            "Not known from this table: it has none of the columns energy_kwh, co2_kg, train_time_s "
            "(pepr report --rename yours to them to get the totals)"
        )
    else:
        for column in (
            c for c in footprint.columns if re.search(r"measure|estimated|method|source|basis", str(c), re.I)
        ):
            values = sorted({str(v) for v in footprint[column].dropna()})
            if values:
                notes.append(f"{column}: {', '.join(values)}")
        if not notes:
            notes.append("The footprint table does not say whether these were measured or estimated")
    return f'<div class="cards">{"".join(cards)}</div><p class="note">{html.escape("; ".join(notes))}.</p>'


def _figure_html(path: Path) -> str:
    title = FIGURE_TITLES.get(path.stem, path.stem.replace("_", " "))
    if path.suffix == ".png":
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        body = f'<img alt="{html.escape(title)}" src="data:image/png;base64,{data}">'
    else:  # svg inline, without its XML prolog and doctype
        text = path.read_text(encoding="utf-8")
        body = text[text.find("<svg") :]
    return f'<figure id="fig-{html.escape(path.stem)}"><figcaption>{html.escape(title)}</figcaption>{body}</figure>'


def _figures(figures_dir: Path) -> str:
    if not figures_dir.is_dir():
        return _missing(
            f"No figures folder ({figures_dir.name}/).", "Build the figures first (rule report_figures / pepr report)."
        )
    stems = list(FIGURES.values())
    found: dict[str, Path] = {}
    for path in sorted(figures_dir.iterdir()):
        if path.suffix in (".png", ".svg") and (path.stem not in found or path.suffix == ".png"):
            found[path.stem] = path
    ordered = [found[s] for s in stems if s in found] + [p for s, p in sorted(found.items()) if s not in stems]
    if not ordered:
        return _missing("The figures folder holds no PNG or SVG figure.", "Add png or svg to report.figure_formats.")
    return "".join(_figure_html(p) for p in ordered)


def _load_workflow_results(out_dir: Path, cfg: ReportConfig) -> tuple[ReportData | None, str]:
    """The workflow's ``out_dir/pepr.csv`` loaded as its report rules load it (pepr's own
    column names), or None and a note saying why not."""
    pepr_csv = out_dir / "pepr.csv"
    if not pepr_csv.is_file():
        return None, _missing("No pepr.csv in the report folder:", "the interactive plots need the scored runs.")
    from pepr.report.loading import load

    try:
        return load(pepr_csv, None, cfg), ""
    except PeprInputError as exc:
        return None, _missing("The interactive plots could not read pepr.csv:", str(exc))


def _interactive(data: ReportData) -> tuple[str, bool]:
    """The interactive plots' HTML (without plotly.js) and whether there is any."""
    # Imported here: the page without plots (e.g. a folder without pepr.csv) needs no plotly.
    from pepr.report.interactive import figure_fragment, interactive_figures

    parts = [f"<h3>{html.escape(item.title)}</h3>{figure_fragment(item)}" for item in interactive_figures(data)]
    if not parts:
        return _missing("No interactive plot:", "the results have no successful run to plot."), False
    note = (
        '<p class="note">Hover a point for its model, group, seed, parameters, performance, resources and PePR; '
        "drag to zoom, shift-drag (or the toolbar) to pan, double-click to reset; the menu switches the group, the legend "
        "hides a colour class.</p>"
    )
    return note + "".join(parts), bool(parts)


def render_report_page(
    out_dir: str | os.PathLike, cfg: ReportConfig | None = None, *, light: bool = False, data: ReportData | None = None
) -> str:
    """The report page of ``out_dir`` as one HTML string (see the module docstring).

    ``data``: the loaded report (:func:`pepr.report.build.prepare`, what ``pepr report``
    computed the folder from, in any table's column names); its settings replace ``cfg``.
    None: ``out_dir/pepr.csv`` is loaded as the workflow's report rules load it.

    ``light``: the answer page for Snakemake's single-file report: no interactive plots and
    no figures (Snakemake's report shows those itself), tables cut to
    :data:`LIGHT_TABLE_ROWS` rows, so the page stays under the 2 MB Chromium allows a
    ``data:`` URL in an iframe (Snakemake embeds each result as one).
    """
    out_dir = Path(out_dir)
    max_rows = LIGHT_TABLE_ROWS if light else MAX_TABLE_ROWS
    cfg = data.cfg if data is not None else (cfg or ReportConfig())
    group, run_names = key_columns(data)
    text_columns = [*group, *run_names, *LEVEL_COLUMNS]
    tables_dir = out_dir / "tables"
    decision = _read_csv(tables_dir / DECISION_TABLE, text_columns)
    footprint = _read_csv(tables_dir / FOOTPRINT_TABLE, text_columns)
    answer = [
        "<h2 id='decision'>Decision: which model, per group</h2>",
        table_html(decision_view(decision, group), "decision", max_rows=max_rows)
        if decision is not None
        else _missing(
            f"No tables/{DECISION_TABLE}.", "Build the report tables first (pepr report / rule report_tables)."
        ),
        "<h3 id='footprint'>What this sweep cost</h3>",
        _totals(footprint)
        if footprint is not None
        else _missing(f"No tables/{FOOTPRINT_TABLE}:", "the sweep's energy, CO2 and device-hours are unknown."),
        # an adaptive sweep: what stopping saved, beside the footprint (nothing for a full grid)
        adaptive_savings_html(_read_csv(tables_dir / TABLES["adaptive_savings"], text_columns)),
    ]
    summary_path = out_dir / "summary.md"
    if summary_path.is_file():
        # summary.md writes no links or images of its own: any there come from the data (a model
        # named ![x](https://host/p.png)) and stay text, so the page never loads anything remote
        markdown = MarkdownIt("commonmark", {"html": False}).enable("table").disable(["image", "link", "autolink"])
        findings, how = split_decision(summary_path.read_text(encoding="utf-8"))
        if how:  # how the intervals were obtained: under the decision table it explains
            answer.insert(2, f'<div class="note">{markdown.render(how)}</div>')
        summary = f'<div class="summary">{markdown.render(findings)}</div>'
    else:
        summary = _missing("No summary.md.", "Build the summary first (pepr report / rule report_summary).")
    shown = data
    if light:
        plots, has_plots = (
            (
                '<p class="note">Not in this compact page: open the full page (pepr_report.html in the '
                'results folder, or the report\'s "Interactive plots" entry) for the interactive plots.</p>'
            ),
            False,
        )
        figures_html = '<p class="note">In the Snakemake report: see the Figures category.</p>'
    else:
        why_not = ""
        if shown is None:
            shown, why_not = _load_workflow_results(out_dir, cfg)
        plots, has_plots = _interactive(shown) if shown is not None else (why_not, False)
        figures_html = _figures(out_dir / "figures")
    table_files = sorted(tables_dir.glob("*.csv")) if tables_dir.is_dir() else []
    table_files.sort(key=lambda p: (p.name != DECISION_TABLE, p.name != FOOTPRINT_TABLE, p.name))
    table_parts = []
    for path in table_files:
        table = _read_csv(path, text_columns)
        body = (
            table_html(table, max_rows=max_rows)
            if table is not None
            else _missing(f"{path.name} could not be read.", "Rebuild it.")
        )
        rows = f"{len(table)} rows" if table is not None else "unreadable"
        table_parts.append(f"<details><summary>{html.escape(path.name)} ({rows})</summary>{body}</details>")
    if not table_parts:
        table_parts.append(_missing("No tables/ folder with CSV tables.", "Build the report tables first."))
    if shown is not None:
        runs, model = shown.results, "model"
    else:
        runs, model = _read_csv(out_dir / "pepr.csv", text_columns), run_names[0]
    subtitle = f"{len(runs)} runs" if runs is not None else "no pepr.csv"
    if runs is not None and model in runs.columns:
        subtitle += f", {runs[model].nunique()} models"
    scripts = ""
    if has_plots:
        from pepr.report.interactive import plotly_script

        scripts = plotly_script()
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">',
            "<title>PePR report</title>",
            f"<style>{STYLE}</style>",
            # plotly.js first, inline: every plot below calls it as the page is parsed.
            scripts,
            "</head><body>",
            f"<header><h1>PePR report</h1><p>Performance per resource unit (Selvan et al., arXiv 2403.12562): {html.escape(subtitle)}</p></header>",
            '<nav><a href="#decision">Decision</a><a href="#footprint">Cost</a><a href="#summary">Summary</a>'
            '<a href="#interactive">Interactive plots</a><a href="#figures">Figures</a><a href="#tables">Tables</a></nav>',
            "<main>",
            *answer,
            "<h2 id='summary'>Summary</h2>",
            summary,
            "<h2 id='interactive'>Interactive plots</h2>",
            plots,
            "<h2 id='figures'>Figures</h2>",
            figures_html,
            "<h2 id='tables'>Tables</h2>",
            '<p class="note">Click a column header to sort.</p>',
            *table_parts,
            "</main>",
            f"<script>{SORT_SCRIPT}</script>",
            "</body></html>",
        ]
    )


def write_report_page(
    out_dir: str | os.PathLike,
    cfg: ReportConfig | None = None,
    path: str | os.PathLike | None = None,
    *,
    light: bool = False,
    data: ReportData | None = None,
) -> Path:
    """Write ``out_dir/report.html`` (or ``path``) atomically from the files in ``out_dir``;
    returns its path.

    ``cfg``: the report settings (performance, headline resource, model metadata) used by the
    interactive plots; None: the defaults. ``data``: the loaded report the folder was built
    from (``pepr report`` passes it: any table's column names); None: ``out_dir/pepr.csv`` is
    loaded the workflow's way. ``light``: the compact answer page (see
    :func:`render_report_page`). Missing tables, summary, figures or pepr.csv leave a note on
    the page instead of failing.
    """
    out_dir = Path(out_dir)
    path = Path(path) if path is not None else out_dir / "report.html"
    atomic_write_text(path, render_report_page(out_dir, cfg, light=light, data=data))
    return path
