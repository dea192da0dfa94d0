"""Which kind a dataset spec is: the one place that maps a spec string to its
:class:`~pepr.datasets.base.DatasetKind` (the first kind in :data:`KINDS` that claims it)."""

from __future__ import annotations

from pepr.datasets.base import DatasetKind, DatasetSpec
from pepr.datasets.images import ImageKind
from pepr.datasets.medmnist import MedmnistKind
from pepr.datasets.npz import NpzKind
from pepr.datasets.synthetic import SyntheticKind

#: Every kind, in the order they are asked; MedMNIST last, it claims every other spec.
KINDS: tuple[DatasetKind, ...] = (NpzKind(), ImageKind("folder"), ImageKind("csv"), SyntheticKind(), MedmnistKind())
_BY_NAME = {kind.name: kind for kind in KINDS}


def kind_of(spec: str | DatasetSpec) -> DatasetKind:
    """The kind of a parsed spec, or of a spec string (not parsed: a malformed spec of a kind
    is still that kind; its ``parse`` says what is wrong)."""
    if isinstance(spec, DatasetSpec):
        return _BY_NAME[spec.kind]
    text = spec.strip() if isinstance(spec, str) else ""
    return next(kind for kind in KINDS if kind.matches(text))
