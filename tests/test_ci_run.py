""".ci/run, CI's entry point: it sets up what CI's test tiers need (Chromium, the SLURM test cluster)
before calling the README's test command, requires those tiers, and stops a cluster it started.

Run here on a copy of the script with stand-ins for every command it calls (``make``,
``start-slurm.sh``, ``id``, ``chromium``, ``slurmctld``), which record their calls: nothing is
installed or started, and it runs as any user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: The real tools .ci/run uses besides the stand-ins (nothing else is on its PATH: no apt-get).
TOOLS = ("bash", "flock", "touch", "rm", "dirname", "cat", "tr")

FAKE_START_SLURM = """#!/usr/bin/env bash
echo "start-slurm $1" >> "$CI_LOG"
case "$1" in
  running) exit "${FAKE_RUNNING:-1}" ;;
  start) exit "${FAKE_START_RC:-0}" ;;
esac
"""
FAKE_MAKE = """#!/usr/bin/env bash
echo "make $* slurm=${PEPR_REQUIRE_SLURM:-} chromium=${PEPR_REQUIRE_CHROMIUM:-}" >> "$CI_LOG"
exit "${FAKE_MAKE_RC:-0}"
"""


def _executable(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def ci(tmp_path):
    """A checkout holding only .ci/run and a stand-in start-slurm.sh, and a PATH of stand-ins."""
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy2(REPO / ".ci" / "run", repo / ".ci" / "run")
    _executable(repo / "tests" / "slurm" / "start-slurm.sh", FAKE_START_SLURM)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"{tool} is not installed (.ci/run needs it; Debian: apt-get install util-linux coreutils)")
        (bin_dir / tool).symlink_to(found)
    _executable(bin_dir / "make", FAKE_MAKE)
    _executable(bin_dir / "id", '#!/usr/bin/env bash\necho "${FAKE_UID:-0}"\n')
    _executable(bin_dir / "chromium", "#!/usr/bin/env bash\n")
    _executable(bin_dir / "slurmctld", "#!/usr/bin/env bash\n")
    state = tmp_path / "run"
    state.mkdir()

    def run(**env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
        log = tmp_path / "calls.log"
        log.unlink(missing_ok=True)
        full_env = {
            "PATH": str(bin_dir),
            "CI_LOG": str(log),
            "PEPR_CI_STATE_DIR": str(state),
            "HOME": os.environ.get("HOME", "/"),
            **env,
        }
        done = subprocess.run(
            [str(bin_dir / "bash"), str(repo / ".ci" / "run")], env=full_env, capture_output=True, text=True, timeout=60
        )
        calls = log.read_text().splitlines() if log.exists() else []
        return done, calls

    run.state = state
    run.bin_dir = bin_dir
    return run


def test_starts_the_cluster_requires_both_tiers_runs_make_test_and_stops_what_it_started(ci):
    done, calls = ci()
    assert done.returncode == 0, done.stderr
    assert calls == ["start-slurm running", "start-slurm start", "make test slurm=1 chromium=1", "start-slurm stop"]
    assert not (ci.state / "pepr-slurm-tests.started").exists()


def test_a_cluster_that_was_already_running_stays_up(ci):
    done, calls = ci(FAKE_RUNNING="0")
    assert done.returncode == 0, done.stderr
    assert calls == ["start-slurm running", "start-slurm start", "make test slurm=1 chromium=1"]


def test_failing_tests_fail_ci_and_the_cluster_is_still_stopped(ci):
    done, calls = ci(FAKE_MAKE_RC="2")
    assert done.returncode == 2
    assert calls[-2:] == ["make test slurm=1 chromium=1", "start-slurm stop"]


def test_a_cluster_that_cannot_start_fails_ci_before_the_tests(ci):
    done, calls = ci(FAKE_START_RC="75")
    assert done.returncode == 75
    assert calls == ["start-slurm running", "start-slurm start", "start-slurm stop"]


def test_without_root_the_slurm_tier_is_not_required(ci):
    done, calls = ci(FAKE_UID="1000")
    assert done.returncode == 0, done.stderr
    assert calls == ["make test slurm= chromium=1"]
    assert "not root" in done.stderr and "SLURM tier will skip" in done.stderr


def test_without_slurm_or_apt_get_the_slurm_tier_is_not_required(ci):
    (ci.bin_dir / "slurmctld").unlink()
    done, calls = ci()
    assert done.returncode == 0, done.stderr
    assert calls == ["make test slurm= chromium=1"]
    assert "neither slurm nor apt-get" in done.stderr
