"""Settings of the report stage (the ``report:`` section of the workflow config) and their checks.

Planning (:func:`pepr.plan.prepare.report_problems`) validates them with the same call the report rules
make (:meth:`ReportConfig.from_mapping`), without importing the report package: this module is
on the planning side and :mod:`pepr.report.config` imports it, never the reverse.

Every setting has a default here, so a config without a ``report:`` section builds the standard
report. :func:`ReportConfig.from_mapping` validates a user's mapping and raises
:class:`~pepr.errors.PeprInputError` naming the bad key before any figure is drawn.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pepr.columns import COMBINED, GROUP_COLUMNS, REPORT_RESOURCE_LABELS, RESOURCE_LABELS, SCORED_COLUMNS
from pepr.errors import PeprInputError

#: The resources of the four PePR variants of the paper, with their short labels.
STANDARD_RESOURCES: dict[str, str] = RESOURCE_LABELS

#: The workflow's normalisation group: the columns whose rows PePR is normalised over.
WORKFLOW_GROUP: tuple[str, ...] = GROUP_COLUMNS


def parse_combine(text: str, what: str = "report.combine") -> tuple[tuple[str, float], ...]:
    """``"energy_kwh,train_time_s"`` or ``"energy_kwh:2,train_time_s:1"`` -> ((column, weight), ...):
    the resources of a combined PePR, each with its weight (1 when not given). Empty -> ()."""
    if not isinstance(text, str):
        raise PeprInputError(f"{what} = {text!r}; write COL[:WEIGHT],COL[:WEIGHT], e.g. energy_kwh,train_time_s")
    if not text.strip():
        return ()
    pairs = []
    for item in text.split(","):
        column, sep, weight = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "1")
        try:
            value = float(weight)
        except ValueError:
            value = math.nan
        if not column.strip() or not (math.isfinite(value) and value >= 0):
            raise PeprInputError(
                f"{what} {text!r}: {item.strip()!r} is not COL or COL:WEIGHT with a weight >= 0, "
                "e.g. energy_kwh:2,train_time_s:1"
            )
        pairs.append((column.strip(), value))
    names = [c for c, _ in pairs]
    if len(pairs) < 2 or len(set(names)) != len(names) or not sum(w for _, w in pairs) > 0:
        raise PeprInputError(
            f"{what} {text!r}: name two or more different resources, not all weighted 0, e.g. energy_kwh,train_time_s"
        )
    return tuple(pairs)


#: Reserved GPU memory after epoch 2 (PePR-M (reserved)): recorded by GPU runs only.
GPU_MEMORY = "memory_reserved_epoch2_mb"

#: Settings that describe the table's shape; ``pepr report``'s flags set them, never a config.
TABLE_SETTINGS = ("group", "params_known")


def variant_label(resource: str) -> str:
    """The short label of a resource's PePR variant: ``PePR-E``, ``PePR-D``, else ``PePR(column)``."""
    if resource in STANDARD_RESOURCES:
        return STANDARD_RESOURCES[resource]
    if resource == COMBINED:
        return "PePR-combined"
    return REPORT_RESOURCE_LABELS.get(resource, f"PePR({resource})")


@dataclass(frozen=True)
class ReportConfig:
    """What the report computes and how.

    Attributes:
        performance: performance column used for P (any column with values in [0, 1]; the
            workflow's is ``pepr.performance``).
        resource: the resource of the headline variant (figures 1, 6 and the summary).
        top_k: how many models each top-k table lists per cell and variant.
        bootstrap_resamples: bootstrap resamples for the rank confidence intervals and the
            paired intervals on performance and PePR (``pepr report --bootstrap``).
        alpha: significance level of the tests; confidence intervals are (1 - alpha).
        equivalence_margin: the difference in performance (same units, e.g. 0.02 = 2
            accuracy points) below which two groups count as "on par"; the TOST equivalence
            test checks it, so "on par" is never concluded from a non-significant test.
        min_pairs: fewest models a paired t test is run on (one seed-mean per model and
            context); fewer -> "n too small".
        min_group: fewest models per group a Welch t test (small vs large) is run on.
        seed: seed of the bootstrap's random generator (the report is reproducible).
        history_performance: column of ``history.csv`` used as performance in the epoch curves.
        history_resource: cumulative resource column of ``history.csv`` for the epoch curves.
        model_metadata: CSV with columns model, type, efficient (the paper's model table);
            None: the copy shipped with the package, when there is one.
        group: the columns of the normalisation group (PePR is normalised over the runs
            sharing their values); the workflow's are dataset, init, fraction. The names
            ``init`` and ``fraction`` carry meaning (pretrained vs scratch comparisons, data
            fractions); any other column is just a group key. Set by ``pepr report --by``.
        resources: resources the report scores besides pepr.csv's (its PePR-E, -C, -T, -M), each
            a column of pepr.csv: ``memory_reserved_epoch2_mb`` (PePR-M on reserved GPU memory,
            as the paper measures it), ``n_train`` (data as a resource, PePR-D), ...
        combine: a combined PePR, ``COL[:WEIGHT],COL[:WEIGHT]...`` (e.g. ``energy_kwh,train_time_s``):
            R = sum w_j R_j / sum w_j over the resources' normalised values, PePR = P / (1 + R);
            empty: none (``pepr report --combine``).
        exclude_flagged: score and report without the runs a measurement check flags as
            harmful (copied, duplicated, contended, implausible values); the summary says how
            many were left out and which recommendations changed (``pepr report --exclude-flagged``).
        params_known: whether the table has parameter counts (column ``params``); without them
            the size-based analyses (small vs large, size trend) are skipped.
    """

    performance: str = "test_accuracy"
    resource: str = "energy_kwh"
    top_k: int = 5
    bootstrap_resamples: int = 2000
    alpha: float = 0.05
    equivalence_margin: float = 0.02
    min_pairs: int = 3
    min_group: int = 2
    seed: int = 0
    history_performance: str = "test_accuracy"
    history_resource: str = "cumulative_energy_kwh"
    model_metadata: str | None = None
    figure_formats: tuple[str, ...] = field(default=("png", "pdf"))
    resources: tuple[str, ...] = ()
    combine: str = ""
    exclude_flagged: bool = False
    group: tuple[str, ...] = WORKFLOW_GROUP
    params_known: bool = True

    def __post_init__(self) -> None:
        problems = []
        # Any column in [0, 1] (pepr report --performance); the workflow's schema lists its own.
        if not self.performance or not isinstance(self.performance, str):
            problems.append(f"report.performance = {self.performance!r}; use a column name such as 'test_accuracy'")
        if (
            not isinstance(self.group, tuple)
            or not self.group
            or not all(isinstance(c, str) and c for c in self.group)
            or len(set(self.group)) != len(self.group)
        ):
            problems.append(f"report group columns {self.group!r}: give one or more distinct column names")
        if not self.resource or not isinstance(self.resource, str):
            problems.append("report.resource must be a column name such as 'energy_kwh'")
        if not isinstance(self.top_k, int) or self.top_k < 1:
            problems.append(f"report.top_k = {self.top_k!r}; use a positive integer")
        if not isinstance(self.bootstrap_resamples, int) or self.bootstrap_resamples < 100:
            problems.append(f"report.bootstrap_resamples = {self.bootstrap_resamples!r}; use an integer >= 100")
        if not isinstance(self.alpha, (int, float)) or not 0 < self.alpha < 0.5:
            problems.append(f"report.alpha = {self.alpha!r}; use a number in (0, 0.5), e.g. 0.05")
        if (
            isinstance(self.equivalence_margin, bool)
            or not isinstance(self.equivalence_margin, (int, float))
            or not 0 < self.equivalence_margin < 1
        ):
            problems.append(
                f"report.equivalence_margin = {self.equivalence_margin!r}; use a performance difference in (0, 1), e.g. 0.02"
            )
        # A t test needs at least 2 values (one degree of freedom) to estimate a spread.
        if not isinstance(self.min_pairs, int) or self.min_pairs < 2:
            problems.append(f"report.min_pairs = {self.min_pairs!r}; use an integer >= 2")
        if not isinstance(self.min_group, int) or self.min_group < 2:
            problems.append(f"report.min_group = {self.min_group!r}; use an integer >= 2")
        if not isinstance(self.seed, int):
            problems.append(f"report.seed = {self.seed!r}; use an integer")
        if (
            not isinstance(self.resources, tuple)
            or not all(isinstance(c, str) and c for c in self.resources)
            or len(set(self.resources)) != len(self.resources)
        ):
            problems.append(
                f"report.resources = {list(self.resources)!r}; give distinct column names, "
                "e.g. [memory_reserved_epoch2_mb, n_train]"
            )
        try:
            parse_combine(self.combine)
        except PeprInputError as exc:
            problems.append(str(exc))
        if not isinstance(self.exclude_flagged, bool):
            problems.append(f"report.exclude_flagged = {self.exclude_flagged!r}; use true or false")
        bad_formats = [f for f in self.figure_formats if f not in ("png", "pdf", "svg")]
        if bad_formats or not self.figure_formats:
            problems.append(f"report.figure_formats = {list(self.figure_formats)!r}; use png, pdf and/or svg")
        if problems:
            raise PeprInputError("bad report settings: " + "; ".join(problems))

    @property
    def resource_label(self) -> str:
        """Short label of the headline variant, e.g. ``PePR-E``."""
        return variant_label(self.resource)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> ReportConfig:
        """Build from the config's ``report:`` mapping (None or {} -> all defaults)."""
        if mapping is None:
            return cls()
        if not isinstance(mapping, Mapping):
            raise PeprInputError(
                f"the config's 'report' section must be a mapping of settings, got {type(mapping).__name__}"
            )
        known = {f.name for f in dataclasses.fields(cls)} - set(TABLE_SETTINGS)
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise PeprInputError(f"unknown report setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = dict(mapping)
        if "figure_formats" in values:
            formats = values["figure_formats"]
            if isinstance(formats, str):  # one format written without a list: figure_formats: svg
                formats = [formats]
            if not isinstance(formats, (list, tuple)):
                raise PeprInputError(f"report.figure_formats = {formats!r}; give a list, e.g. [png, pdf]")
            values["figure_formats"] = tuple(formats)
        if "resources" in values:
            resources = values["resources"]
            if isinstance(resources, str):  # one resource written without a list
                resources = [resources]
            if not isinstance(resources, (list, tuple)):
                raise PeprInputError(f"report.resources = {resources!r}; give a list, e.g. [memory_reserved_epoch2_mb]")
            values["resources"] = tuple(resources)
        return cls(**values)


def report_config_from(config: Mapping[str, Any]) -> ReportConfig:
    """The :class:`ReportConfig` of a workflow config: its ``report:`` section, with P taken from
    ``pepr.performance`` (the column ``results/pepr.csv`` was scored with). What report.smk
    builds and planning (:func:`pepr.plan.prepare.report_problems`) checks: PeprInputError when bad."""
    settings = config.get("report")
    if settings is None:
        settings = {}
    if not isinstance(settings, Mapping):
        raise PeprInputError(f"report: must be a mapping of settings, got {type(settings).__name__}")
    if "performance" in settings:
        raise PeprInputError(
            "report.performance is not a setting: the report uses pepr.performance, the column "
            "results/pepr.csv was scored with; set that instead"
        )
    scoring = config.get("pepr") if isinstance(config.get("pepr"), Mapping) else {}
    values = dict(settings)
    if "performance" in scoring:
        values["performance"] = scoring["performance"]
    cfg = ReportConfig.from_mapping(values)
    if GPU_MEMORY in cfg.resources and config.get("device") == "cpu":
        raise PeprInputError(
            f"report.resources names {GPU_MEMORY}, which runs on device: cpu never record "
            "(reserved GPU memory); drop it, or train on a GPU"
        )
    scored = [*SCORED_COLUMNS, *cfg.resources]
    unknown = [c for c, _ in parse_combine(cfg.combine) if c not in scored]
    if unknown:
        raise PeprInputError(
            f"report.combine names {', '.join(unknown)}, which pepr.csv does not score; combine its scored "
            f"resources ({', '.join(SCORED_COLUMNS)}) or add the column to report.resources"
        )
    return cfg
