"""Rules estimate_cost and compare_estimate (workflow/rules/estimate.smk) run by Snakemake.

The workflow is the project's own Snakefile (with estimate.smk included when it is not yet),
run on the tiny test config in a temporary working directory.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _workflow(tmp_path: Path) -> Path:
    """A Snakefile equal to the project's, including estimate.smk, beside links to its folders."""
    root = tmp_path / "workflow-copy"
    root.mkdir()
    for name in ("workflow", "scripts", "config"):
        (root / name).symlink_to(REPO / name)
    text = (REPO / "Snakefile").read_text()
    if "rules/estimate.smk" not in text:
        text = text.replace(
            'include: "workflow/rules/report.smk"',
            'include: "workflow/rules/report.smk"\ninclude: "workflow/rules/estimate.smk"',
        )
    (root / "Snakefile").write_text(text)
    return root / "Snakefile"


def _snakemake(snakefile: Path, workdir: Path, *targets: str) -> subprocess.CompletedProcess:
    snakemake = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or "snakemake"
    cmd = [
        snakemake,
        "-s",
        str(snakefile),
        "-d",
        str(workdir),
        "--configfile",
        str(REPO / ".test" / "config.yaml"),
        "--cores",
        "1",
        *targets,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_estimate_cost_and_compare_estimate_rules(tmp_path):
    snakefile = _workflow(tmp_path)
    workdir = tmp_path / "wd"
    workdir.mkdir()
    done = _snakemake(snakefile, workdir, "estimate_cost")
    assert done.returncode == 0, done.stderr[-3000:]
    estimate = pd.read_csv(workdir / "results" / "estimate.csv")
    # .test/config.yaml: 2 models x 2 inits x 2 fractions + 2 pretraining jobs
    assert len(estimate) == 10
    assert set(estimate["status"]) == {"ok", "failed"}  # convnext_atto cannot run at 28 px
    assert (workdir / "results" / "estimate_by_model.csv").is_file()
    assert "TOTAL" in (workdir / "results" / "estimate.txt").read_text()

    # A measured runs.csv as aggregate_runs would write it (times 25% above the estimate).
    ok = estimate[(estimate["status"] == "ok") & (estimate["init"] != "pretrain")]
    runs = ok[["dataset", "init", "fraction", "model", "seed"]].assign(
        status="ok",
        train_time_s=ok["est_time_s"] * 1.25,
        energy_kwh=ok["est_energy_kwh"] * 1.25,
        co2_kg=ok["est_co2_kg"] * 1.25,
    )
    runs.to_csv(workdir / "results" / "runs.csv", index=False)
    done = _snakemake(snakefile, workdir, "compare_estimate", "--allowed-rules", "compare_estimate")
    assert done.returncode == 0, done.stderr[-3000:]
    comparison = pd.read_csv(workdir / "results" / "estimate_vs_measured.csv").set_index("model")
    assert comparison.loc["mobilenetv3_small_050", "runs_compared"] == 4
    assert comparison.loc["mobilenetv3_small_050", "ratio_time_s"] == pytest.approx(0.8)
    assert comparison.loc["convnext_atto", "est_status"] == "failed"
    assert (workdir / "results" / "figures" / "estimate_vs_measured.png").stat().st_size > 1000
