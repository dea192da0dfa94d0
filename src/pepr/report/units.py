"""Units of ``pepr report``'s columns: ``--resource COL:UNIT`` and ``--performance COL:%``.

PePR itself is unit-free (a resource is min-max normalised within its group), but the sweep's
totals are not: a resource with a unit is converted into the footprint's kWh, kg CO2 and
seconds (shown as device-hours), whatever its column is called. A column whose name carries a
unit suffix that contradicts the flag (``co2_kg:g``) is refused in one line, as is a unit pepr
does not know.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from pepr.errors import PeprInputError

__all__ = ["UNITS", "Unit", "split_unit", "name_unit", "to_footprint_columns"]


@dataclass(frozen=True)
class Unit:
    """A unit: its quantity, the footprint column it totals into and the factor to that column's unit."""

    quantity: str
    column: str
    factor: float


_ENERGY, _CO2, _TIME, _MEMORY = "energy", "CO2", "time", "memory"
#: Units by the spelling the flag and the column suffixes use (case-insensitive).
UNITS: dict[str, Unit] = {
    "kwh": Unit(_ENERGY, "energy_kwh", 1.0),
    "wh": Unit(_ENERGY, "energy_kwh", 1e-3),
    "mwh": Unit(_ENERGY, "energy_kwh", 1e3),
    "j": Unit(_ENERGY, "energy_kwh", 1 / 3.6e6),
    "kj": Unit(_ENERGY, "energy_kwh", 1 / 3.6e3),
    "mj": Unit(_ENERGY, "energy_kwh", 1 / 3.6),
    "kg": Unit(_CO2, "co2_kg", 1.0),
    "g": Unit(_CO2, "co2_kg", 1e-3),
    "mg": Unit(_CO2, "co2_kg", 1e-6),
    "t": Unit(_CO2, "co2_kg", 1e3),
    "s": Unit(_TIME, "train_time_s", 1.0),
    "ms": Unit(_TIME, "train_time_s", 1e-3),
    "min": Unit(_TIME, "train_time_s", 60.0),
    "h": Unit(_TIME, "train_time_s", 3600.0),
    "mb": Unit(_MEMORY, "", 1.0),
    "mib": Unit(_MEMORY, "", 1.0),
    "gb": Unit(_MEMORY, "", 1.0),
    "gib": Unit(_MEMORY, "", 1.0),
}


def split_unit(value: str, flag: str) -> tuple[str, str | None]:
    """``COL[:UNIT]`` -> (column, unit or None); the unit lower-cased and checked."""
    column, sep, unit = value.rpartition(":") if ":" in value else (value, "", "")
    if not sep:
        return value, None
    unit = unit.strip().lower()
    known = unit in UNITS or (flag == "--performance" and unit == "%")
    if not column or not known:
        choices = "%" if flag == "--performance" else ", ".join(UNITS)
        raise PeprInputError(f"{flag} {value!r}: write COL:UNIT with UNIT one of {choices}")
    return column, unit


def name_unit(column: str) -> str | None:
    """The unit a column's name ends with (``co2_kg`` -> ``kg``, ``train_time_s`` -> ``s``), if any."""
    suffix = column.rsplit("_", 1)[-1].lower() if "_" in column else ""
    return suffix if suffix in UNITS else None


def check_unit(column: str, unit: str) -> None:
    """Refuse a flag's unit that contradicts the unit in the column's name."""
    named = name_unit(column)
    if named is not None and named != unit:
        raise PeprInputError(
            f"--resource {column}:{unit}: the column's name says {named}, the flag says {unit}; "
            f"rename the column (--rename {column}=NEW) or give its real unit"
        )


def to_footprint_columns(results: pd.DataFrame, units: dict[str, str]) -> pd.DataFrame:
    """``results`` plus, for every resource with a unit of energy, CO2 or time whose footprint
    column (``energy_kwh``, ``co2_kg``, ``train_time_s``) the table lacks, that column in its
    unit: the totals are then right whatever the resource's column is called."""
    out = results
    for column, unit in units.items():
        target = UNITS[unit].column
        if target and target != column and target not in out.columns:
            out = out.assign(**{target: pd.to_numeric(out[column], errors="coerce") * UNITS[unit].factor})
    return out
