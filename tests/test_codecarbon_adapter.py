"""The CodeCarbon adapter (pepr.train.measure.EnergyMeter) against the installed CodeCarbon: one
test per private attribute it still reads (CodeCarbon has no public equivalent), failing with a
message that says what a new release removed."""

from __future__ import annotations

import pytest

from pepr.train.measure import EnergyMeter


@pytest.fixture(scope="module")
def hardware():
    meter = EnergyMeter("DNK")
    meter.start()
    try:
        found = {type(item).__name__: item for item in meter._hardware()}
        yield meter, found
    finally:
        meter.close()


def _version() -> str:
    from importlib.metadata import version

    return version("codecarbon")


def test_tracker_lists_its_hardware_in_private_hardware(hardware):
    meter, found = hardware
    assert hasattr(meter._tracker, "_hardware"), (
        f"codecarbon {_version()} has no OfflineEmissionsTracker._hardware: update EnergyMeter._hardware"
    )
    assert "CPU" in found and "RAM" in found, f"codecarbon {_version()} measures {sorted(found)}"


def test_cpu_mode_is_private_mode(hardware):
    _, found = hardware
    assert isinstance(getattr(found["CPU"], "_mode", None), str), (
        f"codecarbon {_version()}: CPU._mode is gone; EnergyMeter.method() reads it"
    )


def test_cpu_tdp_is_private_tdp(hardware):
    meter, found = hardware
    assert hasattr(found["CPU"], "_tdp"), f"codecarbon {_version()}: CPU._tdp is gone; EnergyMeter.details() reads it"
    assert isinstance(found["CPU"].get_model(), (str, type(None)))
    assert set(meter.details()) >= {"cpu_model", "cpu_tdp_w"}


def test_ram_forced_power_is_private_force_ram_power(hardware):
    _, found = hardware
    assert hasattr(found["RAM"], "_force_ram_power"), (
        f"codecarbon {_version()}: RAM._force_ram_power is gone; EnergyMeter.method() reads it"
    )


def test_gpu_names_come_from_public_fields():
    from dataclasses import fields

    from codecarbon.external.hardware import GPU

    assert "gpu_ids" in {item.name for item in fields(GPU)}, f"codecarbon {_version()}: GPU.gpu_ids is gone"

    class Devices:
        def get_gpu_details(self):
            return [{"name": "NVIDIA H100"}, {"name": "NVIDIA A100"}]

    class FakeGPU:
        devices = Devices()
        gpu_ids = (0,)

    from pepr.train.measure import _gpu_names

    assert _gpu_names(FakeGPU()) == "NVIDIA H100"
