"""`snakemake --lint` is clean: not one lint (every rule names envs/pepr.yaml, the conda form of the
one pip-installed environment; see README, "Software environment")."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def lint_titles(text: str) -> list[str]:
    """The title of every lint in `snakemake --lint`'s text output ("    * TITLE:")."""
    return [match.group(1) for match in re.finditer(r"^    \* (.+?):?$", text, flags=re.MULTILINE)]


def test_lint_titles_are_read():
    sample = "Lints for rule a (line 1, x.smk):\n    * Specify a conda environment or container for each rule.:\n      body\n"
    assert lint_titles(sample) == ["Specify a conda environment or container for each rule."]


def test_snakemake_lint_finds_nothing():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True, timeout=300, env=env
    )
    text = result.stdout + result.stderr
    assert "Traceback" not in text, text
    titles = lint_titles(text)
    assert not titles, "lints:\n" + "\n".join(titles) + "\n\n" + text
    assert result.returncode == 0 and "your workflow is in a good condition" in text, text
