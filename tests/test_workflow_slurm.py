"""Snakemake on a REAL single-node SLURM cluster (slurmctld + slurmd + munge + slurmdbd).

The module fixture starts the cluster with ``tests/slurm/start-slurm.sh`` (installs the Debian
packages when missing, so it needs root and apt) and stops it afterwards; every snakemake run goes
through ``--executor slurm`` (snakemake-executor-plugin-slurm) with the CI profile
``tests/slurm/profile``, i.e. real ``sbatch``/``srun``/``sacct``.

The tests skip only when the cluster cannot be set up on this machine: not root, or the Debian
packages are missing and cannot be installed. Any other start-up problem is a failure.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
START_SCRIPT = REPO / "tests" / "slurm" / "start-slurm.sh"
CI_PROFILE = REPO / "tests" / "slurm" / "profile"
#: start-slurm.sh's exit code for "the Debian packages are missing and cannot be installed".
EXIT_NO_PACKAGES = 75
#: Hard limit for one start-slurm.sh call (a fresh apt install takes ~20 s).
START_TIMEOUT_S = 600
#: A plugin status line for a failed job, e.g. "SLURM-job '13' failed, SLURM status is: 'FAILED'".
FAILED_JOB_RE = re.compile(r"SLURM-job '(\d+)' failed, SLURM status is: '(\w+)'")


@dataclass(frozen=True)
class SlurmRun:
    """The outcome of one ``snakemake --executor slurm`` run."""

    returncode: int
    output: str  # stdout and stderr, interleaved
    run_id: str  # the SLURM job name the plugin gave every job of this run

    def sacct_states(self) -> dict[str, str]:
        """SLURM's own record of this run's jobs: job id -> state (e.g. COMPLETED, FAILED)."""
        out = subprocess.run(
            ["sacct", "-X", "-n", "-P", "--name", self.run_id, "-o", "JobID,State"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout
        return dict(line.split("|", 1) for line in out.split())


def _slurmctld_running() -> bool:
    """Whether a slurmctld started from /run/slurmctld.pid (start-slurm.sh's pid file) is alive."""
    try:
        pid = Path("/run/slurmctld.pid").read_text().strip()
        return Path(f"/proc/{pid}/comm").read_text().strip() == "slurmctld"
    except (OSError, ValueError):
        return False


def _daemon_logs() -> str:
    return subprocess.run(["bash", str(START_SCRIPT), "logs"], capture_output=True, text=True).stdout


def _cancel_jobs(name_prefix: str) -> None:
    """scancel every job of ours still queued or running (a run killed before it could cancel them)."""
    out = subprocess.run(["squeue", "-h", "-o", "%A %j"], capture_output=True, text=True).stdout
    ids = [job_id for job_id, _, name in (line.partition(" ") for line in out.splitlines())
           if name.startswith(name_prefix)]
    if ids:
        subprocess.run(["scancel", *ids], check=False)


@pytest.fixture(scope="module")
def slurm_cluster() -> Iterator[None]:
    """A running single-node SLURM cluster; stopped again afterwards unless it was already up."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("SLURM tests need root on Linux: tests/slurm/start-slurm.sh installs Debian "
                    "packages and starts slurmctld/slurmd/munged/slurmdbd")
    was_running = _slurmctld_running()
    start = subprocess.run(["bash", str(START_SCRIPT), "start"], capture_output=True, text=True,
                           timeout=START_TIMEOUT_S)
    if start.returncode == EXIT_NO_PACKAGES:
        pytest.skip("cannot install the SLURM Debian packages (munge, slurmctld, slurmd, slurm-client, "
                    f"slurmdbd, mariadb-server) on this machine:\n{start.stderr[-2000:]}")
    try:
        if start.returncode != 0:
            pytest.fail(f"start-slurm.sh failed (rc {start.returncode}):\n{start.stdout}\n"
                        f"{start.stderr[-4000:]}\n{_daemon_logs()}")
        yield
    finally:
        # Leave a developer's already running cluster alone; CI's own cluster is stopped.
        if not was_running:
            subprocess.run(["bash", str(START_SCRIPT), "stop"], capture_output=True, text=True,
                           timeout=120)


def run_snakemake_on_slurm(workdir: Path, *args: str, timeout_s: int = 240) -> SlurmRun:
    """Run snakemake with the CI SLURM profile in ``workdir``; cancel leftover jobs afterwards.

    ``timeout -s INT``: on SIGINT snakemake scancels its jobs and exits, whereas SIGTERM waits for
    running jobs (and a status-polling hang would never end). ``-k`` is the last resort.
    """
    prefix = f"pepr_ci_{uuid.uuid4().hex[:12]}"
    cmd = ["timeout", "-s", "INT", "-k", "30", str(timeout_s),
           sys.executable, "-m", "snakemake", "--profile", str(CI_PROFILE),
           "--slurm-jobname-prefix", prefix, *args]
    try:
        proc = subprocess.run(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout_s + 60)
    finally:
        _cancel_jobs(prefix)
    assert proc.returncode not in (124, 137), (
        f"snakemake on SLURM timed out after {timeout_s}s:\n{proc.stdout[-6000:]}\n{_daemon_logs()}")
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
    states = run.sacct_states()
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
