"""The report stage: figures, tables and a plain-language summary from ``pepr.csv``.

pandas / seaborn / scipy only: the report never imports torch. Entry points for the workflow's
rule scripts are in :mod:`pepr.report.build` (``load`` then ``write_tables``,
``write_figures``, ``write_summary``). Importing this package itself is light (file layout and
settings only), so the workflow can list the report's targets without loading matplotlib.
"""

from pepr.report.config import FIGURES, TABLES, ReportConfig

__all__ = ["FIGURES", "TABLES", "ReportConfig"]
