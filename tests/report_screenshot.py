"""Open a Snakemake HTML report in headless Chromium, check it loads without errors, and take
screenshots: the landing page and, by clicking through the report's menu, result pages.

Not part of the test suite (CI need not have Chromium). Run it by hand after `make demo`:

    apt-get install -y chromium                # Debian; provides /usr/bin/chromium
    .venv/bin/python tests/report_screenshot.py results/report.html --out results/screenshots \
        --click Figures --click 1_pepr_profile@eye

Each --click names the visible text of a menu entry or link to click in order (exact text after
trimming, else the smallest element containing it); ``TEXT@ICON`` clicks the icon button
``ICON`` (Snakemake's names: ``eye`` shows a result, ``information-circle`` its caption) in
the table row showing TEXT. Every step is screenshotted as
``step<N>.png``. Clicking works on a copy of the report with a small script appended (the
original is not touched). The run fails (exit 1) when Chromium fails, when the page logs a
JavaScript error, when a --click target is not found, or when the page never leaves "Loading".
Chromium runs offline with a fresh profile: --headless --no-sandbox --disable-gpu
--disable-background-networking --disable-component-update --disable-sync --no-first-run.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--enable-logging=stderr",
    "--v=0",
]

# Clicks the targets one after another (1.5 s apart, so the React app re-renders), then writes
# the outcome into the page title where --dump-dom can read it.
CLICKER = """
<script>
window.addEventListener("load", () => {
  const targets = %s;
  const find = (text) => {
    const all = Array.from(document.querySelectorAll("a, button, li, span, div, td, p, h1, h2, h3"));
    const visible = all.filter((el) => el.offsetParent !== null);
    const exact = visible.filter((el) => el.textContent.trim() === text);
    const loose = visible.filter((el) => el.textContent.includes(text)).sort((a, b) => a.textContent.length - b.textContent.length);
    // The deepest match, then its enclosing link or button (a <li> wrapper has the same text).
    const el = exact.length ? exact[exact.length - 1] : loose[0];
    return el ? (el.closest("a, button") || el) : undefined;
  };
  const findIcon = (target) => {  // "TEXT@ICON": the ICON button in the row showing TEXT
    const [text, icon] = target.split("@");
    const label = find(text);
    const row = label && label.closest("tr, li");
    return row ? row.querySelector(`[iconname="${icon}"]`) : undefined;
  };
  const step = (i) => {
    if (i >= targets.length) { document.title = "PEPR-CLICKS-DONE"; return; }
    const el = targets[i].includes("@") ? findIcon(targets[i]) : find(targets[i]);
    if (!el) { document.title = "PEPR-CLICK-MISSING:" + targets[i]; console.error("click target not found: " + targets[i]); return; }
    el.click();
    setTimeout(() => step(i + 1), 1500);
  };
  setTimeout(() => step(0), 1500);
});
</script>
"""


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("no Chromium found: install it (Debian: apt-get install -y chromium)")


def run_chromium(binary: str, page: Path, args: list[str], budget_ms: int) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="pepr-chromium-") as profile:
        command = [
            binary,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            *args,
            page.as_uri(),
        ]
        return subprocess.run(command, capture_output=True, text=True, timeout=300)


def javascript_errors(stderr: str) -> list[str]:
    """Console errors and uncaught exceptions of the page (Chromium's own dbus noise excluded)."""
    return [line for line in stderr.splitlines() if "CONSOLE" in line and re.search(r"error|uncaught", line, re.I)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path, help="the HTML report (snakemake --report results/report.html)")
    parser.add_argument("--out", type=Path, default=Path("results/screenshots"), help="folder for the PNG screenshots")
    parser.add_argument(
        "--click", action="append", default=[], help="text of a menu entry to click (repeatable, in order)"
    )
    parser.add_argument("--size", default="1500,1100", help="window size WIDTH,HEIGHT")
    args = parser.parse_args(argv)
    if not args.report.is_file():
        sys.exit(f"report '{args.report}' does not exist: run `snakemake --report {args.report}` first")
    binary = chromium_binary()
    args.out.mkdir(parents=True, exist_ok=True)
    problems = []
    html = args.report.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="pepr-report-") as tmp:
        for index in range(len(args.click) + 1):
            if index == 0:
                page = args.report.resolve()  # the landing page: the report exactly as written
            else:
                page = Path(tmp) / f"step{index}.html"
                # Append before the LAST </body>: the bundled scripts contain the string too.
                head, tail = html.rsplit("</body>", 1)
                page.write_text(head + CLICKER % json.dumps(args.click[:index]) + "</body>" + tail, encoding="utf-8")
            budget = 6000 + 2000 * index
            shot = args.out / f"step{index}.png"
            result = run_chromium(
                binary, page, [f"--window-size={args.size}", f"--screenshot={shot.resolve()}"], budget
            )
            if result.returncode != 0 or not shot.is_file():
                problems.append(f"step {index}: chromium failed (exit {result.returncode}): {result.stderr[-500:]}")
                continue
            problems += [f"step {index}: {line}" for line in javascript_errors(result.stderr)]
            dom = run_chromium(binary, page, ["--dump-dom"], budget).stdout
            if ">Snakemake<" not in dom:
                problems.append(f"step {index}: the report never finished loading (no menu rendered)")
            missing = re.search(r"<title>PEPR-CLICK-MISSING:([^<]*)</title>", dom)
            if missing:
                problems.append(f"step {index}: click target '{missing.group(1)}' not found on the page")
            print(f"step {index} ({' > '.join(args.click[:index]) or 'landing page'}): {shot}")
    for problem in problems:
        print(f"PROBLEM {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
