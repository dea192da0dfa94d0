"""The report stage: figures, tables and a plain-language summary from ``pepr.csv``.

pandas / seaborn / scipy only: the report never imports torch. Entry points for the workflow's
rule scripts are in :mod:`pepr.report.build` (``load`` then ``write_tables``,
``write_figures``, ``write_summary``).
"""

from pepr.report.build import FIGURES, TABLES, ReportData, load, write_figures, write_summary, write_tables
from pepr.report.config import ReportConfig

__all__ = ["FIGURES", "TABLES", "ReportConfig", "ReportData", "load", "write_figures", "write_summary", "write_tables"]
