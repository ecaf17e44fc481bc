"""What a leader's death costs with several watchdogs on etcd; prints one JSON object.

A real 3-member etcd cluster on loopback (started by PID, data in a temp dir), three
`mac-watchdog run --etcd` processes with the default lease settings (TTL 5 s, renewed every 1 s),
the loopback test stack and the STAND-IN pulumi (records argv; deploys nothing). kvm1 dies; the
leader fences it and is SIGKILLed right after recording the fence. `new_leader_acting_s` runs from
that record to the successor's first step transaction (goal: <= TTL + 1 s); `fences` counts the
fence command's runs (must be 1). `step_txn_ms` is the cost of one step transaction (the fencing
token check + the step and remediation records), median of 50, measured in-process.

Usage: .venv/bin/python bench/leader.py
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from components.stack_file import load_topology, stack_path  # noqa: E402
from components.topology import WatchdogSettings  # noqa: E402
from tests.netutil import free_port  # noqa: E402
from tests.watchdog import standin_pulumi  # noqa: E402
from tests.watchdog.etcd_cluster import etcd_missing, running_cluster  # noqa: E402
from tests.watchdog.fleet import Fleet  # noqa: E402
from tests.watchdog.loopback_stack import TEST_STACK  # noqa: E402
from tests.watchdog.state_fixture import exported  # noqa: E402
from watchdog.alert import Alerter  # noqa: E402
from watchdog.detect import Failures  # noqa: E402
from watchdog.journal import DONE, Journal  # noqa: E402
from watchdog.leader import Leadership  # noqa: E402
from watchdog.plan import Step, plan  # noqa: E402

TXN_SAMPLES = 50


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class Targets:
    """An HTTP 200 server on each loopback address of the stack, all on one port."""

    def __init__(self, port: int, addresses: list[str]) -> None:
        self.port = port
        self.live: dict[str, ThreadingHTTPServer] = {}
        for a in addresses:
            self.up(a)

    def up(self, address: str) -> None:
        server = ThreadingHTTPServer((address, self.port), _Ok)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        self.live[address] = server

    def down(self, address: str) -> None:
        server = self.live.pop(address)
        server.shutdown()
        server.server_close()

    def close(self) -> None:
        for a in list(self.live):
            self.down(a)


def step_txn_ms(endpoints: list[str], tmp: Path) -> float:
    project = tmp / "project"
    topology = load_topology(stack_path(project, "test"))
    lead = Leadership(endpoints, "bench-txn", tmp / "txn-stack.yaml", Journal(tmp / "txn"),
                      lambda: Alerter(None, "bench-txn"), name="bench")
    try:
        assert lead.session.wait_for(lambda: lead.session.leading() is not None, 30)
        p = plan(topology, Failures(hosts=("kvm1",)))
        times = []
        for i in range(TXN_SAMPLES):
            started = time.perf_counter()
            lead.before_step(f"r{i}", p, Step.FENCE)
            times.append(time.perf_counter() - started)
            lead.after_step(f"r{i}", p, Step.FENCE, DONE, {})
        return round(statistics.median(times) * 1000, 2)
    finally:
        lead.close()


def main() -> int:
    reason = etcd_missing()
    if reason:
        print(json.dumps({"skipped": reason}))
        return 2
    defaults = WatchdogSettings()
    tmp = Path(tempfile.mkdtemp(prefix="mac-bench-leader-"))
    out: dict[str, Any] = {"ttl_s": defaults.lease_ttl_s, "renew_s": defaults.lease_renew_s}
    cluster = running_cluster(tmp / "etcd")
    targets: Targets | None = None
    fleet: Fleet | None = None
    try:
        project = tmp / "project"
        (project / "stacks").mkdir(parents=True)
        shutil.copy(REPO / "Pulumi.yaml", project)
        (project / "stacks" / "Pulumi.test.yaml").write_text(TEST_STACK)
        standin_root = tmp / "standin"
        standin_pulumi.install(standin_root)
        (standin_root / "state.json").write_text(json.dumps(exported()))
        topology = load_topology(stack_path(project, "test"))
        targets = Targets(free_port(), [n.ip for n in topology.nodes.values()]
                          + [h.address for h in topology.hosts.values()])
        fleet = Fleet(project, tmp, standin_root, targets.port, cluster.urls,
                      ttl_s=defaults.lease_ttl_s, renew_s=defaults.lease_renew_s)
        out["step_txn_ms"] = step_txn_ms(cluster.endpoints, tmp)

        fleet.start("wd1", kill=("fence", "done"))
        fleet.wait_leader("wd1")
        fleet.start("wd2")
        fleet.start("wd3")
        fleet.wait_views(3)
        moved = [n.ip for n in topology.nodes_on("kvm1")]
        for address in [topology.hosts["kvm1"].address, *moved]:
            targets.down(address)
        killed = fleet.wait_exit("wd1", 60)
        for address in moved:  # the moved nodes answer again from the spare
            targets.up(address)
        record = fleet.wait_remediated()
        time.sleep(2.0)  # room for a second fence or up, if there were one
        steps = {s["step"]: s for s in fleet.step_records()}
        out.update({
            "new_leader_acting_s": round(steps["prune_state"]["started_at"]
                                         - steps["fence"]["ended_at"], 2),
            "fences": sum(1 for f in fleet.fences() if f[1] == "start"),
            "ups": len(fleet.ups()),
            "killed_leader_exit": killed,
            "successor": record["holder"],
            "steps": {k: s["holder"] for k, s in steps.items()},
            "note": "new_leader_acting_s: the SIGKILLed leader's fence record -> the successor's "
                    "first step transaction (lease expiry + a follower's look at the key + a loop "
                    "round + taking in the record)",
        })
    finally:
        if fleet is not None:
            fleet.close()
        if targets is not None:
            targets.close()
        cluster.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
