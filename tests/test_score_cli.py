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
    code, out, err = run_cli(
        "score", str(table), "--performance", "acc", "--resource", "kwh", "--resource", "secs", "--by", "dataset"
    )
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
        lambda p: pd.read_csv(p),
        ["--performance", "accuracy", "--resource", "kwh"],
        "available columns: model, dataset, acc, kwh, secs",
    ),
    "unknown resource column": (lambda p: pd.read_csv(p), ["--performance", "acc", "--resource", "energy"], "'energy'"),
    "unknown by column": (
        lambda p: pd.read_csv(p),
        ["--performance", "acc", "--resource", "kwh", "--by", "cell"],
        "'cell'",
    ),
    "nan performance": (
        lambda p: pd.read_csv(p).assign(acc=[0.9, None, 0.7, None]),
        ["--performance", "acc", "--resource", "kwh"],
        "rows 1, 3",
    ),
    "nan resource": (
        lambda p: pd.read_csv(p).assign(kwh=[None, 2.0, 3.0, 3.0]),
        ["--performance", "acc", "--resource", "kwh"],
        "rows 0",
    ),
    "performance as percent": (
        lambda p: pd.read_csv(p).assign(acc=[90, 80, 70, 60]),
        ["--performance", "acc", "--resource", "kwh"],
        "[0, 1]",
    ),
    "negative resource": (
        lambda p: pd.read_csv(p).assign(kwh=[1.0, -2.0, 3.0, 3.0]),
        ["--performance", "acc", "--resource", "kwh"],
        "non-negative",
    ),
    "non-numeric resource": (
        lambda p: pd.read_csv(p).assign(kwh=["1", "two", "3", "3"]),
        ["--performance", "acc", "--resource", "kwh"],
        "non-numeric",
    ),
    "empty table": (lambda p: pd.read_csv(p).iloc[0:0], ["--performance", "acc", "--resource", "kwh"], "no rows"),
    "no resource": (lambda p: pd.read_csv(p), ["--performance", "acc"], "no --resource"),
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
    code, _, err = run_cli(
        "score", str(table), "--performance", "acc", "--resource", "kwh", "-o", str(tmp_path / "out.xlsx")
    )
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
        [
            sys.executable,
            "-c",
            "import sys; from pepr.cli import build_parser; build_parser(); "
            "import pepr.results.scoring, pepr.results.tableio; print('torch' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "False"


# --- issue 9 #7: every bad input and output exits 2 with one line ---------------------------


def write_parquet(tmp_path, df, name="bad.parquet"):
    path = tmp_path / name
    df.to_parquet(path, index=False)
    return path


def one_line_exit_2(code, err):
    assert code == 2, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("column", ["kwh_norm", "pepr_kwh"])
def test_input_column_colliding_with_a_generated_name_is_refused(table, tmp_path, column):
    bad = write(tmp_path, pd.read_csv(table).assign(**{column: 1.0}))
    out_path = tmp_path / "out.csv"
    code, _, err = run_cli("score", str(bad), "--performance", "acc", "--resource", "kwh", "-o", str(out_path))
    one_line_exit_2(code, err)
    assert f"'{column}'" in err and "rename it" in err
    assert not out_path.exists()


def test_duplicate_column_names_are_refused_not_renamed(tmp_path):
    bad = tmp_path / "dup.csv"
    bad.write_text("acc,kwh,kwh\n0.9,1,2\n0.8,2,3\n")
    code, _, err = run_cli("score", str(bad), "--performance", "acc", "--resource", "kwh")
    one_line_exit_2(code, err)
    assert "two columns named 'kwh'" in err and "columns 2 and 3" in err


def test_duplicate_column_names_in_a_dataframe_are_refused():
    from pepr.errors import PeprInputError
    from pepr.results.scoring import score

    df = pd.DataFrame([[0.9, 1.0, 2.0]], columns=["acc", "kwh", "kwh"])
    with pytest.raises(PeprInputError, match="more than one column named 'kwh'"):
        score(df, "acc", ["kwh"])


def test_boolean_performance_is_refused(table, tmp_path):
    bad = write(tmp_path, pd.read_csv(table).assign(acc=[True, False, True, True]))
    code, _, err = run_cli("score", str(bad), "--performance", "acc", "--resource", "kwh")
    one_line_exit_2(code, err)
    assert "performance column 'acc' holds booleans" in err


@pytest.mark.parametrize(
    "values, word",
    [
        (pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]), "dates"),
        (pd.to_timedelta([1, 2, 3, 4], unit="s"), "durations"),
        ([True, False, True, False], "booleans"),
    ],
)
def test_date_duration_and_boolean_resources_are_refused(table, tmp_path, values, word):
    bad = write_parquet(tmp_path, pd.read_csv(table).assign(kwh=values))
    code, _, err = run_cli("score", str(bad), "--performance", "acc", "--resource", "kwh")
    one_line_exit_2(code, err)
    assert "resource column 'kwh' holds" in err and word in err


def test_list_column_as_by_is_refused(table, tmp_path):
    bad = write_parquet(tmp_path, pd.read_csv(table).assign(tags=[[1, 2], [1], [3], [3]]))
    code, _, err = run_cli("score", str(bad), "--performance", "acc", "--resource", "kwh", "--by", "tags")
    one_line_exit_2(code, err)
    assert "group column 'tags' holds lists" in err and "--by" in err


def test_output_that_is_a_folder_is_refused_before_reading(tmp_path):
    folder = tmp_path / "scored.csv"
    folder.mkdir()
    code, _, err = run_cli(
        "score", str(tmp_path / "absent.csv"), "--performance", "acc", "--resource", "kwh", "-o", str(folder)
    )
    one_line_exit_2(code, err)
    assert "is a folder" in err  # checked before the (absent) input is read


def test_output_below_a_file_is_refused(table, tmp_path):
    code, _, err = run_cli(
        "score", str(table), "--performance", "acc", "--resource", "kwh", "-o", str(table / "scored.csv")
    )
    one_line_exit_2(code, err)
    assert "is a file, not a folder" in err


def test_output_with_trailing_slash_is_a_folder(table, tmp_path):
    code, _, err = run_cli(
        "score", str(table), "--performance", "acc", "--resource", "kwh", "-o", str(tmp_path / "new.csv") + "/"
    )
    one_line_exit_2(code, err)
    assert "is a folder" in err and not (tmp_path / "new.csv").exists()


@pytest.mark.skipif(
    hasattr(__import__("os"), "geteuid") and __import__("os").geteuid() == 0,
    reason="root writes into read-only folders: run the suite as a user other than root to check the refusal",
)
def test_read_only_output_folder_is_refused(table, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        code, _, err = run_cli(
            "score", str(table), "--performance", "acc", "--resource", "kwh", "-o", str(folder / "out.csv")
        )
    finally:
        folder.chmod(0o700)
    one_line_exit_2(code, err)
    assert "cannot be written" in err


FULL_DISK = """
import resource, signal, sys
from pepr.cli import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a full disk: writes past 64 bytes fail (EFBIG)
resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))
sys.exit(main(sys.argv[1:]))
"""


def test_full_disk_exits_2_and_keeps_the_old_table(table, tmp_path):
    out_path = tmp_path / "pepr.csv"
    out_path.write_text("precious\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            FULL_DISK,
            "score",
            str(table),
            "--performance",
            "acc",
            "--resource",
            "kwh",
            "-o",
            str(out_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    one_line_exit_2(proc.returncode, proc.stderr)
    assert "cannot write table" in proc.stderr
    assert out_path.read_text() == "precious\n"
    assert not list(tmp_path.glob(".pepr.csv.*")), "no temp file left behind"


def test_full_stdout_exits_2(table):
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "pepr.cli", "score", str(table), "--performance", "acc", "--resource", "kwh"],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    one_line_exit_2(proc.returncode, proc.stderr)
    assert "standard output" in proc.stderr


def test_status_column_scores_ok_rows_and_leaves_failed_rows_empty(tmp_path):
    """pepr's own runs.csv holds failed runs with empty performance: they keep empty scores."""
    path = tmp_path / "runs.csv"
    pd.DataFrame(
        {
            "dataset": ["d", "d", "d", "e"],
            "status": ["ok", "failed", "OK", "ok"],
            "reason": ["", "kernel larger than image", "", ""],
            "test_accuracy": [0.9, np.nan, 0.8, 0.7],
            "energy_kwh": [1.0, np.nan, 2.0, 3.0],
        }
    ).to_csv(path, index=False)
    out_path = tmp_path / "pepr.csv"
    code, out, err = run_cli(
        "score",
        str(path),
        "--performance",
        "test_accuracy",
        "--resource",
        "energy_kwh",
        "--by",
        "dataset",
        "-o",
        str(out_path),
    )
    assert code == 0, err
    assert "scored the 3 rows with status 'ok'" in err
    result = pd.read_csv(out_path)
    assert len(result) == 4
    np.testing.assert_allclose(result["pepr_energy_kwh"].to_numpy(), [0.9, np.nan, 0.4, 0.7])
    assert np.isnan(result.loc[1, "energy_kwh_norm"])


def test_status_column_without_any_ok_row_is_an_error(tmp_path):
    path = tmp_path / "runs.csv"
    pd.DataFrame({"status": ["failed"], "acc": [np.nan], "kwh": [np.nan]}).to_csv(path, index=False)
    code, out, err = run_cli("score", str(path), "--performance", "acc", "--resource", "kwh")
    assert code == 2 and "no row has status 'ok'" in err


def test_status_column_still_checks_the_ok_rows_and_column_names(tmp_path):
    path = tmp_path / "runs.csv"
    pd.DataFrame({"status": ["ok", "ok", "failed"], "acc": [0.5, np.nan, np.nan], "kwh": [1.0, 2.0, np.nan]}).to_csv(
        path, index=False
    )
    code, _, err = run_cli("score", str(path), "--performance", "acc", "--resource", "kwh")
    assert code == 2 and "missing/NaN" in err and "row 1" in err and "row 2" not in err
    code, _, err = run_cli("score", str(path), "--performance", "acc", "--resource", "kwhh")
    assert code == 2 and "unknown column" in err and "'kwhh'" in err


def test_without_status_column_a_nan_performance_is_still_an_error(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"acc": [0.5, np.nan], "kwh": [1.0, 2.0]}).to_csv(path, index=False)
    code, _, err = run_cli("score", str(path), "--performance", "acc", "--resource", "kwh")
    assert code == 2 and "missing/NaN values in rows 1" in err
