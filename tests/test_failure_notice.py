"""A failed cell is announced on the stream Snakemake shows the moment it fails (issue 20)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_train_rule_keeps_params_and_opens_the_notice_stream():
    text = (REPO / "workflow" / "rules" / "train.smk").read_text()
    command = re.search(r'^TRAIN_COMMAND = f"(.*)"$', text, re.M).group(1)
    # {params.train} is unchanged (its text is a rerun trigger; {params.retrain} is not recorded,
    # see pepr.plan.rerun); fd 3 is the job's stderr
    assert "{_PEPR_TRAIN_LITERAL} {{params.train}}{{params.retrain}} --threads {{threads}}" in command
    assert command.startswith("PEPR_NOTIFY_FD=3 ") and command.endswith(" 3>&2 >> {{log:q}} 2>&1")
    for profile in ("default", "slurm"):
        assert "show-failed-logs: true" in (REPO / "profiles" / profile / "config.yaml").read_text()


@pytest.mark.slow
def test_failed_cell_prints_one_line_on_the_terminal_stream(tmp_path):
    """convnext_atto cannot take 28 px images: a failed record (exit 0), and the line on fd 3."""
    log = tmp_path / "cell.log"
    out = tmp_path / "runs" / "convnext_atto"
    command = (
        f"PEPR_NOTIFY_FD=3 {sys.executable} -m pepr.cli train --model convnext_atto --dataset "
        f"'synthetic:n_train=40,n_val=20,n_test=20' --epochs 1 --device cpu --out {out} --threads 1 "
        f"3>&2 >> {log} 2>&1"
    )
    done = subprocess.run(
        ["bash", "-c", command],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert done.returncode == 0, done.stderr + log.read_text()
    lines = [line for line in done.stderr.splitlines() if line.startswith("pepr: ")]
    assert len(lines) == 1 and lines[0].startswith(f"pepr: {out} failed: "), done.stderr
    assert lines[0] in log.read_text()  # and the log has it too
    assert done.stdout == ""


def test_announce_failure_without_the_stream_only_logs(capsys, monkeypatch):
    from pepr.cli.train import announce_failure

    monkeypatch.setenv("PEPR_NOTIFY_FD", "97")  # not open: ignored
    announce_failure(Path("results/runs/x"), "CUDA out of\nmemory")
    assert capsys.readouterr().err == "pepr: results/runs/x failed: CUDA out of memory\n"
