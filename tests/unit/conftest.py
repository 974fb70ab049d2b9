"""Fixtures the unit tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import Receiver


@pytest.fixture
def partner() -> Iterator[Receiver]:
    """A real local HTTP partner that records what it receives (and fails on demand)."""
    server = Receiver().start()
    yield server
    server.stop()
