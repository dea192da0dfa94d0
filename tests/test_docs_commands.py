"""Every command in README.md, config/README.md and docs/*.md runs as written.

The commands are extracted from the documents themselves, so docs and test cannot drift:

* shell lines of indented (4 spaces) and fenced (```bash / ```sh / ```) code blocks that start
  with a command (``.venv/bin/``, ``make``, ``snakemake``, ``pepr``, ``git``, ``python``,
  ``bash``, ``conda``, ``pip``), a trailing ``\\`` joining the next line, ``# comments`` dropped;
* the "run it with" column of config/README.md's table of configurations (inline code);
* fenced ```python blocks.

Each extracted command must be either in :data:`RUN` (run here, in a scratch copy of the repository
holding a tiny finished sweep fixture, exit code 0 required) or in :data:`SKIPPED` with the reason;
a command that is in neither fails :func:`test_every_doc_command_is_run_or_skipped_with_a_reason`,
and so does an entry of either list that no document has any more.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", REPO / "config" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
COMMAND_START = re.compile(r"^(\.venv/bin/|make\b|snakemake\b|pepr\b|git\b|python3?\b|bash\b|conda\b|pip\b)")

# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------


def _join_continuations(lines: list[str]) -> list[str]:
    out, current = [], ""
    for line in lines:
        stripped = line.strip()
        if current:
            current += " " + stripped.rstrip("\\").strip()
        else:
            current = stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            out.append(current)
            current = ""
    if current:
        out.append(current)
    return out


def _strip_comment(command: str) -> str:
    # a `#` preceded by whitespace starts a comment (no doc command quotes a `#`)
    return re.split(r"\s+#\s", command, maxsplit=1)[0].strip()


def doc_commands() -> list[tuple[str, str]]:
    """(document name, command) for every command of the documents, in document order."""
    found: list[tuple[str, str]] = []
    for doc in DOCS:
        name = str(doc.relative_to(REPO))
        lines = doc.read_text(encoding="utf-8").splitlines()
        blocks: list[tuple[str, list[str]]] = []
        fence: str | None = None
        block: list[str] = []
        indented: list[str] = []
        previous_blank = True
        for line in lines:
            if fence is not None:
                if line.strip().startswith("```"):
                    blocks.append((fence, block))
                    fence, block = None, []
                else:
                    block.append(line)
                continue
            if line.strip().startswith("```"):
                fence = line.strip()[3:].strip() or "sh"
                continue
            if line.startswith("    ") and (indented or previous_blank):
                indented.append(line)
                continue
            if indented:
                blocks.append(("indented", indented))
                indented = []
            previous_blank = not line.strip()
        if indented:
            blocks.append(("indented", indented))
        for kind, body in blocks:
            if kind == "python":
                found.append((name, "python:\n" + "\n".join(body)))
                continue
            if kind not in ("indented", "bash", "sh", "shell", "console"):
                continue
            for command in _join_continuations([b for b in body if b.strip()]):
                command = _strip_comment(command)
                if COMMAND_START.match(command):
                    found.append((name, " ".join(command.split())))
        if doc.name == "README.md" and doc.parent.name == "config":
            in_table = False
            for row in lines:
                cells = [c.strip() for c in row.split("|")]
                if not row.startswith("|"):
                    in_table = False
                    continue
                if cells[-2:-1] == ["run it with"]:
                    in_table = True
                    continue
                if in_table:
                    for command in re.findall(r"`([^`]+)`", cells[-2]):
                        if COMMAND_START.match(command):
                            found.append((name, " ".join(command.split())))
    return found


# --------------------------------------------------------------------------------------------
# What is run, what is skipped and why
# --------------------------------------------------------------------------------------------

WORKFLOW_TESTS = "runs the demo/test sweep end to end: covered by tests/test_workflow_local.py (tiny config)"
SLURM = "needs a SLURM cluster and the paper's data: covered by tests/test_workflow_slurm.py on the CI cluster"

#: README's Python example, as extracted (``python:`` and the block).
PYTHON_EXAMPLE = """python:
import pandas as pd
import pepr

runs = pd.read_csv("results/runs.csv")
ok = runs[runs["status"] == "ok"]  # failed runs have no measurements to score
scored = pepr.score(ok, performance="test_accuracy", resources=["energy_kwh"], by=["dataset", "init", "fraction"])
print(scored[["dataset", "model", "test_accuracy", "energy_kwh", "pepr_energy_kwh"]].to_string(index=False))"""

#: Commands run here (key: the command as extracted; value: how the test checks it).
RUN: dict[str, str] = {
    ".venv/bin/pepr score results/runs.csv --performance test_accuracy --resource energy_kwh --resource "
    "train_time_s --by dataset --by init --by fraction -o results/scored.csv": "scores the fixture sweep's results/runs.csv (failed rows included)",
    PYTHON_EXAMPLE: "run as written by the venv's python in the fixture sweep's folder",
    ".venv/bin/pepr train --model resnet18 --dataset synthetic --init scratch --fraction 0.1 --epochs 2 --seed 0 "
    "--out results/by-hand/resnet18": "trains for real (slow tier); must write only below the ignored results/",
    ".venv/bin/pepr estimate --configfile config/paper.yaml --models resnet18 efficientnet_b0 "
    "--dataset-size lidc=6000,2000,2000,128": "no data files; calibration replaced by fixed timings "
    "(the calibration itself is tested in tests/test_estimate_calibration.py)",
    ".venv/bin/pepr status": "on the fixture sweep (the demo config)",
    ".venv/bin/pepr report elsewhere.csv --model name --performance acc --resource kwh --params n_params "
    "--by task --out elsewhere_report": "its whole README block (the table written by the heredoc, then the "
    "report) runs in the scratch copy",
    ".venv/bin/snakemake --unlock": "parses the demo workflow in the scratch copy (slow tier)",
    ".venv/bin/pepr replay results/histories.csv --rungs 1,3 --keep 0.34 --min-keep 2 --out replay/": "on a constructed 4-epoch results/histories.csv in the scratch copy",
}

#: Commands not run here, with the reason.
SKIPPED: dict[str, str] = {
    "make demo": WORKFLOW_TESTS + "; and it builds .venv",
    "make test": "is this test suite",
    "make install TORCH=cpu": "builds a whole venv (sizes measured by hand, BENCHMARKS.md)",
    ".venv/bin/snakemake --cores 2 --rerun-incomplete": WORKFLOW_TESTS + " (kill -9 + resume)",
    ".venv/bin/snakemake --cores 2 --forcerun train_model": "retrains the demo sweep: covered by tests/test_rerun_safety.py",
    ".venv/bin/snakemake --profile profiles/slurm --forcerun train_model --config retrain=true": "needs a SLURM cluster; retrain=true with --force is covered by "
    "tests/test_finished_runs_workflow.py::test_retraining_on_purpose_and_job_side_force",
    ".venv/bin/snakemake --cores 2 results/pretrain/<source>/<model>/metrics.json --forcerun "
    "results/pretrain/<source>/<model>/metrics.json --allowed-rules pretrain_source --config retrain=false": "a template (<source>, <model>); the exact fix is run by "
    "tests/test_finished_runs_workflow.py::test_lost_transfer_checkpoint_is_restored_without_replanning_finished_cells",
    ".venv/bin/snakemake --cores 2 --forcerun results/runs/<dataset>/<init>/<fraction>/<model>/seed0/metrics.json": "a template (<dataset> ...): every spelling of it is run by tests/test_rerun_promises_workflow.py::test_every_forcerun_form_retrains",
    ".venv/bin/snakemake --cores 2 --forcerun pretrain_source train_model": "retrains the demo sweep and its pretraining; rule forms are run by "
    "tests/test_snakemake_adapter.py::test_rule_forcerun_and_forceall_retrain_and_warn_about_kept_pretraining",
    "git clone <repo> pepr && cd pepr": "a template (<repo>): the cluster install steps",
    "python3 -m venv .venv": "cluster install step (CI builds its venv with `make install`)",
    ".venv/bin/pip install torch torchvision --index-url https://download.pytorch.org/whl/cu121": "cluster install step: needs download.pytorch.org (not reachable in CI)",
    ".venv/bin/pip install -e .": "cluster install step (CI: `make install`)",
    ".venv/bin/snakemake --profile profiles/slurm --configfile config/paper.yaml --dry-run": SLURM,
    ".venv/bin/snakemake --profile profiles/slurm --configfile config/paper.yaml --until download_data fetch_weights": SLURM
    + "; downloads",
    ".venv/bin/snakemake --profile profiles/slurm --configfile config/paper.yaml": SLURM,
    "snakemake --profile profiles/slurm --configfile config/paper.yaml": SLURM,
    "snakemake --profile profiles/slurm --configfile config/paper-crossed.yaml": SLURM,
    "snakemake --cores 2": WORKFLOW_TESTS,
    "snakemake --cores 2 --configfile config/cpu-small.yaml": "12.7 min of training on real PneumoniaMNIST "
    "(BENCHMARKS.md); its config is checked by tests/test_study_configs.py",
    "snakemake --cores 2 --configfile .test/config.yaml": WORKFLOW_TESTS,
}


def test_every_doc_command_is_run_or_skipped_with_a_reason():
    commands = [command for _, command in doc_commands()]
    assert commands, "no commands found in the docs: the extraction is broken"
    unlisted = [f"{doc}: {command}" for doc, command in doc_commands() if command not in RUN and command not in SKIPPED]
    assert not unlisted, "doc commands neither run nor skipped with a reason:\n" + "\n".join(unlisted)
    stale = [command for command in [*RUN, *SKIPPED] if command not in commands]
    assert not stale, "listed commands no document has any more:\n" + "\n".join(stale)
    assert not set(RUN) & set(SKIPPED)
    assert all(reason.strip() for reason in SKIPPED.values())


# --------------------------------------------------------------------------------------------
# The fixture: a scratch copy of the repository with a tiny finished sweep (the demo config)
# --------------------------------------------------------------------------------------------


def _ok_record(model: str, index: int) -> dict:
    return {
        "status": "ok",
        "reason": "",
        "model": model,
        "dataset": "synthetic",
        "init": "scratch",
        "fraction": 1.0,
        "seed": 0,
        "epochs": 3,
        "params": 500_000 + 1000 * index,
        "test_accuracy": 0.6 + 0.01 * index,
        "test_balanced_accuracy": 0.6,
        "test_auc": 0.7,
        "test_f1": 0.6,
        "energy_kwh": 0.0005 + 0.0001 * index,
        "co2_kg": 0.00008,
        "energy_method": "estimated: CodeCarbon cpu_load/TDP",
        "train_time_s": 30.0 + index,
        "peak_memory_mb": 100.0 + index,
        "config": {"model": model},
        "versions": {"pepr": "0.1.0"},
    }


def _failed_record(model: str) -> dict:
    record = {
        "status": "failed",
        "reason": "Kernel size can't be greater than actual input size",
        "model": model,
        "dataset": "synthetic",
        "init": "scratch",
        "fraction": 1.0,
        "seed": 0,
        "epochs": 3,
    }
    record.update(dict.fromkeys(("params", "test_accuracy", "energy_kwh", "co2_kg", "train_time_s", "peak_memory_mb")))
    return record


@pytest.fixture(scope="module")
def scratch_repo(tmp_path_factory) -> Path:
    """The repository's files (no .git, .venv, results) plus .venv -> the running venv, and the
    demo sweep finished: every cell's metrics.json (convnext_atto failed) and results/runs.csv."""
    from pepr.cli.estimate import default_schema
    from pepr.cli.status import sweep_jobs
    from pepr.plan.config import load_config
    from pepr.results.aggregate import aggregate_to_csv

    root = tmp_path_factory.mktemp("clone") / "pepr"
    shutil.copytree(
        REPO,
        root,
        symlinks=True,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "results", ".snakemake", "data", "__pycache__", ".pytest_cache", "*.egg-info"
        ),
    )
    # the checkout's .venv, else the environment running the tests (sys.prefix: a venv's own folder,
    # where resolving sys.executable would lead to the base interpreter's)
    (root / ".venv").symlink_to((REPO / ".venv").resolve() if (REPO / ".venv").exists() else Path(sys.prefix))
    jobs = sweep_jobs(load_config([root / "config" / "config.yaml"]), default_schema())
    metrics, pretrain = [], []
    for index, (kind, _key, model, output) in enumerate(jobs):
        record = _failed_record(model) if model == "convnext_atto" else _ok_record(model, index)
        path = root / output
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
        (pretrain if kind == "pretrain" else metrics).append(output)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        aggregate_to_csv(metrics, "results/runs.csv", pretrain)
    finally:
        os.chdir(cwd)
    return root


def _shell(command: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}  # this checkout's code, whatever .venv points at
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _doc_command(prefix: str) -> str:
    matches = [command for _, command in doc_commands() if command.startswith(prefix)]
    assert len(matches) == 1, f"expected one doc command starting with {prefix!r}, found {matches}"
    assert matches[0] in RUN
    return matches[0]


def test_score_command_scores_the_finished_sweep(scratch_repo):
    import pandas as pd

    done = _shell(_doc_command(".venv/bin/pepr score results/runs.csv"), scratch_repo)
    assert done.returncode == 0, done.stderr
    scored = pd.read_csv(scratch_repo / "results" / "scored.csv")
    failed = scored["status"] == "failed"
    assert failed.sum() == 4 and scored.loc[failed, "pepr_energy_kwh"].isna().all()
    assert scored.loc[~failed, "pepr_energy_kwh"].notna().all()


def test_python_example_scores_the_finished_sweep(scratch_repo):
    """README's Python block as written (nothing defined for it beforehand), in the sweep's folder."""
    code = _doc_command("python:").split("\n", 1)[1]
    done = subprocess.run(
        [str(scratch_repo / ".venv" / "bin" / "python"), "-c", code],
        cwd=scratch_repo,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["dataset", "model", "test_accuracy", "energy_kwh", "pepr_energy_kwh"]
    # every successful run (all but convnext_atto's 4 cells), each with a score
    assert len(rows) == 16 and not any("NaN" in row for row in rows)


def test_status_command_on_the_finished_sweep(scratch_repo):
    done = _shell(_doc_command(".venv/bin/pepr status"), scratch_repo)
    assert done.returncode == 0, done.stderr
    assert "finished 20   failed 5   running 0   pending 0" in done.stdout


def fixed_timings(specs, device, build_model, **kwargs):
    """Stand-in for pepr.estimate.calibrate.calibrate_models: fixed timings, no torch work."""
    from pepr.estimate.calibrate import Calibration

    return [
        Calibration(
            model=s.model,
            image_size=s.image_size,
            batch_size=s.batch_size,
            eval_batch_size=s.eval_batch_size,
            in_chans=s.in_chans,
            num_classes=s.num_classes,
            device=device,
            status="ok",
            params=1000,
            train_s_per_batch=0.1,
            eval_s_per_batch=0.2,
            train_batches_timed=1,
            eval_batches_timed=1,
            power_w=100.0,
            power_method="given",
            peak_memory_mb=10.0,
            cpu_share=1.0,
            calibration_wall_s=1.0,
        )
        for s in specs
    ]


@pytest.mark.slow  # timm's model list is built once (~20 s on 2 busy cores)
def test_estimate_runs_from_another_folder_and_writes_nothing_there(tmp_path, monkeypatch, capsys):
    from pepr.cli import main
    from pepr.estimate import run as estimate_run

    monkeypatch.setattr(estimate_run, "calibrate_models", fixed_timings)
    monkeypatch.chdir(tmp_path)
    code = main(
        [
            "estimate",
            "--configfile",
            str(REPO / "config" / "paper.yaml"),
            "--models",
            "efficientnet_b0",
            "--dataset-size",
            "lidc=600,200,200,64",
            "-o",
            "est.csv",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["est.csv"]


@pytest.mark.slow  # timm's model list is built once (~20 s on 2 busy cores)
def test_estimate_command_needs_no_data_files(scratch_repo, monkeypatch, capsys):
    """Run in-process so the calibration (minutes of CPU time at 224 px) can be replaced by
    fixed timings; everything else (flags, config, dataset sizes without files, a model outside
    the grid, the report) runs as written."""
    from pepr.cli import main
    from pepr.estimate import run as estimate_run

    monkeypatch.setattr(estimate_run, "calibrate_models", fixed_timings)
    command = _doc_command(".venv/bin/pepr estimate")
    monkeypatch.chdir(scratch_repo)
    assert main(command.split()[1:]) == 0
    out = capsys.readouterr().out
    assert "TOTAL (16 jobs estimated)" in out and "resnet18 not in the models" in out
    assert not (scratch_repo / "data").exists()


@pytest.mark.slow
def test_train_command_writes_below_results(scratch_repo):
    command = _doc_command(".venv/bin/pepr train")
    done = _shell(command + " --threads 1", scratch_repo)  # one thread: a shared CI machine
    assert done.returncode == 0, done.stderr[-3000:]
    assert (scratch_repo / "results" / "by-hand" / "resnet18" / "metrics.json").is_file()
    ignored = subprocess.run(["git", "check-ignore", "-q", "results/by-hand/resnet18/metrics.json"], cwd=REPO)
    assert ignored.returncode == 0, "README's pepr train example writes into a folder git does not ignore"


@pytest.mark.slow
def test_unlock_command_parses_the_workflow(scratch_repo):
    done = _shell(_doc_command(".venv/bin/snakemake --unlock"), scratch_repo)
    assert done.returncode == 0, done.stderr[-3000:]


def _doc_block(containing: str) -> str:
    """The README's fenced shell block holding ``containing``, as written (heredocs included)."""
    blocks, block, fence = [], [], False
    for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("```"):
            if fence:
                blocks.append("\n".join(block) + "\n")
            fence, block = not fence, []
        elif fence:
            block.append(line)
    matches = [block for block in blocks if containing in block]
    assert len(matches) == 1, f"expected one README block with {containing!r}, found {len(matches)}"
    return matches[0]


def test_report_example_on_a_foreign_table(scratch_repo):
    """README's `pepr report` example, block as written: a table that is not pepr's own -> a report."""
    assert _doc_command(".venv/bin/pepr report elsewhere.csv")
    done = _shell(_doc_block(".venv/bin/pepr report elsewhere.csv"), scratch_repo)
    assert done.returncode == 0, done.stderr
    out = scratch_repo / "elsewhere_report"
    for name in ("pepr.csv", "summary.md", "report.html", "tables/decision.csv"):
        assert (out / name).is_file(), name
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "tiny" in summary and "liver" in summary


def test_where_results_land_names_every_file_the_workflow_writes_into_results():
    """README's table "Where results land" lists each file the workflow's rules write directly
    into results/ (answer.html and pepr_report.html among them)."""
    from pepr.report.config import HISTORIES_TABLE

    rules = "\n".join(path.read_text(encoding="utf-8") for path in sorted((REPO / "workflow").rglob("*.smk")))
    written = set(re.findall(r'"results/([\w.{}-]+)"', rules.replace("{HISTORIES_TABLE}", HISTORIES_TABLE)))
    assert {"runs.csv", "pepr.csv", "answer.html", "pepr_report.html"} <= written, written
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Where results land") :]
    section = section[: section.index("\n## ")]
    listed = "\n".join(row.split("|")[1] for row in section.splitlines() if row.startswith("| `"))
    missing = sorted(name for name in written if f"`results/{name}`" not in listed and f"`{name}`" not in listed)
    assert not missing, f"README's 'Where results land' does not list: {missing}"


def test_replay_command_replays_a_finished_sweeps_histories(scratch_repo):
    """README's `pepr replay` example on a full sweep's per-epoch table (workflow columns)."""
    import pandas as pd

    rows = []
    for index, model in enumerate(["a", "b", "c", "d", "e"]):
        for epoch in range(1, 5):
            accuracy = 0.5 + 0.05 * index + 0.01 * epoch
            rows.append(
                {
                    "dataset": "synthetic",
                    "init": "scratch",
                    "fraction": 1.0,
                    "model": model,
                    "seed": 0,
                    "epoch": epoch,
                    "val_accuracy": accuracy,
                    "test_accuracy": accuracy,
                    "cumulative_energy_kwh": 0.001 * (1 + index) * epoch,
                }
            )
    (scratch_repo / "results").mkdir(exist_ok=True)
    pd.DataFrame(rows).to_csv(scratch_repo / "results" / "histories.csv", index=False)
    done = _shell(_doc_command(".venv/bin/pepr replay"), scratch_repo)
    assert done.returncode == 0, done.stderr
    replayed = pd.read_csv(scratch_repo / "replay" / "replay.csv")
    assert len(replayed) == 1 and replayed["best_full"].iloc[0] in "abcde"
    assert 0 < replayed["resource_share"].iloc[0] < 1 and "pepr replay: 1 group(s)" in done.stdout
