"""How the SLURM tier decides to run (tests/conftest.py): only on a running test cluster of
tests/slurm/start-slurm.sh, never one it installs or starts itself; otherwise one line saying what is
missing and how to get it. Stand-in SLURM commands here: no cluster is needed."""

from __future__ import annotations

import pytest

import conftest

SLURM_UP = {
    "scontrol": 'echo "Slurmctld(primary) at node is UP"',
    "sacct": "exit 0",
    "sbatch": "exit 0",
    "squeue": "exit 0",
    "scancel": "exit 0",
}


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """Stand-in SLURM commands (name -> shell body) alone on PATH (a machine's real ones hidden);
    ``.conf``: the test cluster's config, first line as start-slurm.sh writes it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    conf = tmp_path / "slurm.conf"
    conf.write_text(f"{conftest.TEST_CLUSTER_MARK} - single node, localhost only, no cgroups\nClusterName=localci\n")

    def install(commands: dict[str, str]) -> None:
        for name, body in commands.items():
            path = bin_dir / name
            path.write_text(f"#!/bin/sh\n{body}\n")
            path.chmod(0o755)

    install.conf = conf
    return install


def test_the_running_test_cluster_is_used(fake_slurm):
    fake_slurm(SLURM_UP)
    assert conftest.slurm_test_cluster_problem(fake_slurm.conf) is None


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"sbatch": None}, "no sbatch on PATH"),
        ({"scontrol": 'echo "Slurmctld(primary) at node is DOWN"; exit 1'}, "does not answer `scontrol ping`"),
        ({"sacct": 'echo "sacct: error: Problem talking to the database" >&2; exit 1'}, "does not answer `sacct`"),
    ],
)
def test_what_is_missing_is_named(fake_slurm, change, words):
    fake_slurm({name: body for name, body in {**SLURM_UP, **change}.items() if body is not None})
    problem = conftest.slurm_test_cluster_problem(fake_slurm.conf)
    assert problem is not None and problem.startswith("no SLURM test cluster") and words in problem


def test_a_cluster_not_started_by_start_slurm_is_never_used(fake_slurm):
    """A real cluster (a login node's, say) answers too; the tests submit only to the test cluster."""
    fake_slurm(SLURM_UP)
    fake_slurm.conf.write_text("ClusterName=production\n")
    assert "was not written by tests/slurm/start-slurm.sh" in conftest.slurm_test_cluster_problem(fake_slurm.conf)
    fake_slurm.conf.unlink()
    assert "is absent" in conftest.slurm_test_cluster_problem(fake_slurm.conf)


def test_the_skip_reason_says_how_to_get_the_cluster():
    assert "bash tests/slurm/start-slurm.sh" in conftest.HOW_TO_START and "docs/slurm.md" in conftest.HOW_TO_START


@pytest.mark.parametrize(("value", "required"), [(None, False), ("", False), ("0", False), ("1", True)])
def test_ci_requires_the_tier(monkeypatch, value, required):
    if value is None:
        monkeypatch.delenv(conftest.REQUIRE_SLURM_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(conftest.REQUIRE_SLURM_VARIABLE, value)
    assert conftest.require_slurm() is required
