"""Rerun promises on the real workflow (slow): every --forcerun form retrains the cell it names,
a lost or edited result is restored on the next plain run (not retrained), and a value that
resolves to the same training plans nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_rerun_issue17 import sweep_config, write_medmnist_like
from test_workflow_local import check, planned_jobs, snakemake

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("finished26")
    (workdir / "data").mkdir()
    write_medmnist_like(workdir / "data" / "pneumoniamnist.npz", n=(200, 60, 60))
    config = sweep_config(workdir)
    check(snakemake(workdir, "--cores", "2", "results/runs.csv", configfile=config))
    metrics = next((workdir / "results" / "runs").glob("*/*/*/*/seed0/metrics.json"))
    log = workdir / "results" / "logs" / "train_model" / Path(*metrics.parent.relative_to(workdir / "results" / "runs").parts)
    return workdir, config, metrics, log.with_name(log.name + ".log")


@pytest.mark.parametrize("form", ["relative", "dot", "absolute", "history", "rule", "R"])
def test_every_forcerun_form_retrains(finished, form):
    workdir, config, metrics, log = finished
    relative = str(metrics.relative_to(workdir))
    named = {
        "relative": ["--forcerun", relative],
        "dot": ["--forcerun", "./" + relative],
        "absolute": ["--forcerun", str(metrics)],
        "history": ["--forcerun", relative.replace("metrics.json", "history.csv")],
        "rule": ["--forcerun", "train_model"],
        "R": ["-R", "train_model"],
    }[form]
    result = snakemake(workdir, "--cores", "1", "results/runs.csv", *named, configfile=config)
    text = result.stdout + result.stderr
    if form == "absolute" and result.returncode != 0:
        # Snakemake cannot match an absolute path to the rule's relative output: it says so, runs nothing
        assert "No rule to produce" in text, text
        return
    check(result)
    trained = log.read_text()
    assert "epoch 1/1" in trained and "restored" not in trained, (form, trained)
    assert "train_model" not in planned_jobs(workdir, "results/runs.csv", configfile=config)


@pytest.mark.parametrize("damage", ["rm", "truncate"])
def test_lost_or_edited_result_is_restored_on_the_next_plain_run(finished, damage):
    workdir, config, metrics, log = finished
    before = metrics.read_bytes()
    if damage == "rm":
        metrics.unlink()  # what `pepr status` advises for an unreadable one
    else:
        with open(metrics, "r+b") as handle:  # `: > metrics.json`, an editor writing in place
            handle.truncate(0)
    assert planned_jobs(workdir, "results/runs.csv", configfile=config).get("train_model") == 1
    check(snakemake(workdir, "--cores", "1", "results/runs.csv", configfile=config))
    assert metrics.read_bytes() == before
    text = log.read_text()
    assert "restored the finished result" in text and "epoch 1/1" not in text, text
    assert "train_model" not in planned_jobs(workdir, "results/runs.csv", configfile=config)


def test_values_that_resolve_to_the_same_training_plan_nothing(finished, tmp_path):
    workdir, config, _, _ = finished
    import yaml

    same = yaml.safe_load(config.read_text())
    assert "lr" not in same  # the schema's default, 0.0005, trained the sweep
    same.update(image_size=28, precision="fp32")  # the stored size, a default written explicitly
    path = tmp_path / "same.yaml"
    path.write_text(yaml.safe_dump(same) + "lr: 5.0e-04\n")  # the default in another spelling
    assert "train_model" not in planned_jobs(workdir, "results/runs.csv", configfile=path)
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump({**same, "image_size": 32}))
    assert planned_jobs(workdir, "results/runs.csv", configfile=changed).get("train_model") == 1
