"""envs/pepr.yaml is the pip install's environment for conda: the same packages with the same
lower bounds as pyproject.toml's dependencies and test extra, and every rule names it."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
import yaml

REPO = Path(__file__).resolve().parents[1]
#: Requirement text: a name, then an optional version bound (``numpy>=1.24``).
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*?)\s*$")
#: conda's own entries of the file that are not pip requirements of the package.
_CONDA_ONLY = {"python", "pip"}


def _requirements(lines) -> dict[str, str]:
    """name (lower case, '_' as '-') -> version bound text, of requirement strings."""
    found = {}
    for line in lines:
        match = _REQUIREMENT.match(line)
        assert match, line
        found[match.group(1).lower().replace("_", "-")] = match.group(2).replace(" ", "")
    return found


def _pyproject() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return _requirements([*project["dependencies"], *project["optional-dependencies"]["test"]])


def _conda_env() -> dict[str, str]:
    env = yaml.safe_load((REPO / "envs" / "pepr.yaml").read_text())
    entries = []
    for item in env["dependencies"]:
        entries.extend(item["pip"] if isinstance(item, dict) else [item])
    found = _requirements(entries)
    return {name: bound for name, bound in found.items() if name not in _CONDA_ONLY}


def test_the_conda_environment_equals_the_pip_dependencies():
    pip, conda = _pyproject(), _conda_env()
    assert {"plotly", "markdown-it-py", "torch", "snakemake"} <= set(pip)
    missing, extra = sorted(set(pip) - set(conda)), sorted(set(conda) - set(pip))
    assert not missing and not extra, f"envs/pepr.yaml lacks {missing}, has beyond pyproject.toml {extra}"
    different = {name: (pip[name], conda[name]) for name in pip if pip[name] != conda[name]}
    assert not different, f"version bounds differ (pyproject, envs/pepr.yaml): {different}"


def test_every_rule_runs_in_that_environment():
    """Each rule with an action (shell/script) names envs/pepr.yaml, relative to its .smk file."""
    checked = 0
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = path.read_text()
        rules = re.findall(r"^(?:rule|checkpoint) (\w+):\n((?:[ \t]+.*\n|\n)+)", text, flags=re.MULTILINE)
        for name, body in rules:
            if re.search(r"^    (shell|script):", body, flags=re.MULTILINE):
                named = re.search(r'^    conda:\n        "([^"]+)"', body, flags=re.MULTILINE)
                assert named, f"{path.name}: rule {name} names no conda environment"
                assert (path.parent / named.group(1)).resolve() == REPO / "envs" / "pepr.yaml", (
                    f"{path.name}: rule {name}"
                )
                checked += 1
    assert checked >= 10  # the rules were found
