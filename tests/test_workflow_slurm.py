"""Snakemake on a REAL single-node SLURM cluster (slurmctld + slurmd + munge + slurmdbd).

The tests use the test cluster that ``tests/slurm/start-slurm.sh`` brings up (``.ci/run`` starts it
before the suite and stops it afterwards); they never install or start anything themselves. Every
snakemake run goes through ``--executor slurm`` (snakemake-executor-plugin-slurm) with the CI
profile ``tests/slurm/profile``, i.e. real ``sbatch``/``srun``/``sacct``.

Where no test cluster answers, the fixture ``slurm_cluster`` (tests/conftest.py) skips the module
with one line saying what is missing and how to start it; with ``PEPR_REQUIRE_SLURM=1`` (set by
.ci/run) that is a failure instead.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
START_SCRIPT = REPO / "tests" / "slurm" / "start-slurm.sh"
CI_PROFILE = REPO / "tests" / "slurm" / "profile"
#: A plugin status line for a failed job, e.g. "SLURM-job '13' failed, SLURM status is: 'FAILED'".
FAILED_JOB_RE = re.compile(r"SLURM-job '(\d+)' failed, SLURM status is: '(\w+)'")


@dataclass(frozen=True)
class SlurmRun:
    """The outcome of one ``snakemake --executor slurm`` run."""

    returncode: int
    output: str  # stdout and stderr, interleaved
    run_id: str  # the SLURM job name the plugin gave every job of this run

    def sacct(self, field: str = "State") -> dict[str, str]:
        """SLURM's own record of this run's jobs: job id -> ``field`` (State: COMPLETED, FAILED...)."""
        out = subprocess.run(
            ["sacct", "-X", "-n", "-P", "--starttime", "2020-01-01", "--name", self.run_id, "-o", f"JobID,{field}"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        return dict(line.split("|", 1) for line in out.splitlines() if line)


def _daemon_logs() -> str:
    return subprocess.run(["bash", str(START_SCRIPT), "logs"], capture_output=True, text=True).stdout


def _cancel_jobs(name_prefix: str) -> None:
    """scancel every job of ours still queued or running (a run killed before it could cancel them)."""
    out = subprocess.run(["squeue", "-h", "-o", "%A %j"], capture_output=True, text=True).stdout
    ids = [
        job_id for job_id, _, name in (line.partition(" ") for line in out.splitlines()) if name.startswith(name_prefix)
    ]
    if ids:
        subprocess.run(["scancel", *ids], check=False)


def run_snakemake_on_slurm(workdir: Path, *args: str, timeout_s: int = 240, profile: Path = CI_PROFILE) -> SlurmRun:
    """Run snakemake with the CI SLURM profile in ``workdir``; cancel leftover jobs afterwards.

    ``timeout -s INT``: on SIGINT snakemake scancels its jobs and exits, whereas SIGTERM waits for
    running jobs (and a status-polling hang would never end). ``-k`` is the last resort.
    """
    prefix = f"pepr_ci_{uuid.uuid4().hex[:12]}"
    cmd = [
        "timeout",
        "-s",
        "INT",
        "-k",
        "30",
        str(timeout_s),
        sys.executable,
        "-m",
        "snakemake",
        "--profile",
        str(profile),
        "--slurm-jobname-prefix",
        prefix,
        *args,
    ]
    try:
        proc = subprocess.run(
            cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout_s + 60
        )
    finally:
        # what held the cluster's 2 slots at the end: a timeout with another session's jobs in
        # the queue (names not starting with this run's prefix) is contention, not a pepr bug
        queue = subprocess.run(["squeue", "-o", "%A %j %T %M %R"], capture_output=True, text=True).stdout
        _cancel_jobs(prefix)
    assert proc.returncode not in (124, 137), (
        f"snakemake on SLURM timed out after {timeout_s}s:\n{proc.stdout[-6000:]}\n"
        f"SLURM queue at the timeout (this run's jobs are named {prefix}*):\n{queue}\n{_daemon_logs()}"
    )
    match = re.search(rf"SLURM run ID: ({prefix}_[0-9a-f-]+)", proc.stdout)
    assert match, f"the slurm executor did not start:\n{proc.stdout[-6000:]}"
    return SlurmRun(proc.returncode, proc.stdout, match.group(1))


def slurm_logs(workdir: Path, rule: str) -> list[Path]:
    """The plugin's per-job logs of one rule: .snakemake/slurm_logs/rule_<rule>/<wildcards>/<jobid>.log"""
    return sorted((workdir / ".snakemake" / "slurm_logs" / f"rule_{rule}").rglob("*.log"))


TOY_SNAKEFILE = """\
rule all:
    input:
        expand("out/{name}.txt", name=["cpu", "broken"]),
        "out/gpu.txt",

rule write_cpu:
    output: "out/{name}.txt"
    wildcard_constraints: name="cpu"
    resources: runtime=5, mem_mb=200
    shell: "echo slurm_job=$SLURM_JOB_ID > {output}"

# the CI cluster's fake GRES: SLURM schedules the GPU and sets CUDA_VISIBLE_DEVICES
rule write_gpu:
    output: "out/gpu.txt"
    resources: runtime=5, mem_mb=200, gpu=1, gpu_model="fake"
    shell: "echo cuda_visible_devices=$CUDA_VISIBLE_DEVICES > {output}"

rule write_broken:
    output: "out/{name}.txt"
    wildcard_constraints: name="broken"
    resources: runtime=5, mem_mb=200
    shell: "echo 'deliberate failure of write_broken' >&2; exit 3"
"""


def test_toy_workflow_runs_jobs_on_slurm_and_reports_the_failed_one(slurm_cluster, tmp_path):
    """Cluster + plugin sanity check: 3 jobs (CPU, fake GPU, failing), nothing from pepr."""
    (tmp_path / "Snakefile").write_text(TOY_SNAKEFILE)

    # all 3 submitted at once: SLURM queues the third until a CPU frees (the plugin's polls get
    # sparser while nothing finishes, so waves of submissions from snakemake cost more)
    run = run_snakemake_on_slurm(tmp_path, "--jobs", "3")

    assert run.returncode != 0, run.output
    failed = FAILED_JOB_RE.findall(run.output)
    assert len(failed) == 1 and failed[0][1] == "FAILED", run.output
    failed_id = failed[0][0]
    assert "Error in rule write_broken" in run.output, run.output
    # SLURM itself agrees: three jobs of this run, only the broken one failed
    states = run.sacct()
    assert len(states) == 3 and states[failed_id] == "FAILED", states
    assert sorted(states.values()) == ["COMPLETED", "COMPLETED", "FAILED"], states
    # the other jobs ran inside SLURM and kept their outputs; the failed one left none
    assert re.fullmatch(r"slurm_job=\d+\n", (tmp_path / "out" / "cpu.txt").read_text())
    assert re.fullmatch(r"cuda_visible_devices=\d+\n", (tmp_path / "out" / "gpu.txt").read_text())
    assert not (tmp_path / "out" / "broken.txt").exists()
    # SLURM logs: the failed job's holds its stderr; successful ones are kept by the profile
    broken_logs = slurm_logs(tmp_path, "write_broken")
    assert [p.stem for p in broken_logs] == [failed_id]
    assert "deliberate failure of write_broken" in broken_logs[0].read_text()
    assert len(slurm_logs(tmp_path, "write_cpu")) == 1 and len(slurm_logs(tmp_path, "write_gpu")) == 1


# ------------------------------------------------------------------------------------------------
# The pepr workflow itself on SLURM
# ------------------------------------------------------------------------------------------------

#: A cut-down .test/config.yaml (same models, tiny synthetic data, 1 epoch): three train_model jobs.
#: * mobilenetv3_small_050 on synthetic data: trains -> status "ok".
#: * convnext_atto on synthetic data: its job SUCCEEDS, with a metrics.json of status "failed"
#:   (the model cannot run at 28 px: a result of the sweep, not a job failure).
#: * mobilenetv3_small_050 on scans.npz: the job really FAILS. The file passes the workflow's
#:   up-front validation (it reads array headers and labels only, to stay fast on 224 px data),
#:   but its pixels contain NaN, which training finds when it loads the images and raises
#:   PeprInputError: a corrupt data file, the way a real sweep meets one.
#: The CI profile asks one GPU per training job (like profiles/slurm on a real cluster) from the CI
#: cluster's fake GRES, and scales CPUs/memory/runtime down to the node.
SWEEP_CONFIG = """\
models: [mobilenetv3_small_050, convnext_atto]
datasets: ["synthetic:n_train=64,n_val=32,n_test=32", "npz:scans.npz"]
inits: [scratch]
fractions: [1.0]
seeds: [0]
epochs: 1
batch_size: 32
device: auto
exclude:
  - {model: convnext_atto, dataset: scans}
"""
SYNTHETIC = "synthetic-n_test32-n_train64-n_val32"  # pepr.datasets.core.dataset_name of the synthetic spec
OK_CELL = f"results/runs/{SYNTHETIC}/scratch/1.0/mobilenetv3_small_050/seed0"
UNFIT_CELL = f"results/runs/{SYNTHETIC}/scratch/1.0/convnext_atto/seed0"
SCANS_CELL = "results/runs/scans/scratch/1.0/mobilenetv3_small_050/seed0"


def write_scans(path: Path, corrupt: bool) -> None:
    """A small 2-class npz in the MedMNIST layout (float pixels); ``corrupt`` puts NaN in them."""
    np = pytest.importorskip("numpy", reason="numpy not installed: make install")
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 40), ("val", 20), ("test", 20)):
        labels = np.arange(n) % 2
        images = rng.random((n, 28, 28), dtype=np.float32) * 0.5 + labels[:, None, None] * 0.5
        if corrupt:
            images[:, 3, 3] = np.nan
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = labels.reshape(-1, 1).astype(np.uint8)
    np.savez(path, **arrays)


def test_sweep_on_slurm_reports_the_failed_job_and_resumes_after_the_fix(slurm_cluster, tmp_path):
    pd = pytest.importorskip("pandas", reason="pandas not installed: make install")
    (tmp_path / "config.yaml").write_text(SWEEP_CONFIG)
    write_scans(tmp_path / "scans.npz", corrupt=True)
    args = ("--snakefile", str(REPO / "Snakefile"), "--configfile", "config.yaml", "--jobs", "3", "results/pepr.csv")

    # 1. three training jobs on SLURM; the one on the corrupt file fails
    first = run_snakemake_on_slurm(tmp_path, *args, timeout_s=420)

    assert first.returncode != 0, first.output
    failed = FAILED_JOB_RE.findall(first.output)
    assert len(failed) == 1 and failed[0][1] == "FAILED", first.output
    failed_id = failed[0][0]
    error_block = first.output[first.output.index("Error in rule train_model") :]
    assert f"external_jobid: {failed_id}" in error_block and SCANS_CELL in error_block, first.output
    states = first.sacct()
    assert sorted(states.values()) == ["COMPLETED", "COMPLETED", "FAILED"], states
    assert states[failed_id] == "FAILED"
    # every training job got its GPU from SLURM (profile gpu: 1, gpu_model: fake -> --gpus=fake:1)
    assert all("gres/gpu=1" in tres for tres in first.sacct("AllocTRES").values()), first.sacct("AllocTRES")
    # the failed job has its SLURM log; the rule's log (train_model's `shell:` sends pepr train's
    # output there) says why; the other jobs' outputs are kept
    scans_logs = slurm_logs(tmp_path, "train_model")
    failed_log = [p for p in scans_logs if p.stem == failed_id]
    assert len(failed_log) == 1 and len(scans_logs) == 3, scans_logs
    rule_log = tmp_path / SCANS_CELL.replace("results/runs/", "results/logs/train_model/").replace(
        "/seed0", "/seed0.log"
    )
    assert "NaN or infinite values" in rule_log.read_text() + failed_log[0].read_text()
    assert not (tmp_path / SCANS_CELL / "metrics.json").exists()
    assert not (tmp_path / "results" / "runs.csv").exists()
    kept = {cell: (tmp_path / cell / "metrics.json").stat().st_mtime_ns for cell in (OK_CELL, UNFIT_CELL)}

    # 2. fix the data file and rerun the same command: only the failed cell goes to SLURM again
    write_scans(tmp_path / "scans.npz", corrupt=False)
    second = run_snakemake_on_slurm(tmp_path, *args, timeout_s=420)

    assert second.returncode == 0, second.output
    assert list(second.sacct().values()) == ["COMPLETED"], second.output
    assert {cell: (tmp_path / cell / "metrics.json").stat().st_mtime_ns for cell in kept} == kept

    runs = pd.read_csv(tmp_path / "results" / "runs.csv").set_index(["dataset", "model"]).sort_index()
    assert list(runs.index) == [
        ("scans", "mobilenetv3_small_050"),
        (SYNTHETIC, "convnext_atto"),
        (SYNTHETIC, "mobilenetv3_small_050"),
    ]
    assert (runs["init"] == "scratch").all() and (runs["fraction"] == 1.0).all() and (runs["seed"] == 0).all()
    ok = runs[runs["status"] == "ok"]
    assert list(ok.index.get_level_values("model")) == ["mobilenetv3_small_050"] * 2
    assert ok["test_accuracy"].between(0, 1).all() and (ok["energy_kwh"] > 0).all()
    assert (ok["train_time_s"] > 0).all() and (ok["epochs"] == 1).all()
    # the fake GPU is only a scheduling token: training fell back to the CPU
    assert (ok["device"] == "cpu").all()
    unfit = runs.loc[(SYNTHETIC, "convnext_atto")]
    assert unfit["status"] == "failed" and "cannot run" in unfit["reason"]
    scored = pd.read_csv(tmp_path / "results" / "pepr.csv")
    assert len(scored) == 3
    assert scored.loc[scored["status"] == "ok", "pepr_energy_kwh"].notna().all()
    assert scored.loc[scored["status"] == "failed", "pepr_energy_kwh"].isna().all()


# ------------------------------------------------------------------------------------------------
# Packed allocations (profiles/slurm: K training cells per allocation, one after another)
# ------------------------------------------------------------------------------------------------

USER_PROFILE = REPO / "profiles" / "slurm"
#: 8 cells of one tiny model (seeds 0-7), 1 epoch each: two allocations of K=4 cells.
PACKED_CONFIG = """\
models: [mobilenetv3_small_050]
datasets: ["synthetic:n_train=64,n_val=32,n_test=32"]
inits: [scratch]
fractions: [1.0]
seeds: [0, 1, 2, 3, 4, 5, 6, 7]
epochs: 1
batch_size: 32
device: auto
"""
#: The shipped user profile, with only its cluster-specific values ("EDIT" lines) replaced for the
#: CI node: partition/account, the fake GPU type, 1 CPU per training job (and so `cores: 1`, which
#: the profile requires to equal the training threads), short runtimes, 1 s status polls.
PACKED_OVERRIDES = (
    "--default-resources",
    "slurm_partition=debug",
    "slurm_account=root",
    "runtime=10",
    "mem_mb=2000",
    "--set-resources",
    "train_model:gpu=1",
    "train_model:gpu_model=fake",
    "train_model:mem_mb=1500",
    "train_model:runtime=5",
    "--set-threads",
    "train_model=1",
    "pretrain_source=1",
    "--cores",
    "1",
    "--jobs",
    "2",
    "--latency-wait",
    "10",
    "--slurm-init-seconds-before-status-checks",
    "1",
)
PACKED_CELL_RE = re.compile(rf"results/runs/{SYNTHETIC}/scratch/1\.0/mobilenetv3_small_050/seed(\d)/metrics\.json")


def _group_logs(workdir: Path) -> dict[str, str]:
    """SLURM job id -> text of the plugin's log of each packed allocation (group job)."""
    logs = (workdir / ".snakemake" / "slurm_logs").glob("group_train*/*.log")
    return {p.stem: p.read_text(errors="replace") for p in logs}


def _cells_started(log: str) -> int:
    """How many cells an allocation has started: the job-side Snakemake prints one 'localrule
    train_model:' block per cell it runs (through srun)."""
    return log.count("localrule train_model:")


def _sweep_with_one_intervention(
    cmd: list[str], cwd: Path, prefix: str, act, *, within_s: float, wait_s: float, poll_s: float
) -> tuple[int, str, object, str]:
    """Run a sweep on SLURM (its output read in the background) and call ``act()`` every
    ``poll_s`` until it returns something other than None (it intervened: a scancel, a requeue),
    the sweep ends or ``within_s`` pass; then wait up to ``wait_s`` for the sweep to end. This
    run's leftover jobs (``prefix``) are cancelled. Returns (exit code, output, what ``act``
    returned or None, the queue at the end)."""
    acted = None
    with subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        chunks: list[str] = []
        reader = threading.Thread(target=lambda: chunks.extend(proc.stdout), daemon=True)
        reader.start()
        try:
            deadline = time.monotonic() + within_s
            while acted is None and proc.poll() is None and time.monotonic() < deadline:
                acted = act()
                if acted is None:
                    time.sleep(poll_s)
            proc.wait(timeout=wait_s)
        finally:
            queue = subprocess.run(["squeue", "-o", "%A %j %T %M %R"], capture_output=True, text=True).stdout
            _cancel_jobs(prefix)
        reader.join(timeout=30)
    return proc.returncode, "".join(chunks), acted, queue


def test_packed_sweep_runs_k_cells_per_allocation_and_a_killed_allocation_loses_only_unfinished_cells(
    slurm_cluster, tmp_path
):
    """profiles/slurm packs K=4 cells into one allocation with ONE GPU, run one after another.

    Run 1: two allocations of 4 cells start; as soon as one of them has finished a cell and started
    the next, it is scancel'ed. The other allocation completes; the cancelled one keeps the cells
    it finished (keep-incomplete). Run 2, the same command: only the unfinished cells are submitted
    (one allocation), the finished cells' metrics.json are untouched, and the sweep completes.
    """
    pd = pytest.importorskip("pandas", reason="pandas not installed: make install")
    (tmp_path / "config.yaml").write_text(PACKED_CONFIG)
    all_seeds = set(range(8))
    metrics = {
        seed: tmp_path / f"results/runs/{SYNTHETIC}/scratch/1.0/mobilenetv3_small_050/seed{seed}/metrics.json"
        for seed in all_seeds
    }
    args = (
        "--snakefile",
        str(REPO / "Snakefile"),
        "--configfile",
        "config.yaml",
        *PACKED_OVERRIDES,
        "results/runs.csv",
    )
    prefix = f"pepr_ci_{uuid.uuid4().hex[:12]}"
    cmd = [
        "timeout",
        "-s",
        "INT",
        "-k",
        "30",
        "300",
        sys.executable,
        "-m",
        "snakemake",
        "--profile",
        str(USER_PROFILE),
        "--slurm-jobname-prefix",
        prefix,
        *args,
    ]

    # 1. start the sweep; cancel one allocation mid-way (one cell done, the next one in flight)
    def cancel_an_allocation_in_its_second_cell() -> str | None:
        for job_id, log in _group_logs(tmp_path).items():
            if _cells_started(log) >= 2:
                subprocess.run(["scancel", job_id], check=True, timeout=30)
                return job_id
        return None

    returncode, output, killed, _ = _sweep_with_one_intervention(
        cmd, tmp_path, prefix, cancel_an_allocation_in_its_second_cell, within_s=280, wait_s=360, poll_s=0.3
    )
    assert killed is not None, f"no allocation reached its second cell:\n{output[-6000:]}"
    assert returncode not in (0, 124, 137), output[-6000:]
    match = re.search(rf"SLURM run ID: ({prefix}_[0-9a-f-]+)", output)
    assert match, output[-6000:]
    first = SlurmRun(returncode, output, match.group(1))

    # two allocations of 4 cells, each with ONE GPU and one CPU and 4 x the cell runtime (5 min)
    states = first.sacct()
    # sacct says "CANCELLED by <uid>" (which plugin 2.8.0 takes for "running": hence the profile's
    # slurm-status-command squeue, which says "CANCELLED"; this run ending at all tests that)
    assert len(states) == 2 and states[killed].startswith("CANCELLED"), states
    assert [s for j, s in states.items() if j != killed] == ["COMPLETED"], states
    for job_id, tres in first.sacct("AllocTRES").items():
        assert "gres/gpu=1" in tres and "cpu=1," in tres, (job_id, tres)
    assert set(first.sacct("Timelimit").values()) == {"00:20:00"}, first.sacct("Timelimit")
    # the completed allocation trained its 4 cells one after another (the job-side snakemake runs
    # --jobs 1): 4 srun'ed cells in its log
    completed_log = _group_logs(tmp_path)[next(j for j in states if j != killed)]
    assert _cells_started(completed_log) == 4, completed_log[-4000:]
    done = {seed for seed, path in metrics.items() if path.exists()}
    # the completed allocation's 4 cells + at least the one the cancelled allocation finished
    assert 5 <= len(done) <= 7, (done, output[-6000:])
    kept = {seed: metrics[seed].stat().st_mtime_ns for seed in done}

    # 2. the same command again: only the unfinished cells go to SLURM, in one allocation
    second = run_snakemake_on_slurm(tmp_path, *args, timeout_s=300, profile=USER_PROFILE)

    assert second.returncode == 0, second.output[-6000:]
    assert list(second.sacct().values()) == ["COMPLETED"], second.output[-6000:]
    # (only "output:" lines: aggregate_runs' "input:" line names every cell)
    resubmitted = {
        int(seed)
        for line in second.output.splitlines()
        if line.strip().startswith("output:")
        for seed in PACKED_CELL_RE.findall(line)
    }
    assert resubmitted == all_seeds - done, (resubmitted, done)
    assert {seed: metrics[seed].stat().st_mtime_ns for seed in done} == kept
    assert all(path.exists() for path in metrics.values())
    runs = pd.read_csv(tmp_path / "results" / "runs.csv")
    assert sorted(runs["seed"]) == sorted(all_seeds) and (runs["status"] == "ok").all(), runs


# ------------------------------------------------------------------------------------------------
# Job arrays (--slurm-array-jobs): an alternative to packing, never combined with it
# ------------------------------------------------------------------------------------------------

#: 4 cells (seeds 0-3) of the packed sweep's tiny model.
ARRAY_CONFIG = PACKED_CONFIG.replace("seeds: [0, 1, 2, 3, 4, 5, 6, 7]", "seeds: [0, 1, 2, 3]")


def test_array_sweep_submits_the_cells_as_one_slurm_array(slurm_cluster, tmp_path):
    """One job per cell (the CI profile) + --slurm-array-jobs train_model: the 4 training cells go
    to SLURM as ONE array (one sbatch, tasks JOBID_1..JOBID_4), each with its own GPU."""
    pd = pytest.importorskip("pandas", reason="pandas not installed: make install")
    (tmp_path / "config.yaml").write_text(ARRAY_CONFIG)
    run = run_snakemake_on_slurm(
        tmp_path,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--configfile",
        "config.yaml",
        "--jobs",
        "4",
        "--slurm-array-jobs",
        "train_model",
        "results/runs.csv",
        timeout_s=300,
    )

    assert run.returncode == 0, run.output[-6000:]
    states = run.sacct()
    array_ids = {job_id.split("_")[0] for job_id in states}
    assert len(states) == 4 and len(array_ids) == 1, states
    assert sorted(job_id.split("_")[1] for job_id in states) == ["1", "2", "3", "4"], states
    assert set(states.values()) == {"COMPLETED"}, states
    assert all("gres/gpu=1" in tres for tres in run.sacct("AllocTRES").values())
    runs = pd.read_csv(tmp_path / "results" / "runs.csv")
    assert sorted(runs["seed"]) == [0, 1, 2, 3] and (runs["status"] == "ok").all(), runs


def test_arrays_and_packing_do_not_combine_packing_wins(slurm_cluster, tmp_path):
    """profiles/slurm (packing, K=4) + --slurm-array-jobs train_model: the plugin submits group
    jobs as plain allocations (silently: it warns only for --slurm-array-jobs all, as a group job's
    name is the group's), so the 4 cells run packed in ONE allocation, not as an array."""
    (tmp_path / "config.yaml").write_text(ARRAY_CONFIG)
    run = run_snakemake_on_slurm(
        tmp_path,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--configfile",
        "config.yaml",
        *PACKED_OVERRIDES,
        "--slurm-array-jobs",
        "train_model",
        "results/runs.csv",
        timeout_s=300,
        profile=USER_PROFILE,
    )

    assert run.returncode == 0, run.output[-6000:]
    states = run.sacct()
    assert list(states.values()) == ["COMPLETED"] and "_" not in next(iter(states)), states
    assert all(
        (tmp_path / f"results/runs/{SYNTHETIC}/scratch/1.0/mobilenetv3_small_050/seed{seed}/metrics.json").exists()
        for seed in range(4)
    )


# ------------------------------------------------------------------------------------------------
# A requeued packed allocation (issue 17 case 3)
# ------------------------------------------------------------------------------------------------

#: 4 cells (seeds 0-3) of the tiny model on a tiny npz file: ONE allocation of profiles/slurm's K=4.
REQUEUE_CONFIG = """\
models: [mobilenetv3_small_050]
datasets: ["npz:scans.npz"]
inits: [scratch]
fractions: [1.0]
seeds: [0, 1, 2, 3]
epochs: 1
batch_size: 32
device: auto
"""
REQUEUE_CELL = "scans/scratch/1.0/mobilenetv3_small_050/seed{seed}"


def _start_requeued_now(job_id: str, wait_s: float = 60) -> None:
    """Let a requeued job start as soon as it is pending again instead of after SLURM's requeue
    delay (its BeginTime ~2 min ahead): `scontrol update StartTime=now`, retried until the job is
    back in the queue. Best effort: without it the test only waits longer."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        state = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%T %r"], capture_output=True, text=True, timeout=30
        ).stdout
        if state.startswith("PENDING"):
            subprocess.run(
                ["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True, text=True, timeout=30
            )
            return
        time.sleep(0.5)


def test_requeued_packed_allocation_restores_the_cell_it_had_finished(slurm_cluster, tmp_path):
    """profiles/slurm (K=4 cells per allocation) with its optional `slurm-requeue: true`: the moment
    the allocation's first cell has written its metrics.json, `scontrol requeue` the allocation.
    SLURM kills it and starts it again; the job side runs its Snakemake with --force over the whole
    group, which deletes the finished cell's outputs first. pepr train restores that cell from its
    previous/ instead of training it again (same metrics.json bytes, "restored the finished result"
    and no epoch line in its rule log), the other cells are trained, and the sweep completes."""
    pd = pytest.importorskip("pandas", reason="pandas not installed: make install")
    (tmp_path / "config.yaml").write_text(REQUEUE_CONFIG)
    write_scans(tmp_path / "scans.npz", corrupt=False)
    seeds = range(4)
    metrics = {seed: tmp_path / "results" / "runs" / REQUEUE_CELL.format(seed=seed) / "metrics.json" for seed in seeds}
    rule_logs = {
        seed: tmp_path / "results" / "logs" / "train_model" / (REQUEUE_CELL.format(seed=seed) + ".log")
        for seed in seeds
    }
    prefix = f"pepr_ci_{uuid.uuid4().hex[:12]}"
    # --slurm-requeue = the profile's optional `slurm-requeue: true` (sbatch --requeue), as a user who
    # wants requeues sets it; this cluster's JobRequeue=1 (SLURM's default) would allow
    # `scontrol requeue` without it. SLURM holds a requeued job back ~2 min (its StartTime);
    # _start_requeued_now lets it start at once, as an admin's `scontrol update` would.
    cmd = [
        "timeout",
        "-s",
        "INT",
        "-k",
        "30",
        "600",
        sys.executable,
        "-m",
        "snakemake",
        "--profile",
        str(USER_PROFILE),
        "--slurm-jobname-prefix",
        prefix,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--configfile",
        "config.yaml",
        *PACKED_OVERRIDES,
        "--slurm-requeue",
        "results/runs.csv",
    ]

    def requeue_once_a_cell_has_finished() -> tuple[str, int, bytes, str] | None:
        """(allocation, seed of the finished cell, its metrics.json bytes, its rule log) once requeued."""
        finished = [seed for seed, path in metrics.items() if path.exists()]
        allocations = list(_group_logs(tmp_path))
        if not (finished and allocations):
            return None
        assert len(allocations) == 1 and len(finished) < len(seeds), (allocations, finished)
        (seed,), (allocation,) = finished, allocations
        kept = (allocation, seed, metrics[seed].read_bytes(), rule_logs[seed].read_text())
        done = subprocess.run(["scontrol", "requeue", allocation], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, f"scontrol requeue {allocation}: {done.stderr}"
        _start_requeued_now(allocation)
        return kept

    returncode, output, acted, queue = _sweep_with_one_intervention(
        cmd, tmp_path, prefix, requeue_once_a_cell_has_finished, within_s=560, wait_s=620, poll_s=0.1
    )
    assert acted is not None, f"no cell finished:\n{output[-6000:]}\nqueue:\n{queue}\n{_daemon_logs()}"
    requeued, first_seed, first_bytes, first_log = acted
    assert returncode not in (124, 137), (
        f"timed out:\n{output[-6000:]}\nqueue (this run's jobs are {prefix}*):\n{queue}\n{_daemon_logs()}"
    )
    assert returncode == 0, output[-6000:]
    assert first_log.count("epoch 1/1") == 1, first_log

    # SLURM's record: the allocation ran twice (its first run REQUEUED), the second completed
    history = subprocess.run(
        ["sacct", "-X", "-D", "-n", "-P", "-j", requeued, "-o", "JobID,State"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert [line.split("|")[1] for line in history.splitlines()] == ["REQUEUED", "COMPLETED"], history
    group_log = _group_logs(tmp_path)[requeued]

    # the finished cell was restored by the requeued allocation, not trained again
    after = rule_logs[first_seed].read_text()
    assert "restored the finished result" in after and "epoch 1/1" not in after, (after, group_log[-4000:])
    assert metrics[first_seed].read_bytes() == first_bytes
    # every cell finished
    assert all(path.exists() for path in metrics.values())
    runs = pd.read_csv(tmp_path / "results" / "runs.csv")
    assert sorted(runs["seed"]) == list(seeds) and (runs["status"] == "ok").all(), runs


# ------------------------------------------------------------------------------------------------
# An adaptive sweep (config `adaptive:`) packed on SLURM: one rung, the checkpoint in between
# ------------------------------------------------------------------------------------------------

#: 3 tiny models, 2 epochs, one rung at epoch 1 keeping ceil(0.34 x 3) = 2: the rung jobs and then
#: the train_model jobs (2 continue, 1 records its stop) each fit one allocation of K=4.
ADAPTIVE_MODELS = ["mobilenetv3_small_050", "regnetx_002", "mobilenetv2_050"]
ADAPTIVE_CONFIG = f"""\
models: [{", ".join(ADAPTIVE_MODELS)}]
datasets: ["synthetic:n_train=64,n_val=32,n_test=32"]
inits: [scratch]
fractions: [1.0]
seeds: [0]
epochs: 2
batch_size: 32
device: auto
adaptive: {{rungs: [1], keep: 0.34, min_keep: 1}}
"""
ADAPTIVE_OVERRIDES = (
    *PACKED_OVERRIDES[: PACKED_OVERRIDES.index("--set-threads")],
    "train_to_rung:gpu=1",
    "train_to_rung:gpu_model=fake",
    "train_to_rung:mem_mb=1500",
    "train_to_rung:runtime=5",
    "--set-threads",
    "train_model=1",
    "pretrain_source=1",
    "train_to_rung=1",
    *PACKED_OVERRIDES[PACKED_OVERRIDES.index("--cores") :],
)


def test_adaptive_sweep_packs_its_rung_jobs_and_finishes_exactly_the_kept_cells(slurm_cluster, tmp_path):
    """profiles/slurm on an adaptive sweep: the 3 rung jobs run packed in one allocation, the
    checkpoint select_rung decides (locally) in the same run, exactly the kept cells train on
    from their checkpoints, the stopped one is recorded without training, and a rerun plans nothing."""
    import json

    pd = pytest.importorskip("pandas", reason="pandas not installed: make install")
    (tmp_path / "config.yaml").write_text(ADAPTIVE_CONFIG)
    args = ("--snakefile", str(REPO / "Snakefile"), "--configfile", "config.yaml", *ADAPTIVE_OVERRIDES)
    run = run_snakemake_on_slurm(tmp_path, *args, "results/runs.csv", timeout_s=300, profile=USER_PROFILE)

    assert run.returncode == 0, run.output[-6000:]
    states = run.sacct()
    assert set(states.values()) == {"COMPLETED"}, states
    assert all("gres/gpu=1" in tres for tres in run.sacct("AllocTRES").values())
    # profiles/slurm packs the rung jobs in group "rung", the train_model jobs in group "train"
    rung_logs = [
        p.read_text(errors="replace") for p in (tmp_path / ".snakemake" / "slurm_logs").glob("group_rung*/*.log")
    ]
    assert len(rung_logs) == 1 and rung_logs[0].count("localrule train_to_rung:") == 3, rung_logs
    train_logs = list(_group_logs(tmp_path).values())
    assert len(train_logs) == 1 and _cells_started(train_logs[0]) == 3, train_logs
    assert len(states) == 2, states  # two allocations in all: the rung's, then the cells'
    assert "select_rung" in run.output and not any("select_rung" in log for log in rung_logs + train_logs)

    decision = json.loads((tmp_path / f"results/adaptive/{SYNTHETIC}/scratch/1.0/rung1.json").read_text())
    assert len(decision["kept"]) == 2 and len(decision["stopped"]) == 1 and decision["failed"] == [], decision
    runs = pd.read_csv(tmp_path / "results" / "runs.csv").set_index("model")
    assert sorted(runs.index) == sorted(ADAPTIVE_MODELS)
    for model in decision["kept"]:
        assert runs.loc[model, "status"] == "ok" and runs.loc[model, "segments"] == 2, runs
        history = pd.read_csv(tmp_path / f"results/runs/{SYNTHETIC}/scratch/1.0/{model}/seed0/history.csv")
        assert history["epoch"].tolist() == [1, 2]  # epoch 1 came from the rung, not trained again
    stopped = decision["stopped"][0]
    assert runs.loc[stopped, "status"] == "stopped" and runs.loc[stopped, "rung"] == 1, runs

    dry = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", str(USER_PROFILE), *args, "-n", "results/runs.csv"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:] + dry.stderr[-3000:]
