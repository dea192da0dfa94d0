"""Rule script of write_report_page: results/{pepr.csv,summary.md,tables,figures} -> results/report.html."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")  # headless: never look for a display

from pepr.report.config import ReportConfig
from pepr.report.html import write_report_page

cfg = ReportConfig.from_mapping(snakemake.params.settings)
path = write_report_page(snakemake.params.out_dir, cfg)
with open(snakemake.log[0], "w", encoding="utf-8") as log:
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) from {snakemake.params.out_dir}", file=log)
