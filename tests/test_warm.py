"""Warm packed allocations (pepr.train.warm): which cells share a fork server, the hand-over of
a cell's descriptors, and, end to end on CPU, that a warm cell measures as a cold one and that a
crashed cell leaves the others' results."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pepr.train import warm


def test_allocation_key_slurm_then_explicit_then_snakemake_driver():
    def snakemake():
        return [(41, "/bin/bash -c pepr"), (40, "python /venv/bin/snakemake --cores 2")]

    def nothing():
        return [(41, "/bin/bash"), (1, "init")]

    assert warm.allocation_key({"SLURM_JOB_ID": "123", "PEPR_WARM_KEY": "x"}, snakemake) == "slurm-123"
    assert warm.allocation_key({"PEPR_WARM_KEY": "x"}, snakemake) == "key-x"
    assert warm.allocation_key({}, snakemake) == "snakemake-40"
    assert warm.allocation_key({}, nothing) is None  # pepr train by hand: cold, in-process
    assert warm.allocation_key({"SLURM_JOB_ID": "123", "PEPR_WARM": "0"}, snakemake) is None


def test_fingerprint_follows_import_time_environment_only():
    base = {"HF_HOME": "/a", "SLURM_PROCID": "0"}
    assert warm.server_fingerprint(base) == warm.server_fingerprint(
        {**base, "SLURM_PROCID": "1", "PEPR_WARM_IDLE_S": "5"}
    )
    assert warm.server_fingerprint(base) != warm.server_fingerprint({**base, "HF_HOME": "/b"})


@pytest.fixture
def short_runtime(monkeypatch):
    """A short private XDG_RUNTIME_DIR (pytest's tmp_path can be too long for a socket path)."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="pw-", dir="/tmp"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(folder))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_socket_folder_must_be_private(short_runtime, monkeypatch):
    path = warm.socket_path("key-x", "f")
    assert path.parent == short_runtime / f"pepr-warm-{os.getuid()}" and len(str(path)) <= 107
    path.parent.chmod(0o777)
    with pytest.raises(OSError, match="not a private folder"):
        warm.socket_path("key-x", "f")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/" + "x" * 100)  # too long for sun_path: the temporary folder instead
    assert warm.socket_path("key-x", "f").parent.parent == Path("/tmp")


def test_unreachable_server_falls_back_to_cold(short_runtime, monkeypatch):
    monkeypatch.setenv("PEPR_WARM_KEY", "x")
    (short_runtime / f"pepr-warm-{os.getuid()}").mkdir(mode=0o777)
    (short_runtime / f"pepr-warm-{os.getuid()}").chmod(0o777)
    lines: list[str] = []
    assert warm.train_through_server(["train", "--help"], lines.append) is None
    assert "training in this process" in lines[0] and "not a private folder" in lines[0]
    monkeypatch.setenv("PEPR_WARM", "0")
    assert warm.train_through_server(["train"], lines.append) is None and len(lines) == 1


def test_messages_carry_descriptors(tmp_path):
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    target = tmp_path / "out.txt"
    with open(target, "w") as handle, left, right:
        warm._send_message(left, {"argv": ["train"], "big": "x" * 100_000}, [handle.fileno()])
        message, fds = warm._receive_message(right, max_fds=4)
        assert message["argv"] == ["train"] and len(message["big"]) == 100_000 and len(fds) == 1
        os.write(fds[0], b"through the passed descriptor")
        os.close(fds[0])
    assert target.read_text() == "through the passed descriptor"


# --------------------------------------------------------------------------------------------
# End to end on CPU: a fork server for a test "allocation"
# --------------------------------------------------------------------------------------------

CELL = [
    "--model",
    "mobilenetv3_small_050",
    "--dataset",
    "synthetic:size=28,n_train=96,n_val=32,n_test=48",
    "--epochs",
    "2",
    "--threads",
    "1",
]


@pytest.fixture
def allocation(short_runtime):
    """Environment of a test allocation: its own key and socket folder, a short idle timeout."""
    env = {
        **os.environ,
        "PEPR_WARM_KEY": f"test-{uuid.uuid4().hex[:8]}",
        "XDG_RUNTIME_DIR": str(short_runtime),
        "PEPR_WARM_IDLE_S": "20",
    }
    env.pop("SLURM_JOB_ID", None)
    env.pop("PEPR_WARM", None)
    return env


def _pepr_train(out: Path, env: dict, *extra: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "pepr.cli", "train", *CELL, "--out", str(out), *extra]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=1200, env=env)


@pytest.mark.slow
def test_warm_cell_measures_as_a_cold_one(tmp_path, allocation):
    cold = _pepr_train(tmp_path / "cold", {**allocation, "PEPR_WARM": "0"})
    assert cold.returncode == 0, cold.stderr
    assert "warm server" not in cold.stderr
    warm_runs = [_pepr_train(tmp_path / f"warm{i}", allocation) for i in range(2)]
    for result in warm_runs:
        assert result.returncode == 0, result.stderr
        assert "forked by the warm server" in result.stderr  # the client says where its cell ran
        assert "done: test accuracy" in result.stderr  # the child's log went to the client's stderr
    reference = json.loads((tmp_path / "cold" / "metrics.json").read_text())
    for i in range(2):
        metrics = json.loads((tmp_path / f"warm{i}" / "metrics.json").read_text())
        for key in ("test_accuracy", "test_auc", "val_accuracy", "params", "flops_per_image", "n_train"):
            assert metrics[key] == reference[key], key
        assert metrics["peak_memory_mb"] == pytest.approx(reference["peak_memory_mb"], rel=0.10)
        assert metrics["eval_peak_memory_mb"] == pytest.approx(reference["eval_peak_memory_mb"], rel=0.10, abs=2)
        assert metrics["energy_method"] == reference["energy_method"]
    # bad input in a warm cell: the same one-line error and exit 2 as a cold process, and the
    # failure notice on the descriptor PEPR_NOTIFY_FD names (the train rules' terminal stream)
    notice = tmp_path / "notice.txt"
    missing = tmp_path / "missing.pt"  # found by the training's own checks, in the child (argparse's run in the client)
    command = " ".join(
        [
            sys.executable,
            "-m",
            "pepr.cli",
            "train",
            *CELL,
            "--out",
            str(tmp_path / "bad"),
            "--init",
            f"checkpoint:{missing}",
            f"3>{notice}",
        ]
    )
    bad = subprocess.run(
        ["bash", "-c", command],
        capture_output=True,
        text=True,
        timeout=600,
        env={**allocation, "PEPR_NOTIFY_FD": "3"},
        check=False,
    )
    assert bad.returncode == 2 and "pepr train: error:" in bad.stderr, bad.stderr
    assert "forked by the warm server" in bad.stderr
    assert notice.read_text().startswith(f"pepr: {tmp_path / 'bad'} failed: "), notice.read_text()


@pytest.mark.slow
def test_a_killed_warm_cell_loses_nothing_of_the_others(tmp_path, allocation):
    first = _pepr_train(tmp_path / "a", allocation)
    assert first.returncode == 0, first.stderr
    argv = [sys.executable, "-m", "pepr.cli", "train", *CELL, "--epochs", "50", "--out", str(tmp_path / "b")]
    client = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=allocation)
    child = None
    deadline = time.monotonic() + 600
    for line in client.stderr:
        if "forked by the warm server" in line:
            child = int(line.split("cell trained by process ")[1].split(",")[0])
        if child is not None and line.startswith("epoch 2/"):  # epoch 1 is in resume.pt by now
            break
        assert time.monotonic() < deadline
    assert child is not None
    os.kill(child, signal.SIGKILL)  # an out-of-memory kill or a segfault of this cell only
    assert client.wait(timeout=120) == 128 + signal.SIGKILL
    client.stderr.close()
    assert not (tmp_path / "b" / "metrics.json").exists() and (tmp_path / "b" / "resume.pt").exists()
    third = _pepr_train(tmp_path / "c", allocation)
    assert third.returncode == 0, third.stderr
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["status"] == "ok"
    assert json.loads((tmp_path / "c" / "metrics.json").read_text())["status"] == "ok"
    # the killed cell resumes from its last finished epoch, as after a cold kill
    resumed = _pepr_train(tmp_path / "b", allocation, "--epochs", "50")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["segments"] == 2


@pytest.mark.slow
def test_gpu_check_cpu_smoke_runs_every_section():
    # bench/gpu_check.py is run for real on a GPU machine; here its CPU smoke mode, tiny sizes
    script = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"
    result = subprocess.run(
        [sys.executable, str(script), "--allow-cpu"], capture_output=True, text=True, timeout=1800, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for line in (
        "throughput pepr/bare, fp32",
        "working set MiB, fraction 1.0 / 0.1",
        "per-cell start-up, one cold process",
        "packed K=2 cold",
        "packed K=2 warm",
        "seed 0 warm vs cold",
    ):
        assert line in result.stdout, result.stdout


def test_only_a_command_running_snakemake_is_a_driver():
    assert warm.runs_snakemake("/venv/bin/python /venv/bin/snakemake --cores 2")
    assert warm.runs_snakemake("python -m snakemake -s Snakefile")
    assert warm.runs_snakemake("/venv/bin/python /venv/lib/python3.11/site-packages/snakemake/__main__.py -s S")
    assert warm.runs_snakemake("snakemake --profile profiles/slurm")
    # a test run or a folder that merely names snakemake trains cold
    assert not warm.runs_snakemake("/venv/bin/python -m pytest -q tests/test_snakemake_adapter.py tests/test_train.py")
    assert not warm.runs_snakemake("python /home/u/snakemake-runs/train.py")
    assert warm.allocation_key({}, lambda: [(7, "python -m pytest tests/test_snakemake_adapter.py")]) is None
