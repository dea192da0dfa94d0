"""Unit tests for the PePR metric (pepr.results.scoring)."""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pepr
from pepr.errors import PeprInputError
from pepr.results.scoring import score


def hand_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run": ["a", "b", "c", "d", "e"],
            "cell": ["x", "x", "x", "y", "y"],
            "acc": [0.9, 0.8, 0.7, 0.6, 0.5],
            "energy": [1.0, 3.0, 2.0, 5.0, 5.0],
            "time": [10.0, 20.0, 40.0, 7.0, 1.0],
        }
    )


def test_hand_computed_scores_match_to_1e12():
    out = score(hand_table(), performance="acc", resources=["energy", "time"], by=["cell"])
    # cell x: energy min 1 max 3 -> norms 0, 1, 0.5 ; time min 10 max 40 -> 0, 1/3, 1
    # cell y: energy constant -> norms 0, 0 ; time min 1 max 7 -> 1, 0
    expected_energy_norm = [0.0, 1.0, 0.5, 0.0, 0.0]
    expected_pepr_energy = [0.9 / 1.0, 0.8 / 2.0, 0.7 / 1.5, 0.6, 0.5]
    expected_time_norm = [0.0, 1.0 / 3.0, 1.0, 1.0, 0.0]
    expected_pepr_time = [0.9, 0.8 / (1 + 1 / 3), 0.7 / 2.0, 0.6 / 2.0, 0.5]
    np.testing.assert_allclose(out["energy_norm"], expected_energy_norm, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out["pepr_energy"], expected_pepr_energy, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out["time_norm"], expected_time_norm, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out["pepr_time"], expected_pepr_time, rtol=0, atol=1e-12)


def test_output_keeps_rows_and_columns_then_appends_in_resource_order():
    table = hand_table()
    out = score(table, performance="acc", resources=["time", "energy"], by=["cell"])
    assert list(out.columns) == list(table.columns) + [
        "time_norm",
        "pepr_time",
        "energy_norm",
        "pepr_energy",
    ]
    pd.testing.assert_frame_equal(out[table.columns], table)
    assert table.columns.tolist() == ["run", "cell", "acc", "energy", "time"], "input not mutated"


def test_without_by_the_whole_table_is_one_cell():
    out = score(hand_table(), performance="acc", resources=["energy"])
    np.testing.assert_allclose(out["energy_norm"], [0.0, 0.5, 0.25, 1.0, 1.0], atol=1e-12)


def test_single_run_cell_scores_its_performance():
    df = pd.DataFrame({"acc": [0.42], "kwh": [3.0]})
    out = score(df, performance="acc", resources=["kwh"])
    assert out["kwh_norm"].tolist() == [0.0]
    assert out["pepr_kwh"].tolist() == [0.42]


def test_top_level_api_is_exported():
    assert pepr.score is score


def test_string_arguments_are_accepted_for_single_columns():
    out = score(hand_table(), performance="acc", resources="energy", by="cell")
    assert "pepr_energy" in out.columns


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda df: df.iloc[0:0], "no rows"),
        (lambda df: df.assign(acc=[0.9, 1.2, 0.7, 0.6, 0.5]), "[0, 1]"),
        (lambda df: df.assign(acc=[0.9, -0.1, 0.7, 0.6, 0.5]), "[0, 1]"),
        (lambda df: df.assign(acc=[0.9, np.nan, 0.7, 0.6, 0.5]), "rows 1"),
        (lambda df: df.assign(energy=[1.0, -3.0, 2.0, 5.0, 5.0]), "non-negative"),
        (lambda df: df.assign(energy=[1.0, 3.0, "lots", 5.0, 5.0]), "non-numeric"),
        (lambda df: df.assign(energy=[1.0, 3.0, np.inf, 5.0, 5.0]), "infinite"),
        (lambda df: df.assign(cell=["x", None, "x", "y", "y"]), "group column"),
    ],
)
def test_bad_tables_raise_clear_errors(mutate, message):
    with pytest.raises(PeprInputError, match=None) as info:
        score(mutate(hand_table()), performance="acc", resources=["energy"], by=["cell"])
    assert message in str(info.value)


def test_unknown_column_lists_available_columns():
    with pytest.raises(PeprInputError) as info:
        score(hand_table(), performance="accuracy", resources=["energy"])
    text = str(info.value)
    assert "'accuracy'" in text and "available columns: run, cell, acc, energy, time" in text


def test_no_resource_is_an_error():
    with pytest.raises(PeprInputError, match="no resource"):
        score(hand_table(), performance="acc", resources=[])


def test_nan_rows_are_named():
    df = hand_table()
    df.loc[[1, 3], "energy"] = np.nan
    with pytest.raises(PeprInputError, match=r"rows 1, 3"):
        score(df, performance="acc", resources=["energy"])


# ---------------------------------------------------------------------------- properties
finite_perf = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
# Zero or normal-range values: scaling subnormals would lose the very differences under test.
finite_res = st.one_of(st.just(0.0), st.floats(min_value=1e-6, max_value=1e6))


@st.composite
def tables(draw):
    n = draw(st.integers(min_value=1, max_value=30))
    return pd.DataFrame(
        {
            "cell": draw(st.lists(st.sampled_from("abc"), min_size=n, max_size=n)),
            "p": draw(st.lists(finite_perf, min_size=n, max_size=n)),
            "r": draw(st.lists(finite_res, min_size=n, max_size=n)),
        }
    )


@settings(max_examples=200, deadline=None)
@given(tables())
def test_bounds_and_cheapest_scores_p(df):
    out = score(df, performance="p", resources=["r"], by=["cell"])
    p, s = out["p"].to_numpy(), out["pepr_r"].to_numpy()
    assert np.all(s <= p + 1e-12)
    assert np.all(s >= p / 2 - 1e-12)
    assert np.all((out["r_norm"] >= 0) & (out["r_norm"] <= 1))
    cheapest = df.groupby("cell")["r"].transform("min") == df["r"]
    np.testing.assert_array_equal(s[cheapest.to_numpy()], p[cheapest.to_numpy()])


@settings(max_examples=100, deadline=None)
@given(tables(), st.randoms(use_true_random=False))
def test_invariant_to_row_order(df, rnd):
    order = list(range(len(df)))
    rnd.shuffle(order)
    original = score(df, performance="p", resources=["r"], by=["cell"])
    shuffled = score(df.iloc[order], performance="p", resources=["r"], by=["cell"])
    pd.testing.assert_series_equal(shuffled["pepr_r"].sort_index(), original["pepr_r"], check_exact=True)


@settings(max_examples=100, deadline=None)
@given(tables(), st.floats(min_value=1e-3, max_value=1e3))
def test_invariant_to_positive_scaling_of_a_resource(df, factor):
    original = score(df, performance="p", resources=["r"], by=["cell"])
    scaled = score(df.assign(r=df["r"] * factor), performance="p", resources=["r"], by=["cell"])
    np.testing.assert_allclose(scaled["pepr_r"], original["pepr_r"], rtol=1e-9, atol=1e-12)


def test_most_expensive_scores_half():
    df = pd.DataFrame({"p": [0.8, 0.6], "r": [1.0, 9.0]})
    out = score(df, performance="p", resources=["r"])
    assert math.isclose(out["pepr_r"].iloc[1], 0.3, abs_tol=1e-15)


def test_reference_rows_widen_their_cell_range_without_being_scored():
    table = hand_table()
    # cell x gains a reference at 9 (its max was 3); cell y's reference value is empty: ignored
    reference = pd.DataFrame({"cell": ["x", "y", "z"], "energy": [9.0, float("nan"), 100.0]})
    out = score(table, performance="acc", resources=["energy"], by=["cell"], reference=reference)
    assert len(out) == len(table)
    assert out["energy_norm"].tolist() == pytest.approx([0.0, 2 / 8, 1 / 8, 0.0, 0.0])
    assert out["pepr_energy"].iloc[1] == pytest.approx(0.8 / (1 + 2 / 8))
    # a reference of a cell with no scored run changes nothing; an empty reference neither
    same = score(table, performance="acc", resources=["energy"], by=["cell"], reference=reference.iloc[2:])
    plain = score(table, performance="acc", resources=["energy"], by=["cell"])
    pd.testing.assert_frame_equal(same, plain)
    pd.testing.assert_frame_equal(score(table, "acc", ["energy"], ["cell"], reference=reference.iloc[:0]), plain)
    # no groups: the whole table's range, widened
    whole = score(table, performance="acc", resources=["energy"], reference=pd.DataFrame({"energy": [0.0]}))
    assert whole["energy_norm"].tolist() == pytest.approx([0.2, 0.6, 0.4, 1.0, 1.0])


def test_reference_rows_must_carry_the_cell_and_resource_columns():
    with pytest.raises(PeprInputError, match="reference rows lack the column"):
        score(hand_table(), "acc", ["energy"], ["cell"], reference=pd.DataFrame({"energy": [1.0]}))
