"""Reading CSV files whose fields may be long: the csv module refuses any field over 131,072
characters by default, and a review or a text cell can pass that."""

from __future__ import annotations

import contextlib
import csv

# The largest limit a C long holds on every platform (32 bits on Windows).
LIMIT = 2**31 - 1


@contextlib.contextmanager
def long_fields():
    """csv.field_size_limit(LIMIT) for the block only: the limit is the csv module's global, and
    other readers in the process keep theirs."""
    before = csv.field_size_limit(LIMIT)
    try:
        yield
    finally:
        csv.field_size_limit(before)
