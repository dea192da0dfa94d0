"""End to end: a finished cell is never trained twice (workflow runs, slow).

* the kill window: the sweep's process group SIGKILLed the moment a metrics.json appears, then
  --unlock + --rerun-incomplete restores the cell from previous/ instead of training it again;
* a data file over 1 MB touched or copied over itself re-plans nothing; a real content change does;
* data_dir moved and country changed re-plan no training (CO2 is re-derived at aggregation);
* a sweep finished with the code of commit 3a59573 plans 0 training jobs after the upgrade, and
  still retrains on a real training-setting change;
* retraining on purpose: --forcerun retrains (driver), --config retrain=true retrains,
  --config retrain=false restores; a job-side `--force` (what a requeued SLURM allocation runs)
  restores;
* a lost transfer checkpoint stops planning with the fix, which restores it from previous/
  without re-planning finished fine-tune cells.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from test_workflow_local import (
    OK_MODEL,
    REPO,
    TEST_CONFIG,
    check,
    earlier_checkout,
    planned_jobs,
    snakemake,
    snakemake_command,
    snakemake_of,
    train_model_log,
)

pytestmark = pytest.mark.slow

OLD_COMMIT = "3a59573"


def write_medmnist_like(path: Path, n=(1200, 120, 120), seed=0) -> None:
    """A 2-class 28 px file in MedMNIST's layout; uncompressed, ~1.1 MB with the default sizes
    (over Snakemake's 1 MB max-checksum-file-size, like every real MedMNIST file)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in zip(("train", "val", "test"), n):
        labels = rng.integers(0, 2, size=(count, 1), dtype=np.int64)
        images = (rng.random((count, 28, 28)) * 80 + labels[:, :, None] * 120).astype(np.uint8)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    np.savez(path, **arrays)


def sweep_config(tmp_path: Path, name: str = "config.yaml", **changes) -> Path:
    config = yaml.safe_load(TEST_CONFIG.read_text())
    config.update(datasets=["pneumoniamnist"], inits=["scratch"], fractions=[1.0], models=[OK_MODEL])
    config.update(changes)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def train_logs(workdir: Path) -> str:
    return "\n".join(p.read_text() for p in sorted((workdir / "results" / "logs").glob("*/**/*.log")) if p.is_file())


def digests(workdir: Path) -> dict[str, str]:
    return {
        str(p.relative_to(workdir)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((workdir / "results").glob("*/**/metrics.json"))
        if "previous" not in p.parts
    }


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    """One scratch cell on a 1.1 MB pneumoniamnist.npz in data/, finished by this code."""
    workdir = tmp_path_factory.mktemp("finished")
    (workdir / "data").mkdir()
    write_medmnist_like(workdir / "data" / "pneumoniamnist.npz")
    config = sweep_config(workdir)
    check(snakemake(workdir, "--cores", "2", "results/runs.csv", configfile=config))
    return workdir, config


def test_touch_and_cp_of_a_data_file_over_1mb_replan_nothing(finished_sweep):
    workdir, config = finished_sweep
    data = workdir / "data" / "pneumoniamnist.npz"
    assert data.stat().st_size > 1_000_000
    before = digests(workdir)
    original = data.read_bytes()
    future = time.time() + 60
    os.utime(data, (future, future))  # `touch`: newer than every output
    assert "train_model" not in planned_jobs(workdir, "results/runs.csv", configfile=config)
    copy = workdir / "copy.npz"
    shutil.copyfile(data, copy)  # plain `cp` (new mtime) of an identical file over the original
    shutil.copyfile(copy, data)
    assert "train_model" not in planned_jobs(workdir, "results/runs.csv", configfile=config)
    assert digests(workdir) == before
    # a real change of the content is a change
    changed = dict(np.load(data))
    changed["train_images"][0, 0, 0] ^= 1
    np.savez(copy, **changed)
    shutil.copyfile(copy, data)
    assert planned_jobs(workdir, "results/runs.csv", configfile=config).get("train_model") == 1
    data.write_bytes(original)  # back to the content it trained on: nothing to do again
    assert "train_model" not in planned_jobs(workdir, "results/runs.csv", configfile=config)


def test_moving_data_dir_and_changing_country_retrain_nothing(finished_sweep, tmp_path):
    workdir, config = finished_sweep
    moved = workdir / "elsewhere"
    shutil.copytree(workdir / "data", moved)
    other = sweep_config(tmp_path, data_dir=str(moved), country="FRA")
    counts = planned_jobs(workdir, "results/runs.csv", configfile=other)
    assert "train_model" not in counts and counts.get("aggregate_runs") == 1, counts
    # the corrected country re-derives CO2 at aggregation: energy x FRA's intensity
    check(snakemake(workdir, "--cores", "2", "results/runs.csv", configfile=other))
    import pandas as pd

    from pepr.results.carbon import country_intensity_g_per_kwh

    row = pd.read_csv(workdir / "results" / "runs.csv").iloc[0]
    assert row["co2_kg"] == pytest.approx(row["energy_kwh"] * country_intensity_g_per_kwh("FRA") / 1000, rel=1e-9)
    assert "FRA" in row["co2_source"]
    # ... and so do the epoch curves' CO2 columns (gather_histories)
    check(snakemake(workdir, "--cores", "2", "results/histories.csv", configfile=other))
    history = pd.read_csv(workdir / "results" / "histories.csv")
    assert history["cumulative_co2_kg"].iloc[-1] == pytest.approx(row["co2_kg"], rel=1e-6)
    # a real training setting still retrains
    assert (
        planned_jobs(workdir, "results/runs.csv", configfile=sweep_config(tmp_path, "e2.yaml", epochs=2)).get(
            "train_model"
        )
        == 1
    )


def test_retraining_on_purpose_and_job_side_force(finished_sweep):
    """--forcerun retrains; --config retrain=false restores; `--force` of the job itself (what the
    job side of a requeued SLURM allocation runs) restores; --config retrain=true retrains."""
    workdir, config = finished_sweep
    metrics = next((workdir / "results" / "runs").glob("*/*/*/*/seed0/metrics.json"))
    target = str(metrics.relative_to(workdir))
    log = train_model_log(workdir, metrics.parent)

    def run(*args):  # Snakemake empties a job's log before the job runs
        check(snakemake(workdir, "--cores", "1", target, *args, configfile=config))
        return log.read_text()

    forced = run("--forcerun", target)
    assert "epoch 1/1" in forced and "restored" not in forced, forced
    kept = run("--forcerun", target, "--config", "retrain=false")
    assert "restored the finished result" in kept and "epoch 1/1" not in kept, kept
    job_side = run("--force")  # -f on the job's own output: no --forcerun rule/file named
    assert "restored the finished result" in job_side and "epoch 1/1" not in job_side, job_side
    on_purpose = run("--force", "--config", "retrain=true")
    assert "epoch 1/1" in on_purpose and "restored" not in on_purpose, on_purpose
    assert "train_model" not in planned_jobs(workdir, "results/runs.csv", configfile=config)


def test_kill_window_restores_instead_of_retraining(tmp_path):
    """SIGKILL of the sweep's whole process group the moment a metrics.json appears (polled every
    20 ms): Snakemake's incomplete marker outlives pepr's write; --unlock + --rerun-incomplete
    re-runs the job, and pepr train restores the result instead of training it again."""
    (tmp_path / "data").mkdir()
    write_medmnist_like(tmp_path / "data" / "pneumoniamnist.npz", n=(200, 60, 60))
    config = sweep_config(tmp_path)
    process = subprocess.Popen(
        snakemake_command(tmp_path, "--cores", "1", "results/runs.csv", configfile=config),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    runs = tmp_path / "results" / "runs"
    deadline = time.time() + 600
    try:
        while time.time() < deadline and process.poll() is None:
            found = [p for p in runs.glob("*/*/*/*/seed0/metrics.json")] if runs.exists() else []
            if found:
                os.killpg(process.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    (metrics,) = list(runs.glob("*/*/*/*/seed0/metrics.json"))
    finished = metrics.read_bytes()
    check(snakemake(tmp_path, "--unlock", configfile=config))
    counts = planned_jobs(tmp_path, "--rerun-incomplete", "results/runs.csv", configfile=config)
    assert counts.get("train_model") == 1, f"the kill missed the window (nothing incomplete): {counts}"
    log = next((tmp_path / "results" / "logs" / "train_model").rglob("*.log"))
    trained_once = log.read_text()
    assert trained_once.count("epoch 1/1") == 1
    check(snakemake(tmp_path, "--cores", "1", "--rerun-incomplete", "results/runs.csv", configfile=config))
    after = log.read_text()  # emptied by Snakemake before the rerun
    assert "restored the finished result" in after and "epoch 1/1" not in after, after
    assert metrics.read_bytes() == finished
    assert len(list((metrics.parent / "previous").iterdir())) == 1
    assert "train_model" not in planned_jobs(tmp_path, "results/runs.csv", configfile=config)


# ---------------------------------------------------------------------------------------------
# A sweep finished with the code of commit 3a59573 (before params records were compared by content)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def old_sweep(tmp_path_factory):
    base = tmp_path_factory.mktemp("old-sweep")
    old = earlier_checkout(OLD_COMMIT, base / "old")
    workdir = base / "sweep"
    (workdir / "data").mkdir(parents=True)
    write_medmnist_like(workdir / "data" / "pneumoniamnist.npz", n=(200, 60, 60))
    config = sweep_config(base, inits=["scratch", "transfer"])
    check(snakemake_of(old, workdir, "--cores", "2", "results/runs.csv", configfile=config))
    return workdir, config


def test_sweep_finished_before_the_upgrade_plans_no_training(old_sweep, tmp_path):
    workdir, config = old_sweep
    before = digests(workdir)
    assert len([k for k in before if "/runs/" in k]) == 2
    counts = planned_jobs(workdir, "results/runs.csv", configfile=config)
    assert not {"train_model", "pretrain_source"} & set(counts), counts
    moved = workdir / "moved-data"
    shutil.copytree(workdir / "data", moved, copy_function=shutil.copy2)  # cp -p: same mtimes
    changed = sweep_config(tmp_path, inits=["scratch", "transfer"], data_dir=str(moved), country="DEU")
    counts = planned_jobs(workdir, "results/runs.csv", configfile=changed)
    assert not {"train_model", "pretrain_source"} & set(counts), counts
    longer = sweep_config(tmp_path, "e2.yaml", inits=["scratch", "transfer"], epochs=2)
    assert planned_jobs(workdir, "results/runs.csv", configfile=longer).get("train_model") == 2
    assert digests(workdir) == before


def test_lost_transfer_checkpoint_of_an_old_sweep_names_the_fix(old_sweep, tmp_path):
    workdir, _ = old_sweep
    (pretrain,) = list((workdir / "results" / "pretrain").glob("*/*/model.pt"))
    kept = pretrain.read_bytes()
    pretrain.unlink()
    try:
        config = sweep_config(tmp_path, inits=["scratch", "transfer"], seeds=[0, 1])
        result = snakemake(workdir, "-n", "--cores", "1", "results/runs.csv", configfile=config)
        assert result.returncode != 0
        text = result.stdout + result.stderr
        assert f"{pretrain.relative_to(workdir)} is missing" in text and "--allowed-rules pretrain_source" in text, (
            text[-3000:]
        )
    finally:
        pretrain.write_bytes(kept)


def test_lost_transfer_checkpoint_is_restored_without_replanning_finished_cells(tmp_path):
    """model.pt gone, a new seed needs it: planning stops with the fix; the fix restores the
    weights kept in previous/ (no training) and re-plans no finished fine-tune cell."""
    (tmp_path / "data").mkdir()
    write_medmnist_like(tmp_path / "data" / "pneumoniamnist.npz", n=(200, 60, 60))
    config = sweep_config(tmp_path, inits=["scratch", "transfer"])
    check(snakemake(tmp_path, "--cores", "2", "results/runs.csv", configfile=config))
    (pretrain,) = list((tmp_path / "results" / "pretrain").glob("*/*/model.pt"))
    weights = hashlib.sha256(pretrain.read_bytes()).hexdigest()
    pretrain.unlink()
    more_seeds = sweep_config(tmp_path, "seeds.yaml", inits=["scratch", "transfer"], seeds=[0, 1])
    result = snakemake(tmp_path, "-n", "--cores", "1", "results/runs.csv", configfile=more_seeds)
    text = result.stdout + result.stderr
    assert result.returncode != 0 and f"{pretrain.relative_to(tmp_path)} is missing" in text, text[-3000:]
    fix = str((pretrain.parent / "metrics.json").relative_to(tmp_path))
    check(
        snakemake(
            tmp_path,
            "--cores",
            "1",
            fix,
            "--forcerun",
            fix,
            "--allowed-rules",
            "pretrain_source",
            "--config",
            "retrain=false",
            configfile=more_seeds,
        )
    )
    assert hashlib.sha256(pretrain.read_bytes()).hexdigest() == weights
    log = next((tmp_path / "results" / "logs" / "pretrain_source").rglob("*.log")).read_text()
    assert "epoch 1/1" not in log and "restored the finished result" in log  # (Snakemake empties the log first)
    counts = planned_jobs(tmp_path, "results/runs.csv", configfile=more_seeds)
    assert counts.get("train_model") == 2 and "pretrain_source" not in counts, counts  # the 2 seed-1 cells


def test_local_cuda_device_this_machine_lacks_stops_planning(tmp_path):
    """Training jobs given no GPU (a local run) see this machine's GPUs: cuda:99 (and, on a
    machine without NVIDIA GPUs, cuda:0) stops `snakemake -n` with the reason."""
    from pepr.plan.config import local_gpu_count

    devices = ["cuda:99"] + (["cuda:0"] if local_gpu_count()[0] == 0 else [])
    for device in devices:
        config = sweep_config(tmp_path, f"{device.replace(':', '')}.yaml", device=device)
        result = snakemake(tmp_path, "-n", "--cores", "1", configfile=config)
        text = result.stdout + result.stderr
        assert result.returncode == 1 and f"device: '{device}' but this machine has" in text, text[-2000:]
        assert "nothing was run" in text
    # jobs given a GPU by a scheduler (profiles/slurm's set-resources) are not checked against
    # the planning machine (a login node often has none): cuda:0 plans
    config = sweep_config(tmp_path, "slurm.yaml", device="cuda:0")
    result = snakemake(
        tmp_path,
        "-n",
        "--cores",
        "1",
        "--set-resources",
        "train_model:gpu=1",
        "pretrain_source:gpu=1",
        configfile=config,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-2000:]
