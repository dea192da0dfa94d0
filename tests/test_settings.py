"""Issue 18: a training setting is defined once (pepr.train.settings.TrainConfig's fields); the schema,
`pepr train`'s flags and the workflow's params agree with it; a sweep finished by the workflow
of 3a59573 (before the settings moved) plans no training with today's code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pepr.columns import MAX_SEED
from pepr.plan.config import load_schema
from pepr.plan.grid import TrainSettings
from pepr.train.devices import device_problems
from pepr.train.settings import PRECISIONS, flag_of, has_default, train_fields, workflow_fields

REPO = Path(__file__).resolve().parents[1]
SCHEMA = load_schema(REPO / "workflow" / "schemas" / "config.schema.yaml")
#: Settings whose workflow default differs from pepr train's on purpose: the workflow keeps its
#: MedMNIST files in the working directory's data/, pepr train alone reads ~/.medmnist.
DIFFERENT_ON_PURPOSE = {"data_dir"}
#: The commit whose workflow finished the sweep of the last test (issue 18 started from it).
BEFORE = "3a59573"


def test_schema_defaults_equal_the_train_config_defaults():
    """The config keys named like a TrainConfig field (sweep and optional settings) have its default."""
    properties = SCHEMA["properties"]
    checked = 0
    for item in workflow_fields():
        if item.metadata["workflow"] not in ("sweep", "optional") or item.name in DIFFERENT_ON_PURPOSE:
            continue
        assert item.name in properties, f"the schema has no key for the workflow setting {item.name}"
        assert properties[item.name].get("default") == item.default, item.name
        assert properties[item.name].get("description"), item.name
        checked += 1
    assert checked >= 8
    assert properties["precision"]["enum"] == list(PRECISIONS)
    assert SCHEMA["properties"]["seeds"]["items"]["minimum"] == 0 and MAX_SEED == 2**32 - 1


def test_every_setting_has_help_and_the_params_flags_come_from_the_fields():
    for item in train_fields():
        assert item.metadata["help"], item.name
    assert TrainSettings.FLAGS == {item.name: flag_of(item) for item in workflow_fields()}
    assert TrainSettings.FLAGS["batch_size"] == "--batch-size" and "out_dir" not in TrainSettings.FLAGS
    assert [item.name for item in train_fields() if not has_default(item)] == ["model", "dataset", "out_dir"]


def test_train_flags_are_the_fields():
    import argparse

    from pepr.cli.train import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = {option for action in parser._actions for option in action.option_strings} - {"-h", "--help"}
    assert flags == {flag_of(item) for item in train_fields()}


@pytest.mark.parametrize(
    "device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12", "mps", "gpu", "cuda:", "cuda:x", "CPU", "tpu", "cuda0"]
)
def test_schema_and_code_agree_on_device_syntax(device):
    pattern = SCHEMA["properties"]["device"]["pattern"]
    assert bool(re.fullmatch(pattern, device)) == (device_problems(device) == []), device


@pytest.mark.slow
def test_a_sweep_finished_before_issue_18_plans_no_training(tmp_path):
    """Finish a tiny sweep (1 model, scratch + transfer, 1 epoch, a tiny npz) with the workflow and
    code of 3a59573, then plan it with today's: not one training or pretraining job."""
    from test_finished_runs_workflow import write_medmnist_like
    from test_workflow_local import check, earlier_checkout, planned_jobs, snakemake_of

    old = earlier_checkout(BEFORE, tmp_path / "old")
    workdir = tmp_path / "sweep"
    workdir.mkdir()
    data = workdir / "tiny.npz"
    write_medmnist_like(data, n=(40, 20, 20))
    config = yaml.safe_load((REPO / ".test" / "config.yaml").read_text())
    config.update(
        models=["mobilenetv3_small_050"], datasets=[f"npz:{data}"], inits=["scratch", "transfer"], fractions=[1.0]
    )
    config["transfer"] = {"source": "synthetic:n_train=40,n_val=20,n_test=20", "epochs": 1}
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))

    check(snakemake_of(old, workdir, "--cores", "2", "results/runs.csv", configfile=config_file))
    assert len(list((workdir / "results" / "runs").glob("*/*/*/*/seed0/metrics.json"))) == 2
    assert len(list((workdir / "results" / "pretrain").glob("*/*/metrics.json"))) == 1

    counts = planned_jobs(workdir, "results/runs.csv", configfile=config_file)
    assert not {"train_model", "pretrain_source"} & set(counts), counts


#: Bounds of a number setting, as JSON Schema and TrainConfig's field metadata both name them.
_BOUNDS = {"minimum": "minimum", "maximum": "maximum", "exclusiveMinimum": "exclusive_minimum"}


def _schema_nodes_of(name: str) -> list[tuple[str, dict, bool]]:
    """(where, schema node, whether it must state every bound) of the config keys setting ``name``:
    the top-level key, the list a job's value is drawn from and the transfer key of that name."""
    properties = SCHEMA["properties"]
    nodes = []
    if name in properties:
        nodes.append((name, properties[name], True))
    plural = {"fraction": "fractions", "seed": "seeds"}.get(name)
    if plural:
        nodes.append((f"{plural}[]", properties[plural]["items"], False))
    transfer = properties["transfer"]["properties"]
    if name in transfer:
        nodes.append((f"transfer.{name}", transfer[name], False))
    return nodes


def test_schema_limits_equal_the_train_config_limits():
    """A setting's bounds and choices are its field's; the schema states them equal (a list's items and
    transfer's keys may leave a bound to planning, which checks it with the field's limits)."""
    checked = 0
    for item in train_fields():
        meta = item.metadata
        for where, node, complete in _schema_nodes_of(item.name):
            for schema_key, meta_key in _BOUNDS.items():
                if schema_key in node or complete:
                    assert node.get(schema_key) == meta.get(meta_key), f"{where}: {schema_key}"
                    checked += 1
            if meta.get("choices") is not None:
                assert node.get("enum") == list(meta["choices"]), where
                checked += 1
    assert checked >= 15


def test_the_flag_parser_and_the_run_checks_read_the_same_limits():
    """pepr train's parser and training_problems accept exactly the values inside a setting's limits."""
    import argparse

    from pepr.cli.args import setting_parser
    from pepr.train.settings import limit_problem

    cases = {
        "batch_size": ([2, 512], [1, 0, -4]),
        "epochs": ([1], [0]),
        "image_size": ([8, 1024], [7, 1025]),
        "seed": ([0, MAX_SEED], [-1, MAX_SEED + 1]),
        "threads": ([1], [0]),
        "fraction": ([1.0, 0.01], [0.0, 1.5]),
        "lr": ([1e-9], [0.0, -1.0, float("inf")]),
    }
    for name, (good, bad) in cases.items():
        item = next(i for i in train_fields() if i.name == name)
        parse = setting_parser(item)
        for value in good:
            assert parse(str(value)) == value and limit_problem(item, value) is None, (name, value)
        for value in bad:
            assert limit_problem(item, value), (name, value)
            with pytest.raises(argparse.ArgumentTypeError):
                parse(str(value))
