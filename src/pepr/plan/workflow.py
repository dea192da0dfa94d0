"""The one adapter between pepr and Snakemake's ``workflow`` object.

The .smk files hand the ``workflow`` object of the Snakefile to :class:`SnakemakeWorkflow` and ask
it, never Snakemake, for the config files, the ``--config`` overrides, whether this process is a
job, resource overrides, a job's params record, and whether Snakemake forces a job. Every
attribute used here is listed in :data:`USED_ATTRIBUTES` and tested against the installed
Snakemake (tests/test_snakemake_adapter.py), so a Snakemake release that moves one fails a test,
not a sweep. Nothing here imports a global ``workflow``; Snakemake modules are imported only
inside the methods that need them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = ["SnakemakeWorkflow", "RetrainFlag", "USED_ATTRIBUTES", "USED_DAG_ATTRIBUTES", "SNAKEMAKE_BELOW"]

#: Snakemake's ``workflow`` attributes (dotted) this adapter reads or sets.
USED_ATTRIBUTES: tuple[str, ...] = (
    "basedir",
    "configfiles",
    "config_settings.configfiles",
    "config_settings.config",
    "remote_exec",
    "subprocess_exec",
    "resource_settings.overwrite_resources",
    "persistence.metadata",
    "persistence.path",
    "execution_settings.lock",
    "dryrun",
    "dag_settings.forcerun",
    "dag_settings.forceall",
    "rules",
    "dag",
)
#: The Snakemake DAG's attributes read when a job's command is formatted (``workflow.dag``).
USED_DAG_ATTRIBUTES: tuple[str, ...] = ("needrun_jobs", "reason", "forcefiles")
#: The first Snakemake major release this adapter has not been tested with (pyproject's bound).
SNAKEMAKE_BELOW = "10"


class RetrainFlag:
    """``{params.retrain}``: " --retrain" when this job must train even though its run folder
    keeps a finished result (``pepr train`` restores a finished result otherwise). Decided when
    the command is formatted (Snakemake has resolved which jobs it forces by then), once. Not a
    builtin type, so Snakemake leaves it out of the params record: asking for a retrain is no
    setting change."""

    def __init__(self, decide: Callable[[], bool]) -> None:
        self._decide = decide
        self._on: bool | None = None

    @property
    def on(self) -> bool:
        """Whether the job trains again (decided on first use)."""
        if self._on is None:
            self._on = bool(self._decide())
        return self._on

    def __str__(self) -> str:
        return " --retrain" if self.on else ""

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


class SnakemakeWorkflow:
    """pepr's view of one Snakemake ``workflow`` object (see the module docstring)."""

    def __init__(self, workflow: Any, warn: Callable[[str], None] | None = None) -> None:
        self._workflow = workflow
        self._warn = warn or (lambda text: print(text, file=sys.stderr))

        self._repaired: set[str] = set()
        self._repair_dag: Any = None
        self._driver_checked = False
        self._forced_map: dict[str, tuple[str, bool]] = {}
        self._forced_map_dag: Any = None
        self._forced_missed: set[str] = set()
        self._warned: set[str] = set()

    # ----- parse time -----

    @property
    def basedir(self) -> Path:
        """The folder of the Snakefile (the repository root)."""
        return Path(self._workflow.basedir)

    def config_files(self) -> list[str]:
        """The config files of this run: those of ``--configfile``, else the Snakefile's
        ``configfile:`` as Snakemake found it."""
        return [str(p) for p in self._workflow.config_settings.configfiles] or [
            str(p) for p in self._workflow.configfiles
        ]

    def config_overrides(self) -> dict[str, Any]:
        """``--config key=value`` overrides (Snakemake's parse of them)."""
        return dict(self._workflow.config_settings.config or {})

    def config_source(self) -> str:
        """The config files named in messages: ``--configfile``'s, else config/config.yaml."""
        return ", ".join(str(p) for p in self._workflow.config_settings.configfiles) or "config/config.yaml"

    @property
    def in_job(self) -> bool:
        """Whether this process runs jobs the driver planned (a SLURM job, a local subprocess):
        the driver has validated the config already, and no --forcerun reaches it."""
        return bool(self._workflow.remote_exec or self._workflow.subprocess_exec)

    def resource_override(self, resource: str) -> dict[str, Any]:
        """rule name -> the plain value of ``--set-resources RULE:resource=...`` (profiles too)."""
        overrides = self._workflow.resource_settings.overwrite_resources or {}
        found = {}
        for rule, values in overrides.items():
            if resource in values:
                given = values[resource]
                found[rule] = getattr(given, "value", given)  # a snakemake Resource, or a plain value
        return found

    def recorded_params(self, output: str) -> list[str] | None:
        """The params texts Snakemake recorded for a finished output (None when it has no record)."""
        from snakemake.io import IOFile

        try:
            record = self._workflow.persistence.metadata(IOFile(output))
        except Exception:  # no persistence yet (a bare parse) or an unreadable record: no record
            return None
        return list(record.params) if record is not None and record.params is not None else None

    def force_repair(self, outputs: Iterable[str]) -> None:
        """Have Snakemake run the jobs of ``outputs`` (lost or edited results, which
        ``pepr train`` restores) as if forced, without asking for a retrain. Applied to the DAG
        while Snakemake builds it (:meth:`apply_repairs`, from the train rules' input functions),
        so only jobs of the targets asked for run; nothing inside a job."""
        if not self.in_job:
            self._repaired.update(os.path.normpath(str(p)) for p in outputs)

    def apply_repairs(self) -> None:
        """Add the outputs of :meth:`force_repair` to the DAG's forced files, once per DAG
        (Snakemake decides which jobs run after every job's input function was called)."""
        dag = self._workflow.dag
        if self._repaired and dag is not None and dag is not self._repair_dag:
            dag.forcefiles.update(self._repaired)
            self._repair_dag = dag

    def second_driver(self) -> str | None:
        """The one line that stops a ``--nolock`` run started beside another Snakemake run of
        this folder (its ``.snakemake/locks`` are held), else None. Two drivers would start the
        same jobs: one empties a cell's log and restores into the folder the other trains. Asked
        while the DAG is built, before any job or log is touched; a dry run is always fine."""
        if self._driver_checked or self.in_job or self._workflow.dryrun or self._workflow.execution_settings.lock:
            return None
        self._driver_checked = True  # once per run: the locks do not change while the DAG is built
        folder = os.path.join(self._workflow.persistence.path, "locks")
        try:
            held = [name for name in os.listdir(folder) if name.endswith(".lock")]
        except OSError:
            return None
        if not held:
            return None
        return (
            f"pepr: another Snakemake run holds this folder ({folder}); --nolock would start its jobs a second "
            "time: wait for it (pepr status) or stop it; if none runs (a killed one), run `snakemake --unlock` first"
        )

    # ----- format time (the DAG is built) -----

    def retrain_flag(
        self, rule: str, outputs: Iterable[str], choice: bool | None, pretrain: str | None = None
    ) -> RetrainFlag:
        """``{params.retrain}`` of a training job (see :class:`RetrainFlag`).

        ``choice``: ``config["retrain"]`` (True: every job that runs trains; False: whatever is
        kept is restored). Unset: the job trains when Snakemake forces it on the user's word,
        ``--forcerun``/``-R`` (its rule, or any of its outputs in any spelling), ``--forceall``;
        not ``--force`` of a target alone (what a job side of SLURM runs), nor a repair
        (:meth:`force_repair`). ``pretrain``: a transfer cell's pretraining metrics.json; when
        the cell retrains and the pretraining does not, a warning says so."""
        outputs = [str(p) for p in outputs]
        if choice is not None:
            return RetrainFlag(lambda: bool(choice))
        if self.in_job:
            return RetrainFlag(lambda: False)

        def decide() -> bool:
            on = self.forced_on_purpose(rule, outputs)
            if on and pretrain is not None:
                self._warn_old_pretraining(pretrain)
            return on

        return RetrainFlag(decide)

    def _forced_jobs(self, output: str) -> tuple[str, bool] | None:
        """(rule name, forced) of the job Snakemake plans to run for ``output``, from the DAG."""
        dag = self._workflow.dag
        if dag is None:
            return None
        key = os.path.normpath(output)
        # built once per DAG; rebuilt on a miss (jobs a checkpoint added), once per missing output
        if dag is not self._forced_map_dag or (key not in self._forced_map and key not in self._forced_missed):
            if dag is not self._forced_map_dag:
                self._forced_missed = set()
            self._forced_map = {
                os.path.normpath(str(f)): (job.rule.name, bool(dag.reason(job).forced))
                for job in dag.needrun_jobs()
                for f in job.output
            }
            self._forced_map_dag = dag
            if key not in self._forced_map:
                self._forced_missed.add(key)
        return self._forced_map.get(key)

    def forced_on_purpose(self, rule: str, outputs: list[str]) -> bool:
        """Whether Snakemake forces the job of ``outputs`` because the user asked (see
        :meth:`retrain_flag`): Snakemake's own resolution first (the DAG's reason for the job),
        then the user's words tell a retrain from ``--force`` of a target or a repair."""
        found = self._forced_jobs(outputs[0])
        if found is None or not found[1]:
            return False
        settings = self._workflow.dag_settings
        if settings.forceall:
            return True
        asked = tuple(settings.forcerun or ())  # --forcerun/-R as the user gave them
        if rule in asked:
            return True
        rules = {rule_.name for rule_ in self._workflow.rules}
        named = {self._normal(item) for item in asked if item not in rules}
        return any(os.path.normpath(p) in named for p in outputs)

    @staticmethod
    def _normal(path: str) -> str:
        # Snakemake reads a --forcerun file relative to the working directory, as the jobs' outputs
        return os.path.normpath(os.path.relpath(path) if os.path.isabs(path) else path)

    def _warn_old_pretraining(self, pretrain: str) -> None:
        found = self._forced_jobs(pretrain)
        if found is not None or pretrain in self._warned:
            return  # the pretraining runs too (its new weights are what the cells start from)
        self._warned.add(pretrain)
        self._warn(
            f"pepr: retraining transfer cells that start from {os.path.dirname(pretrain)}/model.pt, "
            "kept from an earlier run (made by the code of then); to retrain the pretraining too: "
            "--forcerun pretrain_source train_model"
        )
