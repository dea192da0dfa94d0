"""resume.pt safety: it is read with weights_only=True (a planted pickle runs no code), and an
unreadable or foreign file is moved aside with one log line while the run restarts from epoch 1."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from pepr.errors import PeprInputError
from pepr.train.resume import RunState, fingerprint, load_resume, save_resume
from pepr.train.run import run_training
from pepr.train.settings import TrainConfig

TINY = "synthetic:n_train=96,n_val=32,n_test=48"


class _Payload:
    """Unpickling this calls open(marker, "w"): creates the marker file if code runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _tiny_parts():
    import torch

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    return model, optimizer, generator


def test_round_trip_with_weights_only(tmp_path):
    import torch

    model, optimizer, generator = _tiny_parts()
    model(torch.ones(4, 3)).sum().backward()
    optimizer.step()
    settings = {"model": "m", "seed": 0, "epochs": 3}
    state = RunState(epochs_done=1, segments=1, history=[{"epoch": 1, "train_loss": 0.5}], peak={"peak_memory_mb": 1.0})
    save_resume(tmp_path / "resume.pt", settings, model, optimizer, generator, state)
    fresh_model, fresh_optimizer, fresh_generator = _tiny_parts()
    with torch.no_grad():
        fresh_model.weight.zero_()
    logs: list[str] = []
    restored = load_resume(tmp_path / "resume.pt", settings, fresh_model, fresh_optimizer, fresh_generator, logs.append)
    assert restored == state
    assert torch.equal(fresh_model.weight, model.weight)
    assert fresh_optimizer.state_dict()["state"][0]["step"] == 1
    assert "resuming" in logs[0]
    assert json.loads(fingerprint(settings))["model"] == "m"


def test_malicious_pickle_does_not_run_and_is_moved_aside(tmp_path):
    marker = tmp_path / "owned"
    with open(tmp_path / "resume.pt", "wb") as handle:
        pickle.dump({"fingerprint": _Payload(marker)}, handle, protocol=2)
    model, optimizer, generator = _tiny_parts()
    logs: list[str] = []
    state = load_resume(tmp_path / "resume.pt", {"seed": 0}, model, optimizer, generator, logs.append)
    assert state == RunState()
    assert not marker.exists()
    assert not (tmp_path / "resume.pt").exists()
    assert len(list(tmp_path.glob("resume.pt.corrupt-*"))) == 1
    assert len(logs) == 1 and "cannot be used" in logs[0] and "\n" not in logs[0]


def test_foreign_weights_leave_the_model_untouched(tmp_path):
    import torch

    other = torch.nn.Linear(5, 2)
    model, optimizer, generator = _tiny_parts()
    save_resume(
        tmp_path / "resume.pt",
        {"seed": 0},
        other,
        torch.optim.Adam(other.parameters()),
        generator,
        RunState(epochs_done=1),
    )
    before = model.weight.detach().clone()
    logs: list[str] = []
    assert load_resume(tmp_path / "resume.pt", {"seed": 0}, model, optimizer, generator, logs.append) == RunState()
    assert torch.equal(model.weight, before)
    assert "shape" in logs[0]


@pytest.mark.slow
def test_training_survives_malicious_and_truncated_resume_files(tmp_path):
    marker = tmp_path / "owned"
    out = tmp_path / "run"
    out.mkdir()
    with open(out / "resume.pt", "wb") as handle:
        pickle.dump({"fingerprint": _Payload(marker)}, handle, protocol=2)
    cfg = TrainConfig(model="test_resnet", dataset=TINY, epochs=1, out_dir=out, threads=2)
    logs: list[str] = []
    metrics = run_training(cfg, log=logs.append)
    assert metrics["status"] == "ok" and metrics["segments"] == 1
    assert not marker.exists()
    assert any("cannot be used" in line for line in logs)
    # a truncated checkpoint (a kill mid-write without atomic rename) restarts cleanly
    import torch

    model, optimizer, generator = _tiny_parts()
    save_resume(out / "resume.pt", cfg.as_dict(), model, optimizer, generator, RunState(epochs_done=1))
    data = (out / "resume.pt").read_bytes()
    (out / "resume.pt").write_bytes(data[: len(data) // 2])
    metrics = run_training(cfg, log=logs.append)
    assert metrics["status"] == "ok" and metrics["segments"] == 1
    assert len(list(out.glob("resume.pt.corrupt-*"))) >= 1 or any("cannot be used" in line for line in logs[-6:])
    del torch


def test_user_checkpoint_with_code_is_a_clear_error(tmp_path):
    from pepr.train.models import _load_state_dict

    marker = tmp_path / "owned"
    path = tmp_path / "weights.pt"
    with open(path, "wb") as handle:
        pickle.dump({"w": _Payload(marker)}, handle, protocol=2)
    with pytest.raises(PeprInputError, match="cannot read checkpoint") as info:
        _load_state_dict(path)
    assert not marker.exists()
    assert "\n" not in str(info.value)
