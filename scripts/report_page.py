"""Rule script of write_report_page: results/{pepr.csv,summary.md,tables,figures} -> the full
page (results/pepr_report.html) and its compact variant for Snakemake's report (results/answer.html)."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")  # headless: never look for a display

from pepr.report.config import ReportConfig
from pepr.report.html import write_report_page

cfg = ReportConfig.from_mapping(snakemake.params.settings)
page = write_report_page(snakemake.params.out_dir, cfg, snakemake.output.page)
answer = write_report_page(snakemake.params.out_dir, cfg, snakemake.output.answer, light=True)
with open(snakemake.log[0], "w", encoding="utf-8") as log:
    for path in (page, answer):
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB) from {snakemake.params.out_dir}", file=log)
