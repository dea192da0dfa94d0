"""pepr.columns is the one home of the resource, performance, identity and group columns and the
seed range: every reader takes them from there, and no module writes them out again."""

from __future__ import annotations

import ast
from pathlib import Path

from pepr import columns
from pepr.columns import GROUP_COLUMNS, RESOURCE_COLUMNS

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "pepr"
#: The code that measures the resources writes their keys into metrics.json by name.
MEASURING = {"train/run.py"}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative != "columns.py":
            yield relative, ast.parse(path.read_text(), filename=str(path))


def _string_constants(node: ast.AST) -> list[str]:
    elements = node.keys if isinstance(node, ast.Dict) else node.elts
    return [e.value for e in elements if isinstance(e, ast.Constant) and isinstance(e.value, str)]


def test_no_module_writes_a_list_of_resources_again():
    found = []
    for relative, tree in _modules():
        if relative in MEASURING:
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)):
                named = [c for c in _string_constants(node) if c in RESOURCE_COLUMNS]
                if len(named) >= 3:
                    found.append(f"{relative}:{node.lineno} {named}")
    assert not found, "resources written out instead of read from pepr.columns: " + "; ".join(found)


def test_no_module_writes_the_group_or_the_seed_range_again():
    found = []
    for relative, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and _string_constants(node) == list(GROUP_COLUMNS):
                found.append(f"{relative}:{node.lineno} the group columns")
            if isinstance(node, ast.BinOp) and ast.unparse(node).replace(" ", "") == "2**32-1":
                found.append(f"{relative}:{node.lineno} the seed range")
    assert not found, "written out instead of read from pepr.columns: " + "; ".join(found)


def test_every_reader_takes_the_columns_from_their_home():
    from pepr.estimate import compare
    from pepr.plan import report_settings, settings_checks
    from pepr.report import tables
    from pepr.results import aggregate, runs, scoring

    assert aggregate.RESOURCES == columns.SCORED_RESOURCES == ("energy_kwh", "co2_kg", "train_time_s", "peak_memory_mb")
    assert aggregate.AMORTISED_RESOURCES == ("energy_kwh", "co2_kg", "train_time_s")
    assert settings_checks.SCORED_RESOURCES == (
        *aggregate.RESOURCES,
        "energy_kwh_amortised",
        "co2_kg_amortised",
        "train_time_s_amortised",
    )
    assert report_settings.STANDARD_RESOURCES == {
        "energy_kwh": "PePR-E",
        "co2_kg": "PePR-C",
        "train_time_s": "PePR-T",
        "peak_memory_mb": "PePR-M",
    }
    assert report_settings.WORKFLOW_GROUP == runs.GROUP_COLUMNS == aggregate.GROUP_COLUMNS == GROUP_COLUMNS
    assert set(RESOURCE_COLUMNS) <= set(runs.RESULT_KEYS) and len(set(runs.RESULT_KEYS)) == len(runs.RESULT_KEYS)
    assert set(columns.PERFORMANCE_COLUMNS) <= set(runs.RESULT_KEYS)
    assert all(scoring._is_measurement(c) for c in RESOURCE_COLUMNS)
    assert (
        set(tables.ADDITIVE_RESOURCES) >= set(columns.AMORTISED_RESOURCES)
        and "peak_memory_mb" not in tables.ADDITIVE_RESOURCES
    )
    assert {m for _, m, _ in compare.COMPARED} == {"energy_kwh", "co2_kg", "train_time_s"}
    assert {e for e, _, _ in compare.COMPARED} == {"est_energy_kwh", "est_co2_kg", "est_time_s"}


def test_resource_definitions_are_consistent():
    labels = [r.label for r in columns.RESOURCES if r.scored]
    assert all(labels) and len(set(labels)) == len(labels)
    assert not any(r.label for r in columns.RESOURCES if not r.scored)
    assert len(set(RESOURCE_COLUMNS)) == len(RESOURCE_COLUMNS)
    assert columns.IDENTITY_COLUMNS[: len(GROUP_COLUMNS)] == GROUP_COLUMNS
    assert columns.MAX_SEED == 2**32 - 1


def test_cli_help_names_the_scored_resources():
    import argparse

    from pepr.cli import report

    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    text = parser.format_help().replace("\n", " ")
    assert "energy_kwh, co2_kg, train_time_s, peak_memory_mb" in " ".join(text.split())
