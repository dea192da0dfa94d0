"""pepr estimate with real calibration: one tiny model on CPU, CodeCarbon power, the CLI end to end."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from pepr import estimate as est
from pepr.cli import main

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"

pytestmark = pytest.mark.slow


def test_real_calibration_of_a_small_model_and_a_failing_one():
    import torch

    torch.set_num_threads(1)
    small = est.CalibrationSpec(
        "mobilenetv3_small_050", image_size=28, batch_size=8, eval_batch_size=16, in_chans=1, num_classes=2
    )
    too_small = est.CalibrationSpec(
        "convnext_atto", image_size=28, batch_size=8, eval_batch_size=16, in_chans=1, num_classes=2
    )
    lines: list[str] = []
    ok, failed = est.calibrate_models(
        [small, too_small],
        "cpu",
        est.build_training_model,
        batches=2,
        warmup=1,
        min_seconds=0.0,
        country="DNK",
        progress=lines.append,
    )
    assert ok.ok and ok.spec == small
    assert ok.train_s_per_batch > 0 and ok.eval_s_per_batch > 0
    assert ok.train_batches_timed == 2 and ok.eval_batches_timed == 1
    assert ok.params is not None and 100_000 < ok.params < 1_000_000
    # CodeCarbon measured (or modelled) a positive power over the timed batches, and says how
    assert ok.power_w > 0 and "CodeCarbon" in ok.power_method
    assert not failed.ok and failed.status == "failed"
    assert "Kernel size" in failed.reason and "28 px" in failed.reason
    assert math.isnan(failed.train_s_per_batch)
    assert len(lines) == 2 and "FAILED" in lines[1]


def test_given_power_replaces_the_measurement():
    spec = est.CalibrationSpec(
        "mobilenetv3_small_050", image_size=16, batch_size=4, eval_batch_size=8, in_chans=3, num_classes=3
    )
    (result,) = est.calibrate_models(
        [spec], "cpu", est.build_training_model, batches=1, warmup=0, min_seconds=0.0, power_w=123.0
    )
    assert result.ok and result.power_w == 123.0 and "given" in result.power_method


TINY = """\
models: [mobilenetv3_small_050, convnext_atto]
datasets: ["synthetic:n_train=60,n_val=20,n_test=20"]
inits: [scratch]
fractions: [1.0, 0.5]
seeds: [0, 1]
epochs: 2
batch_size: 16
device: cpu
cluster:
  allocation_minutes: 0.5
"""


def test_cli_end_to_end_on_a_tiny_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(TINY)
    code = main(
        [
            "estimate",
            "--configfile",
            "tiny.yaml",
            "--schema",
            str(SCHEMA),
            "--batches",
            "1",
            "--warmup",
            "0",
            "--min-seconds",
            "0",
            "--job-overhead-s",
            "5",
            "-o",
            "out/estimate.csv",
            "--by-model",
            "out/by_model.csv",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    table = pd.read_csv(tmp_path / "out" / "estimate.csv")
    assert len(table) == 8  # 2 models x 2 fractions x 2 seeds
    assert set(table["status"]) == {"ok", "failed"}
    ok = table[table["status"] == "ok"]
    assert (ok["est_time_s"] > 5).all()  # the per-job overhead is included
    assert table.loc[table["status"] == "failed", "est_time_s"].isna().all()
    by_model = pd.read_csv(tmp_path / "out" / "by_model.csv")
    assert list(by_model["model"]) == ["mobilenetv3_small_050", "convnext_atto"]
    report = captured.out
    assert "TOTAL (4 jobs estimated)" in report and "FAILED" in report
    assert "151.65 g/kWh" in report and "job overhead: 5 s per job" in report
    # K from the calibration and the config's cluster.allocation_minutes (30 s here)
    mean = ok["est_time_s"].mean()
    k = max(1, math.floor(30.0 / mean))
    assert f"Cells per SLURM allocation: K = {k}" in report
    assert f"floor(30 s / {mean:.1f} s)) = {k}" in report
    # a comparison against a fake "measured" table with the same keys
    runs = ok[list(est.JOB_KEYS)].assign(
        status="ok", train_time_s=ok["est_time_s"] * 2, energy_kwh=ok["est_energy_kwh"], co2_kg=ok["est_co2_kg"]
    )
    comparison = est.compare_estimate(table, runs).set_index("model")
    assert comparison.loc["mobilenetv3_small_050", "ratio_time_s"] == pytest.approx(0.5)
    assert comparison.loc["mobilenetv3_small_050", "ratio_energy_kwh"] == pytest.approx(1.0)
