"""pepr.plan.workflow, the one adapter to Snakemake's objects, against the installed Snakemake:
every attribute it uses exists, and what it reads back (config files, overrides, whether a job
is forced on the user's word, a params record, a repair) is what Snakemake did. A toy Snakefile
keeps each run to a few seconds."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import tomllib

from pepr.plan.workflow import SNAKEMAKE_BELOW, RetrainFlag

REPO = Path(__file__).resolve().parents[1]

TOY = r'''
import json, os, sys
from pathlib import Path
from pepr.plan.rules import retrain_choice
from pepr.plan.workflow import SnakemakeWorkflow, USED_ATTRIBUTES, USED_DAG_ATTRIBUTES

W = SnakemakeWorkflow(workflow, warn=lambda text: Path("warnings.txt").open("a").write(text + "\n"))


def _has(obj, dotted):
    for part in dotted.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


Path("parse.json").write_text(json.dumps({
    "attributes": {name: _has(workflow, name) for name in USED_ATTRIBUTES if not name.startswith(("dag_settings", "dag", "persistence", "execution_settings"))},
    "config_files": W.config_files(),
    "overrides": W.config_overrides(),
    "in_job": W.in_job,
    "basedir": str(W.basedir),
    "gpu": W.resource_override("gpu"),
}))
if config.get("repair"):
    W.force_repair([config["repair"]])


class Seen:
    """Formatted in the shell command: the DAG's and dag_settings' attributes, the record."""

    def __init__(self, output):
        self.output = output

    def __str__(self):
        dag = workflow.dag
        found = {name: _has(workflow, name) for name in USED_ATTRIBUTES if name.startswith(("dag_settings", "dag", "persistence", "execution_settings"))}
        found.update({"dag." + name: hasattr(dag, name) for name in USED_DAG_ATTRIBUTES})
        found["record"] = W.recorded_params(self.output)
        return json.dumps(found).replace("'", "")


def inputs(wildcards):
    collision = W.second_driver()
    if collision:
        print(collision, file=sys.stderr)
        raise SystemExit(1)
    W.apply_repairs()
    return []


rule all:
    input: expand("runs/{i}/metrics.json", i=[1, 2, 3])


rule train:
    input: inputs
    output: m="runs/{i}/metrics.json", h="runs/{i}/history.csv"
    params:
        setting="same",
        retrain=lambda wildcards, output: W.retrain_flag(
            "train", output, retrain_choice(config.get("retrain")), "pre/metrics.json" if wildcards.i == "1" else None),
        seen=lambda wildcards, output: Seen(output.m),
    resources: gpu=0
    log: "logs/{i}.log"
    shell: "echo 'retrain=[{params.retrain}]' > {output.m}; echo '{params.seen}' > {output.h}; echo trained > {log}"
'''


@pytest.fixture
def toy(tmp_path):
    (tmp_path / "Snakefile").write_text(TOY)
    (tmp_path / "config.yaml").write_text("retrain: null\n")

    def run(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", "config.yaml", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result

    def retrained() -> dict[str, bool]:
        found = {}
        for path in sorted(tmp_path.glob("runs/*/metrics.json")):
            found[path.parent.name] = "--retrain" in path.read_text()
        return found

    run()
    return tmp_path, run, retrained


def stamp(folder: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in folder.glob("runs/*/metrics.json")}


def test_every_attribute_exists_in_the_installed_snakemake(toy):
    folder, run, _ = toy
    parse = json.loads((folder / "parse.json").read_text())
    assert parse["attributes"] and all(parse["attributes"].values()), parse["attributes"]
    seen = json.loads((folder / "runs" / "2" / "history.csv").read_text())
    assert seen and all(value for key, value in seen.items() if key != "record"), seen
    assert [Path(p).name for p in parse["config_files"]] == ["config.yaml"] and parse["in_job"] is False
    assert Path(parse["basedir"]) == folder
    run("--config", "retrain=null", "extra=1", "--set-resources", "train:gpu=2", "-n")
    parse = json.loads((folder / "parse.json").read_text())
    assert parse["overrides"] == {"retrain": "null", "extra": 1} and parse["gpu"] == {"train": 2}, parse


def test_recorded_params_are_snakemakes_record(toy):
    folder, run, _ = toy
    run("--forcerun", "runs/2/metrics.json")
    seen = json.loads((folder / "runs" / "2" / "history.csv").read_text())
    assert "same" in seen["record"], seen  # the record of the first run: params.setting


@pytest.mark.parametrize(
    "form",
    ["runs/2/metrics.json", "./runs/2/metrics.json", "runs/2/history.csv", "runs//2/./metrics.json", "ABS"],
)
def test_every_forcerun_form_of_a_file_retrains_that_job_only(toy, form):
    folder, run, retrained = toy
    before = stamp(folder)
    target = str(folder / "runs" / "2" / "metrics.json") if form == "ABS" else form
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", "config.yaml", "--forcerun", target],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    after = stamp(folder)
    if form == "ABS" and result.returncode != 0:
        # Snakemake itself cannot match an absolute path to a relative output: it says so and runs nothing
        assert "No rule to produce" in result.stdout + result.stderr and after == before
        return
    assert result.returncode == 0, result.stderr[-3000:]
    assert after["2"] != before["2"] and after["1"] == before["1"] and after["3"] == before["3"]
    assert retrained()["2"] is True


def test_rule_forcerun_and_forceall_retrain_and_warn_about_kept_pretraining(toy):
    folder, run, retrained = toy
    run("-R", "train")
    assert retrained() == {"1": True, "2": True, "3": True}
    assert "pre/model.pt, kept from an earlier run" in (folder / "warnings.txt").read_text()
    run("--forceall")
    assert retrained() == {"1": True, "2": True, "3": True}


def test_force_of_a_target_and_retrain_false_restore_and_retrain_true_trains(toy):
    folder, run, retrained = toy
    run("--force", "runs/1/metrics.json")  # what the job side of a SLURM allocation runs
    assert retrained()["1"] is False
    run("--forcerun", "train", "--config", "retrain=false")
    assert retrained() == {"1": False, "2": False, "3": False}
    run("--force", "runs/3/metrics.json", "--config", "retrain=true")
    assert retrained()["3"] is True


def test_a_repair_runs_the_job_without_a_retrain(toy):
    folder, run, retrained = toy
    before = stamp(folder)
    run("--config", "repair=runs/3/metrics.json")
    after = stamp(folder)
    assert after["3"] != before["3"] and after["1"] == before["1"]
    assert retrained()["3"] is False
    run("--config", "repair=runs/3/metrics.json", "--forcerun", "runs/3/metrics.json")
    assert retrained()["3"] is True  # the user's word still retrains a repaired job


def test_retrain_flag_is_decided_once_and_formats_as_a_flag():
    calls = []
    flag = RetrainFlag(lambda: calls.append(1) or True)
    assert f"{flag}" == " --retrain" and str(flag) == " --retrain" and calls == [1]
    assert str(RetrainFlag(lambda: False)) == ""


def test_pyproject_bounds_snakemake_and_the_installed_one_is_inside():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    spec = next(d for d in project["project"]["dependencies"] if re.match(r"snakemake[<>=]", d))
    upper = re.search(r"<\s*([0-9.]+)", spec)
    assert upper and upper.group(1) == SNAKEMAKE_BELOW, spec
    installed = tuple(int(part) for part in version("snakemake").split(".")[:2])
    lower = tuple(int(part) for part in re.search(r">=\s*([0-9.]+)", spec).group(1).split(".")[:2])
    assert lower <= installed < (int(SNAKEMAKE_BELOW), 0), (spec, installed)
    # the Snakefile asks for the same lower bound
    snakefile = (REPO / "Snakefile").read_text()
    assert f'min_version("{".".join(map(str, lower))}")' in snakefile


def test_no_snakemake_internal_outside_the_adapter():
    """The .smk files and the Snakefile reach Snakemake's workflow object only through
    pepr.plan.workflow (constructing it is the one use), and no package module but the adapter
    imports snakemake."""
    texts = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    uses = []
    for path in texts:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"(?<![/.\w])workflow\.[a-z_]", code) or re.search(
                r"\bsnakemake\.(io|dag|persistence|workflow)\b", code
            ):
                uses.append(f"{path.name}:{number}: {line.strip()}")
    assert uses == [], uses
    for module in (REPO / "src" / "pepr").rglob("*.py"):
        if module.name == "workflow.py" and module.parent.name == "plan":
            continue
        tree = ast.parse(module.read_text())
        imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names] + [
            node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
        ]
        assert not [name for name in imported if name.split(".")[0] == "snakemake"], module


def test_a_second_driver_with_nolock_stops_in_one_line_and_touches_no_log(toy):
    folder, run, _ = toy
    before = stamp(folder)
    log = folder / "logs" / "2.log"
    log_before = log.read_text()
    (folder / ".snakemake" / "locks").mkdir(exist_ok=True)
    (folder / ".snakemake" / "locks" / "0.input.lock").write_text("runs/2/metrics.json\n")  # the first driver's
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", "config.yaml", "--nolock", "-R", "train"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("pepr:")]
    assert len(lines) == 1 and "another Snakemake run holds this folder" in lines[0], result.stderr
    assert "Traceback" not in result.stderr and "Exception" not in result.stderr
    assert stamp(folder) == before and log.read_text() == log_before
    run("--nolock", "-n")  # a dry run beside a running sweep is fine
