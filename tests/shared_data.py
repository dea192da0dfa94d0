"""Where the tests find the data only the reference machine has (real PneumoniaMNIST, the paper's
model table), and the one skip reason for its absence.

The folder is ``shared/`` beside the checkout (CI: ``../shared``) or beside any folder above it (a
git worktree in ``wt/NAME`` finds ``../../shared``); ``PEPR_SHARED_DIR`` names it explicitly. Users'
clones have no such folder: the tests that need it skip, saying so.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Environment variable naming the shared data folder (the one holding ``data/medmnist/``).
SHARED_VARIABLE = "PEPR_SHARED_DIR"


def shared_dir() -> Path:
    """The shared data folder: ``$PEPR_SHARED_DIR``, else the first ``shared/`` holding ``data/`` beside
    the checkout or a folder above it, else ``../shared`` (absent: the tests that need it skip)."""
    named = os.environ.get(SHARED_VARIABLE)
    if named:
        return Path(named)
    for folder in REPO.parents:
        if (folder / "shared" / "data").is_dir():
            return folder / "shared"
    return REPO.parent / "shared"


SHARED = shared_dir()
#: Real PneumoniaMNIST chest X-rays at 28 px (the reference machine's subset: 3882/524/624 images).
PNEUMONIA = SHARED / "data" / "medmnist" / "pneumoniamnist.npz"
#: The 131 timm architectures of the PePR study with their published parameter counts.
PAPER_MODELS = SHARED / "data" / "paper" / "model_names.csv"


def absent(path: Path) -> str:
    """The skip reason for a missing shared file: what is missing and how to provide it."""
    return (
        f"{path.name} is absent ({path}): the reference machine's shared test data; put that `shared/` "
        f"folder beside the checkout or set {SHARED_VARIABLE} to it"
    )
