"""Rerun safety of the workflow (issues 9 and 11).

* A MedMNIST file the user placed is never re-downloaded, deleted or overwritten: the file is
  older than every script (as a file copied in months ago would be); a real sweep on it must
  train from it, plan no download_data job, and leave it byte-for-byte unchanged.
* A sweep finished with the earlier `script:` train rules plans no retrain with the `shell:` ones.
* A forced rerun of a finished cell that then fails keeps the result in `previous/<stamp>/`, and
  the rule log says where.
"""

from __future__ import annotations

import hashlib
import os

import pytest
import yaml

from test_finished_runs_workflow import write_medmnist_like
from test_workflow_local import OK_MODEL, REPO, TEST_CONFIG, check, planned_jobs, snakemake, train_model_log

pytestmark = pytest.mark.slow

#: Images per split of the small MedMNIST-like files these sweeps train on.
SMALL = (60, 30, 30)


def test_user_placed_old_data_file_survives_a_real_run(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    placed = data / "pneumoniamnist.npz"
    write_medmnist_like(placed, n=SMALL)
    os.utime(placed, (1_000_000_000, 1_000_000_000))  # 2001: older than any script
    digest = hashlib.sha256(placed.read_bytes()).hexdigest()
    config = yaml.safe_load(TEST_CONFIG.read_text())
    config.update(datasets=["pneumoniamnist"], inits=["scratch"], fractions=[1.0], models=["mobilenetv3_small_050"])
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))

    assert "download_data" not in planned_jobs(tmp_path, configfile=config_file)
    check(snakemake(tmp_path, "--cores", "2", configfile=config_file))
    assert placed.exists() and hashlib.sha256(placed.read_bytes()).hexdigest() == digest
    assert placed.stat().st_mtime == 1_000_000_000
    assert list((tmp_path / "results").rglob("metrics.json"))


# ---------------------------------------------------------------------------------------------
# Issue 11 meets issue 9: the train rules became `shell:` rules; a sweep finished with the
# earlier `script:` rules must plan no retrain, and a forced rerun that fails keeps the result.
# ---------------------------------------------------------------------------------------------

#: workflow/rules/train.smk as sweeps were finished with it (commit 26e5975, `script:` rules).
SCRIPT_RULES_TRAIN_SMK = """
def pretrain_inputs(wildcards):
    job = GRID.pretrain_job(wildcards.source, wildcards.model)
    return data_inputs(job.source)


rule pretrain_source:
    input:
        unpack(pretrain_inputs),
    output:
        metrics="results/pretrain/{source}/{model}/metrics.json",
        history="results/pretrain/{source}/{model}/history.csv",
    params:
        # dict(): train_settings returned a plain dict then (TrainSettings since the shell: rules)
        train=lambda wildcards: dict(pepr_grid.train_settings(
            GRID.pretrain_job(wildcards.source, wildcards.model), config
        )),
    threads: rule_threads("pretrain")
    resources:
        **rule_resources("pretrain"),
    log:
        "results/logs/pretrain_source/{source}/{model}.log",
    script:
        "../../scripts/train_model.py"


def cell_of(wildcards):
    return GRID.cell(wildcards.dataset, wildcards.init, wildcards.fraction, wildcards.model, wildcards.seed)


def train_inputs(wildcards):
    cell = cell_of(wildcards)
    inputs = data_inputs(cell.dataset)
    if cell.init == "transfer":
        inputs["pretrain"] = cell.pretrain.metrics
    elif cell.init == "imagenet":
        inputs["weights"] = f"results/weights/{cell.model}.json"
    return inputs


rule train_model:
    input:
        unpack(train_inputs),
    output:
        metrics="results/runs/{dataset}/{init}/{fraction}/{model}/seed{seed}/metrics.json",
        history="results/runs/{dataset}/{init}/{fraction}/{model}/seed{seed}/history.csv",
    wildcard_constraints:
        init="scratch|imagenet|transfer",
        fraction=r"[0-9.e-]+",
        seed=r"\\d+",
    params:
        train=lambda wildcards: dict(pepr_grid.train_settings(cell_of(wildcards), config)),
    threads: rule_threads("train")
    resources:
        **rule_resources("train"),
    log:
        "results/logs/train_model/{dataset}/{init}/{fraction}/{model}/seed{seed}.log",
    script:
        "../../scripts/train_model.py"
"""

#: scripts/train_model.py of that commit (its pepr.plan.grid.train_job, inlined: same TrainConfig).
SCRIPT_RULES_TRAIN_SCRIPT = """
import contextlib
import traceback
from pathlib import Path

from pepr.train.settings import TrainConfig
from pepr.train.run import run_training

with open(snakemake.log[0], "a", encoding="utf-8") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
    try:
        run_training(TrainConfig(
            out_dir=Path(snakemake.output.metrics).parent, threads=snakemake.threads,
            pretrain_metrics=snakemake.input.get("pretrain"), **dict(snakemake.params.train),
        ))
    except BaseException:
        traceback.print_exc()
        raise
"""


@pytest.fixture(scope="module")
def script_rules_sweep(tmp_path_factory):
    """A tiny sweep (scratch + transfer, on an npz file) finished by the earlier `script:` rules."""
    import shutil

    base = tmp_path_factory.mktemp("script-rules")
    old = base / "workflow-copy"
    for name in ("workflow", "profiles", "config", "scripts", "envs"):
        shutil.copytree(REPO / name, old / name)
    # the earlier workflow had no adaptive stage (its rules build on today's train.smk commands)
    snakefile = (REPO / "Snakefile").read_text().replace('include: "workflow/rules/adaptive.smk"\n', "")
    (old / "Snakefile").write_text(snakefile)
    (old / "workflow" / "rules" / "train.smk").write_text(SCRIPT_RULES_TRAIN_SMK)
    (old / "scripts" / "train_model.py").write_text(SCRIPT_RULES_TRAIN_SCRIPT)
    workdir = base / "sweep"
    workdir.mkdir()
    data = workdir / "cells.npz"
    write_medmnist_like(data, n=SMALL)
    config = yaml.safe_load(TEST_CONFIG.read_text())
    config.update(datasets=[f"npz:{data}"], inits=["scratch", "transfer"], fractions=[1.0], models=[OK_MODEL])
    config_file = base / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    check(
        snakemake(
            workdir,
            "--cores",
            "2",
            "results/runs.csv",
            configfile=config_file,
            snakefile=old / "Snakefile",
            timeout=900,
        )
    )
    return workdir, config_file


def test_sweep_finished_by_script_rules_plans_no_retrain(script_rules_sweep):
    """The `shell:` rules keep the params a finished sweep recorded: nothing is trained again."""
    workdir, config_file = script_rules_sweep
    assert len(list((workdir / "results" / "runs").glob("*/*/*/*/seed0/metrics.json"))) == 2
    counts = planned_jobs(workdir, "results/runs.csv", configfile=config_file)
    assert not {"train_model", "pretrain_source"} & set(counts), counts


def test_forced_rerun_that_fails_keeps_the_previous_result(script_rules_sweep):
    """Issue 9: `--forcerun` of a finished cell whose data went bad (same size and mtime, so
    planning's cached validation does not notice) fails; the result stays in previous/<stamp>/
    and the rule log says where."""
    workdir, config_file = script_rules_sweep
    run_dir = next((workdir / "results" / "runs").glob("*/scratch/*/*/seed0/metrics.json")).parent
    finished = (run_dir / "metrics.json").read_text()
    data = workdir / "cells.npz"
    stat = data.stat()
    corrupt = bytearray(data.read_bytes())
    corrupt[100:4000] = b"\0" * 3900  # bit rot inside the arrays: same size
    data.write_bytes(bytes(corrupt))
    os.utime(data, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    target = str((run_dir / "metrics.json").relative_to(workdir))
    result = snakemake(workdir, "--cores", "1", "--forcerun", target, target, configfile=config_file)
    assert result.returncode != 0, "the forced rerun on corrupt data did not fail"
    assert not (run_dir / "metrics.json").exists()  # Snakemake deleted it before re-running
    kept = list((run_dir / "previous").glob("*/metrics.json"))
    assert len(kept) == 1 and kept[0].read_text() == finished
    assert (kept[0].parent / "history.csv").is_file()
    text = train_model_log(workdir, run_dir).read_text()
    assert f"the last finished result of this run is kept in {kept[0].parent.relative_to(workdir)}/" in text, text
