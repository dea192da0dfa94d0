"""Issue 19: hostile config files and results files fail fast, in one line, naming the file.

YAML: alias bombs, duplicate keys, 1e-3, oversize/deep/special files (pepr.plan.safeyaml, read by the
workflow before anything hashes the config); report settings checked at planning; metrics.json,
history.csv and ``pepr score --by`` inputs that used to raise tracebacks.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from pepr.errors import PeprInputError
from pepr.plan.safeyaml import MAX_EXPANDED_NODES, load_workflow_config, load_yaml_file, load_yaml_text

REPO = Path(__file__).resolve().parents[1]

#: 383 bytes that stand for 9**9 = 387,420,489 strings (the "billion laughs" of YAML).
ALIAS_BOMB = (
    "models: [resnet18]\ndatasets: [synthetic]\n"
    + 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    + "".join(f"{n}: &{n} [{','.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))
)
#: The same with mappings: Snakemake's own config merge walks these (see test below).
MAPPING_BOMB = "a: &a {k1: 1, k2: 1, k3: 1, k4: 1, k5: 1, k6: 1, k7: 1, k8: 1, k9: 1}\n" + "".join(
    f"{n}: &{n} {{{', '.join(f'{n}{i}: *{p}' for i in range(9))}}}\n" for p, n in zip("abcdefgh", "bcdefghi")
)


def test_alias_bombs_are_refused_instantly():
    for bomb in (ALIAS_BOMB, MAPPING_BOMB):
        started = time.perf_counter()
        with pytest.raises(PeprInputError, match=f"expand to more than {MAX_EXPANDED_NODES:,} values"):
            load_yaml_text(bomb, "config.yaml")
        assert time.perf_counter() - started < 5


def test_ordinary_aliases_still_work():
    assert load_yaml_text("base: &b {epochs: 2}\nother: *b\n") == {"base": {"epochs": 2}, "other": {"epochs": 2}}


def test_duplicate_keys_are_refused_with_their_lines(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("models: [resnet18]\nepochs: 3\nreport:\n  seed: 1\n  seed: 2\nepochs: 5\n")
    with pytest.raises(PeprInputError) as caught:
        load_yaml_file(path)
    message = str(caught.value)
    assert f"config file {path} line 5: duplicate key 'seed' (first at line 4)" in message and "\n" not in message


def test_numbers_written_like_1e_minus_3_are_numbers():
    loaded = load_yaml_text("lr: 1e-3\nb: 5E-4\nc: 1.5e+2\nd: 3\ne: '1e-3'\nf: 1.2.3\ng: 1e3\nh: .5\n")
    assert loaded == {"lr": 0.001, "b": 0.0005, "c": 150.0, "d": 3, "e": "1e-3", "f": "1.2.3", "g": 1000.0, "h": 0.5}
    assert isinstance(loaded["d"], int)


def test_deep_oversize_and_special_files(tmp_path):
    with pytest.raises(PeprInputError, match="nested more than|nesting depth"):
        load_yaml_text("a: " + "[" * 200 + "]" * 200)
    big = tmp_path / "big.yaml"
    big.write_text("a: " + "x" * 1_100_000)
    with pytest.raises(PeprInputError, match="at most 1,000,000"):
        load_yaml_file(big)
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(PeprInputError, match="is a FIFO"):
        load_yaml_file(fifo)
    with pytest.raises(PeprInputError, match="is a directory"):
        load_yaml_file(tmp_path)


def test_workflow_config_merges_files_then_command_line(tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("report: {seed: 1, top_k: 3}\nlr: 1e-3\n")
    second.write_text("report: {seed: 2}\n")
    merged = load_workflow_config([first, second], {"epochs": 4})
    assert merged == {"report": {"seed": 2, "top_k": 3}, "lr": 0.001, "epochs": 4}


def _snakemake_n(tmp_path: Path, config_text: str) -> subprocess.CompletedProcess:
    from test_workflow_local import snakemake

    config = tmp_path / "config.yaml"
    config.write_text(config_text)
    return snakemake(tmp_path, "-n", "--cores", "1", configfile=config, timeout=120)


@pytest.mark.slow
def test_snakemake_n_refuses_the_alias_bomb_and_duplicates_and_takes_1e_minus_3(tmp_path):
    started = time.perf_counter()
    bomb = _snakemake_n(tmp_path, ALIAS_BOMB)
    assert bomb.returncode != 0 and "a YAML alias bomb" in bomb.stderr, bomb.stderr[-2000:]
    assert time.perf_counter() - started < 60  # it used to hang in the validation cache's hash
    duplicate = _snakemake_n(tmp_path, "models: [resnet18]\ndatasets: [synthetic]\nepochs: 1\nepochs: 2\n")
    assert duplicate.returncode != 0 and "line 4: duplicate key 'epochs' (first at line 3)" in duplicate.stderr
    typos = _snakemake_n(
        tmp_path,
        "models: [resnet18]\ndatasets: [synthetic]\nepochs: 1\nlr: 1e-3\n"
        "report: {resource: energy_kwhh, history_performance: test_acc, model_metadata: nope.csv, seed: -1}\n",
    )
    assert typos.returncode != 0
    for words in (
        "report.resource = 'energy_kwhh'",
        "report.history_performance = 'test_acc'",
        "report.model_metadata nope.csv not found",
        "report.seed = -1",
    ):
        assert words in typos.stderr, typos.stderr[-3000:]
    assert "lr" not in typos.stderr.split("problem(s)")[-1].split("report.")[0]  # 1e-3 is a number: no lr problem
    good = _snakemake_n(tmp_path, "models: [resnet18]\ndatasets: [synthetic]\nepochs: 1\nlr: 1e-3\n")
    assert good.returncode == 0, good.stderr[-3000:]


@pytest.mark.parametrize(
    "report, words",
    [
        ({"resource": "energy_kwhh"}, "did you mean 'energy_kwh'"),
        ({"history_resource": "energy"}, "a cumulative resource column of history.csv"),
        ({"seed": -1}, "report.seed = -1; use an integer in 0..4294967295"),
        ({"seed": True}, "report.seed = True"),
    ],
)
def test_report_settings_against_the_run_contract(report, words):
    from pepr.plan.prepare import report_problems

    (problem,) = report_problems({"report": report})
    assert words in problem


def test_model_metadata_file_is_checked(tmp_path):
    from pepr.plan.prepare import report_problems

    wrong = tmp_path / "meta.csv"
    wrong.write_text("name,kind\nresnet18,CNN\n")
    assert "has no column(s) model, type, efficient" in report_problems({"report": {"model_metadata": str(wrong)}})[0]
    assert "is a directory" in report_problems({"report": {"model_metadata": str(tmp_path)}})[0]
    good = tmp_path / "good.csv"
    good.write_text("model,type,efficient\nresnet18,CNN,False\n")
    assert report_problems({"report": {"model_metadata": str(good)}}) == []


# ------------------------------------------------------------------ results files


def test_metrics_json_nested_deep_or_out_of_range_names_the_file(tmp_path):
    from pepr.results.aggregate import read_metrics

    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    huge = tmp_path / "huge.json"
    huge.write_text('{"status": "ok", "energy_kwh": 1e400}')
    big_int = tmp_path / "int.json"
    big_int.write_text('{"status": "ok", "params": ' + "9" * 400 + "}")
    for path in (deep, huge, big_int):
        with pytest.raises(PeprInputError) as caught:
            read_metrics(path)
        assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def _history_tree(tmp_path: Path, content: bytes) -> tuple[Path, Path]:
    root = tmp_path / "runs"
    good = root / "synthetic" / "scratch" / "1.0" / "resnet18" / "seed0" / "history.csv"
    bad = root / "synthetic" / "scratch" / "1.0" / "resnet34" / "seed0" / "history.csv"
    for path in (good, bad):
        path.parent.mkdir(parents=True)
    good.write_text("epoch,test_accuracy,cumulative_energy_kwh\n1,0.5,0.1\n")
    bad.write_bytes(content)
    return root, bad


@pytest.mark.parametrize(
    "content, words",
    [
        (b"epoch,test_accuracy\n1,\xff\xfe\n", "is not UTF-8 text"),
        (b"epoch,test_accuracy\n1," + b"x" * 200_000 + b"\n", "is not a pepr history CSV"),
    ],
    ids=["non-utf8", "200KB-field"],
)
def test_damaged_history_is_skipped_with_a_warning_naming_it(tmp_path, content, words):
    from pepr.report.data import gather_histories

    root, bad = _history_tree(tmp_path, content)
    paths = sorted(str(p) for p in root.rglob("history.csv"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = gather_histories(paths, root)
    assert list(table["model"]) == ["resnet18"]
    messages = [str(w.message) for w in caught]
    assert any(str(bad) in m and words in m for m in messages), messages


def _score_cli(*argv: str) -> tuple[int, str]:
    from pepr.cli import main

    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        code = main(["score", *argv])
    return code, err.getvalue()


@pytest.mark.parametrize("by", ["test_accuracy", "energy_kwh", "train_time_s"])
def test_score_by_a_performance_or_resource_column_is_refused(tmp_path, by):
    table = tmp_path / "runs.csv"
    table.write_text("dataset,model,test_accuracy,energy_kwh,train_time_s\nd,a,0.5,1.0,3\nd,b,0.7,2.0,4\n")
    code, err = _score_cli(str(table), "--performance", "test_accuracy", "--resource", "energy_kwh", "--by", by)
    assert code == 2 and f"--by '{by}'" in err and len(err.strip().splitlines()) == 1, err


def test_scoring_with_an_undefined_performance_scores_the_others(tmp_path):
    import pandas as pd

    from pepr.results.aggregate import score_runs

    runs = pd.DataFrame(
        {
            "dataset": ["d"] * 3,
            "init": ["scratch"] * 3,
            "fraction": [1.0] * 3,
            "model": ["a", "b", "c"],
            "seed": [0] * 3,
            "status": ["ok", "ok", "failed"],
            "test_auc": [0.8, None, None],
            "energy_kwh": [1.0, 2.0, None],
            "co2_kg": [1.0, 2.0, None],
            "train_time_s": [1.0, 2.0, None],
            "peak_memory_mb": [1.0, 2.0, None],
        }
    )
    with pytest.warns(UserWarning, match="1 run\\(s\\) have no test_auc and are not scored: d/scratch/1.0/b/0"):
        scored = score_runs(runs, performance="test_auc", amortised=(), skip_undefined=True)
    assert scored.loc[0, "pepr_energy_kwh"] == pytest.approx(0.8)
    assert pd.isna(scored.loc[1, "pepr_energy_kwh"]) and "test_auc is undefined" in scored.loc[1, "score_note"]


@pytest.mark.slow
def test_report_lists_a_run_with_undefined_performance_instead_of_stopping(tmp_path):
    """pepr.performance: test_auc with one finished run whose AUC is undefined: tables and summary are built."""
    import pandas as pd

    sys.path.insert(0, str(Path(__file__).parent))
    from pepr.report.build import load, read_tables, write_summary, write_tables
    from pepr.report.config import ReportConfig
    from report_sweep import make_sweep

    make_sweep(tmp_path, seeds=(0, 1))
    df = pd.read_csv(tmp_path / "pepr.csv", dtype={"fraction": str})
    first_ok = df.index[df["status"] == "ok"][0]
    df.loc[first_ok, "test_auc"] = None
    df.to_csv(tmp_path / "pepr.csv", index=False)
    cfg = ReportConfig(performance="test_auc", bootstrap_resamples=200)
    with pytest.warns(UserWarning, match="have no test_auc"):
        data = load(tmp_path / "pepr.csv", None, cfg)
    write_tables(data, tmp_path / "tables")
    failed = read_tables(tmp_path / "tables")["failed"]
    assert any("test_auc is undefined" in reason for reason in failed["reason"])
    assert write_summary(data, tmp_path / "tables", tmp_path / "summary.md").is_file()
