"""pepr estimate: cost arithmetic on hand-made calibrations, report, comparison, CLI errors.

Nothing here calibrates a model (see test_estimate_calibration.py for the real calibration).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from pepr import estimate as est
from pepr.cli import main
from pepr.errors import PeprInputError
from shared_data import PNEUMONIA, absent

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def make_job(**changes) -> est.Job:
    values = dict(
        dataset="d",
        init="scratch",
        fraction=0.5,
        model="m",
        seed=0,
        epochs=3,
        image_size=28,
        batch_size=32,
        eval_batch_size=256,
        n_train=100,
        n_val=300,
        n_test=50,
        in_chans=1,
        num_classes=2,
    )
    values.update(changes)
    return est.Job(**values)


def make_calibration(job: est.Job, **changes) -> est.Calibration:
    values = dict(
        model=job.model,
        image_size=job.image_size,
        batch_size=job.batch_size,
        eval_batch_size=job.eval_batch_size,
        in_chans=job.in_chans,
        num_classes=job.num_classes,
        device="cuda",
        status="ok",
        params=1000,
        train_s_per_batch=0.5,
        eval_s_per_batch=0.25,
        power_w=200.0,
        power_method="given",
    )
    values.update(changes)
    return est.Calibration(**values)


ASSUMPTIONS = est.EstimateAssumptions(country="XYZ", carbon_intensity_g_per_kwh=100.0, job_overhead_s=10.0, pue=1.5)


# --------------------------------------------------------------------------------------------
# Arithmetic
# --------------------------------------------------------------------------------------------


def test_job_cost_is_exact_for_hand_made_calibration():
    job = make_job()
    table = est.estimate_jobs([job], [make_calibration(job)], ASSUMPTIONS)
    row = table.iloc[0]
    # 4 training steps (100 images, batch 32) and 2 + 1 eval batches (300 and 50 images, batch 256)
    assert row["train_batches_per_epoch"] == 4
    assert row["eval_batches_per_epoch"] == 3
    seconds = 3 * (4 * 0.5 + 3 * 0.25) + 10.0  # epochs x (train + eval) + overhead = 18.25
    assert row["est_time_s"] == pytest.approx(seconds, rel=1e-12)
    assert row["est_device_hours"] == pytest.approx(seconds / 3600, rel=1e-12)
    energy = seconds * 200.0 * 1.5 / 3.6e6
    assert row["est_energy_kwh"] == pytest.approx(energy, rel=1e-12)
    assert row["est_co2_kg"] == pytest.approx(energy * 100.0 / 1000, rel=1e-12)
    assert row["status"] == "ok" and row["country"] == "XYZ"


@pytest.mark.parametrize(
    "n, batch, expected",
    [
        (1, 32, 1),
        (32, 32, 1),
        (33, 32, 1),
        (34, 32, 2),
        (64, 32, 2),
        (65, 32, 2),
        (66, 32, 3),
        (97, 32, 3),
        (100, 32, 4),
        (1, 1, 1),
        (2, 1, 1),
        (5, 1, 4),
    ],
)
def test_train_batches_follow_the_single_sample_merge_rule(n, batch, expected):
    assert est.train_batches(n, batch) == expected


def test_train_batches_match_pepr_train_batch_order():
    torch = pytest.importorskip("torch", reason="torch not installed: make install (TORCH=cpu without a GPU)")
    from pepr.train.loop import batch_order

    generator = torch.Generator().manual_seed(0)
    for batch in (1, 2, 7, 32):
        for n in range(1, 80):
            assert est.train_batches(n, batch) == len(batch_order(n, batch, generator)), (n, batch)


def test_eval_batches_count_val_and_test_separately():
    assert est.eval_batches(256, 256, 256) == 2
    assert est.eval_batches(257, 1, 256) == 3
    assert est.eval_batches(0, 10, 256) == 1
    assert est.eval_batch_size(32) == 256 and est.eval_batch_size(512) == 512


def test_failed_model_is_listed_not_dropped():
    ok_job, bad_job = make_job(model="small"), make_job(model="big")
    calibrations = [
        make_calibration(ok_job),
        make_calibration(
            bad_job,
            status="failed",
            reason="kernel > image",
            train_s_per_batch=math.nan,
            eval_s_per_batch=math.nan,
            power_w=math.nan,
        ),
    ]
    table = est.estimate_jobs([ok_job, bad_job, bad_job], calibrations, ASSUMPTIONS)
    assert list(table["model"]) == ["small", "big", "big"]
    assert table.loc[table["model"] == "big", "est_time_s"].isna().all()
    assert (table.loc[table["model"] == "big", "reason"] == "kernel > image").all()
    total = est.totals(table)
    assert total["jobs"] == 3 and total["jobs_estimated"] == 1 and total["jobs_failed"] == 2
    assert total["models_failed"] == 1
    assert total["est_time_s"] == pytest.approx(table.loc[0, "est_time_s"], rel=1e-12)
    summary = est.summarise_by_model(table).set_index("model")
    assert summary.loc["big", "status"] == "failed" and summary.loc["big", "jobs"] == 2
    assert math.isnan(summary.loc["big", "est_time_s"])
    report = est.format_report(table, ASSUMPTIONS, device_label="cuda (test GPU)")
    assert "FAILED: kernel > image" in report
    assert "NOT INCLUDED: 2 jobs of 1 model(s)" in report
    assert "GPU-h" in report and "100 g/kWh" in report and "XYZ" in report


def test_per_model_sums_and_totals_add_up():
    jobs = [make_job(model="a", seed=s) for s in range(3)] + [make_job(model="b", n_train=1000)]
    calibrations = [make_calibration(jobs[0]), make_calibration(jobs[-1], train_s_per_batch=0.1)]
    table = est.estimate_jobs(jobs, calibrations, ASSUMPTIONS)
    summary = est.summarise_by_model(table).set_index("model")
    assert summary.loc["a", "jobs"] == 3
    assert summary.loc["a", "est_time_s"] == pytest.approx(3 * 18.25, rel=1e-12)
    # b: 1000 images -> 32 batches (1000 % 32 = 8) x 0.1 s + 3 eval batches x 0.25 s
    assert summary.loc["b", "est_time_s"] == pytest.approx(3 * (32 * 0.1 + 3 * 0.25) + 10, rel=1e-12)
    assert est.totals(table)["est_energy_kwh"] == pytest.approx(summary["est_energy_kwh"].sum(), rel=1e-12)


def test_subset_report_says_what_the_total_covers_and_extrapolates():
    job = make_job()
    table = est.estimate_jobs([job, job], [make_calibration(job)], ASSUMPTIONS)
    report = est.format_report(table, ASSUMPTIONS, device_label="cpu (x, 1 thread(s))", grid_models=10, grid_jobs=20)
    assert "SUBSET: the total covers 1 of the grid's 10 models (2 of 20 jobs)" in report
    assert "Rough extrapolation" in report
    hours = 10 * 2 * 18.25 / 3600  # 10x the two estimated jobs
    assert f"~{hours:.3g} device-h" in report


def test_missing_calibration_and_bad_assumptions_are_input_errors():
    job = make_job()
    with pytest.raises(PeprInputError, match="no calibration"):
        est.estimate_jobs([job], [make_calibration(make_job(model="other"))], ASSUMPTIONS)
    with pytest.raises(PeprInputError, match="PUE"):
        est.EstimateAssumptions(country="X", carbon_intensity_g_per_kwh=1.0, pue=0.5)
    with pytest.raises(PeprInputError, match="overhead"):
        est.EstimateAssumptions(country="X", carbon_intensity_g_per_kwh=1.0, job_overhead_s=-1)
    with pytest.raises(PeprInputError, match="batch_size"):
        make_job(batch_size=0)


def test_carbon_intensity_comes_from_codecarbon_table():
    assert est.carbon_intensity_g_per_kwh("DNK") == pytest.approx(151.65, abs=0.5)
    assert est.carbon_intensity_g_per_kwh("dnk") == est.carbon_intensity_g_per_kwh("DNK")
    with pytest.raises(PeprInputError, match="not an ISO 3166-1 alpha-3 code with CodeCarbon data"):
        est.carbon_intensity_g_per_kwh("XXX")


# --------------------------------------------------------------------------------------------
# Config -> jobs
# --------------------------------------------------------------------------------------------


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


TINY_CONFIG = """\
models: [mobilenetv3_small_050, resnet18]
datasets: ["synthetic:n_train=120,n_val=60,n_test=40"]
inits: [scratch, transfer]
fractions: [1.0, 0.5]
seeds: [0]
epochs: 2
batch_size: 16
device: cpu
transfer:
  source: "synthetic:classes=3,n_train=90,n_val=30,n_test=30,seed=1"
  epochs: 1
"""


def test_jobs_from_config_match_the_training_data(tmp_path, monkeypatch):
    from pepr.datasets.core import load_dataset, stratified_subset
    from pepr.plan.config import load_config

    monkeypatch.chdir(tmp_path)
    config = load_config(write_config(tmp_path / "c.yaml", TINY_CONFIG))
    cache = tmp_path / "cache"  # the timm model list is read once, not three times
    grid_jobs = est.jobs_from_config(config, SCHEMA, cache_dir=cache)
    jobs = grid_jobs.jobs
    # 2 models x 2 inits x 2 fractions + 2 pretraining jobs
    assert len(jobs) == 10 and grid_jobs.grid_jobs == 10
    pretrain = [j for j in jobs if j.init == "pretrain"]
    assert {j.model for j in pretrain} == {"mobilenetv3_small_050", "resnet18"}
    assert all(j.num_classes == 3 and j.epochs == 1 and j.n_train == 90 for j in pretrain)
    data = load_dataset("synthetic:n_train=120,n_val=60,n_test=40")
    half = [j for j in jobs if j.init == "scratch" and j.fraction == 0.5][0]
    assert half.n_train == len(stratified_subset(data.train_y, 0.5, 0))
    assert (half.n_val, half.n_test, half.epochs, half.batch_size, half.eval_batch_size) == (60, 40, 2, 16, 256)
    assert half.image_size == 28 and half.in_chans == 1 and half.num_classes == 2

    only = est.jobs_from_config(load_config(tmp_path / "c.yaml"), SCHEMA, models=["resnet18"], cache_dir=cache)
    assert {j.model for j in only.jobs} == {"resnet18"} and len(only.jobs) == 5
    first = est.jobs_from_config(load_config(tmp_path / "c.yaml"), SCHEMA, max_models=1, cache_dir=cache)
    assert {j.model for j in first.jobs} == {"mobilenetv3_small_050"}
    with pytest.raises(PeprInputError, match="resnet1800.*did you mean resnet18,"):
        est.jobs_from_config(load_config(tmp_path / "c.yaml"), SCHEMA, models=["resnet1800"], cache_dir=cache)
    # a timm model outside the config is priced on the config's grid (issue 20)
    extra = est.jobs_from_config(load_config(tmp_path / "c.yaml"), SCHEMA, models=["resnet10t"], cache_dir=cache)
    assert {j.model for j in extra.jobs} == {"resnet10t"} and len(extra.jobs) == 5
    assert extra.grid_models == ["mobilenetv3_small_050", "resnet18"] and extra.grid_jobs == 10
    assert any("resnet10t not in the models" in note for note in extra.notes)


def test_npz_dataset_without_its_file_needs_dataset_size(tmp_path, monkeypatch):
    """A cost estimate needs no data file: MedMNIST sizes are published, a missing npz takes
    --dataset-size, and without it the message says so."""
    from pepr.plan.config import load_config

    monkeypatch.chdir(tmp_path)
    write_config(
        tmp_path / "c.yaml",
        "models: [resnet18]\ndatasets: ['npz:data/lidc.npz', pneumoniamnist]\n"
        "inits: [scratch]\nfractions: [1.0, 0.1]\nepochs: 2\n",
    )
    with pytest.raises(PeprInputError, match=r"--dataset-size lidc=TRAIN,VAL,TEST,SIZE"):
        est.jobs_from_config(load_config(tmp_path / "c.yaml"), SCHEMA, cache_dir=tmp_path / "cache")
    with pytest.raises(PeprInputError, match="image size is unknown"):
        est.jobs_from_config(
            load_config(tmp_path / "c.yaml"),
            SCHEMA,
            cache_dir=tmp_path / "cache",
            dataset_sizes={"lidc": (600, 200, 200)},
        )
    with pytest.raises(PeprInputError, match="not a dataset of"):
        est.jobs_from_config(
            load_config(tmp_path / "c.yaml"),
            SCHEMA,
            cache_dir=tmp_path / "cache",
            dataset_sizes={"lidcc": (600, 200, 200, 64)},
        )
    grid_jobs = est.jobs_from_config(
        load_config(tmp_path / "c.yaml"),
        SCHEMA,
        cache_dir=tmp_path / "cache",
        dataset_sizes={"lidc": (600, 200, 200, 64)},
    )
    lidc = sorted(
        (j.fraction, j.n_train, j.n_val, j.image_size, j.in_chans) for j in grid_jobs.jobs if j.dataset == "lidc"
    )
    assert lidc == [(0.1, 60, 200, 64, 1), (1.0, 600, 200, 64, 1)]
    pneumonia = [j for j in grid_jobs.jobs if j.dataset == "pneumoniamnist" and j.fraction == 1.0][0]
    assert (pneumonia.n_train, pneumonia.image_size) == (4708, 28)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("text", ["lidc", "lidc=1,2", "lidc=a,b,c", "=1,2,3", "lidc=0,1,1", "lidc=1,1,1,0"])
def test_dataset_size_flag_rejects_malformed_values(text):
    from pepr.estimate.jobs import parse_dataset_size

    with pytest.raises(PeprInputError, match="--dataset-size"):
        parse_dataset_size(text)


def test_default_schema_is_found_from_any_folder(tmp_path, monkeypatch):
    from pepr.cli.estimate import default_schema

    monkeypatch.chdir(tmp_path)
    assert default_schema() == SCHEMA.resolve()


def test_medmnist_without_file_uses_published_sizes(tmp_path):
    facts = est.dataset_facts("pneumoniamnist@224", tmp_path)
    assert (facts.n_train, facts.n_val, facts.n_test) == (4708, 524, 624)
    assert facts.stored_size == 224 and facts.channels == 1 and facts.num_classes == 2
    assert "published" in facts.source
    assert facts.train_size(0.1) == 471


def test_medmnist_file_present_reads_its_labels():
    if not PNEUMONIA.is_file():
        pytest.skip(absent(PNEUMONIA))
    facts = est.dataset_facts("pneumoniamnist", PNEUMONIA.parent)
    assert (facts.n_train, facts.n_val, facts.n_test) == (3882, 524, 624)
    assert facts.train_class_counts == (388, 3494)


# --------------------------------------------------------------------------------------------
# Estimate vs measurement
# --------------------------------------------------------------------------------------------


def _estimate_table() -> pd.DataFrame:
    jobs = [make_job(model="a", seed=0), make_job(model="a", seed=1), make_job(model="b", seed=0)]
    calibrations = [make_calibration(jobs[0]), make_calibration(jobs[2], status="failed", reason="too small")]
    return est.estimate_jobs(jobs, calibrations, ASSUMPTIONS)


def _runs_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "dataset": ["d", "d", "d", "d"],
            "init": ["scratch"] * 4,
            "fraction": [0.5, 0.5, 0.5, 0.5],
            "model": ["a", "a", "b", "c"],
            "seed": [0, 1, 0, 0],
            "status": ["ok", "ok", "failed", "ok"],
            "train_time_s": [10.0, 26.5, None, 5.0],
            "energy_kwh": [0.001, 0.002, None, 0.01],
            "co2_kg": [0.0001, 0.0002, None, 0.001],
        }
    )


def test_comparison_per_model_is_exact():
    comparison = est.compare_estimate(_estimate_table(), _runs_table()).set_index("model")
    a = comparison.loc["a"]
    assert a["runs_compared"] == 2 and a["runs_not_estimated"] == 0
    assert a["est_time_s"] == pytest.approx(2 * 18.25, rel=1e-12)
    assert a["measured_time_s"] == pytest.approx(36.5, rel=1e-12)
    assert a["ratio_time_s"] == pytest.approx(1.0, rel=1e-12)
    energy = 2 * 18.25 * 200 * 1.5 / 3.6e6
    assert a["ratio_energy_kwh"] == pytest.approx(energy / 0.003, rel=1e-12)
    assert a["ratio_co2_kg"] == pytest.approx(energy * 0.1 / 0.0003, rel=1e-12)
    b = comparison.loc["b"]  # failed in calibration and in the sweep: nothing to compare
    assert b["est_status"] == "failed" and b["runs_compared"] == 0 and math.isnan(b["ratio_time_s"])
    c = comparison.loc["c"]  # measured but never estimated
    assert c["est_status"] == "not estimated" and c["runs_not_estimated"] == 1


def test_comparison_rejects_tables_without_keys_or_measurements():
    with pytest.raises(PeprInputError, match="seed"):
        est.compare_estimate(_estimate_table(), _runs_table().drop(columns="seed"))
    with pytest.raises(PeprInputError, match="energy_kwh"):
        est.compare_estimate(_estimate_table(), _runs_table().drop(columns="energy_kwh"))


def test_comparison_figure_is_written(tmp_path):
    comparison = est.compare_estimate(_estimate_table(), _runs_table())
    est.plot_comparison(comparison, tmp_path / "fig" / "cmp.png")
    assert (tmp_path / "fig" / "cmp.png").stat().st_size > 1000
    empty = comparison.assign(runs_compared=0)
    est.plot_comparison(empty, tmp_path / "empty.png")
    assert (tmp_path / "empty.png").is_file()


def test_compare_files_writes_table_and_figure(tmp_path):
    _estimate_table().to_csv(tmp_path / "estimate.csv", index=False)
    _runs_table().to_csv(tmp_path / "runs.csv", index=False)
    table = est.compare_files(
        tmp_path / "estimate.csv", tmp_path / "runs.csv", tmp_path / "out.csv", tmp_path / "out.png"
    )
    assert (tmp_path / "out.csv").is_file() and (tmp_path / "out.png").is_file()
    assert set(table["model"]) == {"a", "b", "c"}


# --------------------------------------------------------------------------------------------
# CLI: bad flags and configs exit 2 before any calibration, writing nothing
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def _cli_dir(tmp_path_factory):
    # One working directory for the CLI error tests, so that the timm model list cached in
    # .snakemake/pepr by the first test serves the others (importing timm costs seconds).
    return tmp_path_factory.mktemp("estimate-cli")


@pytest.fixture
def shared_cwd(_cli_dir, monkeypatch):
    monkeypatch.chdir(_cli_dir)
    return _cli_dir


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--batches", "0"], "must be >= 1"),
        (["--min-seconds", "-1"], "finite number >= 0"),
        (["--power-w", "0"], "must be a positive number"),
        (["--pue", "0.5"], "--pue must be a number >= 1.0"),
        (["-o", "estimate.txt"], "cannot tell the format"),
        (["--device", "tpu"], "unknown device"),
        (["--country", "XXX"], "not an ISO 3166-1 alpha-3 code with CodeCarbon data"),
        (["--models", "resnet1800"], "did you mean resnet18,"),
        (["--max-models", "0"], "must be >= 1"),
        (["--schema", "nowhere.yaml"], "schema 'nowhere.yaml' not found"),
    ],
)
def test_cli_bad_flags_exit_2(shared_cwd, tmp_path, capsys, extra, message):
    config = write_config(tmp_path / "c.yaml", TINY_CONFIG)
    args = ["estimate", "--configfile", str(config), "--schema", str(SCHEMA), "-o", "out.csv", *extra]
    with pytest.raises(SystemExit) as exit_info:
        raise SystemExit(main(args))
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (shared_cwd / "out.csv").exists() and not (shared_cwd / "estimate.txt").exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("models: [resnet18]\ndatasets: [synthetic]\nepochz: 3\n", "epochz"),
        ("models: [resnet1800]\ndatasets: [synthetic]\n", "resnet1800"),
        ("models: [resnet18]\ndatasets: [synthetic]\nfractions: [1.5]\n", "outside (0, 1]"),
        ("- just\n- a list\n", "mapping"),
    ],
)
def test_cli_bad_config_exits_2(shared_cwd, tmp_path, capsys, text, message):
    config = write_config(tmp_path / "bad.yaml", text)
    code = main(["estimate", "--configfile", str(config), "--schema", str(SCHEMA), "-o", "out.csv"])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (shared_cwd / "out.csv").exists()


def test_cli_missing_config_exits_2(tmp_path, capsys):
    code = main(["estimate", "--configfile", str(tmp_path / "none.yaml"), "--schema", str(SCHEMA)])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_module_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, pepr.cli.estimate, pepr.estimate; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_report_warns_when_calibration_ran_on_a_busy_cpu():
    job = make_job()
    busy = est.estimate_jobs([job], [make_calibration(job, device="cpu", cpu_share=0.3)], ASSUMPTIONS)
    assert "WARNING: the CPU was busy" in est.format_report(busy, ASSUMPTIONS, device_label="cpu")
    quiet = est.estimate_jobs([job], [make_calibration(job, device="cpu", cpu_share=0.97)], ASSUMPTIONS)
    assert "WARNING" not in est.format_report(quiet, ASSUMPTIONS, device_label="cpu")


# --------------------------------------------------------------------------------------------
# CLI: outputs checked before calibrating; a write failing after it keeps the estimate
# --------------------------------------------------------------------------------------------


def _fake_estimate(calls, before_return=None):
    def run_estimate(config, schema, settings, **kwargs):
        calls.append(settings)
        if before_return is not None:
            before_return()
        job = make_job()
        table = est.estimate_jobs([job], [make_calibration(job)], ASSUMPTIONS)
        return est.EstimateResult(table=table, by_model=est.summarise_by_model(table), report="REPORT", calibrations=[])

    return run_estimate


@pytest.mark.parametrize(
    "output, message",
    [
        ("folder.csv", "is a folder"),
        ("afile.csv/estimate.csv", "is a file, not a folder"),
        ("new.csv/", "is a folder"),
    ],
)
def test_cli_unwritable_output_exits_2_before_calibrating(tmp_path, monkeypatch, capsys, output, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "afile.csv").write_text("x")
    calls = []
    monkeypatch.setattr(est, "run_estimate", _fake_estimate(calls))
    config = write_config(tmp_path / "c.yaml", TINY_CONFIG)
    code = main(["estimate", "--configfile", str(config), "--schema", str(SCHEMA), "--by-model", output])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "--by-model" in err
    assert len(err.strip().splitlines()) == 1
    assert calls == [], "calibration must not start when the output cannot be written"


def test_cli_same_file_for_both_outputs_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    calls = []
    monkeypatch.setattr(est, "run_estimate", _fake_estimate(calls))
    code = main(["estimate", "--configfile", "c.yaml", "-o", "e.csv", "--by-model", "./e.csv"])
    assert code == 2 and "same file" in capsys.readouterr().err and calls == []


def test_cli_write_failing_after_calibration_saves_the_tables(tmp_path, monkeypatch, capsys):
    import tempfile

    monkeypatch.chdir(tmp_path)
    rescue_dir = tmp_path / "tmp"
    rescue_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(rescue_dir))
    (tmp_path / "out").mkdir()

    def output_folder_goes_away():  # what a full or vanished output disk looks like to the writer
        (tmp_path / "out").rmdir()
        (tmp_path / "out").write_text("not a folder any more")

    calls = []
    monkeypatch.setattr(est, "run_estimate", _fake_estimate(calls, output_folder_goes_away))
    config = write_config(tmp_path / "c.yaml", TINY_CONFIG)
    code = main(
        [
            "estimate",
            "--configfile",
            str(config),
            "--schema",
            str(SCHEMA),
            "-o",
            "out/estimate.csv",
            "--by-model",
            "by_model.csv",
        ]
    )
    captured = capsys.readouterr()
    assert code == 2 and len(calls) == 1
    assert "REPORT" in captured.out
    assert "the estimate is not lost" in captured.err and "Traceback" not in captured.err
    rescued = list(rescue_dir.glob("pepr-estimate-*-estimate.csv"))
    assert len(rescued) == 1
    # 3 epochs x (4 train batches x 0.5 s + 3 eval batches x 0.25 s) + 10 s overhead
    assert pd.read_csv(rescued[0])["est_time_s"].tolist() == pytest.approx([18.25])
    assert (tmp_path / "by_model.csv").exists()  # the writable one is written as usual


# --------------------------------------------------------------------------------------------
# The package uses data/loop's public rules; carbon series; K (cells per SLURM allocation)
# --------------------------------------------------------------------------------------------


def test_estimate_counts_with_the_public_rules_of_data_and_loop():
    import numpy as np

    from pepr.datasets import core as data
    from pepr.train import loop

    for n, batch in [(1, 16), (17, 16), (33, 16), (100, 32), (65, 64)]:
        assert est.train_batches(n, batch) == loop.train_batch_count(n, batch)
    assert est.eval_batch_size(32) == loop.eval_batch_size(32) == 256
    assert est.eval_batch_size(512) == 512
    rng = np.random.default_rng(0)
    for _ in range(20):
        counts = rng.integers(10, 60, size=rng.integers(2, 6))
        labels = np.repeat(np.arange(len(counts)), counts)
        fraction = float(rng.choice([0.1, 0.25, 0.5, 0.75, 1.0]))
        assert data.stratified_subset_size(counts, fraction) == len(data.stratified_subset(labels, fraction, 3))
    with pytest.raises(PeprInputError, match="leaves class 1"):
        data.stratified_subset_size([40, 2], 0.1)


def test_carbon_intensity_series_gives_its_time_weighted_mean(tmp_path):
    from pepr.estimate.cost import carbon_intensity_from_series, series_mean_g_per_kwh

    # 100 g for 1 h, 400 g for 2 h, then 200 g for one (median) step of 1 h: (100 + 800 + 200) / 4 = 275
    assert series_mean_g_per_kwh([0.0, 3600.0, 10800.0], [100.0, 400.0, 200.0], 3600.0) == pytest.approx(275.0)
    csv = tmp_path / "ci.csv"
    csv.write_text("timestamp,gco2_per_kwh\n2024-01-01T00:00:00Z,100\n2024-01-01T01:00:00Z,300\n")
    value, text = carbon_intensity_from_series(str(csv))
    assert value == pytest.approx(200.0) and str(csv) in text
    job = make_job()
    assumptions = est.EstimateAssumptions(country="DNK", carbon_intensity_g_per_kwh=value, carbon_source=text)
    report = est.format_report(
        est.estimate_jobs([job], [make_calibration(job)], assumptions), assumptions, device_label="cuda:0 (test)"
    )
    assert f"CO2: 200 g/kWh, the time-weighted mean of the carbon intensity series {csv}" in report
    csv.write_text("timestamp,gco2_per_kwh\n2024-01-01T00:00:00Z,-5\n2024-01-01T01:00:00Z,300\n")
    with pytest.raises(PeprInputError, match="must be a number >= 0"):
        carbon_intensity_from_series(str(csv))


def _jobs_with_times(seconds: list[float], failed: int = 0) -> pd.DataFrame:
    """An estimate table whose jobs take these times (epochs=1, one train batch, no eval)."""
    jobs, cals = [], []
    for index, secs in enumerate(seconds + [1.0] * failed):
        job = make_job(model=f"m{index}", epochs=1, n_train=10, batch_size=32, n_val=0, n_test=0)
        jobs.append(job)
        status = "failed" if index >= len(seconds) else "ok"
        cals.append(
            make_calibration(
                job,
                train_s_per_batch=secs,
                eval_s_per_batch=0.0,
                status=status,
                reason="oom" if status == "failed" else "",
            )
        )
    assumptions = est.EstimateAssumptions(country="XYZ", carbon_intensity_g_per_kwh=100.0)
    return est.estimate_jobs(jobs, cals, assumptions)


@pytest.mark.parametrize(
    "seconds, minutes, k",
    [
        ([240.0, 360.0], 30, 6),  # mean 300 s: 1800 / 300 = 6 cells per 30-min allocation
        ([250.0, 350.0, 400.0], 30, 5),  # mean 333.3 s: floor(5.4) = 5
        ([3000.0], 30, 1),  # a cell longer than the allocation: still 1
        ([10.0], 60, 360),
    ],
)
def test_k_fills_an_allocation_of_the_target_length(seconds, minutes, k):
    from pepr.estimate.cost import recommend_cells_per_allocation

    advice = recommend_cells_per_allocation(_jobs_with_times(seconds, failed=2), minutes)
    assert advice.k == k
    assert advice.mean_cell_s == pytest.approx(sum(seconds) / len(seconds))  # failed jobs left out
    assert advice.jobs == len(seconds)
    assert advice.allocation_s <= minutes * 60 or k == 1


def test_report_prints_k_with_its_formula_and_warns_on_long_cells():
    table = _jobs_with_times([240.0, 360.0])
    assumptions = est.EstimateAssumptions(country="XYZ", carbon_intensity_g_per_kwh=100.0, allocation_minutes=30)
    report = est.format_report(table, assumptions, device_label="cuda:0 (test)")
    assert "Cells per SLURM allocation: K = 6" in report
    assert (
        "K = max(1, floor(cluster.allocation_minutes x 60 / mean time per cell)) = max(1, floor(1800 s / 300.0 s)) = 6"
        in report
    )
    assert "lasts about 30.0 min" in report and "NOTE" not in report
    short = est.EstimateAssumptions(country="XYZ", carbon_intensity_g_per_kwh=100.0, allocation_minutes=5)
    report = est.format_report(table, short, device_label="cuda:0 (test)")
    assert "K = 1" in report and "NOTE: the longest cell alone takes ~6.0 min, more than 5 min" in report
    # nothing calibrated: no K, no crash
    failed = _jobs_with_times([], failed=2)
    assert "K =" not in est.format_report(failed, assumptions, device_label="cpu")
    with pytest.raises(PeprInputError, match="allocation_minutes"):
        est.EstimateAssumptions(country="XYZ", carbon_intensity_g_per_kwh=1.0, allocation_minutes=0)
