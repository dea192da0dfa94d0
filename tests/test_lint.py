"""`snakemake --lint` is clean (issue 18), except the one lint pepr keeps on purpose: every rule
runs in the one pip-installed environment of the package (see README, "Software environment"),
so no rule names a conda environment or container."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The lint pepr accepts (one environment for every rule, installed with pip).
ALLOWED = {"Specify a conda environment or container for each rule."}


def lint_titles(text: str) -> list[str]:
    """The title of every lint in `snakemake --lint`'s text output ("    * TITLE:")."""
    return [match.group(1) for match in re.finditer(r"^    \* (.+?):?$", text, flags=re.MULTILINE)]


def test_lint_titles_are_read():
    sample = "Lints for rule a (line 1, x.smk):\n    * Specify a conda environment or container for each rule.:\n      body\n"
    assert lint_titles(sample) == ["Specify a conda environment or container for each rule."]


def test_snakemake_lint_finds_nothing_but_the_environment_lint():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True, timeout=300, env=env
    )
    text = result.stdout + result.stderr
    assert "Traceback" not in text, text
    titles = lint_titles(text)
    unexpected = [title for title in titles if title not in ALLOWED]
    assert not unexpected, "new lints:\n" + "\n".join(unexpected) + "\n\n" + text
    # the allowed one is still reported per rule (so the parse above did read the lint output)
    assert titles, text
