"""`pepr status` on a finished, a half-finished (killed) and a failed sweep, built as the
workflow leaves its folders (realistic metrics.json files, Snakemake's .snakemake markers)."""

import io
import json
import os
import socket
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from pepr.cli import main
from pepr.results.status import incomplete_marker

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / ".test" / "config.yaml"
DATASET = "synthetic-n_test60-n_train120-n_val60"
SOURCE = "synthetic-classes3-n_test30-n_train90-n_val30-seed1"
MODELS = ("mobilenetv3_small_050", "convnext_atto")


def cell_keys():
    keys = [f"pretrain/{SOURCE}/{m}" for m in MODELS]
    for model in MODELS:
        for init in ("scratch", "transfer"):
            for fraction in ("1.0", "0.5"):
                keys.append(f"runs/{DATASET}/{init}/{fraction}/{model}/seed0")
    return keys


def ok_metrics(model, seconds=30.0):
    """A metrics.json as pepr train writes it (top-level scalars plus the nested blocks)."""
    return {
        "status": "ok",
        "reason": "",
        "model": model,
        "dataset": "synthetic:n_train=120",
        "init": "scratch",
        "fraction": 1.0,
        "seed": 0,
        "epochs": 1,
        "params": 570000,
        "test_accuracy": 0.7,
        "test_auc": 0.8,
        "energy_kwh": 0.001,
        "cpu_energy_kwh": 0.0008,
        "gpu_energy_kwh": 0.0,
        "ram_energy_kwh": 0.0002,
        "co2_kg": 0.00015,
        "energy_method": "estimated: CodeCarbon cpu_load/TDP",
        "train_time_s": seconds,
        "peak_memory_mb": 120.0,
        "config": {"model": model, "epochs": 1},
        "versions": {"torch": "2.14.1"},
        "energy_per_epoch": [0.001],
    }


def failed_metrics(model, reason="Kernel size can't be greater than actual input size"):
    record = {
        "status": "failed",
        "reason": reason,
        "model": model,
        "dataset": "synthetic",
        "init": "scratch",
        "fraction": 1.0,
        "seed": 0,
        "epochs": 1,
    }
    record.update(dict.fromkeys(("params", "test_accuracy", "energy_kwh", "co2_kg", "train_time_s")))
    return record


def write_json(path, payload):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))


def mark_incomplete(folder, key, jobid=None):
    marker = incomplete_marker(folder / ".snakemake", f"results/{key}/metrics.json")
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"external_jobid": jobid}))


def status(folder, *extra):
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main(["status", "--configfile", str(CONFIG), "--no-squeue", *extra])
    finally:
        os.chdir(cwd)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def finished_sweep(tmp_path):
    for key in cell_keys():
        model = key.split("/")[-2] if key.startswith("runs/") else key.split("/")[-1]
        record = failed_metrics(model) if model == "convnext_atto" else ok_metrics(model)
        write_json(tmp_path / "results" / key / "metrics.json", record)
    (tmp_path / ".snakemake" / "locks").mkdir(parents=True)
    return tmp_path


def test_finished_sweep(finished_sweep):
    code, out, err = status(finished_sweep, "-o", "status.csv")
    assert code == 0, err
    assert "10 jobs" in out
    assert "finished 5   failed 5   running 0   pending 0   (100% done)" in out
    assert "Kernel size can't be greater" in out
    assert "ETA: nothing left to run" in out
    assert "0.005 kWh" in out and "0.04167 device-hours" in out  # 5 ok jobs x 0.001 kWh, 5 x 30 s
    table = (finished_sweep / "status.csv").read_text().splitlines()
    assert table[0].startswith("key,kind,model,state,reason") and len(table) == 11
    assert (finished_sweep / ".snakemake" / "pepr" / "status-cache.json").is_file()
    # second call: served from the cache (same answer)
    code, again, _ = status(finished_sweep)
    assert code == 0 and again.splitlines()[1] == out.splitlines()[1]


def test_estimate_is_compared_when_present(finished_sweep):
    (finished_sweep / "results" / "estimate.csv").write_text(
        "dataset,model,est_time_s,est_device_hours,est_energy_kwh,est_co2_kg\nd,m,300,0.0833,0.01,0.0015\n"
    )
    code, out, err = status(finished_sweep)
    assert code == 0, err
    assert "0.005 kWh of an estimated 0.01 (50%)" in out
    assert "estimate: results/estimate.csv" in out


def test_half_finished_killed_sweep(tmp_path):
    """kill -9 of Snakemake mid-sweep: 3 jobs done, one cut off (marker + resume.pt, no live
    process), the rest never started; the stale lock is still there."""
    keys = cell_keys()
    for key in keys[:3]:
        write_json(tmp_path / "results" / key / "metrics.json", ok_metrics("mobilenetv3_small_050", seconds=60.0))
    cut = keys[3]
    (tmp_path / "results" / cut).mkdir(parents=True)
    (tmp_path / "results" / cut / "resume.pt").write_bytes(b"x")
    (tmp_path / "results" / cut / ".pepr-train.lock").write_text(f"pid 999999999 on {socket.gethostname()}\n")
    mark_incomplete(tmp_path, cut)
    code, out, err = status(tmp_path, "-o", "s.csv")
    assert code == 0, err
    # no Snakemake lock: the cut-off job is pending and says it resumes
    assert "finished 3   failed 0   running 0   pending 7" in out
    assert "1 pending job(s) were interrupted" in out
    assert "ETA: about 7 min 00 s for 7 job(s) left at 1 in parallel" in out
    rows = {line.split(",")[0]: line for line in (tmp_path / "s.csv").read_text().splitlines()[1:]}
    assert "resumes from its last finished epoch" in rows[cut]

    # the same folder while a Snakemake run holds it and the training process is alive (this one)
    (tmp_path / ".snakemake" / "locks").mkdir(parents=True, exist_ok=True)
    (tmp_path / ".snakemake" / "locks" / "0.output.lock").write_text("results/x\n")
    (tmp_path / "results" / cut / ".pepr-train.lock").write_text(f"pid {os.getpid()} on {socket.gethostname()}\n")
    code, out, err = status(tmp_path, "--parallel", "2")
    assert "finished 3   failed 0   running 1   pending 6" in out
    assert "running (1):\n  " + cut in out
    assert "ETA: about 7 min 00 s for 7 job(s) left at 2 in parallel" not in out  # 7 x 60 s / 2
    assert "ETA: about 3 min 30 s for 7 job(s) left at 2 in parallel" in out


def test_failed_sweep_names_each_reason(tmp_path):
    """Failures of both kinds: a model that cannot run (a failed record) and a crashed job (no
    metrics.json, a traceback at the end of its log)."""
    keys = cell_keys()
    for key in keys[:4]:
        write_json(tmp_path / "results" / key / "metrics.json", failed_metrics("convnext_atto"))
    crashed = keys[4]
    log = tmp_path / "results" / "logs" / "train_model" / (crashed.split("/", 1)[1] + ".log")
    log.parent.mkdir(parents=True)
    log.write_text(
        'epoch 1/1 ...\nTraceback (most recent call last):\n  File "x.py", line 1\n'
        "RuntimeError: CUDA error: an illegal memory access was encountered\n"
    )
    code, out, err = status(tmp_path, "--max-listed", "3")
    assert code == 0, err
    assert "finished 0   failed 5   running 0   pending 5" in out
    assert "crashed: RuntimeError: CUDA error: an illegal memory access" in out
    assert "failed (5):\n  runs/" in out  # the crash first
    assert "  4 jobs: Kernel size can't be greater than actual input size\n    models: convnext_atto" in out
    code, out, err = status(tmp_path, "--max-listed", "1")
    assert "... and 4 more" in out
    assert "ETA: unknown until a job has finished (5 left)" in out


def test_slurm_job_states_from_squeue(tmp_path, monkeypatch):
    from pepr.results import status as status_module

    keys = cell_keys()
    (tmp_path / ".snakemake" / "locks").mkdir(parents=True)
    (tmp_path / ".snakemake" / "locks" / "0.output.lock").write_text("results/x\n")
    (tmp_path / "results").mkdir()
    mark_incomplete(tmp_path, keys[0], jobid="101")
    mark_incomplete(tmp_path, keys[1], jobid="102")
    mark_incomplete(tmp_path, keys[2], jobid="103")
    mark_incomplete(tmp_path, keys[3], jobid="104")  # kept incomplete (keep-incomplete), crashed
    log = tmp_path / "results" / "logs" / "train_model" / (keys[3].split("/", 1)[1] + ".log")
    log.parent.mkdir(parents=True)
    log.write_text("Traceback (most recent call last):\n  ...\ntorch.OutOfMemoryError: CUDA out of memory.\n")
    monkeypatch.setattr(status_module, "squeue_jobs", lambda timeout_s=5.0: {"101": "RUNNING", "102": "PENDING"})
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.chdir(tmp_path)
    with redirect_stdout(out), redirect_stderr(err):
        code = main(["status", "--configfile", str(CONFIG), "-o", "s.csv"])
    assert code == 0, err.getvalue()
    assert "finished 0   failed 1   running 1   pending 8" in out.getvalue()
    rows = (tmp_path / "s.csv").read_text()
    assert "SLURM job 102 is PENDING" in rows and "SLURM job 103 is no longer in the queue" in rows
    assert "crashed: torch.OutOfMemoryError: CUDA out of memory." in rows


def test_no_results_folder_is_a_clear_error(tmp_path):
    code, out, err = status(tmp_path)
    assert code == 2 and "results folder 'results' does not exist" in err


def test_status_imports_neither_torch_nor_pandas(finished_sweep):
    code = (
        "import sys, os\n"
        f"os.chdir({str(finished_sweep)!r})\n"
        "from pepr.cli import main\n"
        f"rc = main(['status', '--configfile', {str(CONFIG)!r}, '--no-squeue'])\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'timm', 'pandas', 'codecarbon', 'snakemake'})\n"
        "print('HEAVY', heavy, rc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert "HEAVY [] 0" in done.stdout, done.stdout + done.stderr


def test_version_does_not_import_pandas():
    code = "import sys\nfrom pepr.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit:\n    pass\nprint('HEAVY', sorted({m.split('.')[0] for m in sys.modules} & {'pandas', 'torch', 'numpy'}))\n"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert "HEAVY []" in done.stdout, done.stdout + done.stderr


def test_eta_uses_the_estimates_per_job_times_scaled_by_what_was_measured(tmp_path):
    """A model 10x slower than the finished ones counts 10x in the ETA (not the plain mean)."""
    keys = cell_keys()
    for key in keys[:2]:  # the two pretraining jobs: 30 s measured each, 15 s estimated
        write_json(tmp_path / "results" / key / "metrics.json", ok_metrics("mobilenetv3_small_050", seconds=30.0))
    rows = ["dataset,init,fraction,model,seed,est_time_s,est_device_hours,est_energy_kwh,est_co2_kg"]
    for key in keys:
        parts = key.split("/")
        if parts[0] == "pretrain":
            rows.append(f"{parts[1]},pretrain,1.0,{parts[2]},0,15,0.004,0.001,0.0001")
        else:  # 8 cells left: 4 of 10 s, 4 of 100 s estimated
            seconds = 100 if parts[4] == "convnext_atto" else 10
            rows.append(f"{parts[1]},{parts[2]},{parts[3]},{parts[4]},0,{seconds},0.01,0.001,0.0001")
    (tmp_path / "results" / "estimate.csv").write_text("\n".join(rows) + "\n")
    code, out, err = status(tmp_path)
    assert code == 0, err
    # (4 x 10 + 4 x 100) x (60 / 30) = 880 s; the mean would give 8 x 30 = 240 s
    assert "ETA: about 14 min 40 s for 8 job(s) left at 1 in parallel (the estimate's time per job left x 2.00" in out
