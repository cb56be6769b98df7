"""Fixtures shared across the test tree."""

from __future__ import annotations

import time

import pytest


@pytest.fixture
def frozen_clock(monkeypatch) -> str:
    """time.strftime stopped at one moment, as for runs started in the same second; returns the
    <date>-<time> stamp that default run directories are named with."""
    real, now = time.strftime, time.localtime()
    monkeypatch.setattr(time, "strftime", lambda fmt, t=None: real(fmt, now))
    return real("%Y%m%d-%H%M%S", now)
