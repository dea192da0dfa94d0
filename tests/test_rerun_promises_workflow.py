"""Rerun promises on the real workflow (slow): every --forcerun form retrains the cell it names,
a lost or edited result is restored on the next plain run (not retrained), and a value that
resolves to the same training plans nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_finished_runs_workflow import sweep_config, write_medmnist_like
from test_workflow_local import check, planned_jobs, snakemake, train_model_log

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("finished")
    (workdir / "data").mkdir()
    write_medmnist_like(workdir / "data" / "pneumoniamnist.npz", n=(200, 60, 60))
    config = sweep_config(workdir)
    check(snakemake(workdir, "--cores", "2", "results/runs.csv", configfile=config))
    metrics = next((workdir / "results" / "runs").glob("*/*/*/*/seed0/metrics.json"))
    return workdir, config, metrics, train_model_log(workdir, metrics.parent)


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


def _npz(path: Path, train_labels, shape=(28, 28)) -> Path:
    import numpy as np

    n = len(train_labels)
    small = np.array([[0], [1], [0], [1]])
    np.savez(
        path,
        train_images=np.zeros((n, *shape), np.uint8),
        train_labels=np.array(train_labels).reshape(-1, 1),
        val_images=np.zeros((4, *shape), np.uint8),
        val_labels=small,
        test_images=np.zeros((4, *shape), np.uint8),
        test_labels=small,
    )
    return path


#: Every check `pepr train` makes on its inputs that planning can make too (the machine's own
#: limits, --threads and free space, are the job's: planning does not know the job's machine).
#: name -> (config changes, pepr train flags, text both must say)
TRAIN_INPUT_CHECKS = {
    "class-emptying fraction": (
        {"fractions": [0.1]},
        ["--fraction", "0.1"],
        "leaves class 1 (3 training samples) with no sample",
    ),
    "non-square images": ({"datasets": ["npz:{wide}"]}, ["--dataset", "npz:{wide}"], "has 28x36 images"),
    "batch size 1": ({"batch_size": 1}, ["--batch-size", "1"], "batch"),
    "zero learning rate": ({"lr": 0.0}, ["--lr", "0"], "lr"),
    "damaged npz": ({"datasets": ["npz:{damaged}"]}, ["--dataset", "npz:{damaged}"], "damaged"),
    "unknown country": ({"country": "DEN"}, ["--country", "DEN"], "DEN"),
}


@pytest.mark.parametrize("name", sorted(TRAIN_INPUT_CHECKS))
def test_every_job_level_input_check_is_made_at_planning(tmp_path, name):
    from test_rerun_promises import planning_problems
    from test_train import run_cli, train_argv

    files = {
        "cells": str(_npz(tmp_path / "cells.npz", [0] * 50 + [1] * 3)),
        "wide": str(_npz(tmp_path / "wide.npz", [0, 1] * 10, shape=(28, 36))),
        "damaged": str(tmp_path / "damaged.npz"),
    }
    (tmp_path / "damaged.npz").write_bytes(b"PK\x03\x04 not a zip")
    changes, flags, text = TRAIN_INPUT_CHECKS[name]
    changes = {
        key: [v.format(**files) for v in value]
        if isinstance(value, list) and value and isinstance(value[0], str)
        else value
        for key, value in changes.items()
    }
    flags = [flag.format(**files) for flag in flags]
    config = {"datasets": [f"npz:{files['cells']}"], "models": ["resnet18"], **changes}
    planned = planning_problems(**config)
    assert any(text in problem for problem in planned), (name, planned)
    # run_cli also takes argparse's exit: some values are refused by the flag parser itself
    code, err = run_cli(*train_argv(tmp_path / "out", *flags, model="resnet18", dataset=f"npz:{files['cells']}"))
    assert code == 2 and text in err, (name, err)
