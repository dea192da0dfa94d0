"""The train rules' params (Snakemake's params rerun trigger) are byte-identical to what 3a59573
recorded: moving where a setting is defined (issue 18) must not retrain a finished sweep."""

from __future__ import annotations

import json

from golden_params import GOLDEN, params_text


def test_params_text_is_byte_identical_to_the_recorded_one():
    recorded = json.loads(GOLDEN.read_text())
    now = params_text()
    assert sorted(now) == sorted(recorded)
    for variant, rows in recorded.items():
        assert len(now[variant]) == len(rows), variant
        for (job, old_repr, old_text), (new_job, new_repr, new_text) in zip(rows, now[variant]):
            assert new_job == job, variant
            assert new_repr == old_repr, f"{variant} {job}: the params record changed"
            assert new_text == old_text, f"{variant} {job}: the pepr train flags changed"
