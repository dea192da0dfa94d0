"""Config validation: every kind of bad config is reported, all at once, before anything runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pepr.plan.config as pepr_config
import pepr.plan.grid as grid
import pepr.plan.prepare as plan
import pepr.train.checks as train_checks
from pepr.errors import PeprInputError

REPO = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"

#: A stand-in for timm's catalogue (no timm import in most tests).
CATALOGUE = {
    "models": ["resnet18", "resnet50", "mobilenetv3_small_050", "mobilenetv2_035", "convnext_atto"],
    "pretrained": ["resnet18", "resnet50", "mobilenetv3_small_050", "convnext_atto"],
}


@pytest.fixture(scope="module")
def schema() -> dict:
    return pepr_config.load_schema(SCHEMA_PATH)


def problems_of(schema: dict, catalogue=CATALOGUE, **config) -> list[str]:
    config.setdefault("models", ["resnet18"])
    config.setdefault("datasets", ["synthetic"])
    pepr_config.apply_defaults(config, schema)
    return plan.config_problems(config, schema, catalogue=catalogue)


def only_problem(problems: list[str]) -> str:
    assert len(problems) == 1, problems
    return problems[0]


def test_a_good_config_has_no_problems(schema):
    assert problems_of(schema, inits=["scratch", "imagenet", "transfer"], fractions=[1.0, 0.1], seeds=[0, 1]) == []


@pytest.mark.parametrize(
    "bad, expected",
    [
        ({"bogus": 1}, "'bogus' was unexpected"),
        ({"models": []}, "config key 'models'"),
        ({"models": "resnet18"}, "config key 'models'"),
        ({"datasets": [3]}, "config key 'datasets.0'"),
        ({"epochs": 0}, "config key 'epochs'"),
        ({"epochs": "ten"}, "config key 'epochs'"),
        ({"lr": 0}, "config key 'lr'"),
        ({"seeds": [-1]}, "config key 'seeds.0'"),
        ({"seeds": [1, 1]}, "config key 'seeds'"),
        ({"inits": ["warmstart"]}, "'warmstart' is not one of"),
        ({"device": "tpu"}, "config key 'device'"),
        ({"country": "Denmark"}, "config key 'country'"),
        ({"pepr": {"performance": "loss"}}, "config key 'pepr.performance'"),
        ({"resources": {"train": {"gpus": 1}}}, "'gpus' was unexpected"),
        ({"resources": {"train": {"mem_mb": 0}}}, "config key 'resources.train.mem_mb'"),
        ({"include": [{"modle": "resnet18"}]}, "'modle' was unexpected"),
        ({"exclude": [{}]}, "config key 'exclude.0'"),
    ],
)
def test_schema_violations_name_the_key(schema, bad, expected):
    assert expected in only_problem(problems_of(schema, **bad))


@pytest.mark.parametrize("fraction", [0, -0.5, 1.5])
def test_fractions_must_lie_in_zero_one(schema, fraction):
    assert f"{fraction!r} is outside (0, 1]" in only_problem(problems_of(schema, fractions=[fraction, 1.0]))


@pytest.mark.parametrize(
    "name", ["resnet18; rm -rf ~", "$(reboot)", "resnet18 && curl x", "../../etc", "a/b", "`id`", "-rf", ""]
)
def test_shell_or_path_characters_in_model_names_are_rejected(schema, name):
    problems = problems_of(schema, models=[name])
    assert len(problems) == 1, problems
    if name:
        assert f"{name!r} is not a valid model name" in problems[0]
    # rejected even with no catalogue at hand (it is not a timm question)
    assert problems_of(schema, catalogue=None, models=[name or "x y"])


def test_unknown_model_names_get_suggestions(schema):
    problem = only_problem(problems_of(schema, models=["resnet19"]))
    assert "unknown timm model 'resnet19'" in problem and "resnet18" in problem


def test_imagenet_init_needs_pretrained_weights(schema):
    problem = only_problem(problems_of(schema, models=["mobilenetv2_035"], inits=["scratch", "imagenet"]))
    assert "no pretrained ImageNet weights" in problem and "exclude" in problem
    # excluding those cells makes the config valid
    assert (
        problems_of(
            schema,
            models=["mobilenetv2_035", "resnet18"],
            inits=["scratch", "imagenet"],
            exclude=[{"model": "mobilenetv2_035", "init": "imagenet"}],
        )
        == []
    )
    # ... and so does an include that keeps only its scratch cells
    assert (
        problems_of(
            schema,
            models=["mobilenetv2_035", "resnet18"],
            inits=["scratch", "imagenet"],
            include=[{"model": "resnet18"}, {"model": "mobilenetv2_035", "init": "scratch"}],
        )
        == []
    )


def test_dataset_problems(schema, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    problems = problems_of(
        schema,
        datasets=["synthetic", "nosuchmnist", "npz:missing.npz", "synthetic:classes=1", "organmnist3d"],
    )
    assert len(problems) == 4, problems
    text = "\n".join(problems)
    assert "'nosuchmnist'" in text and "missing.npz not found" in text and "classes=1" in text
    assert "organmnist3d" in text


def test_bad_npz_file_is_reported(schema, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "broken.npz", train_images=np.zeros((4, 8, 8), np.uint8), train_labels=np.zeros(4, np.int64))
    problem = only_problem(problems_of(schema, datasets=["npz:broken.npz"]))
    assert "missing arrays" in problem


def test_missing_medmnist_file_is_fine_because_download_data_fetches_it(schema, tmp_path):
    assert problems_of(schema, datasets=["breastmnist"], data_dir=str(tmp_path / "empty")) == []


def test_datasets_sharing_a_results_folder_name(schema, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    problem = only_problem(problems_of(schema, datasets=["synthetic", "synthetic:classes=2"]))
    assert "results folder name 'synthetic'" in problem


def test_transfer_source_must_differ_from_targets(schema):
    problem = only_problem(problems_of(schema, inits=["transfer"], transfer={"source": "synthetic"}))
    assert "also a target dataset" in problem
    problem = only_problem(problems_of(schema, inits=["transfer"], transfer={"source": "synthetic:classes=99"}))
    assert problem.startswith("transfer.source:") and "classes=99" in problem
    problem = only_problem(
        problems_of(schema, inits=["transfer"], transfer={"source": "synthetic:seed=5", "fraction": 2.0})
    )
    assert problem.startswith("transfer.fraction:")
    # without the transfer init, the transfer settings are not used and not checked
    assert problems_of(schema, transfer={"source": "synthetic:classes=99"}) == []


def test_patterns_matching_no_cell_and_empty_grid(schema):
    problem = only_problem(problems_of(schema, include=[{"model": "resnet50"}]))
    assert "matches no cell" in problem
    problem = only_problem(problems_of(schema, exclude=[{"model": "resnet18"}]))
    assert "the grid is empty" in problem


def test_all_problems_are_reported_at_once(schema, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = {
        "models": ["resnet18; rm -rf ~", "resnet19", "mobilenetv2_035"],
        "datasets": ["synthetic", "npz:missing.npz"],
        "inits": ["scratch", "imagenet"],
        "fractions": [0, 0.5],
        "epochs": 0,
        "bogus": True,
    }
    pepr_config.apply_defaults(config, schema)
    with pytest.raises(PeprInputError) as info:
        plan.check_config(config, schema, catalogue=CATALOGUE, source="my.yaml")
    message = str(info.value)
    assert message.startswith("my.yaml has 7 problem(s); nothing was run:")
    for part in ("bogus", "epochs", "0 is outside", "rm -rf", "resnet19", "mobilenetv2_035", "missing.npz"):
        assert part in message, part


@pytest.fixture(scope="module")
def real_catalogue(tmp_path_factory):
    """timm's catalogue (imports timm once, ~3-8 s)."""
    return train_checks.timm_catalogue(tmp_path_factory.mktemp("timm-cache"))


#: Data files a shipped config needs that a clone cannot have: the LIDC-IDRI export is the user's
#: own (config/README.md says how to build data/lidc.npz); tests/test_study_configs.py dry-runs
#: config/paper.yaml with a stand-in file.
USER_DATA_PROBLEM = "datasets: dataset 'npz:data/lidc.npz': data/lidc.npz not found"


@pytest.mark.parametrize(
    "config_file",
    [
        "config/config.yaml",
        "config/paper.yaml",
        "config/paper-crossed.yaml",
        "config/cpu-small.yaml",
        ".test/config.yaml",
    ],
)
def test_shipped_configs_are_valid(schema, real_catalogue, config_file, monkeypatch):
    path = REPO / config_file
    monkeypatch.chdir(REPO)
    config = pepr_config.apply_defaults(pepr_config.load_config(path), schema)
    problems = plan.config_problems(config, schema, catalogue=real_catalogue)
    if not (REPO / "data" / "lidc.npz").exists():
        # the only accepted problem: the user's own LIDC file is absent, and it is named clearly
        problems = [p for p in problems if not p.startswith(USER_DATA_PROBLEM)]
    assert problems == []
    assert grid.build_grid(config).cells


def test_real_catalogue_knows_deprecated_aliases_and_pretrained_weights(real_catalogue):
    models, pretrained = set(real_catalogue["models"]), set(real_catalogue["pretrained"])
    assert {"resnet18", "convnext_atto", "gluon_resnet34_v1b"} <= models
    assert "gluon_xception65" not in models
    assert "resnet18" in pretrained and "gluon_resnet34_v1b" in pretrained
    assert "mobilenetv2_035" in models and "mobilenetv2_035" not in pretrained


@pytest.mark.slow
def test_snakemake_refuses_a_bad_config_before_scheduling(tmp_path):
    from test_workflow_local import snakemake

    bad = tmp_path / "bad.yaml"
    bad.write_text('models: ["resnet18; rm -rf ~", resnet19]\ndatasets: [synthetic]\nfractions: [2]\n')
    result = snakemake(tmp_path, "-n", "--cores", "1", configfile=bad, timeout=300)
    assert result.returncode != 0
    assert "has 3 problem(s); nothing was run" in result.stderr
    assert "'resnet18; rm -rf ~' is not a valid model name" in result.stderr
    assert not (tmp_path / "results").exists()


# --- pepr.train.checks.training_problems: the checks `pepr train` and the workflow share ---
from pepr.train.checks import training_problems  # noqa: E402

TP_CATALOGUE = {
    "models": ["resnet18", "mobilenetv3_small_050", "tiny_vit"],
    "pretrained": ["resnet18"],
    "pretrained_tags": ["resnet18.a1_in1k", "resnet18.tv_in1k"],
}
TP_GOOD = {
    "model": "resnet18",
    "dataset": "pneumoniamnist",
    "out_dir": "results/x",
    "init": "scratch",
    "fraction": 1.0,
    "epochs": 1,
    "seed": 0,
    "data_dir": None,
    "image_size": 28,
    "batch_size": 8,
    "lr": 1e-3,
    "device": "cpu",
    "country": "DNK",
    "save_model": None,
    "threads": None,
    "precision": "fp32",
    "carbon_intensity": None,
}


def test_good_settings_have_no_problems():
    assert training_problems(TP_GOOD, TP_CATALOGUE, check_data=False) == []
    assert (
        training_problems({**TP_GOOD, "model": "resnet18.a1_in1k", "init": "imagenet"}, TP_CATALOGUE, check_data=False)
        == []
    )


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"country": "DEN"}, "country 'DEN'"),
        ({"batch_size": 1}, "batch size"),
        ({"lr": float("inf")}, "learning rate"),
        ({"lr": 0.0}, "learning rate"),
        ({"image_size": 100000}, "image size"),
        ({"seed": 2**32}, "seed"),
        ({"seed": -1}, "seed"),
        ({"device": "cuda:x"}, "unknown device"),
        ({"device": "gpu"}, "unknown device"),
        ({"model": "resnet18.bogus_tag"}, "unknown pretrained tag"),
        ({"model": "resnet1800"}, "unknown timm model"),
        ({"model": "tiny_vit", "init": "imagenet"}, "no pretrained weights"),
        ({"init": "checkpoint:/nonexistent/x.pt"}, "checkpoint file"),
        ({"init": "warm"}, "unknown init"),
        ({"data_dir": "data/{x}"}, "data_dir"),
        ({"dataset": "scans/{a}.npz"}, "dataset"),
        ({"precision": "fp16"}, "precision"),
        ({"epochs": 0}, "epochs"),
        ({"fraction": 1.5}, "fraction"),
        ({"save_model": "model.bin"}, "--save-model"),
        ({"carbon_intensity": "/nonexistent/ci.csv"}, "/nonexistent/ci.csv"),
    ],
)
def test_each_bad_setting_is_named(change, expected):
    problems = training_problems({**TP_GOOD, **change}, TP_CATALOGUE, check_data=False)
    assert len(problems) == 1, problems
    assert expected in problems[0]


def test_all_problems_at_once_and_checkpoint_check_optional():
    bad = {**TP_GOOD, "country": "DEN", "batch_size": 1, "lr": float("nan")}
    assert len(training_problems(bad, TP_CATALOGUE, check_data=False)) == 3
    later = {**TP_GOOD, "init": "checkpoint:/not/yet/written.pt"}
    assert training_problems(later, TP_CATALOGUE, check_data=False, check_checkpoint=False) == []


def test_carbon_intensity_csv_checked(tmp_path):
    good = tmp_path / "ci.csv"
    good.write_text("timestamp,gco2_per_kwh\n2026-01-01T00:00:00Z,120\n2026-01-01T01:00:00Z,130\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("time,value\n1,2\n")
    assert training_problems({**TP_GOOD, "carbon_intensity": str(good)}, TP_CATALOGUE, check_data=False) == []
    assert training_problems({**TP_GOOD, "carbon_intensity": str(bad)}, TP_CATALOGUE, check_data=False)


def test_dataset_checked_when_asked(tmp_path):
    problems = training_problems({**TP_GOOD, "dataset": str(tmp_path / "missing.npz")}, TP_CATALOGUE)
    assert problems and "missing.npz" in " ".join(problems)


def test_module_does_not_import_torch():
    code = (
        "import sys, pepr.plan.config, pepr.train.checks; "
        "assert 'torch' not in sys.modules and 'timm' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"country": "DEN"}, "country 'DEN'"),
        # the schema states the setting's limits (held equal to TrainConfig's by test_settings.py)
        ({"batch_size": 1}, "config key 'batch_size': 1 is less than the minimum of 2"),
        ({"image_size": 100000}, "config key 'image_size': 100000 is greater than the maximum of 1024"),
        ({"models": ["resnet18.bogus_tag"]}, "unknown pretrained tag"),
    ],
)
def test_workflow_planning_runs_the_training_checks(tmp_path, monkeypatch, change, expected):
    """prepare_grid (what the Snakefile calls) rejects values pepr train would reject, once, up front."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(plan, "timm_catalogue", lambda cache_dir=None: TP_CATALOGUE)
    config = {"models": ["resnet18"], "datasets": ["synthetic"], "device": "cpu", **change}
    with pytest.raises(PeprInputError, match="nothing was run") as info:
        plan.prepare_grid(config, REPO / "workflow" / "schemas" / "config.schema.yaml", tmp_path / "cache")
    assert expected in str(info.value)
    assert not list((tmp_path / "cache").glob("validated-*.json"))  # a bad config is never cached as valid


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"seeds": [0, 2**32]}, "config key 'seeds.1': 4294967296 is greater than the maximum of 4294967295"),
        (
            {"device": "cuda:99", "resources": {"train": {"gpu": 1}}},
            "device: 'cuda:99' but each train job is given 1 GPU(s)",
        ),
        ({"report": {"figure_formats": 5}}, "report.figure_formats = 5; give a list"),
        ({"report": {"figure_formats": ["gif"]}}, "report.figure_formats = ['gif']"),
        ({"report": {"top_k": 0}}, "report.top_k = 0"),
        ({"report": {"performance": "test_auc"}}, "report.performance is not a setting"),
    ],
)
def test_seed_range_and_report_settings_are_config_problems(schema, change, expected):
    """Issue 9 case 3/7: values a job or a report rule would reject are found while planning."""
    assert expected in only_problem(problems_of(schema, **change))


def test_config_and_job_problems_come_in_one_message(schema):
    """Config-level, report and per-job (pepr train) problems share the one all-at-once error."""
    config = {"models": ["resnet18"], "datasets": ["synthetic"], "country": "DEN", "report": {"figure_formats": 5}}
    pepr_config.apply_defaults(config, schema)
    with pytest.raises(PeprInputError, match="my.yaml has 2 problem") as info:
        plan.check_config(config, schema, catalogue=TP_CATALOGUE, source="my.yaml")
    assert "country 'DEN'" in str(info.value) and "report.figure_formats" in str(info.value)


def test_an_unknown_model_is_reported_once(schema):
    """The config check names an unknown model; the per-job check does not repeat it."""
    problem = only_problem(problems_of(schema, models=["resnet18", "resnet19x"]))
    assert "unknown timm model 'resnet19x'" in problem


def test_validation_names_live_in_their_owning_module():
    """pepr.plan.config owns loading and schema, pepr.train.checks a run's checks (the engine's and
    planning's), pepr.plan.prepare the config checks; pepr.plan.grid re-exports none (callers import
    from the owner)."""
    for name in ("load_config", "load_schema", "apply_defaults", "schema_problems"):
        assert callable(getattr(pepr_config, name)), name
        assert not hasattr(grid, name), name
    for name in ("training_problems", "model_problems", "timm_catalogue", "model_catalogue"):
        assert callable(getattr(train_checks, name)), name
        assert not hasattr(grid, name) and not hasattr(pepr_config, name), name
    for name in ("config_problems", "check_config", "prepare_grid", "job_problems", "report_problems"):
        assert callable(getattr(plan, name)), name
        assert not hasattr(grid, name) and not hasattr(pepr_config, name), name


@pytest.mark.parametrize(
    "model",
    ["resnet18", "resnet18.a1_in1k", "resnet18.bogus_tag", "gluon_resnet34_v1b", "no_such_net", "botnet26t_256"],
)
def test_pepr_trains_one_model_catalogue_agrees_with_the_full_one(real_catalogue, model):
    """pepr train asks timm about its one model (fast); the verdict is the workflow's."""
    from pepr.train.checks import model_catalogue, training_problems

    settings = {"model": model, "dataset": "synthetic", "init": "imagenet", "device": "cpu"}
    expected = training_problems(settings, real_catalogue, check_data=False)
    assert training_problems(settings, model_catalogue(model), check_data=False) == expected


def test_device_index_is_checked_against_the_gpus_a_job_gets(schema):
    """cuda:N must exist among the GPUs the scheduler gives each job; local runs (gpu: 0) are not
    known while planning and are left to pepr train's own device check."""
    assert problems_of(schema, device="cuda:1", resources={"train": {"gpu": 2}}) == []
    assert problems_of(schema, device="cuda:3") == []  # gpu: 0 by default: a local machine's GPU
    assert "cuda:0..cuda:0" in only_problem(problems_of(schema, device="cuda:1", resources={"train": {"gpu": 1}}))
