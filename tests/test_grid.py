"""pepr.plan.grid: defaults, grid expansion, cell names, include/exclude, caching of validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import pepr.plan.config as pepr_config
import pepr.plan.grid as grid
import pepr.plan.prepare as plan
import pepr.results.runs as runs
import pepr.train.checks as train_checks
from pepr.errors import PeprInputError

REPO = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"


@pytest.fixture(scope="module")
def schema() -> dict:
    return pepr_config.load_schema(SCHEMA_PATH)


def completed(schema: dict, **config) -> dict:
    return pepr_config.apply_defaults(config, schema)


def test_every_schema_key_has_a_description_and_a_default(schema):
    def walk(node: dict, where: str) -> None:
        node = pepr_config._resolve_ref(node, schema)
        for key, sub in node.get("properties", {}).items():
            sub = pepr_config._resolve_ref(sub, schema)
            assert sub.get("description"), f"{where}{key} has no description"
            assert "default" in sub, f"{where}{key} has no default"
            if sub.get("type") == "object":
                walk(sub, f"{where}{key}.")

    walk(schema, "")


def test_apply_defaults_fills_nested_keys_and_keeps_given_values(schema):
    config = completed(schema, models=["resnet18"], datasets=["synthetic"], resources={"train": {"gpu": 1}})
    assert config["inits"] == ["scratch"]
    assert config["fractions"] == [1.0]
    assert config["seeds"] == [0]
    assert config["epochs"] == 10 and config["batch_size"] == 32 and config["lr"] == 0.0005
    assert config["pepr"]["performance"] == "test_accuracy"
    assert config["resources"]["train"] == {"gpu": 1, "cpus": 1, "mem_mb": 2000, "runtime": 60}
    assert config["resources"]["default"]["cpus"] == 1
    assert config["transfer"]["source"].startswith("synthetic")
    # the schema's own defaults are not shared objects that a later edit could corrupt
    config["inits"].append("imagenet")
    assert completed(schema, models=["a"], datasets=["b"])["inits"] == ["scratch"]


def test_grid_is_the_full_product_in_config_order(schema):
    config = completed(
        schema,
        models=["m1", "m2"],
        datasets=["synthetic", "synthetic:classes=3"],
        inits=["scratch", "transfer"],
        fractions=[1.0, 0.1],
        seeds=[0, 1],
    )
    g = grid.build_grid(config)
    assert len(g.cells) == 2 * 2 * 2 * 2 * 2
    first = g.cells[0]
    assert (first.dataset, first.init, first.fraction, first.model, first.seed) == (
        "synthetic",
        "scratch",
        1.0,
        "m1",
        0,
    )
    assert first.key == "synthetic/scratch/1.0/m1/seed0"
    assert first.metrics == "results/runs/synthetic/scratch/1.0/m1/seed0/metrics.json"
    names = {c.dataset_name for c in g.cells}
    assert names == {"synthetic", "synthetic-classes3"}
    assert len({c.key for c in g.cells}) == len(g.cells)
    # one pretraining job per model, shared by all of that model's transfer cells
    assert sorted(j.model for j in g.pretrain_jobs) == ["m1", "m2"]
    transfer = [c for c in g.cells if c.init == "transfer"]
    assert all(c.pretrain is not None and c.init_arg == f"checkpoint:{c.pretrain.checkpoint}" for c in transfer)
    assert transfer[0].pretrain.checkpoint == "results/pretrain/synthetic-classes4-seed1/m1/model.pt"
    assert all(c.pretrain is None and c.init_arg == "scratch" for c in g.cells if c.init == "scratch")


def test_fraction_text_is_canonical():
    assert runs.format_fraction(1) == "1.0"
    assert runs.format_fraction(0.1) == "0.1"
    assert runs.format_fraction(0.25) == "0.25"


def test_cell_lookup_by_wildcards_and_unknown_cell(schema):
    config = completed(schema, models=["m1"], datasets=["synthetic"], fractions=[0.5])
    g = grid.build_grid(config)
    cell = g.cell("synthetic", "scratch", "0.5", "m1", "0")
    assert cell.model == "m1" and cell.fraction == 0.5
    with pytest.raises(PeprInputError, match="not a cell of this sweep"):
        g.cell("synthetic", "scratch", "0.5", "m2", "0")
    with pytest.raises(PeprInputError, match="not a pretraining job"):
        g.pretrain_job("synthetic", "m1")


def test_include_and_exclude_patterns(schema):
    config = completed(
        schema,
        models=["m1", "m2", "m3"],
        datasets=["synthetic", "synthetic:classes=3"],
        inits=["scratch", "imagenet"],
        fractions=[1.0, 0.1],
        include=[{"dataset": "synthetic-classes3"}, {"model": "m1", "fraction": 0.1}],
        exclude=[{"model": ["m2", "m3"], "init": "imagenet"}],
    )
    g = grid.build_grid(config)
    keys = {c.key for c in g.cells}
    # include: every cell of the 3-class dataset, plus m1 at 10% on the other dataset
    assert "synthetic/scratch/0.1/m1/seed0" in keys
    assert "synthetic/scratch/1.0/m1/seed0" not in keys
    assert "synthetic-classes3/scratch/1.0/m3/seed0" in keys
    # exclude wins over include
    assert not any(c.init == "imagenet" and c.model in ("m2", "m3") for c in g.cells)
    assert "synthetic-classes3/imagenet/1.0/m1/seed0" in keys
    assert g.imagenet_models == ["m1"]


def test_train_settings_hold_training_settings_only(schema):
    config = completed(schema, models=["m1"], datasets=["synthetic"], inits=["transfer"], epochs=2, report={"top_k": 3})
    g = grid.build_grid(config)
    cell = g.cells[0]
    settings = grid.train_settings(cell, config)
    assert settings == {
        "model": "m1",
        "dataset": "synthetic",
        "init": f"checkpoint:{cell.pretrain.checkpoint}",
        "fraction": 1.0,
        "seed": 0,
        "epochs": 2,
        "batch_size": 32,
        "lr": 0.0005,
        "image_size": None,
        "device": "auto",
        "country": "DNK",
        "data_dir": "data",
    }
    pre = grid.train_settings(cell.pretrain, config)
    assert pre["dataset"] == config["transfer"]["source"]
    assert pre["init"] == "scratch" and pre["epochs"] == config["transfer"]["epochs"]
    assert pre["save_model"] == cell.pretrain.checkpoint
    # the settings are the TrainConfig fields (minus out_dir/threads), so every one has a flag
    import dataclasses

    train = pytest.importorskip(
        "pepr.train.run", reason="pepr's training side does not import (torch missing): make install"
    )
    fields = {f.name for f in dataclasses.fields(train.TrainConfig)}
    assert set(settings) | set(pre) <= fields


def test_load_config_merges_files_like_snakemake(tmp_path):
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text("models: [m1, m2]\nresources: {train: {gpu: 1, cpus: 4}}\n")
    b.write_text("models: [m3]\nresources: {train: {cpus: 2}}\n")
    merged = pepr_config.load_config([a, b])
    assert merged == {"models": ["m3"], "resources": {"train": {"gpu": 1, "cpus": 2}}}
    with pytest.raises(PeprInputError, match="does not exist"):
        pepr_config.load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(PeprInputError, match="mapping"):
        pepr_config.load_config(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("models: [a\n")
    with pytest.raises(PeprInputError, match="not valid YAML"):
        pepr_config.load_config(tmp_path / "broken.yaml")


def test_prepare_grid_validates_once_then_uses_its_cache(tmp_path, monkeypatch):
    catalogue = {"models": ["m1", "m2"], "pretrained": ["m1"]}
    calls = []

    def fake_catalogue(cache_dir):
        calls.append(cache_dir)
        return catalogue

    monkeypatch.setattr(plan, "timm_catalogue", fake_catalogue)
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cache"
    config = {"models": ["m1"], "datasets": ["synthetic"]}
    g1 = plan.prepare_grid(dict(config), SCHEMA_PATH, cache)
    assert len(calls) == 1 and len(g1.cells) == 1
    assert len(list(cache.glob("validated-*.json"))) == 1
    g2 = plan.prepare_grid(dict(config), SCHEMA_PATH, cache)
    assert len(calls) == 1, "a config that validated before must not be validated again"
    assert [c.key for c in g2.cells] == [c.key for c in g1.cells]
    # another config is validated afresh, and its problems are all raised at once
    with pytest.raises(PeprInputError) as info:
        plan.prepare_grid(
            {"models": ["m9", "bad name"], "datasets": ["synthetic"]}, SCHEMA_PATH, cache, source="x.yaml"
        )
    assert len(calls) == 2
    message = str(info.value)
    assert "x.yaml has 2 problem(s)" in message and "'m9'" in message and "'bad name'" in message
    # jobs skip validation (the driver did it)
    g3 = plan.prepare_grid({"models": ["m7"], "datasets": ["synthetic"]}, SCHEMA_PATH, None, validate=False)
    assert len(calls) == 2 and g3.cells[0].model == "m7"


def test_timm_catalogue_cache_is_used(tmp_path, monkeypatch):
    version = train_checks._timm_version()
    cached = {"models": ["only_this"], "pretrained": [], "pretrained_tags": []}
    (tmp_path / f"timm-{version}.json").write_text(json.dumps(cached))
    assert train_checks.timm_catalogue(tmp_path) == cached
    # a cache written before the tags were stored is rebuilt with them
    (tmp_path / f"timm-{version}.json").write_text(json.dumps({"models": ["only_this"], "pretrained": []}))
    rebuilt = train_checks.timm_catalogue(tmp_path)
    assert "resnet18" in rebuilt["models"] and "resnet18.a1_in1k" in rebuilt["pretrained_tags"]


def test_train_settings_text_is_the_pepr_train_command(schema, tmp_path):
    """The shell: train rules write `pepr train {params.train}`: the text parses back to the very
    settings, while Snakemake's params record (the repr) stays that of a plain dict."""
    import shlex

    from pepr.cli import build_parser

    config = completed(
        schema,
        models=["m1"],
        datasets=["synthetic:n_train=10,classes=3"],
        inits=["transfer"],
        data_dir=str(tmp_path / "my data"),
        lr=0.1,
        image_size=32,
        precision="bf16",
    )
    g = grid.build_grid(config)
    cell = g.cells[0]
    for job in (cell, cell.pretrain):
        settings = grid.train_settings(job, config)
        assert repr(settings) == repr(dict(settings))  # what a finished sweep recorded
        args = build_parser().parse_args(["train", *shlex.split(f"{settings}")])
        assert str(args.out) == job.directory
        for key, value in settings.items():
            parsed = getattr(args, key)
            assert (str(parsed) if key in ("data_dir", "save_model") else parsed) == value, key
    assert "--pretrain-metrics " + cell.pretrain.metrics in str(grid.train_settings(cell, config))
    assert "--pretrain-metrics" not in str(grid.train_settings(cell.pretrain, config))
    assert f"--data-dir '{tmp_path}/my data'" in str(grid.train_settings(cell, config))
