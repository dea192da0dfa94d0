"""The adaptive policy (pepr.results.adaptive) on constructed histories: fast, no torch."""

from __future__ import annotations

import pandas as pd
import pytest

from pepr.errors import PeprInputError
from pepr.results.adaptive import (
    AdaptiveSettings,
    Columns,
    Policy,
    decide_group,
    decide_rung,
    kept_count,
    policy_problems,
    replay,
    replay_group,
    stopped_projections,
)


def histories(curves: dict[str, list[float]], cost: dict[str, float], seeds=(0,), group="g") -> pd.DataFrame:
    """One row per model, seed and epoch: val = test = the curve, energy = cost per epoch."""
    rows = []
    for model, curve in curves.items():
        for seed in seeds:
            for epoch, value in enumerate(curve, start=1):
                rows.append(
                    {
                        "dataset": group,
                        "model": model,
                        "seed": seed,
                        "epoch": epoch,
                        "val_accuracy": value,
                        "test_accuracy": value,
                        "cumulative_energy_kwh": cost[model] * epoch,
                    }
                )
    return pd.DataFrame(rows)


def decisions(table: pd.DataFrame) -> dict[str, str]:
    return dict(zip(table["model"], table["decision"]))


def test_clear_winner_kept_the_rest_stopped():
    curves = {
        "a": [0.9, 0.92, 0.93, 0.94],
        "b": [0.6, 0.61, 0.62, 0.62],
        "c": [0.5, 0.5, 0.5, 0.5],
        "d": [0.55, 0.56, 0.56, 0.57],
    }
    cost = {"a": 1.0, "b": 1.0, "c": 2.0, "d": 3.0}
    table = decide_rung(histories(curves, cost), rung=1, epochs=4, keep=0.25, min_keep=1)
    assert decisions(table) == {"a": "kept", "b": "stopped", "c": "stopped", "d": "stopped"}
    assert table["model"].iloc[0] == "a"
    # spent so far is one epoch; the projection scales it to the four epochs
    row = table.set_index("model").loc["d"]
    assert row["spent"] == pytest.approx(3.0) and row["projected_resource"] == pytest.approx(12.0)


def test_projection_normalises_over_candidates_as_pepr_does():
    table = decide_rung(
        histories({"cheap": [0.8, 0.8], "dear": [0.9, 0.9]}, {"cheap": 1.0, "dear": 5.0}),
        rung=1,
        epochs=2,
        keep=0.5,
        min_keep=1,
    ).set_index("model")
    assert table.loc["cheap", "projected_pepr"] == pytest.approx(0.8)  # R = 0
    assert table.loc["dear", "projected_pepr"] == pytest.approx(0.45)  # R = 1
    assert table.loc["cheap", "decision"] == "kept"


def test_a_peak_resource_is_not_scaled():
    frame = histories({"a": [0.8, 0.8], "b": [0.7, 0.7]}, {"a": 1.0, "b": 2.0})
    frame["memory"] = frame["model"].map({"a": 100.0, "b": 50.0})
    table = decide_rung(frame, rung=1, epochs=10, keep=0.5, min_keep=1, resource="memory", peak=True).set_index("model")
    assert table.loc["a", "projected_resource"] == pytest.approx(100.0)


def test_late_bloomer_is_kept_by_the_trend_guard():
    # at the rung, "bloom" is behind "steady" but climbs fast and is as cheap: at its pace it leads
    curves = {
        "steady": [0.80, 0.81, 0.81, 0.81, 0.81, 0.81],
        "bloom": [0.50, 0.60, 0.70, 0.80, 0.90, 0.95],
        "slow": [0.50, 0.51, 0.52, 0.52, 0.52, 0.52],
        "dear": [0.80, 0.80, 0.80, 0.80, 0.80, 0.80],
    }
    cost = {"steady": 1.0, "bloom": 1.0, "slow": 1.0, "dear": 4.0}
    table = decide_rung(histories(curves, cost), rung=3, epochs=6, keep=0.25, min_keep=1)
    found = table.set_index("model")
    assert found.loc["steady", "decision"] == "kept"
    assert found.loc["bloom", "decision"] == "kept"
    assert found.loc["bloom", "reason"].startswith("trend guard")
    assert found.loc["slow", "decision"] == "stopped" and found.loc["dear", "decision"] == "stopped"


def test_no_trend_guard_at_the_first_epoch():
    curves = {"steady": [0.8, 0.8], "bloom": [0.5, 0.99]}
    table = decide_rung(histories(curves, {"steady": 1.0, "bloom": 1.0}), rung=1, epochs=2, keep=0.5, min_keep=1)
    assert decisions(table) == {"steady": "kept", "bloom": "stopped"}
    assert table["trend_pepr"].isna().all()


def test_ties_at_the_cutoff_all_continue():
    curves = {"a": [0.9, 0.9], "b": [0.7, 0.7], "c": [0.7, 0.7], "d": [0.1, 0.1]}
    cost = dict.fromkeys(curves, 1.0)
    table = decide_rung(histories(curves, cost), rung=1, epochs=2, keep=0.5, min_keep=1)
    assert decisions(table) == {"a": "kept", "b": "kept", "c": "kept", "d": "stopped"}
    assert table.set_index("model").loc["c", "reason"] == "tied with the last kept candidate"


def test_fewer_candidates_than_min_keep_all_continue():
    table = decide_rung(
        histories({"a": [0.9, 0.9], "b": [0.1, 0.1]}, {"a": 1.0, "b": 9.0}), rung=1, epochs=2, keep=0.1, min_keep=3
    )
    assert decisions(table) == {"a": "kept", "b": "kept"}
    assert kept_count(2, 0.1, 3) == 2 and kept_count(10, 0.34, 2) == 4 and kept_count(9, 1 / 3, 1) == 3


def test_seeds_of_a_model_are_one_candidate():
    frame = histories({"a": [0.8, 0.8], "b": [0.7, 0.7]}, {"a": 1.0, "b": 1.0}, seeds=(0, 1, 2))
    frame.loc[(frame["model"] == "a") & (frame["seed"] == 2), "val_accuracy"] = 0.5  # mean 0.7 for a
    table = decide_rung(frame, rung=1, epochs=2, keep=0.5, min_keep=1).set_index("model")
    assert list(table["seeds"]) == [3, 3]
    assert table.loc["a", "metric"] == pytest.approx(0.7)
    assert table.loc["a", "spent"] == pytest.approx(3.0)  # summed over seeds


def test_failed_and_stopped_runs_drop_out():
    frame = histories({"a": [0.9, 0.9, 0.9], "b": [0.8, 0.8, 0.8], "c": [0.7, 0.7, 0.7]}, dict.fromkeys("abc", 1.0))
    frame["status"] = "ok"
    frame.loc[frame["model"] == "a", "status"] = "failed"
    frame = frame[~((frame["model"] == "b") & (frame["epoch"] > 1))]  # b's history ends before the rung
    table = decide_rung(frame, rung=2, epochs=3, keep=0.5, min_keep=1)
    assert list(table["model"]) == ["c"] and decisions(table) == {"c": "kept"}
    frame["status"] = "stopped"
    assert decide_rung(frame, rung=2, epochs=3, keep=0.5, min_keep=1).empty


# Two cheap survivors 9% apart in cost, the group's range (set by the stopped models) far wider:
# "y" is 2 points better at rung 3 and must not lose to "x" for being 9% dearer.
SURVIVORS = {"x": [0.80] * 10, "y": [0.78, 0.80, 0.82, 0.83, 0.84, 0.84, 0.85, 0.85, 0.85, 0.85]}
EXPENSIVE = {f"e{i}": [0.6] * 10 for i in range(1, 5)}
SURVIVOR_COST = {"x": 1.0, "y": 1.09, "e1": 5.0, "e2": 6.0, "e3": 8.0, "e4": 10.0}


def test_a_later_rung_normalises_over_every_candidate_the_group_started_with():
    frame = histories({**SURVIVORS, **EXPENSIVE}, SURVIVOR_COST)
    first = decide_rung(frame, rung=1, epochs=10, keep=0.25, min_keep=1, later_rung=True)
    assert decisions(first) == {"x": "kept", "y": "kept", **dict.fromkeys(EXPENSIVE, "stopped")}
    reference = stopped_projections(first)
    assert reference == pytest.approx({"e1": 50.0, "e2": 60.0, "e3": 80.0, "e4": 100.0})  # 10 epochs projected
    survivors = frame[frame["model"].isin(["x", "y"])]
    table = decide_rung(survivors, rung=3, epochs=10, keep=0.25, min_keep=1, stopped=reference).set_index("model")
    assert table.loc["y", "decision"] == "kept" and table.loc["x", "decision"] == "stopped"
    # R over the range 10 (x) .. 100 (e4): y's 9% is a small R, not R = 1
    assert table.loc["y", "projected_pepr"] == pytest.approx(0.82 / (1 + 0.9 / 90))
    # normalised over the two survivors alone, y would score R = 1 and lose
    alone = decide_rung(survivors, rung=3, epochs=10, keep=0.25, min_keep=1)
    assert decisions(alone) == {"x": "kept", "y": "stopped"}


def test_replay_carries_the_stopped_candidates_to_later_rungs():
    result = replay_group(
        histories({**SURVIVORS, **EXPENSIVE}, SURVIVOR_COST),
        Policy(rungs=(1, 3), keep=0.25, min_keep=1),
        Columns(by=()),
    )
    assert decisions(result["rungs"][3]) == {"y": "kept", "x": "stopped"}
    assert result["recommended"] == "y"


def test_the_workflow_decision_uses_the_previous_rungs_stopped_candidates():
    settings = AdaptiveSettings(Policy(rungs=(1, 3), keep=0.25, min_keep=1), "energy_kwh", "val_accuracy")
    frame = histories({**SURVIVORS, **EXPENSIVE}, SURVIVOR_COST)

    def records(rung, models):
        return [
            {
                "model": m,
                "seed": 0,
                "status": "ok",
                "rung": rung,
                "history": frame[(frame["model"] == m) & (frame["epoch"] <= rung)].to_dict(orient="records"),
            }
            for m in models
        ]

    first = decide_group(records(1, sorted(SURVIVOR_COST)), rung=1, epochs=10, settings=settings)
    assert first["kept"] == ["x", "y"] and first["stopped_projections"] == pytest.approx(
        {"e1": 50.0, "e2": 60.0, "e3": 80.0, "e4": 100.0}
    )
    second = decide_group(records(3, first["kept"]), rung=3, epochs=10, settings=settings, previous=first)
    assert second["kept"] == ["y"] and second["stopped"] == ["x"]
    assert set(second["stopped_projections"]) == {"e1", "e2", "e3", "e4", "x"}
    replayed = replay_group(frame, settings.policy, Columns(by=()))
    assert [c["projected_pepr"] for c in second["candidates"]] == pytest.approx(
        replayed["rungs"][3]["projected_pepr"].tolist()
    )


def test_no_signal_in_the_metric_defers_to_the_next_rung():
    # every model at the majority-class rate after one epoch: cost alone would decide
    curves = {"cheap": [0.74, 0.75, 0.76, 0.76], "good": [0.74, 0.85, 0.90, 0.92], "dear": [0.74, 0.80, 0.81, 0.81]}
    cost = {"cheap": 1.0, "good": 1.1, "dear": 4.0}
    deferred = decide_rung(histories(curves, cost), rung=1, epochs=4, keep=0.3, min_keep=1, later_rung=True)
    # cheap and good could still win; dear (R = 1) could not even with a perfect metric:
    # 1 / (1 + 1) = 0.5 < the leader's 0.74, whatever the later rungs show
    assert decisions(deferred) == {"cheap": "kept", "good": "kept", "dear": "stopped"}
    assert deferred["reason"].str.startswith("no signal").all()
    assert "even a perfect val_accuracy would give PePR 0.5000" in deferred.set_index("model").loc["dear", "reason"]
    # at the last rung there is nothing to wait for: equal performance, PePR prefers the cheaper
    last = decide_rung(histories(curves, cost), rung=1, epochs=4, keep=0.3, min_keep=1)
    assert decisions(last) == {"cheap": "kept", "good": "stopped", "dear": "stopped"}
    result = replay_group(histories(curves, cost), Policy(rungs=(1, 2), keep=0.3, min_keep=1), Columns(by=()))
    assert decisions(result["rungs"][1]) == {"cheap": "kept", "good": "kept", "dear": "stopped"}
    assert decisions(result["rungs"][2]) == {"good": "kept", "cheap": "stopped"}
    assert result["recommended"] == "good"


def test_no_signal_keeps_every_candidate_that_could_still_win_and_min_keep():
    curves = {"a": [0.74, 0.9], "b": [0.74, 0.8], "c": [0.74, 0.8]}
    # projected costs 2, 2.2 and 2.6 in a range of 2..10 (a candidate stopped earlier): c's
    # R = 0.075, a perfect metric would give 0.93 >= the leader's 0.74 -> it could still win
    close = decide_rung(
        histories(curves, {"a": 1.0, "b": 1.1, "c": 1.3}),
        rung=1,
        epochs=2,
        keep=0.3,
        min_keep=1,
        stopped={"big": 10.0},
        later_rung=True,
    )
    assert decisions(close) == dict.fromkeys(curves, "kept")
    # every other candidate is out of reach, min_keep still holds
    far = decide_rung(
        histories(curves, {"a": 1.0, "b": 5.0, "c": 9.0}), rung=1, epochs=2, keep=0.3, min_keep=2, later_rung=True
    )
    assert decisions(far) == {"a": "kept", "b": "kept", "c": "stopped"}


def test_policy_settings_are_checked():
    assert policy_problems([1, 3], 0.34, 2, epochs=10) == []
    assert any("below epochs" in p for p in policy_problems([1, 10], 0.34, 2, epochs=10))
    assert any("increasing" in p for p in policy_problems([3, 1], 0.34, 2))
    assert any("keep" in p for p in policy_problems([1], 0.0, 2))
    assert any("min_keep" in p for p in policy_problems([1], 0.5, 0))
    with pytest.raises(PeprInputError, match="keep"):
        Policy(rungs=(1,), keep=1.5)


def test_replay_spends_a_share_and_finds_the_full_sweeps_best():
    curves = {
        "a": [0.9, 0.92, 0.93, 0.94],
        "b": [0.6, 0.61, 0.62, 0.62],
        "c": [0.5, 0.5, 0.5, 0.5],
        "d": [0.55, 0.56, 0.56, 0.57],
    }
    cost = {"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0}
    result = replay_group(
        histories(curves, cost, seeds=(0, 1)), Policy(rungs=(1,), keep=0.25, min_keep=1), Columns(by=())
    )
    assert result["best_full"] == "a" and result["recommended"] == "a" and result["pepr_regret"] == 0
    # a trains 4 epochs, b, c, d one each, two seeds: (4 + 3) / 16
    assert result["spent"] == pytest.approx(14.0) and result["resource_share"] == pytest.approx(7 / 16)


def test_replay_regret_when_the_policy_stops_the_best():
    # "late" is worst at the rung and best at the end: stopped at epoch 1 (no guard there)
    curves = {"early": [0.8, 0.8, 0.8], "late": [0.3, 0.7, 0.95], "mid": [0.5, 0.5, 0.5]}
    table = replay(
        histories(curves, dict.fromkeys(curves, 1.0)),
        Policy(rungs=(1,), keep=0.33, min_keep=1),
        Columns(by=("dataset",)),
    )
    row = table.iloc[0]
    assert (row["best_full"], row["recommended"]) == ("late", "early")
    assert row["pepr_regret"] == pytest.approx(0.15)
    assert row["resource_share"] == pytest.approx(5 / 9)


def test_finished_runs_are_scored_over_the_whole_groups_range():
    # "accurate" and "cheap" survive rung 1; normalised over the two alone, accurate's 30% extra
    # energy would be R = 1 and cheap would win; over the group (the stopped big models at their
    # projected full cost) it is R = 0.03, as in the full grid, and the policy picks the same model
    curves = {"accurate": [0.9] * 4, "cheap": [0.8] * 4, "big1": [0.85] * 4, "big2": [0.85] * 4}
    cost = {"accurate": 1.3, "cheap": 1.0, "big1": 10.0, "big2": 12.0}
    result = replay_group(histories(curves, cost), Policy(rungs=(1,), keep=0.5, min_keep=1), Columns(by=()))
    assert set(result["rungs"][1].query("decision == 'kept'")["model"]) == {"accurate", "cheap"}
    assert result["best_full"] == "accurate" and result["recommended"] == "accurate"
    assert result["pepr_regret"] == 0


def test_workflow_scores_use_the_stopped_runs_projected_cost_and_replay_agrees():
    from pepr.results.adaptive import projected_full_runs
    from pepr.results.aggregate import score_runs

    base = {"dataset": "d", "init": "scratch", "fraction": 1.0, "seed": 0, "epochs": 4}
    runs = pd.DataFrame(
        [
            {**base, "model": "accurate", "status": "ok", "test_accuracy": 0.9, "energy_kwh": 5.2, "rung": None},
            {**base, "model": "cheap", "status": "ok", "test_accuracy": 0.8, "energy_kwh": 4.0, "rung": None},
            {**base, "model": "big1", "status": "stopped", "test_accuracy": 0.85, "energy_kwh": 10.0, "rung": 1},
            {**base, "model": "big2", "status": "Stopped", "test_accuracy": 0.85, "energy_kwh": 12.0, "rung": 1},
        ]
    )
    projected = projected_full_runs(runs, ["energy_kwh", "peak_memory_mb"])
    assert projected["model"].tolist() == ["big1", "big2"]
    assert projected["energy_kwh"].tolist() == pytest.approx([40.0, 48.0])
    scored = score_runs(runs, resources=["energy_kwh"], amortised=()).set_index("model")
    assert scored.loc["accurate", "energy_kwh_norm"] == pytest.approx(1.2 / 44)
    assert scored.loc["accurate", "pepr_energy_kwh"] > scored.loc["cheap", "pepr_energy_kwh"]
    assert scored.loc[["big1", "big2"], "pepr_energy_kwh"].isna().all()
    # a full grid (nothing stopped) is scored as before
    finished = score_runs(runs.iloc[:2], resources=["energy_kwh"], amortised=()).set_index("model")
    assert finished.loc["accurate", "energy_kwh_norm"] == pytest.approx(1.0)


def test_projection_scales_spending_not_peaks_nor_the_pretraining_share():
    from pepr.results.adaptive import projected_full_runs

    runs = pd.DataFrame(
        {
            "status": ["stopped", "ok"],
            "rung": [2, None],
            "epochs": [10, 10],
            "energy_kwh": [1.0, 5.0],
            "energy_kwh_amortised": [1.5, 5.5],  # 0.5 kWh of shared pretraining
            "peak_memory_mb": [300.0, 310.0],
        }
    )
    projected = projected_full_runs(runs, ["energy_kwh", "energy_kwh_amortised", "peak_memory_mb"])
    assert len(projected) == 1
    row = projected.iloc[0]
    assert row["energy_kwh"] == pytest.approx(5.0)
    assert row["energy_kwh_amortised"] == pytest.approx(5.5)
    assert row["peak_memory_mb"] == pytest.approx(300.0)


def test_replay_one_row_per_group():
    frame = pd.concat(
        [histories({"a": [0.9, 0.9], "b": [0.5, 0.5]}, {"a": 1.0, "b": 1.0}, group=g) for g in ("x", "y")]
    )
    table = replay(frame, Policy(rungs=(1,), keep=0.5, min_keep=1), Columns(by=("dataset",)))
    assert list(table["dataset"]) == ["x", "y"]
    assert list(table["recommended"]) == ["a", "a"]
    assert list(table["resource_share"]) == pytest.approx([0.75, 0.75])


# ----- the `adaptive:` config keys, checked at planning (snakemake -n) -----

SCHEMA_PATH = __import__("pathlib").Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"


def config_problems_of(**config) -> list[str]:
    import pepr.plan.config as pepr_config
    import pepr.plan.prepare as plan

    schema = pepr_config.load_schema(SCHEMA_PATH)
    config.setdefault("models", ["resnet18"])
    config.setdefault("datasets", ["synthetic"])
    pepr_config.apply_defaults(config, schema)
    return plan.config_problems(config, schema, catalogue={"models": ["resnet18"], "pretrained": []})


def test_adaptive_is_off_by_default_and_a_good_setting_passes():
    from pepr.results.adaptive import adaptive_settings

    assert config_problems_of() == []
    assert config_problems_of(epochs=10, adaptive={"rungs": [1, 3], "keep": 0.34}) == []
    assert adaptive_settings({"adaptive": {"rungs": [], "keep": 0.34, "min_keep": 2}}) is None
    found = adaptive_settings(
        {
            "adaptive": {"rungs": [1], "keep": 0.5, "min_keep": 1, "resource": None, "select_by": "val_accuracy"},
            "report": {"resource": "train_time_s"},
        }
    )
    assert found.resource == "train_time_s" and found.select_by == "val_accuracy"
    assert found.policy == Policy(rungs=(1,), keep=0.5, min_keep=1)


@pytest.mark.parametrize(
    "adaptive, expected",
    [
        ({"rungs": [1, 10]}, "below epochs (10)"),
        ({"rungs": [3, 1]}, "increasing order"),
        ({"rungs": [0]}, "config key 'adaptive.rungs.0'"),
        ({"rungs": [1], "keep": 0}, "config key 'adaptive.keep'"),
        ({"rungs": [1], "keep": 1.5}, "config key 'adaptive.keep'"),
        ({"rungs": [1], "min_keep": 0}, "config key 'adaptive.min_keep'"),
        ({"rungs": [1], "resource": "flops"}, "config key 'adaptive.resource'"),
        ({"rungs": [1], "select_by": "test_accuracy"}, "config key 'adaptive.select_by'"),
        ({"rungs": [1], "bogus": 1}, "'bogus' was unexpected"),
    ],
)
def test_bad_adaptive_settings_are_refused_at_planning(adaptive, expected):
    problems = config_problems_of(epochs=10, adaptive=adaptive)
    assert len(problems) == 1 and expected in problems[0], problems


def test_adaptive_checks_the_reports_resource_it_falls_back_to():
    from pepr.results.adaptive import adaptive_problems

    config = {
        "epochs": 10,
        "adaptive": {"rungs": [1], "keep": 0.5, "min_keep": 2, "resource": None, "select_by": "test_accuracy"},
        "report": {"resource": "flops"},
    }
    problems = adaptive_problems(config)
    assert any("report.resource (adaptive.resource is not set) 'flops'" in p for p in problems)
    assert any("bias the reported test performance" in p for p in problems)


def test_pepr_status_counts_stopped_cells_and_shows_each_rung(tmp_path):
    import json

    from pepr.results.status import collect_status, format_status

    results = tmp_path / "results"
    jobs = []
    for model, status in (("a", "ok"), ("b", "stopped"), ("c", None)):
        run = results / "runs" / "d" / "scratch" / "1.0" / model / "seed0"
        run.mkdir(parents=True)
        (run / "rung1.json").write_text(json.dumps({"status": "ok", "rung": 1}))
        if status:
            (run / "metrics.json").write_text(json.dumps({"status": status, "reason": "", "energy_kwh": 1.0}))
        jobs.append(
            (
                "cell",
                f"runs/d/scratch/1.0/{model}/seed0",
                model,
                f"results/runs/d/scratch/1.0/{model}/seed0/metrics.json",
            )
        )
    decision = results / "adaptive" / "d" / "scratch" / "1.0" / "rung1.json"
    decision.parent.mkdir(parents=True)
    decision.write_text(json.dumps({"rung": 1, "kept": ["a", "c"], "stopped": ["b"], "failed": []}))
    status = collect_status(jobs, results_dir=results, snakemake_dir=tmp_path / ".snakemake", use_squeue=False)
    assert (status.count("finished"), status.count("stopped"), status.count("pending")) == (1, 1, 1)
    text = format_status(status)
    assert "stopped 1" in text
    assert "rung 1: 3 cell(s) reached it, 0 running; 1 group(s) decided: 2 candidate(s) kept, 1 stopped" in text


def test_expected_cost_of_an_adaptive_sweep_next_to_the_full_grid():
    from pepr.results.adaptive import estimate_lines, expected_cost

    # one group of 4 models at 1 kWh per epoch (the last 3 kWh), 10 epochs; one pretraining job
    rows = [
        {
            "dataset": "d",
            "init": "scratch",
            "fraction": 1.0,
            "model": m,
            "seed": 0,
            "epochs": 10,
            "est_energy_kwh": 10.0 * c,
        }
        for m, c in zip("abcd", (1, 1, 1, 3))
    ]
    rows.append(
        {
            "dataset": "s",
            "init": "pretrain",
            "fraction": 1.0,
            "model": "a",
            "seed": 0,
            "epochs": 10,
            "est_energy_kwh": 5.0,
        }
    )
    table = pd.DataFrame(rows)
    cost = expected_cost(table, Policy(rungs=(1, 3), keep=0.25, min_keep=1))
    assert cost["full"] == pytest.approx(65.0)
    # 4 candidates x epoch 1, 1 candidate epochs 2-3 and 4-10, at the mean 1.5 kWh/epoch; + pretraining
    assert cost["expected"] == pytest.approx(6.0 + 0.25 * 6 * 2 + 0.25 * 6 * 7 + 5.0)
    assert cost["at_most"] == pytest.approx(6.0 + 3 * 2 + 3 * 7 + 5.0)
    assert "of the full grid's" in estimate_lines(table, Policy(rungs=(1, 3), keep=0.25, min_keep=1))[1]


# ----- the report: stopped runs listed apart, what the adaptive sweep saved -----


def adaptive_runs() -> pd.DataFrame:
    rows = []
    for group in ("x", "y"):
        for model, status, rung, acc, kwh, params in (
            ("a", "ok", None, 0.9, 4.0, 1e6),
            ("b", "ok", None, 0.8, 2.0, 2e6),
            ("c", "stopped", 1, 0.5, 1.0, 3e6),
            ("d", "failed", None, None, None, 4e6),
        ):
            rows.append(
                {
                    "dataset": group,
                    "init": "scratch",
                    "fraction": 1.0,
                    "model": model,
                    "seed": 0,
                    "status": status,
                    "reason": "" if status == "ok" else status,
                    "rung": rung,
                    "epochs": 4,
                    "params": params,
                    "val_accuracy": acc,
                    "test_accuracy": acc,
                    "energy_kwh": kwh,
                    "train_time_s": None if kwh is None else kwh * 3600,
                    "projected_pepr": 0.25 if status == "stopped" else None,
                }
            )
    return pd.DataFrame(rows)


def test_savings_and_stopped_tables():
    from pepr.report.adaptive import savings_table, stopped_table
    from pepr.report.config import ReportConfig

    cfg = ReportConfig()
    runs = adaptive_runs()
    savings = savings_table(runs, cfg)
    assert list(savings["dataset"]) == ["x", "y", "total"]
    assert savings["energy_kwh_spent"].tolist() == pytest.approx([7.0, 7.0, 14.0])
    assert savings["energy_kwh_full_projected"].tolist() == pytest.approx([10.0, 10.0, 20.0])  # c: 1 kWh x 4 / 1
    assert savings["energy_kwh_share"].tolist() == pytest.approx([0.7, 0.7, 0.7])
    assert savings["train_time_s_spent"].iloc[-1] == pytest.approx(14.0)  # device-hours
    assert savings["n_stopped"].tolist() == [1, 1, 2]
    stopped = stopped_table(runs, cfg)
    assert stopped["model"].tolist() == ["c", "c"] and stopped["rung"].tolist() == [1, 1]
    assert savings_table(runs[runs["status"] != "stopped"], cfg).empty


def test_pepr_report_scores_finished_runs_and_shows_what_was_saved(tmp_path):
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from pepr.cli import main

    path = tmp_path / "runs.csv"
    adaptive_runs().to_csv(path, index=False)
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        code = main(["report", str(path), "--resource", "energy_kwh", "--out", str(tmp_path / "report")])
    assert code == 0
    scored = pd.read_csv(tmp_path / "report" / "pepr.csv")
    assert scored.loc[scored["status"] == "stopped", "pepr_energy_kwh"].isna().all()
    assert scored.loc[scored["model"] == "b", "pepr_energy_kwh"].tolist() == pytest.approx(
        [0.8, 0.8]
    )  # normalised over a, b
    failed = pd.read_csv(tmp_path / "report" / "tables" / "failed_runs.csv")
    assert set(failed["model"]) == {"d"}
    page = (tmp_path / "report" / "report.html").read_text()
    assert "What the adaptive sweep saved" in page
    assert page.index("What the adaptive sweep saved") < page.index("id='summary'")
    assert "14 of 20 kWh (70%)" in page
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "8 runs (4 successful, 2 failed, 2 stopped at a rung by the adaptive sweep)" in summary
