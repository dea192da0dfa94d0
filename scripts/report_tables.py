"""Rule script of report_tables: pepr.csv + gathered histories -> results/tables/*.csv."""

import dataclasses
import os

os.environ.setdefault("MPLBACKEND", "Agg")  # headless: never look for a display

import pandas as pd

from pepr.report.build import load, write_tables
from pepr.report.config import ReportConfig
from pepr.report.data import RUN
from pepr.results.outputs import one_line_errors

with one_line_errors("report_tables"):  # a bad setting or a full disk: one line, exit 2
    cfg = ReportConfig.from_mapping(snakemake.params.settings)
    expected = pd.DataFrame(snakemake.params.expected, columns=RUN)
    data = dataclasses.replace(
        load(snakemake.input.pepr, snakemake.input.histories, cfg, expected), runs_root=snakemake.params.runs_root
    )
    paths = write_tables(data, snakemake.params.out_dir)
    with open(snakemake.log[0], "w", encoding="utf-8") as log:
        print(f"wrote {len(paths)} tables from {len(data.results)} runs: " + ", ".join(map(str, paths)), file=log)
