"""Every skip in the suite says why: ``pytest.skip`` with a message, ``importorskip`` and
``mark.skipif`` with ``reason=`` (pytest's own default, "could not import 'x'", says nothing about
how to get it). What the reasons say (the missing thing and how to get it) is reviewed by hand."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _name(node: ast.expr) -> str:
    """Dotted name of a call's target: ``pytest.mark.skipif``, ``pytest.skip``..."""
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def _without_reason(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        name = _name(node.func)
        keywords = {k.arg for k in node.keywords}
        if name == "pytest.skip":
            ok = bool(node.args) or "reason" in keywords
        elif name in ("pytest.importorskip", "pytest.mark.skipif"):
            ok = "reason" in keywords
        else:
            continue
        if not ok:
            found.append(f"{path.name}:{node.lineno}: {name} without a reason")
    return found


def test_every_skip_gives_its_reason():
    missing = [line for path in sorted(TESTS.glob("*.py")) for line in _without_reason(path)]
    assert not missing, "\n".join(missing)


def test_the_check_finds_a_bare_skip(tmp_path):
    example = tmp_path / "test_example.py"
    example.write_text(
        'import pytest\nnp = pytest.importorskip("numpy")\n'
        '@pytest.mark.skipif(True, reason="x: pip install x")\ndef test(): pytest.skip()\n'
    )
    assert _without_reason(example) == [
        "test_example.py:2: pytest.importorskip without a reason",
        "test_example.py:4: pytest.skip without a reason",
    ]
