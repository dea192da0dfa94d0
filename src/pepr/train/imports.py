"""The training process's imports: what training needs, once, before the measured windows.

A ``pepr train`` process pays every import at start-up (per cell, unless a warm server,
:mod:`pepr.train.warm`, paid it for the allocation). ``import timm`` loads torchvision's whole
model zoo for an optional helper pepr does not use: :func:`import_timm` keeps it out.
``torch._dynamo`` (with sympy; the largest part of timm's import in isolation) cannot be kept
out of a training with torch's optimizers: ``Optimizer.step`` imports it on every call (for a
graph break), so :func:`pepr.train.measure.import_dependencies` imports it before the memory
baseline. tests/test_train_imports.py holds the budget in a fresh process.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

#: torchvision modules that ``import timm`` loads on its own. timm's layers need only
#: ``torchvision.ops.misc.FrozenBatchNorm2d``; its optional FX feature extraction imports
#: ``torchvision.models.feature_extraction``. Either one runs ``torchvision/__init__``, which imports
#: every torchvision model and op (and, through ``torchvision.ops.roi_align``, ``torch._dynamo``,
#: which the training imports anyway for its optimizer).
_TIMM_TORCHVISION_PACKAGES = ("torchvision", "torchvision.ops")


def import_timm() -> Any:
    """Import timm without torchvision's model zoo; return the module.

    pepr never uses timm's FX feature extraction (``features_only`` with ``feature_cls="fx"``),
    the one timm feature that needs ``torchvision.models``. While timm is imported,
    ``torchvision`` and ``torchvision.ops`` stand in sys.modules as their real package folders
    without their ``__init__`` (so ``torchvision.ops.misc``, whose ``FrozenBatchNorm2d`` timm's
    layers import, and ``torchvision.utils`` are the real files) and ``torchvision.models`` is
    refused, which timm handles itself (``timm.layers._fx.has_fx_feature_extraction = False``).
    The stand-ins are removed afterwards: a later ``import torchvision`` in the same process is
    the full, normal import.

    Falls back to a plain ``import timm`` when torchvision is already imported, is absent, or
    a timm release needs more of torchvision at import (tests/test_train_imports.py notices).
    """
    import importlib
    import importlib.machinery
    import importlib.util
    import types

    if "timm" in sys.modules or "torchvision" in sys.modules:
        return importlib.import_module("timm")
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return importlib.import_module("timm")
    import torch  # noqa: F401 - first, as torchvision's own __init__ would

    before = set(sys.modules)
    root = next(iter(spec.submodule_search_locations))
    for name in _TIMM_TORCHVISION_PACKAGES:
        folder = str(Path(root, *name.split(".")[1:]))
        package = types.ModuleType(name)
        package.__path__ = [folder]
        package.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        package.__spec__.submodule_search_locations = [folder]
        sys.modules[name] = package
    sys.modules["torchvision.models"] = None  # type: ignore[assignment] - "import halted": an ImportError timm catches
    try:
        timm = importlib.import_module("timm")
    except ImportError:
        for name in set(sys.modules) - before:  # a half-imported timm: drop it and import it normally
            if name.startswith("timm"):
                del sys.modules[name]
        _drop_torchvision_stand_ins()
        return importlib.import_module("timm")
    _drop_torchvision_stand_ins()
    return timm


def _drop_torchvision_stand_ins() -> None:
    for name in [name for name in sys.modules if name == "torchvision" or name.startswith("torchvision.")]:
        del sys.modules[name]
