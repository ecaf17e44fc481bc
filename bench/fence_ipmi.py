"""IPMI fence figures, printed as ONE JSON object (root; `make bmc-packages`).

A simulated BMC (ipmi_sim, vmsite/bmc.py) in a namespace this script makes, in front of the BMC
tests' STAND-IN host (tests/vm/standin_host.py: sleep processes and an address, no libvirtd); the
watchdog's fence (watchdog.fence.fence) runs the fence_ipmilan line of vmsite.bmc.fence_line:

- `off_s`, `on_s`: one fence with `--action off` / `on` (median of ROUNDS), at fence_ipmilan's
  default `--power-wait` (2 s) and at 0 (the vm stack's BMCs report the new state at once);
- `status_s`: `--action status`;
- `bmc_start_s`: vmsite.bmc.start until the BMC listens.

`python bench/fence_ipmi.py`
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from components.topology import Host  # noqa: E402
from lab.netns import delete_namespace, wait_exited  # noqa: E402
from vmsite import bmc  # noqa: E402
from watchdog.fence import fence  # noqa: E402

NETNS = "mac-bmc-bench"
BRIDGE = "br-bmc"
HOST_ADDRESS = "192.168.160.11"
BMC_ADDRESS = "192.168.160.201"
ROUNDS = 5
STANDIN = REPO / "tests" / "vm" / "standin_host.py"
MAC_IPMITOOL = Path(sys.prefix, "bin", "mac-ipmitool")


def _timed_fence(action: str, power_wait_s: int | None) -> float:
    line = bmc.fence_line(BMC_ADDRESS, action=action, ipmitool_path=MAC_IPMITOOL,
                          power_wait_s=power_wait_s)
    started = time.monotonic()
    fence(Host("kvm1", "qemu:///system", HOST_ADDRESS, f"ip netns exec {NETNS} {line}"), timeout_s=60)
    return time.monotonic() - started


def main() -> int:
    why = bmc.missing()
    if why:
        print(json.dumps({"error": why}))
        return 1
    run_dir = Path(tempfile.mkdtemp(prefix="mac-bmc-bench-"))
    standin = [sys.executable, str(STANDIN)]
    host_args = [str(run_dir), NETNS, BRIDGE, HOST_ADDRESS]
    for argv in (["ip", "netns", "add", NETNS], ["ip", "-n", NETNS, "link", "set", "lo", "up"],
                 ["ip", "-n", NETNS, "link", "add", BRIDGE, "type", "bridge"],
                 ["ip", "-n", NETNS, "link", "set", BRIDGE, "up"]):
        subprocess.run(argv, check=True)
    try:
        subprocess.run([*standin, "on", *host_args], check=True)
        actions = bmc.PowerActions(on=(*standin, "on", *host_args), off=(*standin, "off", *host_args),
                                   status=(*standin, "status", str(run_dir)))
        started = time.monotonic()
        bmc.start(run_dir, NETNS, BRIDGE, [bmc.BmcSpec("kvm1", BMC_ADDRESS, actions)])
        figures: dict[str, object] = {"bmc_start_s": round(time.monotonic() - started, 3),
                                      "rounds": ROUNDS}
        os.environ.update(bmc.environment(run_dir))
        for label, wait in (("default_power_wait", None), ("power_wait_0", 0)):
            offs, ons = [], []
            for _ in range(ROUNDS):
                offs.append(_timed_fence("off", wait))
                ons.append(_timed_fence("on", wait))
            figures[label] = {"off_s": round(statistics.median(offs), 3),
                              "on_s": round(statistics.median(ons), 3)}
        line = bmc.fence_line(BMC_ADDRESS, action="status", ipmitool_path=MAC_IPMITOOL)
        started = time.monotonic()
        subprocess.run(["ip", "netns", "exec", NETNS, *line.split()], capture_output=True, check=False)
        figures["status_s"] = round(time.monotonic() - started, 3)
        print(json.dumps(figures))
    finally:
        bmc.stop(run_dir)
        wait_exited(delete_namespace(NETNS))
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
