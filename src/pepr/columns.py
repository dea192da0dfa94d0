"""The columns of pepr's tables, each defined once: resources, performances, identity and group.

Every module that names a resource, a run's identity or the normalisation group reads it here
(the run contract, aggregation, scoring, the report's settings and tables, the estimate's
comparison, the CLI's help). Adding a resource means one :class:`Resource` below and the code
that measures it (:mod:`pepr.train.run`); everything else follows. Stdlib only, imports nothing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resource:
    """A resource a run records (a column of metrics.json, runs.csv and pepr.csv).

    Attributes:
        column: the column name.
        name: what it is, for people ("energy").
        unit: its unit ("kWh").
        additive: it adds up over runs (a sweep's total, a pretraining cost shared out over the
            runs that reuse it); a peak does not.
        scored: pepr.csv has a PePR variant for it (``pepr_<column>``).
        label: the variant's short label (``PePR-E``); empty when not scored.
        estimate: the column of ``pepr estimate``'s table that predicts it; empty when none does.
        cumulative: the history.csv column holding its running total after each epoch; empty
            when history.csv has none (a peak, or a part of the energy).
        deterministic: the same for every run of one configuration (the training images of a
            group), so equal values across runs are expected, never a copied measurement.
    """

    column: str
    name: str
    unit: str
    additive: bool
    scored: bool
    label: str = ""
    estimate: str = ""
    cumulative: str = ""
    deterministic: bool = False

    @property
    def amortised(self) -> bool:
        """A transfer run is also scored with its pretraining cost shared out (``<column>_amortised``)."""
        return self.scored and self.additive


#: Every resource a run records, in the order they appear in metrics.json and runs.csv.
RESOURCES: tuple[Resource, ...] = (
    Resource(
        "energy_kwh",
        "energy",
        "kWh",
        additive=True,
        scored=True,
        label="PePR-E",
        estimate="est_energy_kwh",
        cumulative="cumulative_energy_kwh",
    ),
    Resource("cpu_energy_kwh", "CPU energy", "kWh", additive=True, scored=False),
    Resource("gpu_energy_kwh", "GPU energy", "kWh", additive=True, scored=False),
    Resource("ram_energy_kwh", "RAM energy", "kWh", additive=True, scored=False),
    Resource(
        "co2_kg",
        "CO2",
        "kg CO2eq",
        additive=True,
        scored=True,
        label="PePR-C",
        estimate="est_co2_kg",
        cumulative="cumulative_co2_kg",
    ),
    Resource(
        "train_time_s",
        "training time",
        "s",
        additive=True,
        scored=True,
        label="PePR-T",
        estimate="est_time_s",
        cumulative="cumulative_time_s",
    ),
    Resource("peak_memory_mb", "peak memory", "MiB", additive=False, scored=True, label="PePR-M"),
)

#: Resources the report scores on request only (``pepr report --resource``, the workflow's
#: ``report.resources``), never in pepr.csv: reserved GPU memory after epoch 2 (the paper's
#: PePR-M on GPU, steadier than the peak) and the training images (data as a resource, PePR-D).
REPORT_RESOURCES: tuple[Resource, ...] = (
    Resource(
        "memory_reserved_epoch2_mb",
        "reserved GPU memory (epoch 2)",
        "MiB",
        additive=False,
        scored=False,
        label="PePR-M (reserved)",
    ),
    Resource("n_train", "training images", "images", additive=False, scored=False, label="PePR-D", deterministic=True),
)
#: Their columns -> their variants' short labels.
REPORT_RESOURCE_LABELS: dict[str, str] = {r.column: r.label for r in REPORT_RESOURCES}
#: Resources equal by construction across runs of one configuration (never a copy).
DETERMINISTIC_RESOURCES: tuple[str, ...] = tuple(r.column for r in (*RESOURCES, *REPORT_RESOURCES) if r.deterministic)
#: The combined PePR's columns (``report.combine``): its resource R (the weighted mean of the
#: normalised resources, already in [0, 1]) and its score P / (1 + R).
COMBINED = "combined"

#: Every resource column, as :data:`RESOURCES` orders them.
RESOURCE_COLUMNS: tuple[str, ...] = tuple(r.column for r in RESOURCES)
#: The resources pepr.csv is scored on (PePR-E, -C, -T, -M).
SCORED_RESOURCES: tuple[str, ...] = tuple(r.column for r in RESOURCES if r.scored)
#: Scored resources that add up over runs, so a pretraining cost can be shared out (memory does not).
AMORTISED_RESOURCES: tuple[str, ...] = tuple(r.column for r in RESOURCES if r.amortised)
#: Resources that add up over runs (a total over a sweep means something).
ADDITIVE_RESOURCES: tuple[str, ...] = tuple(r.column for r in RESOURCES if r.additive)
#: Resources whose running total history.csv records each epoch -> that column.
CUMULATIVE_COLUMNS: dict[str, str] = {r.column: r.cumulative for r in RESOURCES if r.cumulative}
#: The scored resources with their variants' short labels.
RESOURCE_LABELS: dict[str, str] = {r.column: r.label for r in RESOURCES if r.scored}


def amortised_column(resource: str) -> str:
    """Name of the resource column with the pretraining cost shared out (``energy_kwh_amortised``)."""
    return f"{resource}_amortised"


#: Every resource column pepr.csv scores: the scored resources, then their amortised forms.
SCORED_COLUMNS: tuple[str, ...] = SCORED_RESOURCES + tuple(amortised_column(r) for r in AMORTISED_RESOURCES)

#: Performance columns a results table may carry (test-set metrics, all in [0, 1]).
PERFORMANCE_COLUMNS: tuple[str, ...] = ("test_accuracy", "test_balanced_accuracy", "test_auc", "test_f1")

#: The experiment cell within which resources are normalised (PePR's min/max): the workflow's group.
GROUP_COLUMNS: tuple[str, ...] = ("dataset", "init", "fraction")
#: Columns naming a run (a cell of the grid and its seed), in the order they lead runs.csv and
#: every table keyed by run (the estimate, the comparison).
IDENTITY_COLUMNS: tuple[str, ...] = (*GROUP_COLUMNS, "model", "seed")

#: Largest seed numpy's and torch's generators take (a seed is in 0..MAX_SEED).
MAX_SEED = 2**32 - 1
