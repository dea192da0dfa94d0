"""Comments and docstrings of the code say why, not which issue or commit brought them: "issue 17"
or a commit hash means nothing to a reader of the code (git log and the issue tracker keep the
history). Checked over the package, the workflow, the rule scripts and the build files."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CODE = [
    *sorted((REPO / "src").rglob("*.py")),
    *sorted((REPO / "scripts").rglob("*.py")),
    *sorted((REPO / "workflow").rglob("*.smk")),
    REPO / "Snakefile",
    REPO / "Makefile",
    REPO / ".ci" / "run",
]
ISSUE = re.compile(r"\bissues? ?#?\d+\b", re.IGNORECASE)
#: 7 to 40 hex digits, at least one a-f and one 0-9: a git commit (not a number, not a word)
COMMIT = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b")


def history_mentions(text: str) -> list[str]:
    """The issue numbers and commit hashes in ``text``, as found."""
    return ISSUE.findall(text) + COMMIT.findall(text)


def test_code_names_no_issue_or_commit():
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in CODE
        if path.is_file()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if history_mentions(line)
    ]
    assert not found, "say why instead of naming the issue or commit:\n" + "\n".join(found)


def test_the_patterns_find_history_and_nothing_else():
    assert history_mentions("# the retrain words (issue 17), see 3a59573") == ["issue 17", "3a59573"]
    assert history_mentions("Issues #9 and 11") == ["Issues #9"]
    assert history_mentions("2**32 - 1 seeds, 1234567 rows, a deadbeef word, cafe, float64, sha256") == []
