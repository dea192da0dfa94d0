"""Exceptions shared across pepr.

Every error caused by the user's input (a config, a data file, a results table, a CLI flag)
is a :class:`PeprInputError`; the CLI turns it into a one-paragraph message and exit code 2.
"""


class PeprInputError(ValueError):
    """Bad input from the user: the message names what is wrong and how to fix it."""
