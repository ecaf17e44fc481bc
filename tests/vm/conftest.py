"""The vm stack for tests/vm: brought up ONCE per session (`vmsite.site.Site`, the code `make vm`
runs) and torn down at the end; tests that need it take the `vm_site` fixture (later the drills
reuse it too).

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


@pytest.fixture(scope="session")
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
