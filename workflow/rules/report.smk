# Report stage: results/pepr.csv + every run's history.csv -> figures, tables, summary.md.
# Contract: defines REPORT_TARGETS, the list of report outputs `rule all` requests.
# Settings: config["report"] (pepr.plan.report_settings.ReportConfig; defaults in code). The
# performance is config["pepr"]["performance"], the one pepr.csv was scored with.
# gather_histories alone depends on every run's history.csv and writes one table of them, so the
# other rules take two or three inputs each, not thousands. report_tables and report_figures read
# pepr.csv + that table; report_summary reads pepr.csv + the tables (nothing is computed twice).
# All rules are light (seconds) and run on the submitting machine.
from pepr.report.config import FIGURES, HISTORIES_TABLE, TABLE_SETTINGS, TABLES, ReportConfig
from pepr.plan.report_settings import report_config_from
from pepr.results.runs import RUNS_DIR, format_fraction


report: "../report/workflow.rst"


try:
    REPORT_CONFIG = report_config_from(config)
except PeprInputError as exc:
    print(f"pepr: bad config ({CONFIG_SOURCE}): {exc}", file=sys.stderr)
    raise SystemExit(1)

# The table's shape (group columns, parameter counts) is the workflow's own: not a setting.
REPORT_SETTINGS = {
    **{k: getattr(REPORT_CONFIG, k) for k in ReportConfig.__dataclass_fields__ if k not in TABLE_SETTINGS},
    "figure_formats": list(REPORT_CONFIG.figure_formats),
}
REPORT_HISTORIES = f"results/{HISTORIES_TABLE}"
REPORT_INPUTS = {
    "pepr": "results/pepr.csv",
    "histories": REPORT_HISTORIES,
}
# The planned runs, so runs that never reached pepr.csv are listed as missing in the report.
REPORT_EXPECTED = [
    [cell.dataset_name, cell.init, format_fraction(cell.fraction), cell.model, cell.seed] for cell in GRID.cells
]
REPORT_TABLES = {name: f"results/tables/{file}" for name, file in TABLES.items()}
REPORT_FIGURES = {
    name: {fmt: f"results/figures/{stem}.{fmt}" for fmt in REPORT_CONFIG.figure_formats}
    for name, stem in FIGURES.items()
}
# The HTML report shows one raster image per figure (PNG when configured), the others are files.
REPORT_SHOWN_FORMAT = "png" if "png" in REPORT_CONFIG.figure_formats else REPORT_CONFIG.figure_formats[0]

localrules:
    gather_histories,
    report_tables,
    report_figures,
    report_summary,


rule gather_histories:
    input:
        # a function: evaluated only when this rule is planned (see aggregate_runs)
        histories=lambda wildcards: [f"{cell.directory}/history.csv" for cell in GRID.cells],
        carbon=lambda wildcards: [config["carbon_intensity"]] if config["carbon_intensity"] else [],
    output:
        histories=REPORT_HISTORIES,
    params:
        runs_root=RUNS_DIR,
        runs=lambda wildcards: GRID_RUNS_DIGEST,  # the set of runs (no `input` rerun trigger)
        # per-epoch CO2 derived from the measured energy, as aggregate_runs derives co2_kg: a
        # corrected country re-gathers the curves too, and retrains nothing
        country=config["country"],
        carbon_intensity=config["carbon_intensity"],
    log:
        "results/logs/gather_histories.log",
    conda:
        "../../envs/pepr.yaml"
    script:
        "../../scripts/report_gather_histories.py"


rule report_tables:
    input:
        **REPORT_INPUTS,
    output:
        **{
            name: report(path, caption="../report/tables.rst", category="Tables", labels={"table": TABLES[name]})
            for name, path in REPORT_TABLES.items()
        },
    params:
        settings=REPORT_SETTINGS,
        expected=REPORT_EXPECTED,
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
        # each run's test_predictions.npz (not an input: older runs lack it) for paired intervals
        runs_root=RUNS_DIR,
    log:
        "results/logs/report_tables.log",
    conda:
        "../../envs/pepr.yaml"
    script:
        "../../scripts/report_tables.py"


rule report_figures:
    input:
        **REPORT_INPUTS,
    output:
        **{
            f"{name}_{fmt}": (
                report(path, caption=f"../report/{FIGURES[name]}.rst", category="Figures", labels={"figure": FIGURES[name]})
                if fmt == REPORT_SHOWN_FORMAT
                else path
            )
            for name, paths in REPORT_FIGURES.items()
            for fmt, path in paths.items()
        },
    params:
        settings=REPORT_SETTINGS,
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
    log:
        "results/logs/report_figures.log",
    conda:
        "../../envs/pepr.yaml"
    script:
        "../../scripts/report_figures.py"


rule report_summary:
    input:
        pepr="results/pepr.csv",
        tables=list(REPORT_TABLES.values()),
    output:
        summary=report("results/summary.md", caption="../report/summary.rst", category="Summary"),
    params:
        settings=REPORT_SETTINGS,
        tables_dir=lambda wildcards, input: os.path.dirname(input.tables[0]),
        expected=REPORT_EXPECTED,
    log:
        "results/logs/report_summary.log",
    conda:
        "../../envs/pepr.yaml"
    script:
        "../../scripts/report_summary.py"


REPORT_TARGETS = [
    *REPORT_TABLES.values(),
    *[path for paths in REPORT_FIGURES.values() for path in paths.values()],
    "results/summary.md",
]


# The answer first: one self-contained page (decision table and the sweep's totals on top, then
# the summary, interactive plots, figures and every table), rendered from the files above by
# pepr.report.html.write_report_page. Snakemake's single-file report embeds each result as a
# data: URL, and Chromium shows none over 2 MB in its viewer, so the report's first entry is the
# compact variant (answer.html: no plotly.js, no figures, tables cut to 200 rows); the full page
# (pepr_report.html, ~5 MB and more) is registered too: it opens from `--report report.zip`
# and as the file itself. (Not results/report.html: `snakemake --report results/report.html`,
# the README's command, writes that file.)
rule write_report_page:
    input:
        pepr="results/pepr.csv",
        tables=list(REPORT_TABLES.values()),
        figures=[path for paths in REPORT_FIGURES.values() for path in paths.values()],
        summary="results/summary.md",
    output:
        answer=report("results/answer.html", caption="../report/report_page.rst", category="0 The answer (start here)"),
        page=report("results/pepr_report.html", caption="../report/report_page_full.rst", category="Interactive plots"),
    params:
        settings=REPORT_SETTINGS,
        # the report folder: where pepr.csv, summary.md, tables/ and figures/ lie
        out_dir=lambda wildcards, input: os.path.dirname(input.pepr),
    log:
        "results/logs/write_report_page.log",
    localrule: True
    conda:
        "../../envs/pepr.yaml"
    script:
        "../../scripts/report_page.py"


REPORT_TARGETS += ["results/answer.html", "results/pepr_report.html"]
