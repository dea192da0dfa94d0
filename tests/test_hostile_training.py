"""Issue 19: training that fails after the probe is a "failed" record, not a crash or an "ok".

Out of memory at any point (torch's CPU allocator under ``ulimit -v``, MemoryError, CUDA OOM)
and a diverged model (non-finite loss) give ``status: "failed"`` with the reason and the epoch;
the record is a finished output, so the sweep goes on and a rerun does not repeat the crash.
Tiny synthetic data and timm's ``test_resnet``: each run takes a few seconds on one core.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pepr.train.run as train_module
from pepr.train.run import RESULT_KEYS, TrainConfig, out_of_memory_reason, run_training

TINY = "synthetic:n_train=64,n_val=16,n_test=32"
QUIET = lambda message: None  # noqa: E731


def read_metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_out_of_memory_reason_recognises_the_allocators():
    cpu = RuntimeError(
        "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate 2147483648 bytes. Error code 12 (Cannot allocate memory)"
    )
    assert "DefaultCPUAllocator" in out_of_memory_reason(cpu)
    assert out_of_memory_reason(MemoryError()) == "MemoryError"
    assert "out of memory" in out_of_memory_reason(RuntimeError("CUDA out of memory. Tried to allocate 20.00 MiB"))
    assert out_of_memory_reason(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None
    assert out_of_memory_reason(ValueError("out of memory")) is None


@pytest.mark.slow
def test_diverged_training_is_a_failed_record_with_the_epoch(tmp_path):
    out = tmp_path / "diverged"
    metrics = run_training(
        TrainConfig(model="test_resnet", dataset=TINY, epochs=2, lr=1e6, out_dir=out, threads=1), log=QUIET
    )
    assert metrics["status"] == "failed"
    assert "diverged in epoch" in metrics["reason"] and "lower lr" in metrics["reason"]
    written = read_metrics(out)
    assert written["status"] == "failed" and written["failed_epoch"] in (1, 2)
    assert all(
        written[key] is None for key in RESULT_KEYS if key.startswith(("test_", "val_"))
    )  # no constant guess recorded as "ok"
    assert not (out / "resume.pt").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 123456789 bytes"),
        MemoryError(),
    ],
    ids=["cpu-allocator", "MemoryError"],
)
def test_out_of_memory_during_evaluation_is_a_failed_record(tmp_path, monkeypatch, error):
    calls = []

    def evaluate_out_of_memory(*args, **kwargs):
        calls.append(1)
        raise error

    monkeypatch.setattr(train_module, "evaluate", evaluate_out_of_memory)
    out = tmp_path / "oom"
    metrics = run_training(TrainConfig(model="test_resnet", dataset=TINY, epochs=2, out_dir=out, threads=1), log=QUIET)
    assert metrics["status"] == "failed" and "out of memory in epoch 1" in metrics["reason"]
    assert read_metrics(out)["failed_epoch"] == 1 and len(calls) == 1


@pytest.mark.slow
def test_out_of_memory_in_the_final_timed_pass_is_a_failed_record(tmp_path, monkeypatch):
    real_predict = train_module.predict
    calls = []

    def predict(model, images, *args, **kwargs):
        calls.append(len(images))
        if len(calls) > 1:  # the probe's 2-image pass succeeds; the final full test pass fails
            raise MemoryError()
        return real_predict(model, images, *args, **kwargs)

    monkeypatch.setattr(train_module, "predict", predict)
    out = tmp_path / "final"
    metrics = run_training(TrainConfig(model="test_resnet", dataset=TINY, epochs=1, out_dir=out, threads=1), log=QUIET)
    assert metrics["status"] == "failed" and "out of memory after training" in metrics["reason"]


# The real thing: an address-space limit (ulimit -v) set just before the first test evaluation,
# so torch's CPU allocator itself refuses the evaluation's activations.
_ULIMIT_SCRIPT = textwrap.dedent(
    """
    import resource, sys
    from pathlib import Path
    import pepr.train.run as train_module
    from pepr.train.run import TrainConfig, run_training

    real_evaluate = train_module.evaluate
    state = {"calls": 0}

    def evaluate_under_ulimit(*args, **kwargs):
        state["calls"] += 1
        if state["calls"] == 2:  # epoch 1's test evaluation: cap the address space close above what is mapped
            vm_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize:"))
            limit = (vm_kb + 24 * 1024) * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        return real_evaluate(*args, **kwargs)

    train_module.evaluate = evaluate_under_ulimit
    cfg = TrainConfig(model="test_resnet", dataset="synthetic:n_train=32,n_val=16,n_test=512,size=96",
                      epochs=1, batch_size=16, out_dir=Path(sys.argv[1]), threads=1)
    record = run_training(cfg, log=lambda message: None)
    print("STATUS", record["status"], record["reason"])
    """
)


@pytest.mark.slow
def test_cpu_out_of_memory_under_ulimit_is_a_failed_record_and_rerun_does_not_repeat(tmp_path):
    out = tmp_path / "ulimit"
    script = tmp_path / "oom.py"
    script.write_text(_ULIMIT_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "STATUS failed" in done.stdout, done.stdout + done.stderr[-2000:]
    metrics = read_metrics(out)
    assert metrics["status"] == "failed" and "out of memory in epoch 1" in metrics["reason"]
    assert metrics["failed_epoch"] == 1
    # the failed record is the finished output: the workflow does not schedule this cell again,
    # and pepr train on the folder leaves the record alone unless the user removes it


@pytest.mark.slow
def test_out_of_memory_loading_the_data_is_a_failed_record(tmp_path, monkeypatch):
    def no_room(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 30.00 GiB")

    monkeypatch.setattr(train_module, "to_device", no_room)
    out = tmp_path / "load"
    metrics = run_training(TrainConfig(model="test_resnet", dataset=TINY, epochs=1, out_dir=out, threads=1), log=QUIET)
    assert metrics["status"] == "failed" and "out of memory loading" in metrics["reason"]
    assert read_metrics(out)["status"] == "failed"
