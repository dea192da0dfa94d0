"""Issue 18: the package's import structure. Every module of src/pepr is parsed with ast, imports
inside functions included; there is no import cycle, and planning never imports the report."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "pepr"

#: The planning side: config -> validated grid -> the workflow's jobs.
PLANNING = (
    "pepr.plan.prepare",
    "pepr.plan.grid",
    "pepr.plan.config",
    "pepr.train.settings",
    "pepr.train.checks",
    "pepr.train.devices",
    "pepr.plan.report_settings",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the pepr modules it imports anywhere in its code (function bodies too)."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets.add(base)
                # `from pepr import data` imports the module pepr.datasets.core
                targets.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules)
        graph[name] = {t for t in targets if t in modules and t != name and t != "pepr"}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert len(graph) > 20 and "pepr.plan.prepare" in graph  # the walk found the package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        for target in graph.get(node, ()):
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def test_planning_never_imports_the_report():
    graph = import_graph()
    for module in PLANNING:
        report = sorted(m for m in _reachable(graph, module) if m == "pepr.report" or m.startswith("pepr.report."))
        assert not report, f"{module} imports the report ({', '.join(report)}), directly or through another module"


def test_planning_layers_import_downwards_only():
    """plan -> grid -> config: a lower layer never imports a higher one."""
    graph = import_graph()
    layers = ["pepr.plan.prepare", "pepr.plan.grid", "pepr.plan.config"]
    for lower_index, lower in enumerate(layers):
        above = set(layers[:lower_index])
        assert not (_reachable(graph, lower) & above), f"{lower} imports {sorted(_reachable(graph, lower) & above)}"


#: The stages of the workflow, each a sub-package; the root keeps only the light entry points.
STAGES = {"plan", "datasets", "train", "results", "report", "estimate", "cli"}
ROOT_MODULES = {"__init__.py", "errors.py", "columns.py", "files.py"}


def test_the_package_is_grouped_by_stage():
    root_modules = {path.name for path in PACKAGE.glob("*.py")}
    assert root_modules <= ROOT_MODULES, f"modules outside a stage package: {sorted(root_modules - ROOT_MODULES)}"
    packages = {path.parent.name for path in PACKAGE.glob("*/__init__.py")}
    assert packages == STAGES


def test_stage_packages_import_nothing_at_their_top():
    """Importing one module of a stage must not pull in the whole stage (pepr train's start-up)."""
    for stage in STAGES - {"cli", "report", "estimate"}:
        tree = ast.parse((PACKAGE / stage / "__init__.py").read_text())
        imports = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
        assert not imports, f"pepr/{stage}/__init__.py imports at its top"


def test_aggregation_and_scoring_never_import_training():
    """runs.csv -> pepr.csv stays light: CO2 from energy comes from pepr.results.carbon, not the meter."""
    graph = import_graph()
    for module in ("pepr.results.aggregate", "pepr.results.scoring", "pepr.results.carbon"):
        training = sorted(m for m in _reachable(graph, module) if m.startswith("pepr.train."))
        assert not training, f"{module} imports the training side ({', '.join(training)})"


def test_the_engine_never_imports_planning():
    """pepr.train.* runs one training; the checks it shares with planning live in pepr.train.checks."""
    graph = import_graph()
    for module, targets in sorted(graph.items()):
        if module == "pepr.train" or module.startswith("pepr.train."):
            planning = sorted(t for t in targets if t.startswith("pepr.plan"))
            assert not planning, f"{module} imports planning ({', '.join(planning)})"
