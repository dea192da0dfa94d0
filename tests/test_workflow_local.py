"""The Snakemake workflow end to end on the tiny .test/config.yaml, with the local executor.

One sweep (module fixture) is checked for outputs and tables, then re-planned with changed
configs (adding a model, changing report/scoring settings) to check what Snakemake would redo.
A second sweep is killed with SIGKILL mid-way, unlocked and resumed; its runs.csv must equal the
uninterrupted one (measurement columns aside) and no finished cell may be trained again.
Each sweep trains 8 one-epoch runs + 2 pretraining runs on tiny synthetic data (~1-2 min).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO / ".test" / "config.yaml"
OK_MODEL, FAILING_MODEL = "mobilenetv3_small_050", "convnext_atto"  # convnext_atto cannot take 28 px


def snakemake_command(
    workdir: Path, *args: str, configfile: Path = TEST_CONFIG, snakefile: Path = REPO / "Snakefile"
) -> list[str]:
    """Snakemake (this interpreter's) running ``snakefile`` on ``configfile`` in ``workdir``, then ``args``."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(snakefile),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        *args,
    ]


def snakemake(
    workdir: Path,
    *args: str,
    configfile: Path = TEST_CONFIG,
    timeout: int = 600,
    snakefile: Path = REPO / "Snakefile",
    cwd: Path = REPO,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run :func:`snakemake_command` to its end (from ``cwd``, with ``env``: an earlier workflow
    is run with its own ``src/`` on PYTHONPATH); its output captured as text."""
    return subprocess.run(
        snakemake_command(workdir, *args, configfile=configfile, snakefile=snakefile),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def check(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"snakemake failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
    return result


def earlier_checkout(commit: str, dest: Path) -> Path:
    """The files of this repository at git ``commit``, extracted into ``dest``; skips the test where
    the history lacks it (no git, a shallow clone or an export), saying how to get it."""
    archive = None
    if shutil.which("git") is not None:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", commit], capture_output=True)
    if archive is None or archive.returncode != 0:
        why = archive.stderr.decode()[:200] if archive is not None else "git is not installed"
        pytest.skip(
            f"git history with commit {commit} is not available here (a shallow clone or an export: "
            f"`git fetch --unshallow` in a clone gets it): {why}"
        )
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def snakemake_of(checkout: Path, workdir: Path, *args: str, configfile: Path) -> subprocess.CompletedProcess:
    """:func:`snakemake` with the workflow and the package of an earlier ``checkout``
    (:func:`earlier_checkout`): how a sweep was finished before an upgrade."""
    env = {**os.environ, "PYTHONPATH": str(checkout / "src")}
    return snakemake(
        workdir, *args, configfile=configfile, snakefile=checkout / "Snakefile", cwd=checkout, timeout=900, env=env
    )


def train_model_log(workdir: Path, run_dir: Path) -> Path:
    """The train_model rule's log of the run folder ``run_dir`` (workflow/rules/train.smk's ``log:``)."""
    log = workdir / "results" / "logs" / "train_model" / run_dir.relative_to(workdir / "results" / "runs")
    return log.with_name(log.name + ".log")


def planned_jobs(workdir: Path, *args: str, configfile: Path = TEST_CONFIG) -> dict[str, int]:
    """Job counts per rule that `snakemake -n` plans (empty when there is nothing to do)."""
    result = check(snakemake(workdir, "-n", "--cores", "2", *args, configfile=configfile))
    text = result.stdout + result.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines()[3:]:
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not match:
            break
        counts[match.group(1)] = int(match.group(2))
    counts.pop("total", None)
    return counts


def variant_config(tmp_path: Path, name: str, **changes) -> Path:
    config = yaml.safe_load(TEST_CONFIG.read_text())
    config.update(changes)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


#: Columns that measure the machine rather than the result (they differ between two sweeps).
MEASUREMENT = re.compile(r"time|energy|co2|memory|rss|cpu_share|inference|segments|power|host")


def comparable(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[[c for c in runs.columns if not MEASUREMENT.search(c)]]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """The uninterrupted sweep of .test/config.yaml (default target: tables and report)."""
    workdir = tmp_path_factory.mktemp("sweep")
    result = check(snakemake(workdir, "--cores", "2"))
    (workdir / "snakemake-output.txt").write_text(result.stdout + result.stderr)  # what the user saw
    return workdir


def test_failed_cells_are_announced_as_they_fail_and_pepr_status_sees_the_finished_sweep(sweep):
    """Issue 20: every failed cell prints one line on Snakemake's terminal stream, and
    `pepr status` on the real finished sweep counts every job."""
    seen = (sweep / "snakemake-output.txt").read_text()
    announced = re.findall(r"^pepr: (results/\S+) failed: (.+)$", seen, re.MULTILINE)
    assert sorted(path for path, _ in announced) == sorted(
        [
            f"results/runs/synthetic-n_test60-n_train120-n_val60/{init}/{fraction}/{FAILING_MODEL}/seed0"
            for init in ("scratch", "transfer")
            for fraction in ("1.0", "0.5")
        ]
        + [f"results/pretrain/synthetic-classes3-n_test30-n_train90-n_val30-seed1/{FAILING_MODEL}"]
    ), seen[-3000:]
    status = subprocess.run(
        [sys.executable, "-m", "pepr.cli", "status", "--configfile", str(TEST_CONFIG), "--no-squeue"],
        cwd=sweep,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert status.returncode == 0, status.stderr
    assert "finished 5   failed 5   running 0   pending 0   (100% done)" in status.stdout
    assert "ETA: nothing left to run" in status.stdout


def test_sweep_writes_every_run_and_both_tables(sweep):
    runs = pd.read_csv(sweep / "results" / "runs.csv")
    pepr = pd.read_csv(sweep / "results" / "pepr.csv")
    assert len(runs) == len(pepr) == 8  # 2 models x 2 inits x 2 fractions
    assert set(runs["model"]) == {OK_MODEL, FAILING_MODEL}
    assert set(runs["init"]) == {"scratch", "transfer"}
    assert sorted(set(runs["fraction"])) == [0.5, 1.0]
    dataset = runs["dataset"].iloc[0]
    assert dataset == "synthetic-n_test60-n_train120-n_val60"
    for row in runs.itertuples():
        run_dir = (
            sweep / "results" / "runs" / row.dataset / row.init / repr(row.fraction) / row.model / f"seed{row.seed}"
        )
        assert (run_dir / "metrics.json").is_file() and (run_dir / "history.csv").is_file()
    # the failing model is listed, with its reason, and the sweep went on
    failed = runs[runs["model"] == FAILING_MODEL]
    assert (failed["status"] == "failed").all() and len(failed) == 4
    assert failed["reason"].str.len().gt(0).all()
    assert failed.loc[failed["init"] == "transfer", "reason"].str.contains("pretraining").all()
    ok = pepr[pepr["status"] == "ok"]
    assert len(ok) == 4 and (ok["model"] == OK_MODEL).all()
    # PePR columns: for each resource, in [P/2, P] on successful runs, empty on failed ones
    for resource in ("energy_kwh", "co2_kg", "train_time_s", "peak_memory_mb", "energy_kwh_amortised"):
        assert ok[f"{resource}_norm"].between(0, 1).all()
        assert (ok[f"pepr_{resource}"] <= ok["test_accuracy"] + 1e-12).all()
        assert (ok[f"pepr_{resource}"] >= ok["test_accuracy"] / 2 - 1e-12).all()
        assert pepr.loc[pepr["status"] == "failed", f"pepr_{resource}"].isna().all()
    # one model succeeds per cell, so it is its cell's cheapest: PePR = P
    assert (ok["pepr_energy_kwh"] == ok["test_accuracy"]).all()
    # transfer runs carry the pretraining cost, shared by the model's 2 transfer runs
    transfer = ok[ok["init"] == "transfer"]
    assert (transfer["pretrain_uses"] == 2).all() and (transfer["pretrain_energy_kwh"] > 0).all()
    assert (transfer["energy_kwh_amortised"] > transfer["energy_kwh"]).all()
    pretrain_dir = sweep / "results" / "pretrain" / "synthetic-classes3-n_test30-n_train90-n_val30-seed1"
    assert (pretrain_dir / OK_MODEL / "model.pt").is_file()
    assert (pretrain_dir / FAILING_MODEL / "metrics.json").is_file()


def test_finished_sweep_has_nothing_left_to_do(sweep):
    assert planned_jobs(sweep) == {}


def test_adding_a_model_trains_only_its_cells(sweep, tmp_path):
    config = variant_config(tmp_path, "more.yaml", models=[OK_MODEL, FAILING_MODEL, "regnetx_002"])
    jobs = planned_jobs(sweep, configfile=config)
    assert jobs.get("train_model") == 4  # regnetx_002 x 2 inits x 2 fractions
    assert jobs.get("pretrain_source") == 1
    assert jobs.get("aggregate_runs") == 1 and jobs.get("score_runs") == 1
    assert "all" in jobs


def test_adding_a_fraction_plans_transfer_cells_of_a_failed_pretraining(sweep, tmp_path):
    """convnext_atto's pretraining failed (no model.pt, as a failure saves no weights): its new
    transfer cell is planned (and will record that failure), not refused as a lost checkpoint."""
    config = variant_config(tmp_path, "fraction.yaml", fractions=[1.0, 0.5, 0.25])
    jobs = planned_jobs(sweep, configfile=config)
    assert jobs.get("train_model") == 4  # 2 models x 2 inits at the new fraction
    assert "pretrain_source" not in jobs


def test_report_and_scoring_settings_retrain_nothing(sweep, tmp_path):
    report_only = variant_config(tmp_path, "report.yaml", report={"top_k": 2})
    jobs = planned_jobs(sweep, configfile=report_only)
    assert "train_model" not in jobs and "pretrain_source" not in jobs and "aggregate_runs" not in jobs
    scoring = variant_config(tmp_path, "scoring.yaml", pepr={"performance": "test_balanced_accuracy"})
    jobs = planned_jobs(sweep, configfile=scoring)
    assert jobs.get("score_runs") == 1
    assert "train_model" not in jobs and "pretrain_source" not in jobs and "aggregate_runs" not in jobs


def test_kill_9_then_unlock_and_resume_gives_the_same_table(sweep, tmp_path):
    workdir = tmp_path / "killed"
    workdir.mkdir()
    runs_dir = workdir / "results" / "runs"
    driver = subprocess.Popen(
        snakemake_command(workdir, "--cores", "2", "results/runs.csv"),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and driver.poll() is None:
            if len(list(runs_dir.glob("*/*/*/*/seed*/metrics.json"))) >= 3:
                break
            time.sleep(0.2)
        assert driver.poll() is None, "the sweep ended before it could be killed"
    finally:
        # kill -9 the driver and the jobs it started (a crashed machine or a killed session)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    assert not (workdir / "results" / "runs.csv").exists()
    # the run folders' results (previous/<time>/ holds hard links to them: Snakemake's touch of
    # a restored output shows there too)
    finished_before = {p: p.stat().st_mtime_ns for p in runs_dir.glob("*/*/*/*/seed*/metrics.json")}

    # a killed driver leaves its lock behind: `--unlock` is part of the documented resume
    locks = workdir / ".snakemake" / "locks"
    assert any(locks.iterdir()), "no lock left behind by the killed driver"
    check(snakemake(workdir, "--unlock"))
    assert not locks.exists() or not any(locks.iterdir())
    plan = check(snakemake(workdir, "-n", "--cores", "2", "--rerun-incomplete", "results/runs.csv"))
    replanned = {
        workdir / path
        for path in re.findall(r"^\s+output: (results/runs/\S+/metrics\.json)", plan.stdout + plan.stderr, re.MULTILINE)
    }
    assert replanned, "nothing left to train after the kill"
    check(snakemake(workdir, "--cores", "2", "--rerun-incomplete", "results/runs.csv"))

    kept = [p for p in finished_before if p not in replanned]
    assert kept, "every finished run was trained again"
    for path in kept:
        assert path.stat().st_mtime_ns == finished_before[path], f"{path} was trained again"
    resumed = pd.read_csv(workdir / "results" / "runs.csv")
    reference = pd.read_csv(sweep / "results" / "runs.csv")
    pd.testing.assert_frame_equal(comparable(resumed), comparable(reference))


def test_touching_code_retrains_nothing(sweep):
    """Issue 9 case 1: newer scripts/rule files never re-plan finished cells (profiles/default)."""
    code = [*REPO.glob("scripts/*.py"), *REPO.glob("workflow/rules/*.smk"), REPO / "Snakefile"]
    stamps = {path: path.stat() for path in code}
    try:
        future = time.time() + 60
        for path in code:
            os.utime(path, (future, future))
        counts = planned_jobs(sweep)
        assert not {"train_model", "pretrain_source"} & set(counts), counts
        # Without the workflow profile Snakemake's default triggers re-run the `script:` rules
        # (code changed), so the profile is what protects them; the train rules are `shell:`
        # rules running `pepr train`, whose command text did not change: they stay finished.
        unprotected = planned_jobs(sweep, "--workflow-profile", "none")
        assert unprotected.get("aggregate_runs", 0) > 0
        assert not {"train_model", "pretrain_source"} & set(unprotected), unprotected
    finally:
        for path, stat in stamps.items():
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_bad_training_setting_stops_planning_and_keeps_results(sweep, tmp_path):
    """Issue 9 case 3: a value pepr train rejects fails `snakemake -n` with results untouched."""
    before = {path: path.stat().st_mtime_ns for path in (sweep / "results").rglob("metrics.json")}
    config = variant_config(tmp_path, "bad.yaml", country="DEN", batch_size=1, report={"figure_formats": 5})
    result = snakemake(sweep, "-n", "--cores", "2", configfile=config)
    assert result.returncode != 0
    text = result.stdout + result.stderr
    # one message lists the settings pepr train would reject (the batch size by the schema, which
    # holds the same limit) and the bad report setting
    assert "bad.yaml has 3 problem(s); nothing was run" in text
    assert "country 'DEN'" in text and "'batch_size': 1 is less than the minimum of 2" in text
    assert "report.figure_formats = 5" in text
    assert "Traceback" not in text
    assert before and before == {path: path.stat().st_mtime_ns for path in (sweep / "results").rglob("metrics.json")}
