"""Rule script of report_page: the report folder's files -> results/report.html (one self-contained page)."""

from pepr.report.html import write_report_page

path = write_report_page(snakemake.params.out_dir)
with open(snakemake.log[0], "w", encoding="utf-8") as log:
    print(f"wrote {path} from the summary, tables and figures in {snakemake.params.out_dir}", file=log)
