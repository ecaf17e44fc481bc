#!/usr/bin/env python3
"""Start this node's Galera server safely: join a live group, bootstrap only when that cannot split it.

Installed on every mysql node as /usr/local/sbin/mac-galera-start; the post-boot step runs it and
so does the lab. Idempotent: a node already Synced is left alone. Rules (`decide`):
- any other group member answers (a DB peer Synced or its Galera port open, or the arbitrator's
  Galera port open) -> join, never bootstrap: a replaced first node joins the survivor;
- nobody answers and this is not the first DB node -> wait for a peer, then join;
- nobody answers, first DB node, fresh datadir or `safe_to_bootstrap: 1` -> bootstrap;
- nobody answers, first DB node, state from an unclean stop -> refuse (exit 3): a person or the
  watchdog must compare positions (`mariadbd --wsrep-recover`) before anyone bootstraps.
Stdlib only: it runs under the cloud image's python3.
"""

from __future__ import annotations

import argparse
import enum
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

ZERO_UUID = "00000000-0000-0000-0000-000000000000"
EXIT_REFUSED = 3
EXIT_TIMEOUT = 4


class Action(enum.Enum):
    ALREADY_RUNNING = "already-running"
    JOIN = "join"
    BOOTSTRAP = "bootstrap"
    WAIT = "wait"
    REFUSE = "refuse"


@dataclass(frozen=True)
class GraState:
    """What `grastate.dat` says about this node's last run."""

    uuid: str
    seqno: int
    safe_to_bootstrap: bool

    @property
    def fresh(self) -> bool:
        return self.uuid in ("", ZERO_UUID)


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str


def parse_grastate(text: str) -> GraState:
    values: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line and not line.lstrip().startswith("#"):
            key, value = line.split(":", 1)
            values[key.strip()] = value.strip()
    try:
        seqno = int(values.get("seqno", "-1"))
    except ValueError:
        seqno = -1
    return GraState(values.get("uuid", ""), seqno, values.get("safe_to_bootstrap") == "1")


def read_grastate(datadir: str) -> GraState | None:
    try:
        with open(os.path.join(datadir, "grastate.dat"), encoding="utf-8") as handle:
            return parse_grastate(handle.read())
    except FileNotFoundError:
        return None


def decide(local_synced: bool, members_alive: bool, is_first: bool,
           grastate: GraState | None) -> Decision:
    """What to do, as a pure function of what the node sees (tested exhaustively)."""
    if local_synced:
        return Decision(Action.ALREADY_RUNNING, "this node is already Synced in a Primary component")
    if members_alive:
        return Decision(Action.JOIN, "another group member answers: join it")
    if not is_first:
        return Decision(Action.WAIT, "no group member answers and this is not the first DB node")
    if grastate is None or grastate.fresh:
        return Decision(Action.BOOTSTRAP, "first DB node, fresh datadir, nobody else answers")
    if grastate.safe_to_bootstrap:
        return Decision(Action.BOOTSTRAP, "first DB node left the cluster last (safe_to_bootstrap: 1)")
    return Decision(Action.REFUSE,
                    "first DB node with state from an unclean stop and no live member: run "
                    "`mariadbd --wsrep-recover` on every DB node, set safe_to_bootstrap: 1 in "
                    "grastate.dat of the one with the highest position, then run this again")


def http_status(url: str, timeout_s: float) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code
    except (OSError, ValueError):
        return None


def tcp_open(host: str, port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def members_alive(peers: list[str], arbitrators: list[str], check_port: int, check_path: str,
                  galera_port: int, timeout_s: float) -> bool:
    for ip in peers:
        if http_status(f"http://{ip}:{check_port}{check_path}", timeout_s) == 200:
            return True
    return any(tcp_open(ip, galera_port, timeout_s) for ip in [*peers, *arbitrators])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Start this Galera node safely (join or bootstrap).")
    p.add_argument("--self", dest="self_ip", required=True, help="this node's IP")
    p.add_argument("--peers", default="", help="other DB nodes' IPs, comma separated")
    p.add_argument("--arbitrators", default="", help="garbd IPs, comma separated")
    p.add_argument("--first", action="store_true", help="this is the first DB node")
    p.add_argument("--datadir", default="/var/lib/mysql")
    p.add_argument("--check-port", type=int, default=9200)
    p.add_argument("--check-path", default="/")
    p.add_argument("--galera-port", type=int, default=4567)
    p.add_argument("--start-cmd", default="systemctl start mariadb")
    p.add_argument("--bootstrap-cmd", default="galera_new_cluster")
    p.add_argument("--after-cmd", default="", help="run once Synced (e.g. enable the service)")
    p.add_argument("--probe-rounds", type=int, default=3, help="peer probes before deciding")
    p.add_argument("--wait", type=float, default=600.0, help="seconds to wait for Synced")
    args = p.parse_args(argv)
    peers = [ip for ip in args.peers.split(",") if ip]
    arbitrators = [ip for ip in args.arbitrators.split(",") if ip]
    local_url = f"http://{args.self_ip}:{args.check_port}{args.check_path}"

    def synced() -> bool:
        return http_status(local_url, 2.0) == 200

    def alive() -> bool:
        return members_alive(peers, arbitrators, args.check_port, args.check_path,
                             args.galera_port, 1.0)

    deadline = time.monotonic() + args.wait
    alive_now = False
    for round_ in range(max(1, args.probe_rounds)):
        alive_now = alive()
        if alive_now or synced():
            break
        if round_ + 1 < args.probe_rounds:
            time.sleep(1.0)
    decision = decide(synced(), alive_now, args.first, read_grastate(args.datadir))
    while decision.action is Action.WAIT and time.monotonic() < deadline:
        time.sleep(2.0)
        decision = decide(synced(), alive(), args.first, read_grastate(args.datadir))
    print(f"mac-galera-start: {decision.action.value}: {decision.reason}", flush=True)
    if decision.action is Action.REFUSE:
        return EXIT_REFUSED
    if decision.action is Action.WAIT:
        return EXIT_TIMEOUT
    if decision.action is not Action.ALREADY_RUNNING:
        command = args.bootstrap_cmd if decision.action is Action.BOOTSTRAP else args.start_cmd
        result = subprocess.run(command, shell=True, check=False)
        if result.returncode != 0:
            print(f"mac-galera-start: `{command}` exited {result.returncode}", file=sys.stderr)
            return result.returncode
    while not synced():
        if time.monotonic() > deadline:
            print("mac-galera-start: timed out waiting for Synced", file=sys.stderr)
            return EXIT_TIMEOUT
        time.sleep(0.25)
    if args.after_cmd:
        subprocess.run(args.after_cmd, shell=True, check=False)
    print("mac-galera-start: Synced", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
