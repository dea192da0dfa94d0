"""Carbon intensity: CO2 from measured energy, for training and aggregation alike.

A run's CO2 is its energy times a grid carbon intensity: a country's average (CodeCarbon's
offline ``global_energy_mix.json``, read as a data file without importing CodeCarbon) or a
time-varying series from a CSV (``--carbon-intensity`` / ``carbon_intensity:``). Training
(:mod:`pepr.train.measure`) and aggregation (:mod:`pepr.results.aggregate`, which recomputes CO2
when the country or series is corrected) both use this module, so aggregation never imports the
training-side meter. Stdlib only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pepr.errors import PeprInputError

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path


def known_countries() -> dict[str, str]:
    """ISO 3166-1 alpha-3 codes CodeCarbon has an energy mix for -> country name (offline data)."""
    return {code: entry.get("country_name", code) for code, entry in _energy_mix().items() if isinstance(entry, dict)}


def country_intensity_g_per_kwh(code: str) -> float:
    """CodeCarbon's average grid carbon intensity of a country (gCO2eq/kWh), the value its
    offline tracker multiplies energy with (``global_energy_mix.json``'s ``carbon_intensity``).

    Raises PeprInputError for a code without data.
    """
    entry = _energy_mix().get(code)
    if not isinstance(entry, dict) or entry.get("carbon_intensity") is None:
        check_country(code)
        raise PeprInputError(f"CodeCarbon has no carbon intensity for country {code!r}")
    return float(entry["carbon_intensity"])


_ENERGY_MIX: dict[str, Any] = {}


def _energy_mix() -> dict[str, Any]:
    """CodeCarbon's ``global_energy_mix.json``, located without importing CodeCarbon (its import
    costs hundreds of modules, which aggregation and planning must not pay); read once."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("codecarbon")
    if spec is None or not spec.submodule_search_locations:
        raise PeprInputError("codecarbon is not installed: the country carbon intensities come from its data")
    path = str(Path(list(spec.submodule_search_locations)[0]) / "data" / "private_infra" / "global_energy_mix.json")
    if path not in _ENERGY_MIX:
        with open(path, encoding="utf-8") as handle:
            _ENERGY_MIX[path] = json.load(handle)
    return _ENERGY_MIX[path]


def epochs_co2_kg(
    energies_kwh: list[float], midpoints: list[float | None], country: str, series: IntensitySeries | None
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


def read_carbon_intensity(path: str | Path) -> IntensitySeries:
    """Read and check a carbon-intensity CSV: columns ``timestamp`` (ISO 8601, with a time zone
    or UTC) and ``gco2_per_kwh`` (>= 0), at least two rows, strictly increasing times.

    Raises :class:`PeprInputError` naming the file, row and problem. No pandas needed.
    """
    import csv
    import statistics
    from datetime import datetime, timezone
    from pathlib import Path

    from pepr.files import file_kind_problem

    path = Path(path)
    kind = file_kind_problem(path, "carbon intensity file")  # a FIFO would block the read
    if kind:
        raise PeprInputError(
            f"carbon intensity file {path} cannot be read: not found" if kind.endswith("not found") else kind
        )
    if path.stat().st_size > MAX_INTENSITY_FILE_BYTES:
        raise PeprInputError(
            f"carbon intensity file {path} is {path.stat().st_size:,} bytes; a series is at most {MAX_INTENSITY_FILE_BYTES:,}"
        )
    try:
        # utf-8-sig: spreadsheet exports start with a byte order mark, which is not part of the header
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [name.strip() for name in (reader.fieldnames or [])]
            reader.fieldnames = header
            rows = list(reader)
    except UnicodeDecodeError as exc:
        raise PeprInputError(
            f"carbon intensity file {path} is not UTF-8 text (byte {exc.start}); export it as UTF-8 CSV"
        ) from None
    except (OSError, csv.Error) as exc:
        raise PeprInputError(
            f"carbon intensity file {path} cannot be read as CSV ({type(exc).__name__}); it needs the columns timestamp,gco2_per_kwh"
        ) from None
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
            raise PeprInputError(
                f"{path} line {number}: timestamp {text[:40]!r} is not ISO 8601 (e.g. 2024-03-01T12:00:00+01:00)"
            ) from None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=timezone.utc)  # documented: no zone means UTC
        try:
            value = float(row.get("gco2_per_kwh") or "")
        except ValueError:
            value = float("nan")
        if not (value >= 0.0 and value < float("inf")):
            raise PeprInputError(
                f"{path} line {number}: gco2_per_kwh {(row.get('gco2_per_kwh') or '')[:40]!r} must be a number >= 0"
            )
        if times and stamp.timestamp() <= times[-1]:
            raise PeprInputError(
                f"{path} line {number}: timestamp {text[:40]} is not after the previous row; sort the series by time"
            )
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
