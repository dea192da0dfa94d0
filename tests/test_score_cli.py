"""`pepr score` command line: output shape, formats, and every bad-input case (exit 2)."""

import io
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pepr.cli import main


def run_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse usage errors
            code = exc.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def table(tmp_path) -> Path:
    path = tmp_path / "runs.csv"
    pd.DataFrame(
        {
            "model": ["m1", "m2", "m3", "m4"],
            "dataset": ["d", "d", "e", "e"],
            "acc": [0.9, 0.8, 0.7, 0.6],
            "kwh": [1.0, 2.0, 3.0, 3.0],
            "secs": [5.0, 1.0, 2.0, 4.0],
        }
    ).to_csv(path, index=False)
    return path


def test_stdout_csv_has_input_plus_new_columns(table):
    code, out, err = run_cli("score", str(table), "--performance", "acc", "--resource", "kwh",
                             "--resource", "secs", "--by", "dataset")
    assert code == 0, err
    result = pd.read_csv(io.StringIO(out))
    original = pd.read_csv(table)
    assert list(result.columns) == list(original.columns) + ["kwh_norm", "pepr_kwh", "secs_norm", "pepr_secs"]
    pd.testing.assert_frame_equal(result[original.columns], original)
    np.testing.assert_allclose(result["pepr_kwh"], [0.9, 0.4, 0.7, 0.6], atol=1e-12)
    np.testing.assert_allclose(result["pepr_secs"], [0.45, 0.8, 0.7, 0.3], atol=1e-12)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_output_file_format_follows_extension(table, tmp_path, suffix):
    out_path = tmp_path / f"scored{suffix}"
    code, out, err = run_cli("score", str(table), "--performance", "acc", "--resource", "kwh", "-o", str(out_path))
    assert code == 0, err
    assert out == ""
    result = pd.read_csv(out_path) if suffix == ".csv" else pd.read_parquet(out_path)
    assert "pepr_kwh" in result.columns and len(result) == 4


def test_parquet_input(table, tmp_path):
    pq = tmp_path / "runs.parquet"
    pd.read_csv(table).to_parquet(pq)
    code, out, err = run_cli("score", str(pq), "--performance", "acc", "--resource", "kwh")
    assert code == 0, err
    assert "pepr_kwh" in out


def write(tmp_path, df, name="bad.csv"):
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


BAD_CASES = {
    "unknown performance column": (
        lambda p: pd.read_csv(p), ["--performance", "accuracy", "--resource", "kwh"],
        "available columns: model, dataset, acc, kwh, secs"),
    "unknown resource column": (
        lambda p: pd.read_csv(p), ["--performance", "acc", "--resource", "energy"], "'energy'"),
    "unknown by column": (
        lambda p: pd.read_csv(p), ["--performance", "acc", "--resource", "kwh", "--by", "cell"], "'cell'"),
    "nan performance": (
        lambda p: pd.read_csv(p).assign(acc=[0.9, None, 0.7, None]),
        ["--performance", "acc", "--resource", "kwh"], "rows 1, 3"),
    "nan resource": (
        lambda p: pd.read_csv(p).assign(kwh=[None, 2.0, 3.0, 3.0]),
        ["--performance", "acc", "--resource", "kwh"], "rows 0"),
    "performance as percent": (
        lambda p: pd.read_csv(p).assign(acc=[90, 80, 70, 60]),
        ["--performance", "acc", "--resource", "kwh"], "[0, 1]"),
    "negative resource": (
        lambda p: pd.read_csv(p).assign(kwh=[1.0, -2.0, 3.0, 3.0]),
        ["--performance", "acc", "--resource", "kwh"], "non-negative"),
    "non-numeric resource": (
        lambda p: pd.read_csv(p).assign(kwh=["1", "two", "3", "3"]),
        ["--performance", "acc", "--resource", "kwh"], "non-numeric"),
    "empty table": (
        lambda p: pd.read_csv(p).iloc[0:0], ["--performance", "acc", "--resource", "kwh"], "no rows"),
    "no resource": (
        lambda p: pd.read_csv(p), ["--performance", "acc"], "no --resource"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_exits_2_with_message_and_writes_nothing(case, table, tmp_path):
    make, flags, message = BAD_CASES[case]
    bad = write(tmp_path, make(table))
    out_path = tmp_path / "out.csv"
    code, out, err = run_cli("score", str(bad), *flags, "-o", str(out_path))
    assert code == 2
    assert message in err, err
    assert "Traceback" not in err
    assert not out_path.exists()
    assert not list(tmp_path.glob(".out.csv.*")), "no temp file left behind"


def test_missing_file(tmp_path):
    code, _, err = run_cli("score", str(tmp_path / "nope.csv"), "--performance", "acc", "--resource", "kwh")
    assert code == 2 and "does not exist" in err


def test_unreadable_parquet(tmp_path):
    bad = tmp_path / "broken.parquet"
    bad.write_text("this is not parquet")
    code, _, err = run_cli("score", str(bad), "--performance", "acc", "--resource", "kwh")
    assert code == 2 and "cannot read parquet table" in err


def test_empty_csv_file(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    code, _, err = run_cli("score", str(empty), "--performance", "acc", "--resource", "kwh")
    assert code == 2 and "empty" in err


def test_unknown_extension(table, tmp_path):
    code, _, err = run_cli("score", str(table), "--performance", "acc", "--resource", "kwh",
                           "-o", str(tmp_path / "out.xlsx"))
    assert code == 2 and ".xlsx" in err
    assert not (tmp_path / "out.xlsx").exists()


def test_missing_required_flag_is_usage_error(table):
    code, _, err = run_cli("score", str(table), "--resource", "kwh")
    assert code == 2 and "--performance" in err


def test_existing_output_is_untouched_on_error(table, tmp_path):
    out_path = tmp_path / "keep.csv"
    out_path.write_text("precious\n")
    code, _, _ = run_cli("score", str(table), "--performance", "nope", "--resource", "kwh", "-o", str(out_path))
    assert code == 2 and out_path.read_text() == "precious\n"


def test_console_script_help_explains_formula_and_stays_light():
    exe = Path(sys.executable).with_name("pepr")
    if not exe.exists():
        pytest.skip(f"console script not installed next to {sys.executable}; run `make install`")
    help_text = subprocess.run([str(exe), "score", "--help"], capture_output=True, text=True, check=True).stdout
    for flag in ("--performance", "--resource", "--by", "--output"):
        assert flag in help_text
    assert "P_i / (1 + X_norm_i)" in help_text
    top = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    assert "PePR_i = P_i / (1 + R_i)" in top
    # Building the whole CLI (every sub-command's parser) and scoring must never import torch.
    probe = subprocess.run(
        [sys.executable, "-c",
         "import sys; from pepr.cli import build_parser; build_parser(); "
         "import pepr.scoring, pepr.tableio; print('torch' in sys.modules)"],
        capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "False"
