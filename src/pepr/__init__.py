"""pepr: which deep-learning model gives the most performance per unit of resource.

The top-level package stays light (pandas/numpy only): ``import pepr`` and ``pepr.score`` never
import torch. Training, evaluation and measurement live in :mod:`pepr.train` and load torch
when used.
"""

from pepr.errors import PeprInputError
from pepr.scoring import score

__all__ = ["score", "PeprInputError", "__version__"]

try:
    from importlib.metadata import version as _version

    __version__ = _version("pepr-bench")
except Exception:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
