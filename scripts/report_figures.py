"""Rule script of report_figures: pepr.csv + gathered histories -> results/figures/* (PNG/PDF/SVG)."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")  # headless: never look for a display

from pepr.report.build import load, write_figures
from pepr.report.config import ReportConfig
from pepr.results.outputs import one_line_errors

with one_line_errors("report_figures"):  # a bad setting or a full disk: one line, exit 2
    cfg = ReportConfig.from_mapping(snakemake.params.settings)
    data = load(snakemake.input.pepr, snakemake.input.histories, cfg)
    paths = write_figures(data, snakemake.params.out_dir)
    with open(snakemake.log[0], "w", encoding="utf-8") as log:
        print(f"wrote {len(paths)} figure files from {len(data.results)} runs: " + ", ".join(map(str, paths)), file=log)
