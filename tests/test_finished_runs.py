"""A finished run is never lost or trained twice, fast tier: links planted in a run folder,
restore instead of retrain, one CO2 intensity per run (also after a country change mid-resume),
CO2 derived at aggregation, pepr's params record (what is a rerun trigger), the local GPU check."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from pepr.errors import PeprInputError
from pepr.files import file_sha256
from pepr.plan import rerun
from pepr.results import runs
from test_train import run_cli, train_argv

TINY = "synthetic:n_train=64,n_val=32,n_test=32"


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "owner" / "precious.txt"
    path.parent.mkdir()
    path.write_text("the owner's file\n")
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------
# No write follows a link
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["metrics.json", "history.csv", "resume.pt", ".pepr-train.lock", "previous", "model.pt"]
)
@pytest.mark.parametrize("where", ["runs", "pretrain"])
def test_planted_link_is_refused_in_one_line_and_the_victim_is_untouched(tmp_path, victim, name, where):
    out = tmp_path / "results" / ("runs/d/scratch/1.0/m/seed0" if where == "runs" else "pretrain/src/m")
    out.mkdir(parents=True)
    target = victim.parent if name == "previous" else victim
    before = sha(victim)
    (out / name).symlink_to(target)
    code, err = run_cli(*train_argv(out, "--save-model", str(out / "model.pt"), dataset=TINY))
    assert code == 2, err
    # the error is one line naming the link (main's failure notice may add its own line)
    errors = [line for line in err.splitlines() if line.startswith("pepr train: error:")]
    assert len(errors) == 1 and f"{out / name} is a symbolic link" in errors[0] and "Traceback" not in err, err
    assert sha(victim) == before and sorted(p.name for p in victim.parent.iterdir()) == ["precious.txt"]


def test_fixed_temporary_names_are_not_used(tmp_path, victim):
    """save_model wrote model.pt.tmp, save_resume .resume.pt.tmp<pid>: links planted there are
    never written through (temporary names are unpredictable, created O_EXCL|O_NOFOLLOW)."""
    out = tmp_path / "run"
    out.mkdir()
    before = sha(victim)
    (out / "model.pt.tmp").symlink_to(victim)
    (out / f".resume.pt.tmp{os.getpid()}").symlink_to(victim)
    code, err = run_cli(*train_argv(out, "--save-model", str(out / "model.pt"), dataset=TINY))
    assert code == 0, err
    assert sha(victim) == before and (out / "model.pt").is_file() and not (out / "model.pt").is_symlink()


def test_hard_linked_lock_file_is_refused(tmp_path, victim):
    out = tmp_path / "run"
    out.mkdir()
    before = sha(victim)
    os.link(victim, out / ".pepr-train.lock")
    with pytest.raises(
        PeprInputError, match=r"\.pepr-train\.lock is not a plain file of its own \(hard-linked 2 times\)"
    ):
        with runs.run_lock(out):
            pass
    assert sha(victim) == before


def test_writes_replace_a_link_never_follow_it(tmp_path, victim):
    before = sha(victim)
    link = tmp_path / "metrics.json"
    link.symlink_to(victim)
    runs.atomic_write_text(link, "new\n")
    assert not link.is_symlink() and link.read_text() == "new\n" and sha(victim) == before
    with pytest.raises(FileExistsError):
        runs.open_new(link)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "created-elsewhere")
    with pytest.raises(FileExistsError):
        runs.open_new(dangling)
    assert not (tmp_path / "created-elsewhere").exists()


def test_archive_refuses_a_linked_previous_and_never_copies_onto_a_link(tmp_path, victim, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    metrics, history = {"status": "ok"}, [{"epoch": 1}]
    before = sha(victim)
    (out / "previous").symlink_to(victim.parent)
    with pytest.raises(PeprInputError, match="previous is a symbolic link"):
        runs.publish_finished(out, metrics, history)
    assert sorted(p.name for p in victim.parent.iterdir()) == ["precious.txt"]
    assert not (out / "metrics.json").exists()
    (out / "previous").unlink()
    # an archive folder of this very stamp already holding a planted history.csv link
    now = 1_800_000_000.0
    monkeypatch.setattr(runs.time, "time", lambda: now)
    stamp = runs.time.strftime("%Y%m%dT%H%M%SZ", runs.time.gmtime(now))
    (out / "previous" / stamp).mkdir(parents=True)
    (out / "previous" / stamp / "history.csv").symlink_to(victim)
    kept = runs.publish_finished(out, metrics, history)
    assert kept.name == f"{stamp}-1" and (kept / "history.csv").read_text().splitlines()[1].startswith("1")
    assert (out / "history.csv").read_text() == (kept / "history.csv").read_text()
    assert sha(victim) == before


# ---------------------------------------------------------------------------------------------
# A finished training is restored, never redone (unless --retrain)
# ---------------------------------------------------------------------------------------------


def test_finished_result_is_restored_after_snakemake_deleted_it_and_retrain_trains(tmp_path):
    out = tmp_path / "run"
    code, err = run_cli(*train_argv(out, dataset=TINY))
    assert code == 0 and "epoch 1/1" in err
    finished = {name: (out / name).read_bytes() for name in ("metrics.json", "history.csv")}
    for name in finished:  # what Snakemake does before re-running an incomplete or forced job
        (out / name).unlink()
    code, err = run_cli(*train_argv(out, dataset=TINY))
    assert code == 0 and "restored the finished result" in err and "epoch 1/1" not in err, err
    assert {name: (out / name).read_bytes() for name in finished} == finished
    assert len(list((out / "previous").iterdir())) == 1
    code, err = run_cli(*train_argv(out, "--retrain", dataset=TINY))
    assert code == 0 and "epoch 1/1" in err and "restored" not in err
    assert len(list((out / "previous").iterdir())) == 2
    code, err = run_cli(*train_argv(out, "--lr", "0.001", dataset=TINY))  # another training setting: trains
    assert code == 0 and "epoch 1/1" in err and "restored" not in err
    code, err = run_cli(*train_argv(out, "--country", "FRA", dataset=TINY))  # not a training setting: restores
    assert code == 0 and "restored the finished result" in err


def test_changed_data_content_trains_and_the_same_content_restores(tmp_path):
    data = tmp_path / "cells.npz"
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 40), ("val", 20), ("test", 20)):
        arrays[f"{split}_labels"] = rng.integers(0, 2, (n, 1))
        arrays[f"{split}_images"] = (rng.random((n, 16, 16)) * 255).astype(np.uint8)
    np.savez(data, **arrays)
    out = tmp_path / "run"
    args = train_argv(out, dataset=f"npz:{data}")
    assert run_cli(*args)[0] == 0
    moved = tmp_path / "moved" / "cells.npz"
    moved.parent.mkdir()
    moved.write_bytes(data.read_bytes())
    code, err = run_cli(*[a.replace(str(data), str(moved)) for a in args])
    assert code == 0 and "restored the finished result" in err  # same name, same content
    arrays["train_images"][0, 0, 0] ^= 1
    np.savez(data, **arrays)
    code, err = run_cli(*args)
    assert code == 0 and "epoch 1/1" in err and "restored" not in err


# ---------------------------------------------------------------------------------------------
# One intensity per run, CO2 derived at aggregation
# ---------------------------------------------------------------------------------------------


def test_country_change_mid_resume_gives_one_intensity(tmp_path, monkeypatch):
    """Epochs 1-2 in DNK, interrupted, resumed in FRA: CO2 is every epoch's energy at FRA's
    intensity (not 151.65 g/kWh for two epochs and 40.7 for the others)."""
    from pepr.results.carbon import country_intensity_g_per_kwh
    from pepr.train import run as train
    from pepr.train.run import TrainConfig, run_training

    out = tmp_path / "run"
    original = train._run_epoch

    def stop_after_two(epoch, *args, **kwargs):
        if epoch == 3:
            raise KeyboardInterrupt
        return original(epoch, *args, **kwargs)

    monkeypatch.setattr(train, "_run_epoch", stop_after_two)
    cfg = TrainConfig(model="test_resnet", dataset=TINY, out_dir=out, epochs=4, threads=1, country="DNK")
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, log=lambda m: None)
    assert (out / "resume.pt").is_file()
    monkeypatch.setattr(train, "_run_epoch", original)
    logs: list[str] = []
    record = run_training(
        TrainConfig(model="test_resnet", dataset=TINY, out_dir=out, epochs=4, threads=1, country="FRA"), log=logs.append
    )
    assert any("resuming" in line for line in logs) and record["segments"] == 2
    fra = country_intensity_g_per_kwh("FRA")
    assert fra != country_intensity_g_per_kwh("DNK")
    assert record["co2_kg"] == pytest.approx(sum(record["energy_per_epoch"]) * fra / 1000, rel=1e-9)
    assert record["carbon_intensity_g_per_kwh"] == pytest.approx(fra, rel=1e-9)
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 5


def _metrics(root: Path, key: str, **values) -> str:
    path = root / key / "metrics.json"
    path.parent.mkdir(parents=True)
    record = {
        "status": "ok",
        "reason": "",
        "model": key.split("/")[3],
        "seed": 0,
        "test_accuracy": 0.8,
        "energy_kwh": 0.003,
        "co2_kg": 0.001,
        "train_time_s": 10.0,
        "peak_memory_mb": 50.0,
        "energy_per_epoch": [0.001, 0.002],
        **values,
    }
    path.write_text(json.dumps(record))
    return str(path)


def test_aggregation_derives_co2_from_energy_with_the_configured_intensity(tmp_path):
    from pepr.results.aggregate import CarbonSettings, collect_runs
    from pepr.results.carbon import country_intensity_g_per_kwh

    root = tmp_path / "results" / "runs"
    files = [_metrics(root, "d/scratch/1.0/m/seed0")]
    series = tmp_path / "intensity.csv"
    series.write_text("timestamp,gco2_per_kwh\n2026-01-01T00:00:00Z,100\n2026-01-01T01:00:00Z,300\n")
    files.append(_metrics(root, "d/scratch/1.0/n/seed0", epoch_midpoints_unix=[1767225600 + 600, 1767225600 + 4200]))
    by_country = collect_runs(files, runs_root=str(root), carbon=CarbonSettings("FRA")).set_index("model")
    fra = country_intensity_g_per_kwh("FRA")
    assert by_country.loc["m", "co2_kg"] == pytest.approx(0.003 * fra / 1000)
    assert by_country.loc["m", "co2_kg_recorded"] == 0.001 and "FRA" in by_country.loc["m", "co2_source"]
    by_series = collect_runs(files, runs_root=str(root), carbon=CarbonSettings("FRA", series)).set_index("model")
    assert by_series.loc["n", "co2_kg"] == pytest.approx((0.001 * 100 + 0.002 * 300) / 1000)
    # a run of an earlier pepr has no epoch times: its recorded CO2 is kept, and said so
    assert by_series.loc["m", "co2_kg"] == 0.001 and "recorded at training" in by_series.loc["m", "co2_source"]


# ---------------------------------------------------------------------------------------------
# The params record: what is a rerun trigger
# ---------------------------------------------------------------------------------------------


def _settings(**changes):
    from pepr.plan.grid import TrainSettings

    values = {
        "model": "m",
        "epochs": 10,
        "batch_size": 32,
        "lr": 0.0005,
        "image_size": None,
        "device": "auto",
        "country": "DNK",
        "data_dir": "data",
        "dataset": "pneumoniamnist",
        "init": "scratch",
        "fraction": 1.0,
        "seed": 0,
    }
    values.update(changes)
    return TrainSettings(values, out_dir="results/runs/x")


def _attached(settings, recorded, tmp_path, digest="a" * 64, data_newer=False):
    data = tmp_path / "data.npz"
    output = tmp_path / "metrics.json"
    for path in (data, output):
        path.write_text("x")
    older, newer = (output, data) if data_newer else (data, output)
    os.utime(older, (1_000_000, 1_000_000))
    digests = rerun.DataDigests(None)
    digests._known[str(data)] = digest
    return rerun.attach_record(settings, lambda: recorded, str(output), str(data), digests)


def test_record_of_an_earlier_pepr_is_kept_verbatim_unless_a_training_setting_changed(tmp_path):
    old = dict.__repr__(_settings())  # what Snakemake recorded for a sweep of commit 3a59573
    assert repr(_attached(_settings(), [old], tmp_path)) == old
    assert repr(_attached(_settings(country="FRA", data_dir="/elsewhere"), [old], tmp_path)) == old
    assert repr(_attached(_settings(carbon_intensity="ci.csv"), [old], tmp_path)) == old
    for change in ({"epochs": 11}, {"lr": 0.001}, {"device": "cuda"}, {"precision": "bf16"}, {"dataset": "dermamnist"}):
        assert repr(_attached(_settings(**change), [old], tmp_path)) != old, change
    # no content fingerprint recorded: a data file newer than the run counts as changed (as before)
    assert repr(_attached(_settings(), [old], tmp_path, data_newer=True)) != old


def test_new_record_carries_the_data_content_and_a_timestamp_is_no_change(tmp_path):
    fresh = repr(_attached(_settings(), None, tmp_path))
    assert "'data_sha256': '" + "a" * 64 + "'" in fresh
    assert repr(_attached(_settings(), [fresh], tmp_path, data_newer=True)) == fresh  # touch / cp
    assert repr(_attached(_settings(country="USA"), [fresh], tmp_path)) == fresh
    assert repr(_attached(_settings(), [fresh], tmp_path, digest="b" * 64)) != fresh  # content changed
    assert str(_settings()) == str(_attached(_settings(), [fresh], tmp_path))  # the pepr train flags


def test_file_sha256_is_cached_by_stat_and_recomputed_after_a_change(tmp_path):
    data = tmp_path / "d.npz"
    data.write_bytes(b"abc" * 1000)
    cache = tmp_path / "cache"
    first = file_sha256(data, cache)
    assert first == hashlib.sha256(data.read_bytes()).hexdigest() and len(list(cache.iterdir())) == 1
    assert file_sha256(data, cache) == first
    data.write_bytes(b"abd" * 1000)
    assert file_sha256(data, cache) == hashlib.sha256(data.read_bytes()).hexdigest() != first


# ---------------------------------------------------------------------------------------------
# A local cuda device is checked against this machine
# ---------------------------------------------------------------------------------------------


def test_local_cuda_device_is_checked_against_this_machine(monkeypatch):
    from pepr.plan import config

    monkeypatch.setattr(config, "local_gpu_count", lambda environ=None: (0, "no NVIDIA driver"))
    (problem,) = config.local_device_problems("cuda:0")
    assert "this machine has no CUDA GPU" in problem and "device: cpu or auto" in problem
    assert config.local_device_problems("cpu") == [] and config.local_device_problems("auto") == []
    monkeypatch.setattr(config, "local_gpu_count", lambda environ=None: (2, "2 in /proc/driver/nvidia/gpus"))
    assert config.local_device_problems("cuda:1") == []
    (problem,) = config.local_device_problems("cuda:99")
    assert "has 2 CUDA GPU(s)" in problem and "cuda:0..cuda:1" in problem


def test_visible_devices_limit_the_local_count(tmp_path, monkeypatch):
    from pepr.plan import config

    count, how = config.local_gpu_count({"CUDA_VISIBLE_DEVICES": ""})
    if not Path("/proc/driver/nvidia/gpus").is_dir():
        assert count == 0
    else:
        assert count == 0 and "CUDA_VISIBLE_DEVICES" in how
