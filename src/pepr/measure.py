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

    def __init__(self, country: str, verbose: bool = False) -> None:
        self.country = country
        self.verbose = verbose
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


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def peak_memory(device: "torch.device") -> dict[str, float]:
    """Peak memory of the run: CUDA max allocated/reserved on GPU, peak RSS on CPU (MiB).

    ``peak_memory_mb`` is the headline number (allocated on CUDA, RSS on CPU); the others are
    kept for reference.
    """
    import torch

    rss = peak_rss_mb()
    if device.type == "cuda":
        allocated = torch.cuda.max_memory_allocated(device) / 2**20
        reserved = torch.cuda.max_memory_reserved(device) / 2**20
        return {"peak_memory_mb": allocated, "peak_memory_reserved_mb": reserved, "peak_rss_mb": rss}
    return {"peak_memory_mb": rss, "peak_rss_mb": rss}


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


def cpu_share(process_seconds: float, wall_seconds: float, threads: int) -> float:
    """CPU time used / (wall time x threads): ~1 on a quiet machine, much lower when contended."""
    if wall_seconds <= 0 or threads <= 0:
        return float("nan")
    return process_seconds / (wall_seconds * threads)
