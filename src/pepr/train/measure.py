"""Resource measurement for ``pepr train``: energy/CO2 (CodeCarbon, offline only), memory, FLOPs.

Energy comes from CodeCarbon's ``OfflineEmissionsTracker`` (never the online tracker, which
makes network look-ups). It is used through its task API, one task per epoch, so the energy of
each epoch is known and the training total is their sum (the same span as the training time).
How CodeCarbon obtained the numbers is recorded as ``energy_method``: RAPL / NVML are
measurements, ``cpu_load`` / ``constant`` modes and RAM are estimates from TDP tables and
heuristics. torch and codecarbon are imported inside functions.

:class:`EnergyMeter` is the one place that touches CodeCarbon (its public tracker and task API;
the private attributes it still reads, where CodeCarbon has no public equivalent, are held
against the installed release by tests/test_codecarbon_adapter.py).
"""

from __future__ import annotations

import ctypes
import logging
import resource
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

# The CO2 of an epoch or run from its energy is the carbon-intensity module's, which aggregation
# uses too; training reaches it through this module.
from pepr.results.carbon import IntensitySeries, epoch_co2_kg, epochs_co2_kg, read_carbon_intensity  # noqa: F401

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: CodeCarbon CPU modes that read hardware energy counters (everything else is an estimate).
MEASURED_CPU_MODES = frozenset({"intel_rapl", "intel_power_gadget", "apple_powermetrics", "windows_emi"})


@dataclass
class EnergySample:
    """Energy and emissions of one measured span (kWh, kg CO2eq, seconds)."""

    energy_kwh: float = 0.0
    cpu_energy_kwh: float = 0.0
    gpu_energy_kwh: float = 0.0
    ram_energy_kwh: float = 0.0
    co2_kg: float = 0.0
    duration_s: float = 0.0

    def __add__(self, other: EnergySample) -> EnergySample:
        return EnergySample(**{name: getattr(self, name) + getattr(other, name) for name in self.__dataclass_fields__})


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
        for hardware in self._hardware():
            kind = type(hardware).__name__
            if kind == "CPU":
                mode = getattr(hardware, "_mode", "unknown")  # private: how CodeCarbon reads the CPU
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
                forced = getattr(hardware, "_force_ram_power", None)  # private: a configured RAM power
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
        for hardware in self._hardware():
            kind = type(hardware).__name__
            if kind == "CPU":
                info["cpu_model"] = hardware.get_model()
                info["cpu_tdp_w"] = getattr(hardware, "_tdp", None)  # private: tests/test_codecarbon_adapter.py
            elif kind == "GPU":
                info["gpu_model"] = _gpu_names(hardware) or "nvidia"
        return info

    def _hardware(self) -> list[Any]:
        """The hardware objects CodeCarbon measures (its private ``_hardware``: CodeCarbon has no
        public list of them; tests/test_codecarbon_adapter.py fails clearly when a release drops it)."""
        return list(getattr(self._tracker, "_hardware", None) or [])

    def close(self) -> None:
        """Stop the tracker's background threads."""
        if self._tracker is not None:
            self._tracker.stop()
            self._tracker = None


def _gpu_names(hardware: Any) -> str:
    """Names of the GPUs a CodeCarbon ``GPU`` object measures (its public ``gpu_ids`` and
    ``devices.get_gpu_details()``); empty when unknown."""
    try:
        details = hardware.devices.get_gpu_details()
    except Exception:  # noqa: BLE001 - NVML errors must not lose a finished run's record
        return ""
    wanted = hardware.gpu_ids
    names = [str(item.get("name", "")) for index, item in enumerate(details) if not wanted or index in wanted]
    return ", ".join(sorted(set(filter(None, names))))


def import_dependencies() -> None:
    """Import the libraries the training uses once its measured windows are open (CodeCarbon's
    tracker, torch's FLOP counter, ``torch._dynamo``), so their one-off import cost (hundreds of
    modules, tens of MiB resident) is not counted in the working-set memory of the run."""
    # torch.optim.Optimizer.step imports it at every call (a compiler graph break), and the FLOP
    # counter's dispatch mode at its first: without it here the first training step would pay
    # ~1 CPU s and ~60 MiB inside the measured windows
    import torch._dynamo  # noqa: F401
    from codecarbon import OfflineEmissionsTracker  # noqa: F401
    from torch.utils.flop_counter import FlopCounterMode  # noqa: F401

    try:  # torch.save's own lazy import (the resume checkpoint after each epoch)
        import torch.utils.serialization.config  # noqa: F401
    except ImportError:  # pragma: no cover - older torch
        pass


def cuda_memory_reserved_mb(device: torch.device) -> float | None:
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


def flops_per_image(model: torch.nn.Module, sample: torch.Tensor) -> float:
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
    return (
        f"warning: this run got {share:.0%} of its {threads} thread(s)' CPU time (below {LOW_CPU_SHARE:.0%}): "
        "the machine was shared, so its time and estimated energy also measured the other processes; "
        "rerun it on a quiet machine (or with fewer --threads) before comparing it"
    )


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
    environ: Mapping[str, str],
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
    description = (
        "; ".join(parts) if parts else "CPU/RAM charged for the whole node (job uses all of it or its share is unknown)"
    )
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


#: glibc's ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -3, -4, -8
#: Blocks from this size up get their own mapping: the ceiling glibc's dynamic threshold rises to
#: on 64-bit (so a training's tensors stay in the heap, where glibc would soon put them anyway),
#: fixed from the start.
MMAP_THRESHOLD_BYTES = 32 * 2**20
#: Free memory at the top of the heap is kept up to this size: pepr returns it itself, at the
#: baseline and before each epoch (:func:`release_free_memory`).
TRIM_THRESHOLD_BYTES = 2**30
#: Mappings allowed at once (glibc's default, set so ``MALLOC_MMAP_MAX_=0`` cannot change it).
MMAP_MAX = 65536
#: Heaps (arenas) the threads share: one.
ARENA_MAX = 1


def _glibc_function(name: str) -> Any:
    """glibc's C function ``name`` (a ctypes function), or None off glibc or where this glibc
    lacks it (``mallinfo2`` came with 2.33)."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
        return getattr(libc, name)
    except (OSError, AttributeError):
        return None


def pin_allocator() -> str | None:
    """Fix glibc malloc's behaviour for this process so its memory is measured the same way every
    time; None when done, else why not (the allocator is then left as it is).

    By default glibc raises its mmap threshold each time a mapped block is freed, gives each new
    thread an arena (heap) of its own, and returns the heap's top when a free leaves enough of
    it. Where a training's tensors then live (mapped, or in which heap) and which free pages stay
    resident depend on the data preparation's frees and on the order threads (torch's,
    CodeCarbon's) allocate, which varies between runs of the same cell. Pinned: one fixed
    threshold, one arena, no automatic trimming (pepr trims at its baseline and before each
    epoch), set before anything large is allocated, so every run of a cell allocates alike. The
    working set itself is read as the heap's bytes in use (:class:`WorkingSetMeter`), which
    fragmentation does not move; the pinning keeps the process's RSS (``process_peak_rss_mb``) and
    the RSS fallback off glibc 2.33 as steady as glibc allows (the same cell's RSS working set
    read within ~2-4% on a quiet machine, against 22% unpinned, though 15-22% beside a CPU hog).
    Every parameter is set explicitly, so ``MALLOC_*`` environment variables or
    ``GLIBC_TUNABLES`` cannot change the measurement. Called before the training path's imports,
    in a cold ``pepr train`` and in the warm server alike (a forked child inherits it). A lower
    threshold (128 KiB: every tensor mapped on its own) trains ~1.6x slower, each tensor's pages
    faulted in anew at every step.
    Idempotent; process-wide (a Python caller of :func:`pepr.train.run.run_training` keeps it).
    """
    mallopt = _glibc_function("mallopt")
    if mallopt is None:
        return f"not glibc ({sys.platform}): the C allocator's thresholds are left as they are"
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = {
        "M_MMAP_THRESHOLD": (_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
        "M_TRIM_THRESHOLD": (_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
        "M_MMAP_MAX": (_M_MMAP_MAX, MMAP_MAX),
        "M_ARENA_MAX": (_M_ARENA_MAX, ARENA_MAX),
    }
    refused = [name for name, (parameter, value) in settings.items() if mallopt(parameter, value) != 1]
    return f"glibc refused mallopt({', '.join(refused)})" if refused else None


def release_free_memory() -> bool:
    """Return memory the C allocator holds free to the OS (``gc.collect`` then glibc's
    ``malloc_trim(0)``); True when glibc released some.

    The data preparation (resize, normalisation statistics) frees hundreds of MiB in chunks whose
    size follows the data; glibc keeps much of it resident. Taken as part of a baseline, those
    pages are then reused by the training without showing in its RSS, by an amount that depends
    on the data size: trimmed first, every page the training uses is counted. No-op without glibc.
    """
    import gc

    gc.collect()
    trim = _glibc_function("malloc_trim")
    if trim is None:  # not glibc (macOS, musl)
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


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (malloc.h, glibc >= 2.33): every field a ``size_t``."""

    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def heap_reader() -> Callable[[], float] | None:
    """A function returning the bytes the C allocator has handed out and not yet freed, in MiB
    (glibc's ``mallinfo2``: in-use chunks of every heap plus the separately mapped blocks); None
    without glibc 2.33 or later.

    This is what the training's tensors, autograd graph and buffers occupy, whatever the heap's
    layout: the same cell reads the same here, while its resident memory also carries the free
    pages fragmentation leaves between live blocks, which vary from run to run with the order of
    frees and threads (more on a busy machine)."""
    mallinfo2 = _glibc_function("mallinfo2")
    if mallinfo2 is None:
        return None
    mallinfo2.argtypes = []
    mallinfo2.restype = _MallInfo2

    def in_use_mb() -> float:
        info = mallinfo2()
        return (info.uordblks + info.hblkhd) / 2**20

    return in_use_mb


#: The memory sampler waits at least this many times as long as its last reading took.
SAMPLER_DUTY_FACTOR = 50

#: How the working set was measured, per method (``memory_method`` in the run record).
MEMORY_METHODS = {
    "cuda": "CUDA allocated (torch.cuda.max_memory_allocated)",
    "heap": "C heap in use (glibc mallinfo2, sampled every 20 ms and at each phase's end)",
    "rss_peak": "RSS high-water mark less library pages (the C heap's in-use bytes not readable here)",
    "rss_sampled": "RSS sampled every 20 ms (no resettable high-water mark here)",
}


class WorkingSetMeter:
    """Peak memory of the training itself: peak during the training steps minus what was in use
    before the model was built (data, libraries).

    The model's creation and probe pass and every epoch's training steps
    (:meth:`begin_training` .. :meth:`end_training`) are measured; the evaluation passes between
    them are measured apart (``eval_peak_memory_mb``): they run at pepr's own evaluation batch
    (at least 256), which is not the model's training working set.

    How (``method``, recorded as ``memory_method``):

    - CUDA: allocator statistics (peak stats are reset once the data are on the device and around
      each phase): the bytes the tensors occupy.
    - CPU with glibc (``heap``): the same quantity on the host, the C allocator's bytes in use
      (:func:`heap_reader`), read by a light thread every 20 ms (less often when a reading
      takes over 2% of that) and at the end of each phase,
      minus those at the baseline. Not the resident set: that also holds the free pages the
      heap's fragmentation leaves behind, which for one cell varied by 15% between runs (and
      more on a busy machine) while the bytes in use stayed within 1%.
    - Elsewhere on Linux (``rss_peak``): the kernel's RSS high-water mark, reset at the baseline
      and around each phase, after the allocator's free memory was returned to the OS
      (:func:`release_free_memory`), less the library code paged in since the baseline.
    - Otherwise (``rss_sampled``): RSS sampled by the thread every 20 ms.
    """

    def __init__(self, device: torch.device, interval_s: float | None = None) -> None:
        import threading

        import torch

        self.device = device
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the sampler and the phase changes update one peak
        self._thread: Any = None
        self._file_baseline_mb: float | None = None
        self._reserved_peak_mb = 0.0
        self._heap = None if device.type == "cuda" else heap_reader()
        self._kernel_peak = False
        if device.type == "cuda":
            self.method = "cuda"
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            self.baseline_mb = torch.cuda.memory_allocated(device) / 2**20
        else:
            release_free_memory()
            if self._heap is not None:
                self.method = "heap"
                self.baseline_mb = self._heap()
            else:
                self.baseline_mb = current_rss_mb()
                self._file_baseline_mb = _file_backed_rss_mb()
                # Linux can reset the kernel's RSS high-water mark: then the training's peak is
                # exact (a sampler misses the short backward-pass peaks of a run with few batches)
                self._kernel_peak = _reset_rss_high_water_mark()
                self.method = "rss_peak" if self._kernel_peak else "rss_sampled"
        self.interval_s = interval_s if interval_s is not None else 0.02
        self.process_peak_before_mb = peak_rss_mb()
        self.peak_mb = self.baseline_mb  # the sampler's peak of the current phase
        self.train_peak_mb = self.baseline_mb
        self.eval_peak_mb = self.baseline_mb
        self._phase = "train"  # model creation and probe count with the training

    @property
    def description(self) -> str:
        """How the working set is measured, in words (``memory_method``)."""
        return MEMORY_METHODS[self.method]

    def _now_mb(self) -> float:
        return self._heap() if self._heap is not None else current_rss_mb()

    def _sample(self) -> None:
        import time

        wait = self.interval_s
        while not self._stop.wait(wait):
            started = time.perf_counter()
            value = self._now_mb()
            # mallinfo2 walks the heap's free chunks under its lock (~0.3 ms for a resnet18 on
            # CPU): never more than 2% of the time, so the training it measures is not slowed
            wait = max(self.interval_s, SAMPLER_DUTY_FACTOR * (time.perf_counter() - started))
            with self._lock:
                self.peak_mb = max(self.peak_mb, value)

    def start(self) -> None:
        """Begin sampling (CPU, unless the kernel's high-water mark is read); CUDA needs no thread."""
        import threading

        if self.method in ("heap", "rss_sampled") and self._thread is None:
            self._thread = threading.Thread(target=self._sample, name="pepr-memory", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the sampler thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _phase_peak_mb(self) -> float:
        """Peak since the last reset (CUDA allocated, else heap in use or RSS)."""
        import torch

        if self.method == "cuda":
            self._reserved_peak_mb = max(self._reserved_peak_mb, torch.cuda.max_memory_reserved(self.device) / 2**20)
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        high_water = _rss_high_water_mark_mb() if self._kernel_peak else None
        now = self._now_mb()
        with self._lock:
            return max(self.peak_mb, now, high_water or 0.0)

    def _close_phase(self) -> None:
        peak = self._phase_peak_mb()
        if self._phase == "train":
            self.train_peak_mb = max(self.train_peak_mb, peak)
        else:
            self.eval_peak_mb = max(self.eval_peak_mb, peak)

    def _reset_peak(self, release: bool) -> None:
        import torch

        if self.method == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        if release:
            release_free_memory()
        if self._kernel_peak:
            # the reset lowers ru_maxrss too: keep the whole process's peak so far
            self.process_peak_before_mb = max(
                self.process_peak_before_mb, peak_rss_mb(), _rss_high_water_mark_mb() or 0.0
            )
            _reset_rss_high_water_mark()
        now = self._now_mb()
        with self._lock:
            self.peak_mb = now

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
        if self.method == "cuda":
            extra["peak_memory_reserved_mb"] = self._reserved_peak_mb
        elif self.method != "heap":
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


def own_gpu_ids(device_type: str, device_index: int | None, environ: Mapping[str, str]) -> list[int] | None:
    """The GPU(s) a job's energy should count: only the training's own device.

    With CUDA_VISIBLE_DEVICES set (SLURM sets it to the allocation) CodeCarbon already restricts
    itself to those, so None is returned; otherwise the training's device index, so other jobs'
    GPUs on the node are not charged to this one. No GPU: None.
    """
    if device_type != "cuda" or environ.get("CUDA_VISIBLE_DEVICES", "").strip():
        return None
    return [device_index or 0]
