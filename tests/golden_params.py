"""Record / recompute the train rules' params text of fixed configs (the Snakemake rerun trigger).

``python tests/golden_params.py`` rewrites tests/data/golden_params.json; it was first run on
commit 3a59573 (before issue 18 moved the settings), and tests/test_golden_params.py holds the
current code to exactly those bytes: a finished sweep must not retrain because code moved.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "data" / "golden_params.json"

#: name -> overrides applied on top of .test/config.yaml (or another base config)
VARIANTS = {
    "test-scratch-transfer": {},
    "test-all-inits": {"inits": ["scratch", "imagenet", "transfer"], "seeds": [0, 7]},
    "test-every-setting": {
        "inits": ["scratch", "imagenet", "transfer"],
        "precision": "bf16",
        "carbon_intensity": "data/intensity.csv",
        "image_size": 32,
        "device": "cuda:0",
        "lr": 0.001,
        "country": "USA",
        "batch_size": 16,
        "epochs": 2,
        "fractions": [0.1, 0.25, 1],
        "transfer": {"source": "synthetic:classes=4,seed=1", "epochs": 2, "fraction": 0.5, "seed": 3},
        "data_dir": "some data/with 'quotes'",
    },
    "demo": {"__base__": "config/config.yaml"},
}


def params_text() -> dict[str, list[list[str]]]:
    """variant -> [[job, repr(params.train), str(params.train)], ...] for every cell and pretraining job."""
    from pepr.plan.config import apply_defaults, load_schema
    from pepr.plan.grid import build_grid, train_settings

    schema = load_schema(REPO / "workflow" / "schemas" / "config.schema.yaml")
    out = {}
    for name, overrides in VARIANTS.items():
        overrides = copy.deepcopy(overrides)
        base = REPO / overrides.pop("__base__", ".test/config.yaml")
        config = yaml.safe_load(base.read_text())
        config.update(overrides)
        apply_defaults(config, schema)
        grid = build_grid(config)
        rows = []
        for job in [*grid.pretrain_jobs, *grid.cells]:
            settings = train_settings(job, config)
            rows.append([job.directory, repr(settings), str(settings)])
        out[name] = rows
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "src"))
    GOLDEN.write_text(json.dumps(params_text(), indent=1) + "\n")
    print(f"wrote {GOLDEN}")
