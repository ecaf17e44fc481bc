"""Fixtures for the lab drills: one real cluster per module, always torn down."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lab.cluster import Lab
from lab.requirements import skip_reason


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    cluster = Lab.from_stack("lab")
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.teardown()


@pytest.fixture
def healthy_lab(lab: Lab) -> Lab:
    """The shared cluster, with every node back and healthy (an earlier drill may have broken it)."""
    for status in lab.status():
        if status.status != 200:
            lab.kill_node(status.node)
            lab.start_node(status.node)
    lab.wait_healthy(90)
    return lab
