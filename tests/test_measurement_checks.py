"""Measurement checks (tables/measurement_checks.csv): each check flags the run it should,
explains why, and never drops a run from the scores."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import pandas as pd
import pytest

from pepr.report.build import compute_tables, prepare
from pepr.report.config import ReportConfig
from pepr.report.data import TableSpec, prepare_table
from pepr.report.summary import summary_markdown


def sweep(n_models: int = 6) -> pd.DataFrame:
    """Two groups (fractions 1.0 and 0.1) of ``n_models`` models, ~100 W each, all values distinct."""
    rows = []
    for f, fraction in enumerate(("1.0", "0.1")):
        for i in range(n_models):
            seconds = 100.0 * (i + 1) * (1 if f == 0 else 0.1) + 7 * i + f
            watts = 100.0 + 3 * i + f
            rows.append(
                {
                    "dataset": "ds",
                    "init": "scratch",
                    "fraction": fraction,
                    "model": f"m{i}",
                    "seed": 0,
                    "status": "ok",
                    "params": 1000 * (i + 1),
                    "test_accuracy": 0.7 + 0.01 * i,
                    "energy_kwh": watts * seconds / 3.6e6,
                    "co2_kg": watts * seconds / 3.6e6 * 0.4,
                    "train_time_s": seconds,
                    "peak_memory_mb": 100.0 * (i + 1),
                    "device": "cuda",
                    "host": "node1",
                    "energy_method": "measured: NVML + RAPL",
                }
            )
    return pd.DataFrame(rows)


def checks(table: pd.DataFrame, spec: TableSpec | None = None) -> tuple[pd.DataFrame, dict]:
    data = prepare(prepare_table(table, spec or TableSpec(), ReportConfig()), None)
    tables = compute_tables(data)
    return tables["measurement_checks"], {"data": data, "tables": tables}


def test_a_clean_sweep_has_no_flags():
    flagged, _ = checks(sweep())
    assert flagged.empty
    # Peak memory identical across groups is normal (allocations are deterministic): never flagged.
    assert list(flagged.columns) == ["model", "dataset", "init", "fraction", "seed", "check", "severity", "detail"]


def test_a_resource_copied_into_another_group_is_flagged_in_both():
    table = sweep()
    copy = table.index[(table["model"] == "m2") & (table["fraction"] == "1.0")][0]
    other = table.index[(table["model"] == "m2") & (table["fraction"] == "0.1")][0]
    table.loc[other, ["energy_kwh", "co2_kg", "train_time_s"]] = table.loc[
        copy, ["energy_kwh", "co2_kg", "train_time_s"]
    ]
    flagged, _ = checks(table)
    same = flagged[flagged["check"] == "identical_resource"]
    assert set(same["model"]) == {"m2"} and set(same["fraction"]) == {"1.0", "0.1"}
    assert len(same) == 2  # one row per run; energy, CO2 and time explained in it
    detail = same[same["fraction"] == "0.1"]["detail"].iloc[0]
    assert detail.count(" | ") == 2 and "train_time_s" in detail
    assert f"energy_kwh = {float(table.loc[copy, 'energy_kwh'])!r}" in detail and "ds / scratch / 100% data" in detail


def test_implied_power_far_from_the_sweep_median_is_flagged():
    table = sweep()
    odd = table.index[(table["model"] == "m4") & (table["fraction"] == "0.1")][0]
    table.loc[odd, "energy_kwh"] *= 10  # ~1 kW: energy or time mismeasured
    flagged, _ = checks(table)
    power = flagged[flagged["check"] == "implied_power"]
    assert power[["model", "fraction"]].values.tolist() == [["m4", "0.1"]]
    assert " W" in power["detail"].iloc[0] and "median" in power["detail"].iloc[0]


def test_near_identical_estimates_do_not_flag_power():
    table = sweep()
    table["energy_kwh"] = 100.0 * table["train_time_s"] / 3.6e6
    table.loc[0, "energy_kwh"] *= 1.05  # 5% off a constant: tiny MAD, but no outlier
    flagged, _ = checks(table)
    assert "implied_power" not in set(flagged["check"])


def test_zero_and_negative_resources_are_flagged_not_dropped():
    table = sweep()
    table.loc[1, "energy_kwh"] = 0.0  # scored resource: zero is accepted by scoring, flagged here
    table.loc[2, "peak_memory_mb"] = 0.0
    spec = TableSpec(resources=("energy_kwh", "train_time_s"))  # co2 not scored: a negative there is flagged
    table.loc[3, "co2_kg"] = -1.0
    flagged, ctx = checks(table, spec)
    bad = flagged[flagged["check"] == "nonpositive_resource"]
    assert sorted(zip(bad["model"], bad["fraction"], bad["detail"].str.split(" = ").str[0])) == [
        ("m1", "1.0", "energy_kwh"),
        ("m2", "1.0", "peak_memory_mb"),
        ("m3", "1.0", "co2_kg"),
    ]
    # Nothing dropped: every run is still scored.
    assert ctx["data"].results["pepr_energy_kwh"].notna().all() and len(ctx["data"].results) == len(table)
    assert "**Measurement checks:** 3 flag(s)" in summary_markdown(ctx["data"], ctx["tables"])


def test_runs_of_one_group_on_different_devices_or_hosts_are_flagged():
    table = sweep()
    table.loc[table["fraction"] == "0.1", "device"] = "cpu"  # another group on another device: fine
    table.loc[0, "host"] = "node7"  # one run of the full-data group on another host
    flagged, _ = checks(table)
    mixed = flagged[flagged["check"] == "mixed_devices"]
    assert mixed[["model", "fraction"]].values.tolist() == [["m0", "1.0"]]
    assert "node1 (5 runs), node7 (1 runs)" in mixed["detail"].iloc[0]


def test_runs_of_one_group_with_memory_measured_another_way_are_flagged():
    # a sweep resumed after an upgrade: the finished runs read the resident set (no
    # memory_method column in their metrics), the new ones the heap's bytes in use
    heap = "C heap in use (glibc mallinfo2, sampled every 20 ms and at each phase's end)"
    table = sweep().assign(memory_method=heap)
    table.loc[(table["fraction"] == "1.0") & table["model"].isin(["m0", "m1"]), "memory_method"] = None
    table.loc[table["fraction"] == "0.1", "memory_method"] = None  # one way throughout: fine
    flagged, _ = checks(table, TableSpec(resources=("energy_kwh", "peak_memory_mb")))
    mixed = flagged[flagged["check"] == "mixed_memory_methods"]
    assert sorted(mixed["model"]) == ["m0", "m1"] and set(mixed["fraction"]) == {"1.0"}
    assert set(mixed["severity"]) == {"harmful"}  # PePR-M is scored: the ranking is distorted
    detail = mixed["detail"].iloc[0]
    assert detail.startswith("peak_memory_mb measured as not recorded (an earlier pepr")
    assert f"{heap} (4 runs)" in detail and "--forcerun" in detail
    # memory not scored: the flag only explains
    flagged, _ = checks(table, TableSpec(resources=("energy_kwh",)))
    assert set(flagged.loc[flagged["check"] == "mixed_memory_methods", "severity"]) == {"harmless"}


def test_checks_use_the_input_column_names(tmp_path, capsys):
    from pepr.cli import main

    table = (
        sweep().rename(columns={"model": "name", "fraction": "share", "test_accuracy": "acc"}).drop(columns=["seed"])
    )
    copy = table.index[(table["name"] == "m2") & (table["share"] == "1.0")][0]
    other = table.index[(table["name"] == "m2") & (table["share"] == "0.1")][0]
    table.loc[other, ["energy_kwh", "train_time_s"]] = table.loc[copy, ["energy_kwh", "train_time_s"]]
    table.to_csv(tmp_path / "runs.csv", index=False)
    out = tmp_path / "report"
    code = main(
        [
            "report",
            str(tmp_path / "runs.csv"),
            "--model",
            "name",
            "--performance",
            "acc",
            "--by",
            "dataset",
            "--by",
            "share",
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    flagged = pd.read_csv(out / "tables" / "measurement_checks.csv")
    assert list(flagged.columns) == ["name", "dataset", "share", "check", "severity", "detail"]
    assert set(flagged["name"]) == {"m2"} and set(flagged["check"]) == {"identical_resource"}
    assert len(pd.read_csv(out / "pepr.csv")) == len(table)  # flagged runs kept


def test_footprint_counts_every_run_and_each_pretraining_once():
    from pepr.report.tables import footprint_table

    table = sweep()
    table.loc[0, "status"] = "failed"  # a failed run that spent energy still cost it
    # Two transfer runs share one pretraining of 0.2 kWh / 0.08 kg / 720 s.
    table["pretrain_energy_kwh"], table["pretrain_co2_kg"], table["pretrain_train_time_s"] = (
        float("nan"),
        float("nan"),
        float("nan"),
    )
    table["pretrain_uses"] = float("nan")
    table.loc[[1, 2], ["pretrain_energy_kwh", "pretrain_co2_kg", "pretrain_train_time_s", "pretrain_uses"]] = [
        0.2,
        0.08,
        720.0,
        2,
    ]
    table.loc[3, "energy_method"] = "estimated: CodeCarbon cpu_load/TDP"
    data = prepare(prepare_table(table, TableSpec(), ReportConfig()), None)
    row = footprint_table(data.results).iloc[0]
    assert row["n_runs"] == len(table)
    assert row["energy_kwh"] == pytest.approx(table["energy_kwh"].sum() + 0.2)
    assert row["co2_kg"] == pytest.approx(table["co2_kg"].sum() + 0.08)
    assert row["device_hours"] == pytest.approx((table["train_time_s"].sum() + 720) / 3600)
    assert row["pretraining_energy_kwh"] == pytest.approx(0.2)
    assert row["measurement"] == f"measured ({len(table) - 1} runs) and estimated (1 runs)"
    text = summary_markdown(data, compute_tables(data))
    first = text[: text.index("## Best model")]
    assert "**This sweep's footprint:**" in first and "pretraining included (0.2 kWh)" in first


def _copy(table, model, columns, source="1.0", target="0.1"):
    src = table.index[(table["model"] == model) & (table["fraction"] == source)][0]
    dst = table.index[(table["model"] == model) & (table["fraction"] == target)][0]
    table.loc[dst, columns] = table.loc[src, columns].to_numpy()
    return table


def test_a_copy_of_a_plausible_power_is_harmless_an_energy_pasted_into_a_smaller_group_harmful():
    harmless, _ = checks(_copy(sweep(), "m2", ["energy_kwh", "co2_kg", "train_time_s"]))
    assert set(harmless.loc[harmless["check"] == "identical_resource", "severity"]) == {"harmless"}
    assert "harmless: same data size" in harmless["detail"].iloc[0]
    harmful, _ = checks(_copy(sweep(), "m2", ["energy_kwh"]))  # a 100%-data energy in the 10% group
    same = harmful[harmful["check"] == "identical_resource"].set_index("fraction")
    assert (
        same.loc["0.1", "severity"] == "harmful"
        and "implied power is 6.6x its group's median" in same.loc["0.1", "detail"]
    )
    assert same.loc["1.0", "severity"] == "harmless"
    # the same copy with a plausible power, but between groups of different data sizes: harmful
    table = _copy(sweep(), "m2", ["energy_kwh", "co2_kg", "train_time_s"])
    table["n_train"] = [1000 if f == "1.0" else 100 for f in table["fraction"]]
    flagged, _ = checks(table)
    assert set(flagged.loc[flagged["check"] == "identical_resource", "severity"]) == {"harmful"}


def test_memory_repeats_only_flagged_across_models_or_configurations():
    flagged, _ = checks(sweep())  # the same model's memory equal in both groups: deterministic, fine
    assert flagged.empty
    table = sweep()
    table.loc[table["model"] == "m1", "peak_memory_mb"] = 100.0  # m1 allocating exactly m0's memory
    flagged, _ = checks(table)
    same = flagged[flagged["check"] == "identical_resource"]
    assert set(same["model"]) == {"m0", "m1"} and same["detail"].str.contains("peak_memory_mb").all()
    table = sweep()
    table["batch_size"] = [32 if f == "1.0" else 64 for f in table["fraction"]]  # another batch, same memory
    flagged, _ = checks(table)
    assert len(flagged[flagged["check"] == "identical_resource"]) == 12


def test_a_whole_run_copied_into_another_group_is_a_duplicated_run():
    table = _copy(sweep(), "m3", ["energy_kwh", "co2_kg", "train_time_s", "peak_memory_mb", "test_accuracy"])
    flagged, _ = checks(table)
    dup = flagged[flagged["check"] == "duplicated_run"]
    assert sorted(dup["fraction"]) == ["0.1", "1.0"] and set(dup["model"]) == {"m3"}
    assert (dup["severity"] == "harmful").all() and "a whole run copied" in dup["detail"].iloc[0]
    resources_only = _copy(sweep(), "m3", ["energy_kwh", "co2_kg", "train_time_s"])
    resources_only.loc[(resources_only["model"] == "m3") & (resources_only["fraction"] == "0.1"), "test_accuracy"] -= (
        0.05
    )
    assert "duplicated_run" not in set(checks(resources_only)[0]["check"])  # another accuracy: not a whole copy


def test_low_or_spread_cpu_shares_mark_a_group_contended():
    table = sweep()
    table["cpu_share"] = 0.95
    table.loc[0, "cpu_share"] = 0.3  # low
    table.loc[table["fraction"] == "0.1", "cpu_share"] = [0.9, 0.9, 0.9, 0.9, 0.9, 0.4]  # > 2x spread
    flagged, _ = checks(table)
    contended = flagged[flagged["check"] == "contended"]
    assert sorted(zip(contended["model"], contended["fraction"])) == [("m0", "1.0"), ("m5", "0.1")]
    assert "cpu_share = 0.30" in contended["detail"].iloc[0]


def test_exclude_flagged_rescores_without_the_harmful_runs_and_says_what_changed(tmp_path, capsys):
    """A 10%-data energy pasted into m5's full-data run makes it look cheapest and recommended;
    left out, the recommendation changes and the summary says so."""
    from pepr.cli import main

    table = _copy(sweep(), "m5", ["energy_kwh", "co2_kg"], source="0.1", target="1.0")
    table.to_csv(tmp_path / "runs.csv", index=False)
    kept, left = tmp_path / "kept", tmp_path / "left"
    assert main(["report", str(tmp_path / "runs.csv"), "--out", str(kept)]) == 0
    assert main(["report", str(tmp_path / "runs.csv"), "--exclude-flagged", "--out", str(left)]) == 0, (
        capsys.readouterr().err
    )
    before = pd.read_csv(kept / "tables" / "decision.csv").set_index("fraction")
    after = pd.read_csv(left / "tables" / "decision.csv").set_index("fraction")
    assert before.loc[1.0, "recommended_model"] == "m5" and after.loc[1.0, "recommended_model"] != "m5"
    excluded = pd.read_csv(left / "tables" / "excluded_runs.csv")
    assert excluded[["model", "fraction"]].values.tolist() == [["m5", 1.0]]
    changes = pd.read_csv(left / "tables" / "verdict_changes.csv")
    row = changes[changes["table"] == "decision.recommended_model"].iloc[0]
    assert row["with_flagged"] == "m5" and row["without_flagged"] == after.loc[1.0, "recommended_model"]
    summary = (left / "summary.md").read_text()
    assert "1 run(s) flagged harmful were left out" in summary and "decision.recommended_model" in summary
    assert "`--exclude-flagged`" in (kept / "summary.md").read_text()
    scored = pd.read_csv(left / "pepr.csv")
    assert len(scored) == len(table)  # pepr.csv is the input scored as given; the report leaves runs out


def test_pepr_train_warns_at_the_end_of_a_contended_run():
    from pepr.train.measure import LOW_CPU_SHARE, contention_warning

    assert contention_warning(None, 2) is None and contention_warning(0.9, 2) is None
    warning = contention_warning(LOW_CPU_SHARE / 2, 4)
    assert warning.startswith("warning: this run got 25% of its 4 thread(s)' CPU time") and "rerun it" in warning


def test_figures_mark_flagged_runs_and_the_hover_says_why():
    from pepr.report import figures, interactive

    table = _copy(sweep(), "m2", ["energy_kwh"])
    data = prepare(prepare_table(table, TableSpec(), ReportConfig()), None)
    assert (
        data.results.set_index(["model", "fraction"])
        .loc[("m2", "0.1"), "flags"]
        .startswith("identical_resource (harmful)")
    )
    fig = figures.performance_vs_resource(data.results, data.cfg)
    marked = [c for ax in fig.axes for c in ax.collections if c.get_gid() == figures.FLAGGED_GID]
    assert sum(len(c.get_offsets()) for c in marked) == 2  # both runs of the copy, in their groups' panels
    assert any(t.get_text() == "flagged by a measurement check" for t in fig.legends[0].get_texts())
    page = "".join(interactive.figure_fragment(item) for item in interactive.interactive_figures(data))
    assert "flagged: identical_resource (harmful)" in page


def test_a_dataset_with_identical_images_across_splits_gets_one_data_leak_row_per_group():
    table = sweep()
    table["duplicate_images"] = [3 if fraction == "0.1" else None for fraction in table["fraction"]]
    flagged, _ = checks(table)
    leak = flagged[flagged["check"] == "data_leak"]
    assert len(leak) == 1 and set(leak["fraction"]) == {"0.1"}
    assert "3 group(s) of identical images" in leak["detail"].iloc[0] and "dedupe=drop-train" in leak["detail"].iloc[0]
