"""report.html (pepr.report.html.write_report_page): the answer on the first screen,
self-contained and offline, robust to missing files, and opened in headless Chromium.

decision.csv and footprint.csv are overwritten here with fixtures of known values, in the
columns `pepr report` / the report_tables rule write (tables.DECISION_COLUMNS, FOOTPRINT_COLUMNS).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import pandas as pd
import pytest

from pepr.report import figures
from pepr.report.build import load, write_histories, write_summary, write_tables
from pepr.report.config import FIGURES, ReportConfig
from pepr.report.html import render_report_page, write_report_page
from report_sweep import make_sweep

CFG = ReportConfig(figure_formats=("png",), bootstrap_resamples=200)
DECISION = pd.DataFrame(
    {
        "dataset": ["pneumoniamnist"] * 2,
        "init": ["imagenet", "scratch"],
        "fraction": ["1.0", "1.0"],
        "n_models": [6, 6],
        "performance_metric": ["test_accuracy"] * 2,
        "resource": ["energy_kwh"] * 2,
        "variant": ["PePR-E"] * 2,
        "recommended_model": ["mobilenetv3_small_050", "regnetx_002"],
        "recommended_pepr": [0.83, 0.77],
        "recommended_performance": [0.861, 0.79],
        "recommended_resource": [0.0004, 0.0005],
        "best_model": ["resnet50", "toynet_custom7"],
        "best_performance": [0.905, 0.842],
        "best_resource": [0.005, 0.0045],
        "performance_share": [0.951, 0.938],
        "resource_share": [0.08, 0.11],
        "statement": [
            "mobilenetv3_small_050: 95% of the best accuracy (resnet50) at 8% of its energy",
            "regnetx_002: 94% of the best accuracy (toynet_custom7) at 11% of its energy",
        ],
    }
)
FOOTPRINT = pd.DataFrame(
    {
        "n_runs": [84],
        "energy_kwh": [0.0166],
        "co2_kg": [0.0025],
        "device_hours": [0.592],
        "pretraining_energy_kwh": [0.0],
        "pretraining_co2_kg": [0.0],
        "pretraining_device_hours": [0.0],
        "measurement": ["estimated"],
        "energy_method": ["estimated: CodeCarbon cpu_load/TDP + constant RAM"],
    }
)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    """A report folder laid out as `pepr report DIR` / the workflow's results/ write it."""
    root = tmp_path_factory.mktemp("report")
    make_sweep(root, fractions=("1.0",))
    paths = sorted(str(p) for p in (root / "runs").rglob("history.csv"))
    write_histories(paths, root / "runs", root / "histories.csv")
    data = load(root / "pepr.csv", root / "histories.csv", CFG)
    write_tables(data, root / "tables")
    # summary.md from the real tables; the page then from the fixtures' decision and footprint.
    write_summary(load(root / "pepr.csv", None, CFG), root / "tables", root / "summary.md")
    DECISION.to_csv(root / "tables" / "decision.csv", index=False)
    FOOTPRINT.to_csv(root / "tables" / "footprint.csv", index=False)
    with open(root / "summary.md", "a", encoding="utf-8") as summary:
        summary.write("\n<script>alert('from summary')</script>\n")  # raw HTML in markdown must stay text
    for name in ("performance_vs_resource", "model_space"):
        figures.save(getattr(figures, name)(data.results, CFG), root / "figures" / FIGURES[name], ["png"])
    write_report_page(root, CFG)
    return root


class Resources(HTMLParser):
    """Every URL the page would load: src/href/data of elements, CSS url() and @import."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []
        self.scripts = 0
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href", "data", "poster", "srcset", "action") and value:
                self.urls.append((tag, value))
            if name == "style" and value:
                self.urls += [(tag, u) for u in re.findall(r"url\(\s*['\"]?([^'\")]+)", value)]
        self.scripts += tag == "script"
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False if tag == "style" else self._in_style

    def handle_data(self, data):
        if self._in_style:
            self.urls += [("style", u) for u in re.findall(r"(?:url\(\s*['\"]?|@import\s+['\"])([^'\")]+)", data)]


def test_page_is_self_contained_with_plotly_embedded_once(report_dir):
    page = (report_dir / "report.html").read_text(encoding="utf-8")
    parser = Resources()
    parser.feed(page)
    remote = [(tag, url) for tag, url in parser.urls if re.match(r"\s*(https?:)?//", url, re.I)]
    assert remote == [], remote
    # Only in-page anchors and data: URIs; no relative file either (the page travels alone).
    assert all(url.startswith(("#", "data:")) for _, url in parser.urls), parser.urls
    assert page.count("* plotly.js v") == 1  # the library's banner: embedded exactly once
    assert page.count('class="plotly-graph-div"') == 3


def test_first_screen_is_the_decision_and_the_sweeps_totals(report_dir):
    page = (report_dir / "report.html").read_text(encoding="utf-8")
    order = [
        page.index(marker)
        for marker in (
            "id='decision'",
            "95% of the best accuracy (resnet50) at 8% of its energy",
            "id='footprint'",
            "0.0166 kWh",
            "id='summary'",
            "id='interactive'",
            "id='figures'",
            "id='tables'",
        )
    ]
    assert order == sorted(order)
    assert "0.0025 kg" in page and "0.592 h" in page and "estimated: CodeCarbon" in page
    assert "<td>1.0</td>" in page  # group keys shown as written, not as the float 1
    decision = page[page.index("id='decision'") : page.index("id='footprint'")]
    assert re.findall(r"<th>([^<]*)</th>", decision) == [
        "dataset",
        "init",
        "fraction",
        "decision",
        "recommended (by PePR-E)",
        "test_accuracy",
        "energy_kwh",
        "best-test_accuracy model",
        "its test_accuracy",
        "its energy_kwh",
    ]  # the sentence first, no raw dump
    assert '<div class="v">84</div><div class="l">Runs</div>' in page and "measurement: estimated" in page


def test_summary_rendered_as_html_and_its_raw_html_kept_as_text(report_dir):
    page = (report_dir / "report.html").read_text(encoding="utf-8")
    summary = page[page.index("id='summary'") : page.index("id='interactive'")]
    assert "<h1>" in summary or "<h2>" in summary
    assert (
        "<script>alert('from summary')" not in page and "&lt;script&gt;alert('from summary')&lt;/script&gt;" in summary
    )


def test_every_table_is_on_the_page_sortable(report_dir):
    page = (report_dir / "report.html").read_text(encoding="utf-8")
    for path in (report_dir / "tables").glob("*.csv"):
        assert f"<summary>{path.name} (" in page
    assert page.count('<table class="sortable') >= len(list((report_dir / "tables").glob("*.csv"))) + 1
    assert "table.sortable th" in page  # the sorting script, inline


def test_hover_carries_model_params_performance_resources_and_pepr(report_dir):
    from pepr.report.interactive import interactive_figures

    data = load(report_dir / "pepr.csv", None, CFG)
    items = interactive_figures(data)
    assert [i.name for i in items] == ["performance_vs_params", "performance_vs_resource", "pepr_vs_params"]
    trace = items[1].figure.data[0]
    for field in ("params", "test_accuracy", "energy_kwh", "train_time_s", "peak_memory_mb", "PePR-E", "PePR-M"):
        assert field in trace.hovertemplate
    assert "(seed %{customdata[0]})" in trace.hovertemplate and trace.text[0] in set(data.results["model"])
    assert items[1].figure.layout.xaxis.type == (
        "log"
        if figures.needs_log(data.results["energy_kwh"][data.results["ok"] & (data.results["init"] == "imagenet")])
        else "linear"
    )
    groups = items[0].figure.layout.updatemenus[0].buttons
    assert len(groups) == 2  # one entry per group


def test_missing_files_leave_notes_not_failures(tmp_path, report_dir):
    shutil.copy(report_dir / "pepr.csv", tmp_path / "pepr.csv")
    page = render_report_page(tmp_path, CFG)
    for note in ("No tables/decision.csv", "No tables/footprint.csv", "No summary.md", "No figures folder"):
        assert note in page
    assert page.count("* plotly.js v") == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    bare = render_report_page(empty, CFG)
    assert "No pepr.csv in the report folder" in bare and "plotly.js v" not in bare


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Offline for real: any host lookup fails, so a page that needed the network would show it.
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--enable-logging=stderr",
    "--v=0",
]


def test_page_opens_in_headless_chromium_offline(report_dir, tmp_path):
    binary = chromium()
    if binary is None:
        if os.environ.get("PEPR_REQUIRE_CHROMIUM"):
            pytest.fail("PEPR_REQUIRE_CHROMIUM is set but no chromium is on PATH")
        pytest.skip("chromium not installed (Debian: apt-get install -y chromium); the page's browser check is skipped")
    page = (report_dir / "report.html").resolve().as_uri()
    shot = tmp_path / "first_screen.png"
    common = [
        binary,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1400,1000",
        "--virtual-time-budget=10000",
    ]
    result = subprocess.run([*common, f"--screenshot={shot}", page], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and shot.is_file() and shot.stat().st_size > 20_000, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if "Uncaught" in line or "CONSOLE" in line and "rror" in line]
    assert errors == []
    dom = subprocess.run([*common, "--dump-dom", page], capture_output=True, text=True, timeout=120).stdout
    assert "95% of the best accuracy (resnet50) at 8% of its energy" in dom and "0.0166 kWh" in dom
    assert dom.count('class="main-svg"') >= 3  # plotly drew every interactive plot, offline
    if os.environ.get("PEPR_SCREENSHOT_DIR"):  # keep the screenshot to look at
        shutil.copy(shot, Path(os.environ["PEPR_SCREENSHOT_DIR"]) / shot.name)


def test_page_fits_a_1400_px_window_with_long_reasons_in_its_tables(report_dir, tmp_path):
    """No horizontal scrolling at 1400 px: decision sentences, model names and the summary's
    tables of failure reasons wrap (a real sweep's reasons run to ~300 characters)."""
    binary = chromium()
    if binary is None:
        if os.environ.get("PEPR_REQUIRE_CHROMIUM"):
            pytest.fail("PEPR_REQUIRE_CHROMIUM is set but no chromium is on PATH")
        pytest.skip("chromium not installed (Debian: apt-get install -y chromium); the page's browser check is skipped")
    root = tmp_path / "report"
    shutil.copytree(report_dir, root)
    reason = (
        "convnext_atto cannot run on 1x28x28 input at batch 32: RuntimeError: "
        + "the kernel size exceeds the input " * 8
    )
    with open(root / "summary.md", "a", encoding="utf-8") as summary:
        summary.write(f"\n| dataset | model | reason |\n|---|---|---|\n| synthetic | convnext_atto | {reason} |\n")
    write_report_page(root, CFG)
    probe = root / "probe.html"
    width_script = (
        "<script>window.addEventListener('load',()=>{const p=document.createElement('pre');"
        "p.id='page-width';p.textContent=document.documentElement.scrollWidth;document.body.appendChild(p);});</script>"
    )
    probe.write_text(
        (root / "report.html").read_text(encoding="utf-8").replace("</body>", width_script + "</body>"),
        encoding="utf-8",
    )
    dom = subprocess.run(
        [
            binary,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1400,1000",
            "--virtual-time-budget=10000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    match = re.search(r'<pre id="page-width">(\d+)</pre>', dom)
    assert match, dom[-2000:]
    assert reason[:60] in dom
    assert int(match.group(1)) <= 1400, f"the page is {match.group(1)} px wide in a 1400 px window"
