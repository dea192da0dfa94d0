"""pepr: which deep-learning model gives the most performance per unit of resource.

The top-level package is light: ``import pepr`` (and so ``pepr --version`` / ``pepr --help``)
imports neither pandas nor torch; ``pepr.score`` loads :mod:`pepr.results.scoring` (pandas/numpy, never
torch) on first use. Training, evaluation and measurement live in :mod:`pepr.train.run` and load
torch when used.
"""

from pepr.errors import PeprInputError

__all__ = ["score", "PeprInputError", "__version__"]

try:
    from importlib.metadata import version as _version

    __version__ = _version("pepr-bench")
except Exception:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"


def __getattr__(name: str):
    # PEP 562: `pepr.score` / `from pepr import score` import pandas only when asked for.
    if name == "score":
        from pepr.results.scoring import score

        return score
    raise AttributeError(f"module 'pepr' has no attribute {name!r}")
