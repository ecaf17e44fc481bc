"""Fixtures for the unit tests; the harness they use is tests/unit/harness.py."""

from __future__ import annotations

import pytest

from tests.unit.harness import STACKS, Evaluation, evaluate


@pytest.fixture(scope="module", params=STACKS)
def evaluation(request: pytest.FixtureRequest) -> Evaluation:
    """One evaluation per stack, shared by the read-only checks of a test module."""
    return evaluate(request.param)
