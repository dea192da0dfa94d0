"""Planning a sweep: the workflow's entry point (:func:`prepare_grid`) and every check of a config.

Planning reads one way (each layer imports only the ones below it; tests/test_structure.py
holds it):

    pepr.plan.prepare      prepare_grid, config_problems, job_problems, report_problems, the cache
      pepr.plan.grid    cells, pretraining jobs, train_settings (the train rules' params)
        pepr.plan.config    loading, schema, defaults (training_problems: pepr.train.checks)
          pepr.train.settings / pepr.train.devices / pepr.plan.report_settings / pepr.results.runs / pepr.datasets.core ...

:func:`config_problems` lists every problem of a workflow config at once: schema, names, data
files, ``report:`` settings (:mod:`pepr.plan.report_settings`: planning never imports the report),
and :func:`pepr.train.checks.training_problems` on every distinct job's settings, so ``snakemake -n``
rejects whatever a job would reject, before a finished cell is scheduled again. A config that
validated is remembered in the validation cache (``.snakemake/pepr/``). Nothing here imports
torch; timm is imported only to build :func:`pepr.train.checks.timm_catalogue`'s cache.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pepr.errors import PeprInputError
from pepr.plan.config import apply_defaults, load_schema, schema_problems
from pepr.plan.grid import (
    INIT_STRATEGIES,
    Grid,
    build_grid,
    dataset_info,
    expand_cells,
    pattern_matches,
    train_settings,
)
from pepr.plan.report_settings import report_config_from
from pepr.results.runs import atomic_write_json
from pepr.train.checks import _timm_version, country_problems, model_problems, timm_catalogue, training_problems
from pepr.train.devices import cuda_index, device_problems
from pepr.train.settings import limits_text, setting, within_limits

#: Version of the checks behind a cached "validated" mark (part of its key): raise it when the
#: checks grow, so a config validated by fewer checks is checked again. 2: report settings,
#: seed range and pepr train's checks on every job joined the config check. 3: one model-name
#: check (pretrained tags too), report settings checked without a report: section.
VALIDATION_VERSION = 3


# --------------------------------------------------------------------------------------------
# Workflow config checks
# --------------------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    # numbers.Integral also admits numpy integers (a TrainConfig built from arrays)
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _dataset_names(specs: Iterable[str], problems: list[str], label: str = "datasets") -> dict[str, str]:
    """spec -> short name, recording malformed specs as problems (prefixed with ``label``)."""
    from pepr.datasets.core import dataset_name

    names: dict[str, str] = {}
    for spec in specs:
        try:
            names[spec] = dataset_name(spec)
        except PeprInputError as exc:
            problems.append(f"{label}: {exc}")
    return names


def config_problems(
    config: Mapping[str, Any],
    schema: Mapping[str, Any],
    catalogue: Mapping[str, Sequence[str]] | None = None,
    check_data: bool = True,
) -> list[str]:
    """Every problem of a defaults-filled config, found without training anything.

    Schema violations; fractions outside (0, 1]; unsafe or unknown model names (against
    ``catalogue``, see :func:`timm_catalogue`; skipped when None); ``imagenet`` init for models
    without ImageNet weights; malformed dataset specs, missing npz files and bad data files
    (``pepr.datasets.core.dataset_problems``; MedMNIST files may be missing, the download_data rule fetches
    them); two datasets sharing a short name; include/exclude patterns that match no cell; an
    empty grid; bad ``report:`` settings (:func:`report_problems`); and, once the grid can be
    expanded, :func:`training_problems` on every distinct job (:func:`job_problems`). Returns
    readable lines (empty list: the config is usable).
    """
    in_schema = schema_problems(config, schema)
    problems = list(in_schema)
    models = (
        [m for m in config.get("models", []) if isinstance(m, str)] if isinstance(config.get("models"), list) else []
    )
    datasets = (
        [d for d in config.get("datasets", []) if isinstance(d, str)]
        if isinstance(config.get("datasets"), list)
        else []
    )
    inits = (
        [i for i in config.get("inits", []) if i in INIT_STRATEGIES] if isinstance(config.get("inits"), list) else []
    )

    # a run's fraction limits (TrainConfig's field) on the config's fractions, which the schema
    # leaves to this check (its message says what a fraction is); the seeds' are the schema's
    fraction_limits = setting("fraction")
    fraction_span = limits_text(fraction_limits).removeprefix("in ")
    for fraction in config.get("fractions", []) if isinstance(config.get("fractions"), list) else []:
        if _is_number(fraction) and not within_limits(fraction_limits, fraction):
            problems.append(
                f"fractions: {fraction!r} is outside {fraction_span}; use e.g. 1.0 for all training data, 0.1 for 10%"
            )
    problems.extend(_device_index_problems(config))
    country_flagged = any(problem.startswith("config key 'country'") for problem in in_schema)
    if in_schema and isinstance(config.get("country"), str) and not country_flagged:
        # the per-job checks below need a schema-valid config; a grid-wide setting they would
        # reject is still listed now, so one message names every problem
        problems.extend(country_problems(config["country"]))
    transfer = config.get("transfer") if isinstance(config.get("transfer"), dict) else {}
    fraction = transfer.get("fraction")
    if "transfer" in inits and _is_number(fraction) and not within_limits(fraction_limits, fraction):
        problems.append(f"transfer.fraction: {fraction!r} is outside {fraction_span}")

    # the one model-name check (pepr.train.checks.model_problems): safe characters, then timm's names
    reported: set[str] = set()  # models with a problem here are not checked again per job
    without_weights: list[str] = []  # known models that an imagenet cell would need weights for
    for model in models:
        if not model:
            continue  # the schema reports empty names
        found = model_problems(model, None, catalogue)
        if found:
            reported.add(model)
            problems.extend(f"models: {problem}" for problem in found)
        elif catalogue is not None and "imagenet" in inits and model_problems(model, "imagenet", catalogue):
            without_weights.append(model)
    names = _dataset_names(datasets, problems)
    by_name: dict[str, list[str]] = {}
    for spec, name in names.items():
        by_name.setdefault(name, []).append(spec)
    for name, specs in by_name.items():
        if len(specs) > 1:
            problems.append(
                f"datasets: {', '.join(repr(s) for s in specs)} all get the results folder name "
                f"'{name}'; keep one, or rename an npz file"
            )
    data_dir = Path(config["data_dir"]) if isinstance(config.get("data_dir"), str) else None
    source = transfer.get("source") if "transfer" in inits else None
    if "transfer" in inits and isinstance(source, str):
        source_names = _dataset_names([source], problems, label="transfer.source")
        if source in datasets:
            problems.append(
                f"transfer.source: {source!r} is also a target dataset; pretraining on the data a model "
                "is then evaluated on is not transfer — choose another source"
            )
        elif source in source_names and source_names[source] in by_name:
            problems.append(f"transfer.source: {source!r} has the same short name as a target dataset")
    if check_data:
        from pepr.datasets.core import dataset_problems

        labelled = [(spec, "datasets") for spec in names]
        if isinstance(source, str) and source not in names:
            labelled.append((source, "transfer.source"))
        for spec, label in labelled:
            for problem in dataset_problems(spec, data_dir, allow_download=True):
                # malformed specs were reported above, by _dataset_names
                if not problem.startswith(f"dataset spec {spec!r}:"):
                    problems.append(f"{label}: {problem}")

    # Cell-level checks need a schema-valid config whose datasets all have names.
    cells = None
    if not in_schema and len(names) == len(datasets):
        try:
            problems.extend(_grid_problems(config, names))
            cells = expand_cells(config, names, apply_filters=True)
        except PeprInputError:
            pass  # a malformed transfer.source, already reported above
    if cells is not None:  # exactly the models that keep an imagenet cell after include/exclude
        needing = {cell.model for cell in cells if cell.init == "imagenet"}
        without_weights = [model for model in without_weights if model in needing]
    for model in without_weights:
        problems.append(
            f"models: {model!r} has no pretrained ImageNet weights in timm, so init 'imagenet' "
            f"cannot run for it; exclude those cells (exclude: [{{model: {model}, init: imagenet}}]) "
            "or drop 'imagenet' from inits"
        )
    problems.extend(_carbon_span_problems(config))
    if not any(problem.startswith("config key 'adaptive") for problem in in_schema):
        from pepr.results.adaptive import adaptive_problems

        problems.extend(adaptive_problems(config))
    # the schema's own complaint about a report/pepr key is clearer than the report's echo of it
    if not any(problem.startswith(("config key 'report", "config key 'pepr")) for problem in in_schema):
        problems.extend(report_problems(config))
    if cells is not None and check_data and not any("datasets:" in p or "transfer.source:" in p for p in problems):
        problems.extend(fraction_problems(cells, data_dir))
        problems.extend(image_shape_problems(cells, data_dir, config.get("image_size")))
    if cells is not None:
        # models already reported above (unsafe or unknown names) are not checked again per job
        reported |= set(without_weights)
        problems.extend(job_problems(config, [cell for cell in cells if cell.model not in reported], catalogue))
    return problems


def _device_index_problems(config: Mapping[str, Any]) -> list[str]:
    """``device: cuda:N`` against the GPUs each job is given.

    A job that asks the scheduler for G GPUs (``resources.train.gpu`` / ``pretrain.gpu``) sees
    exactly those, numbered ``cuda:0`` .. ``cuda:G-1`` (SLURM sets CUDA_VISIBLE_DEVICES), so
    ``cuda:N`` with N >= G would fail in every job. With ``gpu: 0`` (a local run) the GPUs are
    the machine's own and are not known while planning: not checked.
    """
    device = config.get("device")
    if device_problems(device):
        return []  # a malformed device is reported by the schema and training_problems
    text, index = device.strip(), cuda_index(device)
    if index is None:
        return []
    resources = config.get("resources") if isinstance(config.get("resources"), Mapping) else {}
    problems = []
    for kind in ("train", "pretrain"):
        spec = resources.get(kind) if isinstance(resources.get(kind), Mapping) else {}
        gpus = spec.get("gpu")
        if _is_int(gpus) and gpus >= 1 and index >= gpus:
            problems.append(
                f"device: {text!r} but each {kind} job is given {gpus} GPU(s) (resources.{kind}.gpu), "
                f"visible to it as cuda:0..cuda:{gpus - 1}; use device: cuda (or auto)"
            )
            break
    return problems


def report_problems(config: Mapping[str, Any]) -> list[str]:
    """Problems of the ``report:`` settings, found by the very call report.smk makes
    (:func:`pepr.plan.report_settings.report_config_from`; planning never imports the report)."""
    try:
        report_config_from(config)
    except PeprInputError as exc:
        return [str(exc)]
    except (TypeError, ValueError) as exc:  # a value of a type the dataclass cannot take
        return [f"report settings: {exc}"]
    from pepr.plan.settings_checks import report_setting_problems

    settings = config.get("report")
    # checked against the run contract (columns, files, seed range) before any job runs
    return report_setting_problems(settings) if isinstance(settings, Mapping) else []


def _carbon_span_problems(config: Mapping[str, Any]) -> list[str]:
    """A carbon-intensity series must cover at least one job started now running its whole time
    limit (``resources.train.runtime``): a series ending mid-training stopped the run after epochs.
    (Format problems are reported per job by :func:`pepr.train.checks.training_problems`.)"""
    import time

    from pepr.results.carbon import read_carbon_intensity

    path = config.get("carbon_intensity")
    resources = config.get("resources") if isinstance(config.get("resources"), Mapping) else {}
    train = resources.get("train") if isinstance(resources.get("train"), Mapping) else {}
    runtime = train.get("runtime")
    if not isinstance(path, str) or not path or not _is_number(runtime) or runtime <= 0:
        return []
    try:
        series = read_carbon_intensity(path)
    except PeprInputError:
        return []
    now = time.time()
    problem = series.span_problem(
        now, now + 60 * runtime, f"a job started now, within its time limit resources.train.runtime = {runtime:g} min"
    )
    return [f"carbon_intensity: {problem}"] if problem else []


def job_problems(config: Mapping[str, Any], cells: Iterable[Any], catalogue: Mapping[str, Any] | None) -> list[str]:
    """:func:`training_problems` on the training settings of every distinct job of ``cells``
    (``pepr.plan.grid.Cell`` objects) and of their pretraining jobs, as ``pepr train`` would run them.

    A sweep's thousands of cells share a handful of settings once seed and fraction are set
    aside (both are checked on the config itself), so each (model, dataset, init) is checked
    once. Data files are checked by :func:`config_problems`, and checkpoints are written by
    pretraining jobs later, so neither is checked here.
    """
    jobs: dict[Any, Any] = {}
    for cell in cells:
        jobs.setdefault((cell.model, cell.dataset, cell.init), cell)
        if cell.pretrain is not None:
            jobs.setdefault(("pretrain", cell.pretrain.model), cell.pretrain)
    found: list[str] = []
    for job in jobs.values():
        settings = {**train_settings(job, config), "seed": 0, "fraction": 1.0}
        found.extend(training_problems(settings, catalogue, check_data=False, check_checkpoint=False))
    return list(dict.fromkeys(found))


def training_class_counts(spec: str, data_dir: str | os.PathLike | None) -> list[int] | None:
    """Per-class counts of a dataset's training split, as ``pepr train`` subsets it; None when
    they cannot be told without loading images (image folders, multi-label, a file not there yet)."""
    from pepr.datasets.core import parse_dataset_spec
    from pepr.datasets.registry import kind_of

    parsed = parse_dataset_spec(spec)
    return kind_of(parsed).training_class_counts(parsed, Path(data_dir) if data_dir is not None else None)


def fraction_problems(cells: Iterable[Any], data_dir: str | os.PathLike | None) -> list[str]:
    """What ``pepr train`` would reject about each cell's (and its pretraining's) fraction of the
    training data (:func:`pepr.datasets.core.stratified_subset_size`: a class left with no
    sample), checked once per dataset and fraction, with the dataset named."""
    from pepr.datasets.core import stratified_subset_size

    pairs: dict[tuple[str, float], str] = {}
    for cell in cells:
        pairs.setdefault((cell.dataset, float(cell.fraction)), "fractions")
        if cell.pretrain is not None:
            pairs.setdefault((cell.pretrain.source, float(cell.pretrain.fraction)), "transfer.fraction")
    counts: dict[str, list[int] | None] = {}
    found = []
    for (spec, fraction), label in pairs.items():
        if not 0.0 < fraction < 1.0:
            continue  # all the data, or out of range (reported on the config itself)
        if spec not in counts:
            counts[spec] = training_class_counts(spec, data_dir)
        if counts[spec] is None:
            continue
        try:
            stratified_subset_size(counts[spec], fraction)
        except PeprInputError as exc:
            found.append(f"{label}: on {spec}: {exc}")
    return found


def image_shape_problems(cells: Iterable[Any], data_dir: str | os.PathLike | None, image_size: Any) -> list[str]:
    """``pepr train``'s refusal of non-square images without ``image_size``, at planning: read
    from each npz's header (:func:`pepr.plan.rerun.stored_image_shape`), once per dataset."""
    if image_size is not None:
        return []
    from pepr.datasets.core import dataset_file, parse_dataset_spec
    from pepr.plan.rerun import stored_image_shape

    specs = dict.fromkeys(
        spec
        for cell in cells
        for spec in (cell.dataset, cell.pretrain.source if cell.pretrain is not None else None)
        if spec
    )
    found = []
    for spec in specs:
        parsed = parse_dataset_spec(spec)
        path = dataset_file(parsed, Path(data_dir) if data_dir is not None else None)
        shape = stored_image_shape(spec, str(path) if path is not None else None)
        if shape is not None and shape[0] != shape[1]:
            found.append(
                f"datasets: {spec!r} has {shape[0]}x{shape[1]} images; set image_size to train on square images"
            )
    return found


def _grid_problems(config: Mapping[str, Any], names: Mapping[str, str]) -> list[str]:
    problems = []

    all_cells = expand_cells(config, names, apply_filters=False)
    for key in ("include", "exclude"):
        for pattern in config.get(key, []):
            if not any(pattern_matches(pattern, cell) for cell in all_cells):
                problems.append(f"{key}: the pattern {pattern!r} matches no cell of the grid (a typo?)")
    if not problems and not expand_cells(config, names, apply_filters=True):
        problems.append("the grid is empty: include/exclude leave no cell to train")
    return problems


def check_config(
    config: Mapping[str, Any],
    schema: Mapping[str, Any],
    catalogue: Mapping[str, Sequence[str]] | None = None,
    check_data: bool = True,
    source: str = "config",
) -> None:
    """Raise one PeprInputError listing every problem of ``config`` (see :func:`config_problems`)."""
    raise_problems(config_problems(config, schema, catalogue=catalogue, check_data=check_data), source)


def raise_problems(problems: Sequence[str], source: str = "config") -> None:
    """Raise the one all-problems-at-once PeprInputError for ``problems`` (nothing when empty)."""
    if problems:
        listing = "\n".join(f"  - {problem}" for problem in problems)
        raise PeprInputError(f"{source} has {len(problems)} problem(s); nothing was run:\n{listing}")


# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# The workflow's entry point: validate once, remember, expand
# --------------------------------------------------------------------------------------------


def _data_fingerprint(config: Mapping[str, Any]) -> list[Any]:
    """Size and mtime of every data file validation may read (so a changed file re-validates)."""
    entries: list[Any] = []
    paths = []
    data_dir = config.get("data_dir")
    if isinstance(data_dir, str) and Path(data_dir).is_dir():
        paths += sorted(Path(data_dir).glob("*.npz"))
    specs = list(config.get("datasets") or [])
    transfer = config.get("transfer")
    if isinstance(transfer, dict):
        specs.append(transfer.get("source"))
    from pepr.datasets.core import parse_dataset_spec
    from pepr.datasets.registry import kind_of

    for spec in specs:
        try:
            parsed = parse_dataset_spec(spec)
        except PeprInputError:
            continue  # reported by the validation itself
        entries += kind_of(parsed).stamps(parsed, Path(data_dir) if isinstance(data_dir, str) else None)
    for path in paths:
        try:
            stat = path.stat()
            entries.append([str(path), stat.st_size, stat.st_mtime_ns])
        except OSError:
            entries.append([str(path), None, None])
    return entries


def _validation_key(config: Mapping[str, Any], schema: Mapping[str, Any]) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        pepr_version = version("pepr-bench")
    except PackageNotFoundError:
        pepr_version = "unknown"
    payload = {
        "checks": VALIDATION_VERSION,
        "config": config,
        "schema": schema,
        "timm": _timm_version(),
        "pepr": pepr_version,
        "data": _data_fingerprint(config),
        "cwd": os.getcwd(),
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def prepare_grid(
    config: dict[str, Any],
    schema_path: str | os.PathLike,
    cache_dir: str | os.PathLike | None,
    validate: bool = True,
    source: str = "config",
) -> Grid:
    """What the Snakefile calls: fill defaults into ``config`` (in place), validate, expand.

    With ``validate`` every problem is raised at once as a PeprInputError before any job exists
    (:func:`check_config`: config, report settings and ``pepr train``'s own checks
    on every job).
    A config that validated is remembered in ``cache_dir`` (key: hash of config, schema, timm and
    pepr versions and data-file stamps) together with its dataset short names, so re-parsing the
    same workflow (``snakemake -n``, each job, ``--report``) neither imports timm nor reads data
    again. ``validate=False`` (inside a job, where the driver has validated) skips the checks.
    """
    schema = load_schema(schema_path)
    apply_defaults(config, schema)
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"validated-{_validation_key(config, schema)}.json"
        if cache_file.is_file():
            try:
                with open(cache_file, encoding="utf-8") as handle:
                    info = json.load(handle)["datasets"]
                return build_grid(config, datasets=info)
            except (OSError, ValueError, KeyError, TypeError):
                pass  # damaged cache: validate again
    if validate:
        catalogue = timm_catalogue(cache_dir)
        check_config(config, schema, catalogue=catalogue, check_data=True, source=source)
    specs = list(config["datasets"])
    if "transfer" in config["inits"]:
        specs.append(config["transfer"]["source"])
    try:
        info = dataset_info(dict.fromkeys(specs), config["data_dir"])
    except PeprInputError as exc:
        raise PeprInputError(f"{source}: {exc}") from None
    grid = build_grid(config, datasets=info)
    if validate and cache_file is not None:
        atomic_write_json(cache_file, {"datasets": info}, indent=None)
    return grid
