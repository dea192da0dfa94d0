"""Report benchmark: build time and report.html size at the paper's scale and beyond (issue 15).

Synthetic scored tables (tests/report_scale.py: the paper's 131 timm models first, then invented
ones; 1 in 50 runs failed; per-epoch histories of 10 epochs) at

* ``131x8x1``:   131 models x  8 groups x  1 seed  =  1,048 runs (the paper's study)
* ``200x12x3``:  200 models x 12 groups x  3 seeds =  7,200 runs
* ``200x12x10``: 200 models x 12 groups x 10 seeds = 24,000 runs (the size target)

go through the report's package functions, stage by stage, exactly as the workflow's rules call
them (load, tables, figures in PNG, summary, the HTML page with its interactive plots, and the
compact answer page the workflow registers in Snakemake's report), or
through `pepr report` when ``--cli`` is given and the command exists. Prints per stage wall and
CPU seconds (CPU / wall ~1.0 when the process had a core to itself; the shared 2-core machine
often gives it less), the total, and the sizes of report.html and its parts (plotly.js,
interactive data, embedded figures). Targets: the 24,000-run report builds in <= 60 s and
report.html stays < 30 MB.

    .venv/bin/python bench/report_bench.py [--scales 131x8x1 200x12x3 200x12x10] [--bootstrap 2000] [--cli]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from benchlib import machine_line, print_table  # noqa: E402

TARGET_S = 60.0
TARGET_MB = 30.0


def timed(stages: list, name: str, call):
    wall, cpu = time.perf_counter(), time.process_time()
    result = call()
    stages.append((name, time.perf_counter() - wall, time.process_time() - cpu))
    return result


def build_with_functions(root: Path, bootstrap: int) -> list:
    """The report of ``root`` (pepr.csv + histories.csv) through the package functions."""
    from pepr.report.build import figure_names, load, write_figures, write_summary, write_tables
    from pepr.report.config import ReportConfig
    from pepr.report.html import write_report_page

    cfg = ReportConfig(figure_formats=("png",), bootstrap_resamples=bootstrap)
    stages: list = []
    data = timed(stages, "load pepr.csv + histories", lambda: load(root / "pepr.csv", root / "histories.csv", cfg))
    timed(stages, "tables", lambda: write_tables(data, root / "tables"))
    timed(stages, f"figures ({len(figure_names(cfg))}, PNG)", lambda: write_figures(data, root / "figures"))
    timed(
        stages,
        "summary.md",
        lambda: write_summary(load(root / "pepr.csv", None, cfg), root / "tables", root / "summary.md"),
    )
    timed(stages, "report.html (+ interactive)", lambda: write_report_page(root, cfg))
    timed(
        stages,
        "answer.html (compact, for Snakemake)",
        lambda: write_report_page(root, cfg, root / "answer.html", light=True),
    )
    return stages


def build_with_cli(root: Path) -> list:
    """The report through `pepr report` (one process, as a user runs it)."""
    stages: list = []
    command = [
        sys.executable,
        "-m",
        "pepr.cli",
        "report",
        str(root / "pepr.csv"),
        "--histories",
        str(root / "histories.csv"),
        "--out",
        str(root / "cli"),
    ]
    wall, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"pepr report failed ({result.returncode}): {result.stderr[-2000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)  # the command's own CPU seconds
    stages.append(("pepr report (whole command)", time.perf_counter() - wall, cpu))
    return stages


def page_parts(page: Path) -> dict[str, float]:
    """MB of report.html by part: plotly.js, interactive plot data, embedded PNGs, the rest."""
    from plotly.offline import get_plotlyjs

    text = page.read_text(encoding="utf-8")
    total = len(text.encode())
    js = len(get_plotlyjs().encode()) if "* plotly.js v" in text else 0
    images = sum(len(chunk.split('"', 1)[0]) for chunk in text.split("data:image/png;base64,")[1:])
    plots = sum(len(chunk.split("</script>", 1)[0]) for chunk in text.split('class="plotly-graph-div"')[1:])
    return {
        "total": total / 1e6,
        "plotly.js": js / 1e6,
        "interactive data": plots / 1e6,
        "figures (base64)": images / 1e6,
        "rest": (total - js - images - plots) / 1e6,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", nargs="+", default=["131x8x1", "200x12x3", "200x12x10"], help="MODELSxGROUPSxSEEDS")
    parser.add_argument(
        "--bootstrap", type=int, default=2000, help="rank bootstrap resamples (the report's default 2000)"
    )
    parser.add_argument("--epochs", type=int, default=10, help="epochs per run in the histories")
    parser.add_argument(
        "--cli", action="store_true", help="build through `pepr report` instead of the package functions"
    )
    parser.add_argument(
        "--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "pepr-bench" / "report"
    )
    args = parser.parse_args()
    from report_scale import scaled_sweep

    print(machine_line())
    summary_rows = []
    for scale in args.scales:
        n_models, n_groups, n_seeds = (int(v) for v in scale.split("x"))
        root = args.workdir / scale
        start = time.perf_counter()
        scaled_sweep(root, n_models, n_groups, n_seeds, epochs=args.epochs)
        runs = n_models * n_groups * n_seeds
        print(f"\n{scale}: {runs} runs; synthetic tables written in {time.perf_counter() - start:.1f} s to {root}")
        stages = build_with_cli(root) if args.cli else build_with_functions(root, args.bootstrap)
        wall = sum(s[1] for s in stages)
        cpu = sum(s[2] for s in stages)
        rows = [(name, f"{w:.1f}", f"{c:.1f}", f"{c / w:.2f}" if w else "") for name, w, c in stages]
        rows.append(("total", f"{wall:.1f}", f"{cpu:.1f}", f"{cpu / wall:.2f}" if wall else ""))
        print_table(f"{scale} ({runs} runs)", rows, ("stage", "wall s", "CPU s", "CPU/wall"))
        page = (root / "cli" if args.cli else root) / "report.html"
        parts = page_parts(page)
        print("report.html MB: " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items()))
        if (root / "answer.html").is_file():
            print(
                f"answer.html: {(root / 'answer.html').stat().st_size / 1e6:.2f} MB (Chromium's data: URL limit in "
                "Snakemake's single-file report: 2.10 MB)"
            )
        summary_rows.append(
            (
                scale,
                str(runs),
                f"{wall:.1f}",
                f"{cpu:.1f}",
                f"{parts['total']:.1f}",
                "yes" if wall <= TARGET_S and parts["total"] < TARGET_MB else "NO",
            )
        )
    print()
    print_table(
        f"report build (targets: <= {TARGET_S:g} s, < {TARGET_MB:g} MB)",
        summary_rows,
        ("scale", "runs", "wall s", "CPU s", "report.html MB", "within target"),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
