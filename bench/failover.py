"""What a node death costs the clients, measured on the lab cluster; prints one JSON object.

Brings up the lab (root, namespaces, real daemons), then runs three drills at a fixed request rate
through the LB (`/index.php?token=...`, each a write): SIGKILL of a web node; SIGKILL of the DB
node that takes the writes, which is restarted afterwards to measure the resync and to check that
every acknowledged write is on both DB nodes; then that node's whole host goes silent (links cut
first, so no FIN or RST: its web node and DB node at once), and is revived and checked the same
way. `max_ms` is the worst single request. Then `lb_node_death` on a stack with an LB pair
(`--lb-stack`, default lab-ha: keepalived, clients on the VIP): the host of the LB holding the VIP
goes silent; the same keys, plus `vip_moved_s` (kill until the backup holds the VIP),
`connections_to_dead_lb` (client connections it held: a request fails only on one of them, if in
flight or sent over it later), `in_flight_at_kill`, `failed_elsewhere` (should be 0) and whether
the VIP moved again when the old master came back. Each lab is removed at the end,
also on errors.

Usage: .venv/bin/python bench/failover.py [--rate 500] [--duration 20] [--kill-at 10]
       [--lb-stack lab-ha | --lb-stack ""]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.roles import lb
from components.topology import Role
from lab.cluster import Lab
from lab.drills import (
    DrillResult,
    LbFault,
    restart_and_verify,
    revive_host_and_verify,
    run_drill,
    run_host_drill,
    run_lb_drill,
)
from lab.requirements import skip_reason


def figures(result: DrillResult, duration_s: float) -> dict[str, Any]:
    report = result.report
    span = max((o.done for o in report.outcomes), default=report.started) - report.started
    return {**report.summary(), "victim": result.victim, "killed_at_s": round(result.killed_at_s, 2),
            "achieved_rate_per_s": round(report.requests / max(span, duration_s), 1),
            "failed_samples": [o.error or o.status for o in report.failed][:5]}


def lb_node_death(stack: str, rate: float, duration_s: float, kill_at_s: float) -> dict[str, Any]:
    """The host of the LB holding the VIP goes silent under load (pair configured)."""
    lab = Lab.from_stack(stack)
    try:
        lab_up_s = lab.up()
        drill = run_lb_drill(lab, LbFault.HOST, rate, duration_s, kill_at_s)
    finally:
        lab.teardown()
    extra = {k: v for k, v in drill.figures().items() if k not in drill.result.report.summary()}
    return {**figures(drill.result, duration_s), **extra, "stack": stack,
            "lab_up_s": round(lab_up_s, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per drill")
    parser.add_argument("--kill-at", type=float, default=10.0, help="seconds into the load")
    parser.add_argument("--stack", default="lab")
    parser.add_argument("--lb-stack", default="lab-ha",
                        help="a stack with an LB pair for lb_node_death (empty: skip it)")
    args = parser.parse_args()
    reason = skip_reason()
    if reason:
        print(json.dumps({"skipped": reason}))
        return 2
    lab = Lab.from_stack(args.stack)
    out: dict[str, Any] = {"rate_per_s": args.rate, "duration_s": args.duration,
                           "kill_at_s": args.kill_at}
    try:
        out["lab_up_s"] = round(lab.up(), 1)
        web = lab.topology.nodes_of(Role.WEB)[0].name
        result = run_drill(lab, web, args.rate, args.duration, args.kill_at)
        out["web_node_death"] = figures(result, args.duration)
        lab.start_node(web)
        lab.wait_healthy(60)
        time.sleep(2)  # let HAProxy put it back (rise 2) before the next drill

        db = lab.topology.nodes_of(Role.MYSQL)[0].name  # the writer behind the LB's DB frontend
        result = run_drill(lab, db, args.rate, args.duration, args.kill_at)
        resync = restart_and_verify(lab, db, result)
        lost = set().union(*resync.missing.values())
        out["db_node_death"] = {**figures(result, args.duration),
                                "writes_acknowledged": len(result.report.acknowledged_tokens),
                                "writes_lost": len(lost), "resync_s": round(resync.seconds, 2)}
        lab.wait_healthy(60)
        time.sleep(2)

        host = lab.node(db).host  # that writer's host, with a web node: all goes silent
        result, victims = run_host_drill(lab, host, args.rate, args.duration, args.kill_at)
        resync = revive_host_and_verify(lab, host, victims, result)
        lost = set().union(*resync.missing.values())
        out["host_death"] = {**figures(result, args.duration), "victims": victims,
                             "web_server_timeout_s": lb.WEB_SERVER_TIMEOUT_S,
                             "writes_acknowledged": len(result.report.acknowledged_tokens),
                             "writes_lost": len(lost), "resync_s": round(resync.seconds, 2)}
    finally:
        lab.teardown()
    if args.lb_stack:
        out["lb_node_death"] = lb_node_death(args.lb_stack, args.rate, args.duration, args.kill_at)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
