"""MedMNIST's metadata module (``medmnist/info.py``) loaded without importing torch, and its
default data folder. Shared by :mod:`pepr.datasets.core` and :mod:`pepr.datasets.images` (which must not import
each other both ways).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from types import ModuleType

from pepr.errors import PeprInputError


@functools.lru_cache(maxsize=1)
def medmnist_info_module() -> ModuleType:
    """``medmnist/info.py`` loaded on its own.

    ``import medmnist`` imports torch (~5 s); its ``info`` module needs only the standard
    library, so it is loaded straight from the installed package's folder to keep spec
    validation instant.
    """
    package = importlib.util.find_spec("medmnist")
    if package is None or not package.submodule_search_locations:
        raise PeprInputError("the 'medmnist' package is not installed; install pepr-bench's dependencies")
    info_path = Path(next(iter(package.submodule_search_locations))) / "info.py"
    module_spec = importlib.util.spec_from_file_location("_pepr_medmnist_info", info_path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def default_data_dir() -> Path:
    """Where MedMNIST files are looked for when no ``--data-dir`` is given (medmnist's default root)."""
    return Path(medmnist_info_module().DEFAULT_ROOT)
