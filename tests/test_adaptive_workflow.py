"""Adaptive sweeps end to end with the local executor (slow): the checkpoint DAG on a tiny
synthetic config (3 models, one of which cannot run at 28 px, 2-3 epochs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from test_workflow_local import REPO, check, planned_jobs, snakemake, snakemake_command

pytestmark = pytest.mark.slow

MODELS = ["mobilenetv3_small_050", "regnetx_002", "convnext_atto"]  # convnext_atto fails at 28 px
GROUP = "results/runs/synthetic-n_test48-n_train96-n_val48/scratch/1.0"
DECISION = "results/adaptive/synthetic-n_test48-n_train96-n_val48/scratch/1.0/rung1.json"


def adaptive_config(tmp_path: Path, name: str, epochs: int = 2, rungs=(1,), keep: float = 0.34) -> Path:
    config = {
        "models": MODELS,
        "datasets": ["synthetic:n_train=96,n_val=48,n_test=48"],
        "inits": ["scratch"],
        "fractions": [1.0],
        "seeds": [0],
        "epochs": epochs,
        "batch_size": 32,
        "device": "cpu",
        "data_dir": "data",
        "adaptive": {"rungs": list(rungs), "keep": keep, "min_keep": 1},
        "resources": {
            kind: {"cpus": 1, "gpu": 0, "mem_mb": 2000, "runtime": 10} for kind in ("train", "pretrain", "default")
        },
    }
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def mtimes(workdir: Path) -> dict[str, int]:
    return {p.parent.parent.name: p.stat().st_mtime_ns for p in (workdir / GROUP).glob("*/seed0/metrics.json")}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """The adaptive sweep, run in two steps: rung 1 (the decision), then the rest."""
    root = tmp_path_factory.mktemp("adaptive")
    config = adaptive_config(root, "adaptive.yaml")
    workdir = root / "work"
    workdir.mkdir()
    first_plan = planned_jobs(workdir, "results/runs.csv", configfile=config)
    check(snakemake(workdir, "--cores", "2", DECISION, configfile=config))
    decision = json.loads((workdir / DECISION).read_text())
    second_plan = check(snakemake(workdir, "-n", "-p", "--cores", "2", "results/runs.csv", configfile=config))
    check(snakemake(workdir, "--cores", "2", "results/runs.csv", configfile=config))
    return {
        "root": root,
        "config": config,
        "workdir": workdir,
        "first_plan": first_plan,
        "decision": decision,
        "second_plan": second_plan.stdout + second_plan.stderr,
    }


def test_dry_run_plans_the_first_rung_only(sweep):
    plan = sweep["first_plan"]
    assert plan["train_to_rung"] == len(MODELS) and plan["select_rung"] == 1


def test_after_the_rung_only_the_kept_cells_train_on(sweep):
    decision = sweep["decision"]
    assert decision["failed"] == ["convnext_atto"]
    assert len(decision["kept"]) == 1 and len(decision["stopped"]) == 1
    commands = [line for line in sweep["second_plan"].splitlines() if "pepr.cli train" in line]
    training = [c for c in commands if "--stopped-at" not in c]
    assert len(training) == 1 and f"--model {decision['kept'][0]}" in training[0]
    assert "stop-after" not in sweep["second_plan"]  # no epoch of rung 1 is trained again


def test_runs_table_has_finished_stopped_and_failed_cells(sweep):
    runs = pd.read_csv(sweep["workdir"] / "results" / "runs.csv").set_index("model")
    kept, stopped = sweep["decision"]["kept"][0], sweep["decision"]["stopped"][0]
    assert runs.loc[kept, "status"] == "ok" and runs.loc[kept, "segments"] == 2
    assert runs.loc[stopped, "status"] == "stopped" and runs.loc[stopped, "rung"] == 1
    assert runs.loc["convnext_atto", "status"] == "failed"
    assert (sweep["workdir"] / GROUP / stopped / "seed0" / "resume.pt").exists()


def test_rerun_plans_nothing(sweep):
    assert planned_jobs(sweep["workdir"], "results/runs.csv", configfile=sweep["config"]) == {}


def test_raising_keep_trains_only_the_newly_kept(sweep):
    workdir = sweep["workdir"]
    before = mtimes(workdir)
    stopped = sweep["decision"]["stopped"][0]
    config = adaptive_config(sweep["root"], "keep_all.yaml", keep=1.0)
    check(snakemake(workdir, "--cores", "2", "results/runs.csv", configfile=config))
    after = mtimes(workdir)
    assert [m for m in after if after[m] != before[m]] == [stopped]
    record = json.loads((workdir / GROUP / stopped / "seed0" / "metrics.json").read_text())
    assert record["status"] == "ok" and record["segments"] == 2  # continued from its rung-1 checkpoint
    assert planned_jobs(workdir, "results/runs.csv", configfile=config) == {}


def test_kill_9_mid_rung_resumes_that_rung(tmp_path):
    config = adaptive_config(tmp_path, "long.yaml", epochs=3, rungs=(2,))
    workdir = tmp_path / "killed"
    workdir.mkdir()
    decision = DECISION.replace("rung1", "rung2")
    driver = subprocess.Popen(
        snakemake_command(workdir, "--cores", "1", decision, configfile=config),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and driver.poll() is None:
            if list((workdir / GROUP).glob("*/seed0/resume.pt")):
                break
            time.sleep(0.2)
        assert driver.poll() is None, "the rung ended before it could be killed"
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    killed = [p.parent.parent.name for p in (workdir / GROUP).glob("*/seed0/resume.pt")]
    check(snakemake(workdir, "--unlock", configfile=config))
    check(snakemake(workdir, "--cores", "2", "--rerun-incomplete", "results/runs.csv", configfile=config))
    for model in killed:
        record = json.loads((workdir / GROUP / model / "seed0" / "rung2.json").read_text())
        assert [row["epoch"] for row in record["history"]] == [1, 2]
        assert [row["segment"] for row in record["history"]] == [0, 1], "the rung started over instead of resuming"
    assert planned_jobs(workdir, "results/runs.csv", configfile=config) == {}
    runs = pd.read_csv(workdir / "results" / "runs.csv")
    assert sorted(runs["status"]) == ["failed", "ok", "stopped"]
    assert runs.loc[runs["status"] == "stopped", "rung"].tolist() == [2]


def test_pepr_replay_on_the_finished_sweep_makes_the_workflows_decision(sweep):
    """After the raised keep every model finished: replaying keep 0.34 on its histories keeps (and
    recommends) the model the workflow kept at rung 1, from the same numbers."""
    workdir = sweep["workdir"]
    config = adaptive_config(sweep["root"], "keep_all.yaml", keep=1.0)
    check(snakemake(workdir, "--cores", "1", "results/histories.csv", configfile=config))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pepr.cli",
            "replay",
            str(workdir / "results" / "histories.csv"),
            "--rungs",
            "1",
            "--keep",
            "0.34",
            "--min-keep",
            "1",
            "--out",
            str(workdir / "replay"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    replayed = pd.read_csv(workdir / "replay" / "replay.csv")
    assert replayed["recommended"].tolist() == sweep["decision"]["kept"]
    assert 0 < replayed["resource_share"].iloc[0] < 1
