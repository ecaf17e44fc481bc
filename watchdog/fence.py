"""Fencing: power a failed host off before its nodes start elsewhere (no split brain).

The command is the host's `fence` from the stack file, split like a shell would (no shell runs
it, so nothing in it is interpolated) and killed with its process group after a timeout. Secrets
belong in the environment (`ipmitool -E` reads IPMI_PASSWORD), never in the command line.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
from dataclasses import dataclass
from typing import Any

from components.topology import FENCE_NONE, Host
from watchdog.children import Children
from watchdog.errors import FenceError, FenceRefused
from watchdog.ipmitool import PASSWORD_ENV, uses_wrapper

DEFAULT_FENCE_TIMEOUT_S = 60.0
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FenceResult:
    host: str
    skipped: bool  # `fence: none`
    returncode: int | None = None


def fence(host: Host, timeout_s: float = DEFAULT_FENCE_TIMEOUT_S,
          children: Children | None = None) -> FenceResult:
    """Run the host's fence command; FenceRefused without one, FenceError when it fails.
    With `children` it is recorded while it runs, so a restarted watchdog finds it."""
    if host.fence is None:
        raise FenceRefused(f"host {host.name} has no fence command; set mac:hosts.{host.name}.fence "
                           f"to a power-off command, or to '{FENCE_NONE}' to accept the risk")
    if host.fence.strip() == FENCE_NONE:
        log.warning("fence %s: skipped ('fence: none' in the stack file)", host.name)
        return FenceResult(host.name, skipped=True)
    try:
        argv = shlex.split(host.fence)
    except ValueError as err:
        raise FenceError(f"mac:hosts.{host.name}.fence cannot be parsed ({err}); fix its quoting") from None
    if uses_wrapper(argv) and not os.environ.get(PASSWORD_ENV):
        # fence_ipmilan would only say "Unable to obtain correct plug status": say why here.
        raise FenceError(f"the fence command for {host.name} takes the BMC password from "
                         f"{PASSWORD_ENV}, which is not set in the watchdog's environment; set it "
                         "(systemd: EnvironmentFile=/etc/default/mac-watchdog, mode 0600)")
    log.info("fence %s: running %s", host.name, argv[0])
    options: dict[str, Any] = {"stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE,
                               "stderr": subprocess.STDOUT}
    children = children or Children(None)  # its own group, known to kill_running; no record
    try:
        proc = children.popen(argv, f"fence {host.name}", **options)
    except OSError as err:
        raise FenceError(f"fence command for {host.name} cannot start: {argv[0]}: "
                         f"{err.strerror}; install it or fix mac:hosts.{host.name}.fence") from None
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise FenceError(f"fence command for {host.name} did not finish within {timeout_s:g} s; "
                         "the host may still be running") from None
    finally:
        if proc.returncode is not None:
            children.forget(proc.pid)
    tail = out.decode("utf-8", "replace").strip().splitlines()[-3:]
    for line in tail:
        log.info("fence %s: %s", host.name, line)
    if proc.returncode != 0:
        raise FenceError(f"fence command for {host.name} exited with {proc.returncode}"
                         + (f": {tail[-1]}" if tail else "") + "; the host may still be running")
    return FenceResult(host.name, skipped=False, returncode=0)
