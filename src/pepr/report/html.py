"""PLACEHOLDER (h15a) until h15b's report page lands: ``write_report_page(out_dir)`` renders
``out_dir/report.html`` from the files of a report folder (summary.md, tables/*.csv,
figures/*.png), self-contained (figures inlined as data URIs, no network)."""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

import pandas as pd

from pepr.runs import atomic_write_text


def write_report_page(out_dir: str | os.PathLike, cfg=None) -> Path:
    """Write ``out_dir/report.html``: the decision and footprint tables first, then the
    summary text, every table and every PNG figure; returns its path."""
    out = Path(out_dir)
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>pepr report</title></head><body>"]
    for name in ("decision", "footprint", "measurement_checks"):
        path = out / "tables" / f"{name}.csv"
        if path.is_file():
            parts.append(f"<h2>{name}</h2>" + pd.read_csv(path).to_html(index=False, na_rep=""))
    summary = out / "summary.md"
    if summary.is_file():
        parts.append("<h2>summary</h2><pre style='white-space:pre-wrap'>" + html.escape(summary.read_text(encoding="utf-8")) + "</pre>")
    for path in sorted((out / "figures").glob("*.png")):
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(f"<h3>{html.escape(path.stem)}</h3><img style='max-width:100%' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    page = out / "report.html"
    atomic_write_text(page, "\n".join(parts))
    return page
