"""Rule script of report_summary: pepr.csv + the written tables -> results/summary.md."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")  # headless: never look for a display

import pandas as pd

from pepr.report.build import load, write_summary
from pepr.report.config import ReportConfig
from pepr.report.data import RUN
from pepr.results.outputs import one_line_errors

with one_line_errors("report_summary"):  # bad input or a failed write: one line, exit 2
    cfg = ReportConfig.from_mapping(snakemake.params.settings)
    expected = pd.DataFrame(snakemake.params.expected, columns=RUN)
    data = load(snakemake.input.pepr, None, cfg, expected)  # no histories: the peaks come from the tables
    path = write_summary(data, snakemake.params.tables_dir, snakemake.output.summary)
    with open(snakemake.log[0], "w", encoding="utf-8") as log:
        print(f"wrote {path} from {len(data.results)} runs and the tables in {snakemake.params.tables_dir}", file=log)
