"""Fixtures for the lab drills: one real cluster per module, always torn down."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lab.cluster import Lab
from lab.requirements import skip_reason


def _running(stack: str) -> Iterator[Lab]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    cluster = Lab.from_stack(stack)
    try:
        cluster.up()
        yield cluster
    finally:
        cluster.teardown()


def _healthy(lab: Lab) -> Lab:
    """The shared cluster, with every node back and healthy (an earlier drill may have broken it)."""
    for status in lab.status():
        if status.status != 200:
            lab.kill_node(status.node)
            lab.start_node(status.node)
    lab.wait_healthy(90)
    return lab


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    yield from _running("lab")


@pytest.fixture
def healthy_lab(lab: Lab) -> Lab:
    return _healthy(lab)


@pytest.fixture(scope="module")
def pair() -> Iterator[Lab]:
    """The lab with a pair of LBs and a VIP (stacks/Pulumi.lab-ha.yaml)."""
    yield from _running("lab-ha")


@pytest.fixture
def healthy_pair(pair: Lab) -> Lab:
    """Every node answering and exactly one LB holding the VIP."""
    _healthy(pair)
    assert len(pair.vip_holders()) == 1
    return pair
