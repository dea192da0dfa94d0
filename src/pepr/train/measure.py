"""Resource measurement for ``pepr train``: energy/CO2 (CodeCarbon, offline only), memory, FLOPs.

Energy comes from CodeCarbon's ``OfflineEmissionsTracker`` (never the online tracker, which
makes network look-ups). It is used through its task API, one task per epoch, so the energy of
each epoch is known and the training total is their sum (the same span as the training time).
How CodeCarbon obtained the numbers is recorded as ``energy_method``: RAPL / NVML are
measurements, ``cpu_load`` / ``constant`` modes and RAM are estimates from TDP tables and
heuristics. torch and codecarbon are imported inside functions.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
from dataclasses import dataclass
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pepr.errors import PeprInputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: CodeCarbon CPU modes that read hardware energy counters (everything else is an estimate).
MEASURED_CPU_MODES = frozenset({"intel_rapl", "intel_power_gadget", "apple_powermetrics", "windows_emi"})


def known_countries() -> dict[str, str]:
    """ISO 3166-1 alpha-3 codes CodeCarbon has an energy mix for -> country name (offline data)."""
    from importlib.resources import files

    path = files("codecarbon") / "data" / "private_infra" / "global_energy_mix.json"
    data = json.loads(path.read_text())
    return {code: entry.get("country_name", code) for code, entry in data.items()}


def country_intensity_g_per_kwh(code: str) -> float:
    """CodeCarbon's average grid carbon intensity of a country (gCO2eq/kWh), the value its
    offline tracker multiplies energy with (``global_energy_mix.json``'s ``carbon_intensity``).

    Read from CodeCarbon's data file without importing CodeCarbon (aggregation stays light).
    Raises PeprInputError for a code without data.
    """
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("codecarbon")
    if spec is None or not spec.submodule_search_locations:
        raise PeprInputError("codecarbon is not installed: the country carbon intensities come from its data")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "private_infra" / "global_energy_mix.json"
    mix = _energy_mix(str(path))
    entry = mix.get(code)
    if not isinstance(entry, dict) or entry.get("carbon_intensity") is None:
        check_country(code)
        raise PeprInputError(f"CodeCarbon has no carbon intensity for country {code!r}")
    return float(entry["carbon_intensity"])


_ENERGY_MIX: dict[str, Any] = {}


def _energy_mix(path: str) -> dict[str, Any]:
    if path not in _ENERGY_MIX:
        with open(path, encoding="utf-8") as handle:
            _ENERGY_MIX[path] = json.load(handle)
    return _ENERGY_MIX[path]


def epochs_co2_kg(
    energies_kwh: "list[float]", midpoints: "list[float | None]", country: str, series: "IntensitySeries | None"
) -> tuple[list[float], str]:
    """CO2 (kg) of each epoch from its measured energy: the series' intensity at the epoch's
    wall-clock midpoint (UTC seconds) when a series is given, else ``country``'s average; and a
    description of the intensity used. One intensity source for every epoch of a run."""
    if series is not None:
        if any(m is None for m in midpoints):
            raise PeprInputError(
                f"a carbon intensity series ({series.source}) needs each epoch's time, which this run "
                "did not record (trained by an earlier pepr); use the country's average (carbon_intensity: null)"
            )
        return [e * series.at(m) / 1000.0 for e, m in zip(energies_kwh, midpoints)], series.source
    intensity = country_intensity_g_per_kwh(country)
    return [e * intensity / 1000.0 for e in energies_kwh], f"CodeCarbon country {country} ({intensity:g} g/kWh)"


def check_country(code: str) -> None:
    """Raise :class:`PeprInputError` unless CodeCarbon knows the carbon intensity of ``code``."""
    countries = known_countries()
    if code not in countries:
        examples = ", ".join(f"{c} ({countries[c]})" for c in ("DNK", "DEU", "FRA", "USA", "GBR") if c in countries)
        raise PeprInputError(
            f"country {code!r} is not an ISO 3166-1 alpha-3 code with CodeCarbon data; use e.g. {examples}"
        )


@dataclass
class EnergySample:
    """Energy and emissions of one measured span (kWh, kg CO2eq, seconds)."""

    energy_kwh: float = 0.0
    cpu_energy_kwh: float = 0.0
    gpu_energy_kwh: float = 0.0
    ram_energy_kwh: float = 0.0
    co2_kg: float = 0.0
    duration_s: float = 0.0

    def __add__(self, other: "EnergySample") -> "EnergySample":
        return EnergySample(
            **{name: getattr(self, name) + getattr(other, name) for name in self.__dataclass_fields__}
        )


class EnergyMeter:
    """CodeCarbon offline tracker measuring named spans (one per epoch).

    Writes no files and logs only errors (unless ``verbose``). ``allow_multiple_runs`` is set
    because CodeCarbon otherwise takes a machine-wide lock and a second concurrent training
    process would silently measure nothing. The first span of a tracker pays ~1.5-3 s of
    hardware probing; :meth:`start` absorbs it in a throw-away span so epoch 1 is not inflated.
    """

    def __init__(self, country: str, verbose: bool = False, gpu_ids: list[int] | None = None) -> None:
        self.country = country
        self.verbose = verbose
        # GPUs to count; None = CodeCarbon's choice (CUDA_VISIBLE_DEVICES, as SLURM sets it, else all)
        self.gpu_ids = gpu_ids
        self._tracker: Any = None
        # CodeCarbon renames a reused task name (name_<uuid>) and then stop_task(name) closes the
        # wrong task, so every span gets a unique task name here.
        self._spans = 0
        self._active: tuple[str, str] | None = None  # (caller's name, CodeCarbon task name)

    def start(self) -> None:
        """Create the tracker and probe the hardware (outside any measured span)."""
        from codecarbon import OfflineEmissionsTracker

        if not self.verbose:  # after the import, which sets codecarbon's logger to INFO
            logging.getLogger("codecarbon").setLevel(logging.ERROR)

        self._tracker = OfflineEmissionsTracker(
            country_iso_code=self.country,
            output_methods=[],  # no emissions.csv, API or logger output: pepr records the numbers
            allow_multiple_runs=True,
            gpu_ids=self.gpu_ids,
            log_level="info" if self.verbose else "error",
        )
        self._tracker.start_task("pepr-probe")
        self._tracker.stop_task("pepr-probe")

    def begin(self, name: str) -> None:
        """Start measuring the span ``name``."""
        if self._tracker is None:
            raise RuntimeError("EnergyMeter.begin() before start()")
        if self._active is not None:
            raise RuntimeError(f"EnergyMeter.begin({name!r}) while span {self._active[0]!r} is open")
        self._spans += 1
        self._active = (name, f"{name}#{self._spans}")
        self._tracker.start_task(self._active[1])

    def end(self, name: str) -> EnergySample:
        """Stop measuring ``name`` and return its energy; a tracker failure is an error, never 0."""
        if self._active is None or self._active[0] != name:
            raise RuntimeError(f"EnergyMeter.end({name!r}) without a matching begin()")
        data = self._tracker.stop_task(self._active[1])
        self._active = None
        if data is None or data.energy_consumed is None:
            raise RuntimeError(f"CodeCarbon returned no measurement for span {name!r}")
        return EnergySample(
            energy_kwh=float(data.energy_consumed),
            cpu_energy_kwh=float(data.cpu_energy or 0.0),
            gpu_energy_kwh=float(data.gpu_energy or 0.0),
            ram_energy_kwh=float(data.ram_energy or 0.0),
            co2_kg=float(data.emissions or 0.0),
            duration_s=float(data.duration or 0.0),
        )

    def method(self) -> str:
        """How the energy was obtained, e.g. ``"estimated: CPU cpu_load (TDP x load), RAM heuristic"``."""
        if self._tracker is None:
            return "not measured"
        parts: list[str] = []
        measured = False
        for hardware in getattr(self._tracker, "_hardware", []):
            kind = type(hardware).__name__
            if kind == "CPU":
                mode = getattr(hardware, "_mode", "unknown")
                if mode in MEASURED_CPU_MODES:
                    measured = True
                    parts.append(f"CPU {mode} counters")
                elif mode == "cpu_load":
                    parts.append("CPU cpu_load (TDP x load, estimate)")
                else:
                    parts.append(f"CPU {mode} (TDP estimate)")
            elif kind == "GPU":
                measured = True
                parts.append("GPU NVML")
            elif kind == "RAM":
                forced = getattr(hardware, "_force_ram_power", None)
                parts.append("RAM forced power" if forced is not None else "RAM DIMM heuristic (estimate)")
            else:
                parts.append(kind)
        label = "measured" if measured else "estimated"
        return f"{label}: {', '.join(parts)} (CodeCarbon, offline, {self.country})"

    def details(self) -> dict[str, Any]:
        """Hardware CodeCarbon saw (CPU/GPU model, TDP), for the run record."""
        if self._tracker is None:
            return {}
        info: dict[str, Any] = {}
        for hardware in getattr(self._tracker, "_hardware", []):
            kind = type(hardware).__name__
            if kind == "CPU":
                info["cpu_model"] = getattr(hardware, "_model", None)
                info["cpu_tdp_w"] = getattr(hardware, "_tdp", None)
            elif kind == "GPU":
                info["gpu_model"] = str(getattr(hardware, "_gpu_ids", "") or "nvidia")
        return info

    def close(self) -> None:
        """Stop the tracker's background threads."""
        if self._tracker is not None:
            self._tracker.stop()
            self._tracker = None


def import_dependencies() -> None:
    """Import the measurement libraries the training uses once its measured windows are open
    (CodeCarbon's tracker, torch's FLOP counter), so their one-off import cost (hundreds of
    modules, tens of MiB resident) is not counted in the working-set memory of the run."""
    from codecarbon import OfflineEmissionsTracker  # noqa: F401
    from torch.utils.flop_counter import FlopCounterMode  # noqa: F401

    try:  # torch.save's own lazy import (the resume checkpoint after each epoch)
        import torch.utils.serialization.config  # noqa: F401
    except ImportError:  # pragma: no cover - older torch
        pass


def cuda_memory_reserved_mb(device: "torch.device") -> float | None:
    """``torch.cuda.memory_reserved`` of ``device`` in MiB (the paper's memory measure, read after
    the 2nd epoch's training); None on a device that is not CUDA."""
    if device.type != "cuda":
        return None
    import torch

    return torch.cuda.memory_reserved(device) / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def flops_per_image(model: "torch.nn.Module", sample: "torch.Tensor") -> float:
    """Forward FLOPs for one image (``torch.utils.flop_counter``; a multiply-add counts as 2)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(sample[:1])
    finally:
        model.train(was_training)
    return float(counter.get_total_flops())


#: Below this CPU share a run was contended: its time and estimated energy measured the other
#: processes on the machine too (``pepr train`` warns; the report flags the run ``contended``).
LOW_CPU_SHARE = 0.5


def cpu_share(process_seconds: float, wall_seconds: float, threads: int) -> float:
    """CPU time used / (wall time x threads): ~1 on a quiet machine, much lower when contended."""
    if wall_seconds <= 0 or threads <= 0:
        return float("nan")
    return process_seconds / (wall_seconds * threads)


def contention_warning(share: float | None, threads: int) -> str | None:
    """The warning ``pepr train`` prints at the end of a contended run (None when it was not)."""
    if share is None or not share < LOW_CPU_SHARE:
        return None
    return (f"warning: this run got {share:.0%} of its {threads} thread(s)' CPU time (below {LOW_CPU_SHARE:.0%}): "
            "the machine was shared, so its time and estimated energy also measured the other processes; "
            "rerun it on a quiet machine (or with fewer --threads) before comparing it")


# --------------------------------------------------------------------------------------------
# Time-varying carbon intensity (--carbon-intensity CSV)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntensitySeries:
    """A grid carbon-intensity series: sorted UTC times (epoch seconds) and gCO2/kWh values.

    Value ``i`` holds from ``times[i]`` until ``times[i + 1]``; the last one for one typical
    step (the median spacing) after its time.
    """

    source: str
    times: tuple[float, ...]
    values: tuple[float, ...]
    step_s: float

    def at(self, when: float) -> float:
        """gCO2/kWh at ``when`` (UTC epoch seconds); outside the series by more than one step is an error."""
        import bisect

        first, last = self.times[0], self.times[-1]
        if when < first - self.step_s or when > last + self.step_s:
            raise PeprInputError(
                f"carbon intensity {self.source} covers {_iso(first)} .. {_iso(last)} but the training "
                f"ran at {_iso(when)} (more than one step of {self.step_s:.0f} s outside); extend the series"
            )
        index = bisect.bisect_right(self.times, when) - 1
        return self.values[max(index, 0)]


    def span_problem(self, start: float, end: float, planned: str) -> str | None:
        """One line when the series does not cover ``start`` .. ``end`` (UTC epoch seconds), the
        span a training is planned to take (``planned`` says how it was planned); else None."""
        first, last = self.times[0] - self.step_s, self.times[-1] + self.step_s
        if start >= first and end <= last:
            return None
        return (
            f"carbon intensity {self.source} covers {_iso(self.times[0])} .. {_iso(self.times[-1])} but the training "
            f"may run {_iso(start)} .. {_iso(end)} ({planned}); extend the series to cover it"
        )


#: Largest carbon-intensity CSV read (a year at 5-minute steps is ~4 MB).
MAX_INTENSITY_FILE_BYTES = 64 * 2**20


def _iso(seconds: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat(timespec="seconds")


def read_carbon_intensity(path: "str | Path") -> IntensitySeries:
    """Read and check a carbon-intensity CSV: columns ``timestamp`` (ISO 8601, with a time zone
    or UTC) and ``gco2_per_kwh`` (>= 0), at least two rows, strictly increasing times.

    Raises :class:`PeprInputError` naming the file, row and problem. No pandas needed.
    """
    import csv
    import statistics
    from datetime import datetime, timezone
    from pathlib import Path

    from pepr.plan.safeyaml import file_kind_problem

    path = Path(path)
    kind = file_kind_problem(path, "carbon intensity file")  # a FIFO would block the read
    if kind:
        raise PeprInputError(f"carbon intensity file {path} cannot be read: not found" if kind.endswith("not found") else kind)
    if path.stat().st_size > MAX_INTENSITY_FILE_BYTES:
        raise PeprInputError(f"carbon intensity file {path} is {path.stat().st_size:,} bytes; a series is at most {MAX_INTENSITY_FILE_BYTES:,}")
    try:
        # utf-8-sig: spreadsheet exports start with a byte order mark, which is not part of the header
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in (reader.fieldnames or [])]
            reader.fieldnames = header
            rows = list(reader)
    except UnicodeDecodeError as exc:
        raise PeprInputError(f"carbon intensity file {path} is not UTF-8 text (byte {exc.start}); export it as UTF-8 CSV") from None
    except (OSError, csv.Error) as exc:
        raise PeprInputError(f"carbon intensity file {path} cannot be read as CSV ({type(exc).__name__}); it needs the columns timestamp,gco2_per_kwh") from None
    if not {"timestamp", "gco2_per_kwh"} <= set(header):
        # name only the expected columns that are missing: echoing the first line would print
        # a line of whatever file the flag points at
        missing = [c for c in ("timestamp", "gco2_per_kwh") if c not in header]
        raise PeprInputError(
            f"carbon intensity file {path} has no column {' or '.join(missing)} in its first line; it needs the "
            "columns timestamp,gco2_per_kwh in a header line (ISO 8601 times, gCO2 per kWh)"
        )
    times: list[float] = []
    values: list[float] = []
    for number, row in enumerate(rows, start=2):
        text = (row.get("timestamp") or "").strip()
        try:
            stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise PeprInputError(f"{path} line {number}: timestamp {text[:40]!r} is not ISO 8601 (e.g. 2024-03-01T12:00:00+01:00)") from None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=timezone.utc)  # documented: no zone means UTC
        try:
            value = float(row.get("gco2_per_kwh") or "")
        except ValueError:
            value = float("nan")
        if not (value >= 0.0 and value < float("inf")):
            raise PeprInputError(f"{path} line {number}: gco2_per_kwh {(row.get('gco2_per_kwh') or '')[:40]!r} must be a number >= 0")
        if times and stamp.timestamp() <= times[-1]:
            raise PeprInputError(f"{path} line {number}: timestamp {text[:40]} is not after the previous row; sort the series by time")
        times.append(stamp.timestamp())
        values.append(value)
    if len(times) < 2:
        raise PeprInputError(f"carbon intensity file {path} needs at least two rows (has {len(times)})")
    step = statistics.median(b - a for a, b in zip(times, times[1:]))
    return IntensitySeries(source=f"series: {path}", times=tuple(times), values=tuple(values), step_s=step)


def epoch_co2_kg(energy_kwh: float, started: float, finished: float, series: IntensitySeries) -> tuple[float, float]:
    """CO2 (kg) of an epoch from its energy and the intensity at its wall-clock midpoint; also the intensity."""
    intensity = series.at((started + finished) / 2)
    return energy_kwh * intensity / 1000.0, intensity


# --------------------------------------------------------------------------------------------
# Shared nodes: charge a job its share of the node's CPU and RAM energy
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeShare:
    """The job's share of the node CodeCarbon measures (CPU/RAM are whole-node figures)."""

    cpu: float
    ram: float
    description: str


def node_share(
    environ: "Mapping[str, str]",
    allowed_cores: int | None,
    node_cores: int,
    cgroup_memory_max: str | None,
    node_ram_bytes: int | None,
) -> NodeShare:
    """Pure attribution: CPU share = job cores / node cores, RAM share = job memory / node RAM.

    Job cores: SLURM_CPUS_PER_TASK, else the process's CPU affinity (cgroup cpuset); job
    memory: SLURM_MEM_PER_NODE (MiB), else the cgroup ``memory.max`` text. Unknown -> share 1
    (the whole node is charged, as CodeCarbon does), and the description says so.
    """
    cores = None
    slurm_cpus = environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if slurm_cpus.isdigit() and int(slurm_cpus) > 0:
        cores = int(slurm_cpus)
    elif allowed_cores:
        cores = allowed_cores
    cpu = min(1.0, cores / node_cores) if cores and node_cores > 0 else 1.0
    limit = None
    slurm_mem = environ.get("SLURM_MEM_PER_NODE", "").strip()
    if slurm_mem.isdigit() and int(slurm_mem) > 0:
        limit = int(slurm_mem) * 2**20
    elif cgroup_memory_max and cgroup_memory_max.strip().isdigit():
        limit = int(cgroup_memory_max.strip())
    ram = min(1.0, limit / node_ram_bytes) if limit and node_ram_bytes else 1.0
    parts = []
    if cpu < 1.0:
        parts.append(f"CPU at {cpu:.3g} of the node ({cores} of {node_cores} cores)")
    if ram < 1.0:
        parts.append(f"RAM at {ram:.3g} of the node ({limit / 2**30:.1f} of {node_ram_bytes / 2**30:.1f} GiB)")
    description = "; ".join(parts) if parts else "CPU/RAM charged for the whole node (job uses all of it or its share is unknown)"
    return NodeShare(cpu=cpu, ram=ram, description=description)


def this_node_share() -> NodeShare:
    """:func:`node_share` of this process, read from the environment, affinity, cgroup and /proc."""
    import os

    try:
        allowed = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        allowed = None
    cgroup_max = None
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as handle:
            cgroup_max = handle.read()
    except OSError:
        pass
    try:
        node_ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        node_ram = None
    return node_share(os.environ, allowed, os.cpu_count() or 1, cgroup_max, node_ram)


# --------------------------------------------------------------------------------------------
# Working-set memory of the training (not the process's libraries and data)
# --------------------------------------------------------------------------------------------


def current_rss_mb() -> float:
    """Current resident set size of this process, MiB (/proc; the peak where /proc is missing)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            pages = int(handle.read().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        return peak_rss_mb()


def release_free_memory() -> bool:
    """Return memory the C allocator holds free to the OS (``gc.collect`` then glibc's
    ``malloc_trim(0)``); True when glibc released some.

    The data preparation (resize, normalisation statistics) frees hundreds of MiB in chunks whose
    size follows the data; glibc keeps much of it resident. Taken as part of a baseline, those
    pages are then reused by the training without showing in its RSS, by an amount that depends
    on the data size: trimmed first, every page the training uses is counted. No-op without glibc.
    """
    import ctypes
    import gc

    gc.collect()
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl)
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return bool(trim(0))


def _file_backed_rss_mb() -> float | None:
    """Resident file-backed and shared pages of this process (RssFile + RssShmem), MiB; None if unknown.

    They are library code and mapped files (torch's kernels are faulted in the first time an
    operator runs), not memory the training allocates."""
    found: dict[str, float] = {}
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(("RssFile:", "RssShmem:")):
                    found[line.split(":")[0]] = int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return sum(found.values()) if len(found) == 2 else None


class WorkingSetMeter:
    """Peak memory of the training itself: peak during the training steps minus what was resident
    before the model was built (data, libraries).

    The model's creation and probe pass and every epoch's training steps
    (:meth:`begin_training` .. :meth:`end_training`) are measured; the evaluation passes between
    them are measured apart (``eval_peak_memory_mb``): they run at pepr's own evaluation batch
    (at least 256), which is not the model's training working set.

    CUDA: allocator statistics (peak stats are reset once the data are on the device and around
    each phase). CPU on Linux: the kernel's RSS high-water mark, reset at the baseline and around
    each phase, after the allocator's free memory was returned to the OS
    (:func:`release_free_memory`), less the library code paged in since the baseline
    (file-backed pages: the anonymous memory is what the model, its gradients, optimizer state and
    activations use). Elsewhere RSS sampled by a light background thread every 20 ms.
    """

    def __init__(self, device: "torch.device", interval_s: float = 0.02) -> None:
        import threading

        import torch

        self.device = device
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: Any = None
        self._file_baseline_mb: float | None = None
        self._reserved_peak_mb = 0.0
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            self.baseline_mb = torch.cuda.memory_allocated(device) / 2**20
        else:
            release_free_memory()
            self.baseline_mb = current_rss_mb()
            self._file_baseline_mb = _file_backed_rss_mb()
        self.process_peak_before_mb = peak_rss_mb()
        # Linux can reset the kernel's RSS high-water mark: then the training's peak is exact
        # (a sampler misses the short backward-pass peaks of a run with few batches)
        self._kernel_peak = device.type != "cuda" and _reset_rss_high_water_mark()
        self.peak_mb = self.baseline_mb  # the sampler's peak of the current phase
        self.train_peak_mb = self.baseline_mb
        self.eval_peak_mb = self.baseline_mb
        self._phase = "train"  # model creation and probe count with the training

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_mb = max(self.peak_mb, current_rss_mb())

    def start(self) -> None:
        """Begin sampling (CPU); CUDA needs no thread."""
        import threading

        if self.device.type != "cuda" and not self._kernel_peak and self._thread is None:
            self._thread = threading.Thread(target=self._sample, name="pepr-rss", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the sampler thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _phase_peak_mb(self) -> float:
        """Peak since the last reset (CUDA allocated, else RSS)."""
        import torch

        if self.device.type == "cuda":
            self._reserved_peak_mb = max(self._reserved_peak_mb, torch.cuda.max_memory_reserved(self.device) / 2**20)
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        high_water = _rss_high_water_mark_mb() if self._kernel_peak else None
        return max(self.peak_mb, current_rss_mb(), high_water or 0.0)

    def _close_phase(self) -> None:
        peak = self._phase_peak_mb()
        if self._phase == "train":
            self.train_peak_mb = max(self.train_peak_mb, peak)
        else:
            self.eval_peak_mb = max(self.eval_peak_mb, peak)

    def _reset_peak(self, release: bool) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        if release:
            release_free_memory()
        if self._kernel_peak:
            # the reset lowers ru_maxrss too: keep the whole process's peak so far
            self.process_peak_before_mb = max(self.process_peak_before_mb, peak_rss_mb(), _rss_high_water_mark_mb() or 0.0)
            _reset_rss_high_water_mark()
        self.peak_mb = current_rss_mb()

    def begin_training(self) -> None:
        """The training steps of an epoch start: close the evaluation phase, return the memory
        the allocator holds free (CPU; before the epoch's timer starts) and reset the peak."""
        self._close_phase()
        self._phase = "train"
        self._reset_peak(release=True)

    def end_training(self) -> None:
        """The epoch's training steps are done: record their peak, measure the evaluation apart
        (a /proc reading and write on CPU: cheap inside the epoch's timer)."""
        self._close_phase()
        self._phase = "eval"
        self._reset_peak(release=False)

    def read(self) -> dict[str, float]:
        """``peak_memory_mb`` (training working set), ``eval_peak_memory_mb``,
        ``process_peak_rss_mb`` and, on CUDA, ``peak_memory_reserved_mb``."""
        self._close_phase()
        paged_in = 0.0  # library code faulted in since the baseline (file-backed RSS growth)
        extra: dict[str, float] = {}
        if self.device.type == "cuda":
            extra["peak_memory_reserved_mb"] = self._reserved_peak_mb
        else:
            file_now = _file_backed_rss_mb()
            if self._file_baseline_mb is not None and file_now is not None:
                # file pages only grow here (code is not evicted on a machine with free memory),
                # so their growth by now bounds what they added to either peak
                paged_in = max(file_now - self._file_baseline_mb, 0.0)
        process_peak = max(self.process_peak_before_mb, peak_rss_mb())  # the reset lowers ru_maxrss too
        return {
            "peak_memory_mb": max(self.train_peak_mb - self.baseline_mb - paged_in, 0.0),
            "eval_peak_memory_mb": max(self.eval_peak_mb - self.baseline_mb - paged_in, 0.0),
            "process_peak_rss_mb": process_peak,
            **extra,
        }


def _reset_rss_high_water_mark() -> bool:
    """Reset this process's peak RSS (VmHWM) via /proc/self/clear_refs (Linux >= 4.0); True if done."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return _rss_high_water_mark_mb() is not None
    except OSError:
        return False


def _rss_high_water_mark_mb() -> float | None:
    """VmHWM of this process (peak RSS since start or the last reset), MiB; None if unknown."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def own_gpu_ids(device_type: str, device_index: int | None, environ: "Mapping[str, str]") -> list[int] | None:
    """The GPU(s) a job's energy should count: only the training's own device.

    With CUDA_VISIBLE_DEVICES set (SLURM sets it to the allocation) CodeCarbon already restricts
    itself to those, so None is returned; otherwise the training's device index, so other jobs'
    GPUs on the node are not charged to this one. No GPU: None.
    """
    if device_type != "cuda" or environ.get("CUDA_VISIBLE_DEVICES", "").strip():
        return None
    return [device_index or 0]
