"""The vm stack for tests/vm (`vmsite.site.Site`, the code `make vm` runs): tests that need it
take the `vm_site` fixture. One stack per test file, shared by its tests in file order and torn
down after its last test: test_vm_stack.py checks the stack as built, replaces two nodes and ends
with `down`; test_drill.py starts from a fresh stack, because its drills assume the layout of
stacks/Pulumi.vm.yaml (a host with a DB and a web node, the LB alone on its host, one spare) and
leave hosts failed. The cost is one more first `up` (~5 min); no VM outlives tests/vm.

Without root, the engine or the images the tests skip with the reason; with
MAC_VM_TESTS=required (.ci/run) they fail instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from vmsite.site import Site, missing


def require_vm_site() -> None:
    """Skip (or fail, with MAC_VM_TESTS=required) when the vm stack cannot run here."""
    why = missing()
    if why is None:
        return
    if os.environ.get("MAC_VM_TESTS") == "required" and os.geteuid() == 0:
        pytest.fail(f"the vm stack cannot run: {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def vm_site() -> Iterator[Site]:
    """The vm stack, deployed and healthy (first `up` figures in `site.timings`)."""
    require_vm_site()
    site = Site(say=lambda line: print(line, flush=True))
    try:
        site.up()
        site.timings["first_up_healthy_s"] = site.wait_healthy(timeout_s=600)
        yield site
    finally:
        if site.lock.held:
            site.down()
