"""The error and warning types raised while reading and validating data.

A `DataError` message always names the file, the row (1-based line number in the
file, header included) or column, what was expected there, and how to fix it.
"""

from __future__ import annotations

import warnings


class DataError(ValueError):
    """Input data that cannot be used: a missing file or column, an unparsable value, an unknown id."""


class DataWarning(UserWarning):
    """Data that was repaired on the way in: merged duplicates, dropped rows; the message gives counts."""


def warn(message: str) -> None:
    """Emits `message` as a `DataWarning` attributed to the caller of the data API."""
    warnings.warn(message, DataWarning, stacklevel=3)
