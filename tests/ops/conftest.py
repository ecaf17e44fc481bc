"""tests/ops: each test starts with an event loop set, as the Pulumi mocks (tests/unit/harness.py)
expect one in the main thread and an earlier `asyncio.run` (the watchdog's) leaves none."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def event_loop_set() -> Iterator[None]:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    loop.close()
    # and leave one set for whatever runs next (tests/unit's mocks, in a whole-suite run)
    asyncio.set_event_loop(asyncio.new_event_loop())
