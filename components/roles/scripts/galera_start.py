#!/usr/bin/env python3
"""Start this node's Galera server safely: join a live group, bootstrap only when that cannot split it.

Installed on every mysql node as /usr/local/sbin/mac-galera-start; the post-boot step runs it and
so does the lab. Idempotent: a node already Synced is left alone. Rules (`decide`):
- a DB peer answers (Synced, or its Galera port open) -> join, never bootstrap: a replaced first
  node joins the survivor;
- fresh datadir after the stack's first deploy (no `--first-deploy`) -> wait for a DB peer, never
  bootstrap and never join the arbitrator alone: the cluster's data lives on a DB node that does
  not answer, and a new empty cluster would later wipe it by SST (a person restores it);
- fresh datadir on the stack's first deploy (`--first-deploy`, only the first post-boot step passes
  it), or first DB node with `safe_to_bootstrap: 1` (the state Galera itself calls safe): the
  arbitrator's Galera port open -> join; else the first DB node bootstraps, the others wait;
- any other state (an unclean stop: a full outage) -> compare positions, no person needed: recover
  this node's position (`mariadbd --wsrep-recover` via galera_recovery), publish it in a file the
  clustercheck service serves read-only at /position, and read every other DB node's. Bootstrap
  only when every DB node's position is known, all share one cluster UUID and this node's seqno is
  the highest (ties: the first DB node in topology order), after setting `safe_to_bootstrap: 1`;
  otherwise keep waiting (and join as soon as a peer runs). A peer that does not answer means
  wait, never bootstrap: a node that cannot see its peer may hold a stale position. The arbitrator
  alone does not count here: it holds no data and cannot be Primary by itself, and a DB node that
  publishes a recovered position runs no server.
- different cluster UUIDs, or no position of its own -> refuse (exit 3): histories diverged.
Gives up after --wait seconds (exit 4, saying which positions were missing).
Stdlib only: it runs under the cloud image's python3.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

ZERO_UUID = "00000000-0000-0000-0000-000000000000"
EXIT_REFUSED = 3
EXIT_TIMEOUT = 4
POSITION_PATH = "/position"  # served read-only by the clustercheck service
FOUNDED_FRESH_WAIT = ("fresh datadir after the stack's first deploy: the data lives on the other "
                      "DB node, which does not answer; wait for it, never found a new cluster "
                      "(DB data needs a person if no DB node holds it any more)")


class Action(enum.Enum):
    ALREADY_RUNNING = "already-running"
    JOIN = "join"
    BOOTSTRAP = "bootstrap"
    WAIT = "wait"
    RECOVER = "recover"  # recover and publish this node's position, then decide again
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
class Position:
    """A recovered `uuid:seqno` (the last transaction this node committed)."""

    uuid: str
    seqno: int

    def __str__(self) -> str:
        return f"{self.uuid}:{self.seqno}"


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


_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_RECOVERED = re.compile(
    rf"(?:Recovered position:?|wsrep[_-]start[_-]position=)\s*({_UUID}):(-?\d+)")
_POSITION = re.compile(rf"^\s*({_UUID}):(-?\d+)\s*$")


def parse_recovered(output: str) -> Position | None:
    """The position `mariadbd --wsrep-recover` ("WSREP: Recovered position: UUID:SEQNO") or
    galera_recovery ("--wsrep_start_position=UUID:SEQNO") printed; the last one wins."""
    found = _RECOVERED.findall(output)
    if not found:
        return None
    uuid, seqno = found[-1]
    return Position(uuid.lower(), int(seqno))


def parse_position(text: str) -> Position | None:
    """A published position (`uuid:seqno`, what /position serves)."""
    match = _POSITION.match(text)
    return Position(match.group(1).lower(), int(match.group(2))) if match else None


def decide(local_synced: bool, peer_alive: bool, arbitrator_alive: bool, is_first: bool,
           grastate: GraState | None, positions: Sequence[Position | None] | None = None,
           self_index: int = 0, *, first_deploy: bool = False) -> Decision:
    """What to do, as a pure function of what the node sees (tested exhaustively).

    `positions`: every DB node's recovered position in topology order (None: not known), this
    node's at `self_index`; None as a whole while this node has not recovered its own yet.
    `first_deploy`: the stack's DB cluster was never founded, so a fresh datadir may found it.
    """
    if local_synced:
        return Decision(Action.ALREADY_RUNNING, "this node is already Synced in a Primary component")
    if peer_alive:
        return Decision(Action.JOIN, "a DB peer answers: join it")
    fresh = grastate is None or grastate.fresh
    if fresh and not first_deploy:
        return Decision(Action.WAIT, FOUNDED_FRESH_WAIT)
    if fresh or (grastate is not None and is_first and grastate.safe_to_bootstrap):
        if arbitrator_alive:
            return Decision(Action.JOIN, "the arbitrator answers: join the group")
        if not is_first:
            return Decision(Action.WAIT, "no group member answers and this is not the first DB node")
        if fresh:
            return Decision(Action.BOOTSTRAP, "first DB node, fresh datadir on the stack's first "
                                              "deploy, nobody else answers")
        return Decision(Action.BOOTSTRAP, "first DB node left the cluster last (safe_to_bootstrap: 1)")
    # State from an unclean stop (or a later node that left last): compare positions.
    if positions is None:
        return Decision(Action.RECOVER, "no DB peer runs and this node's state is not safe to "
                                        "bootstrap: recover and publish its position")
    own = positions[self_index] if 0 <= self_index < len(positions) else None
    if own is None or own.seqno < 0 or own.uuid in ("", ZERO_UUID):
        return Decision(Action.REFUSE, "this node's position could not be recovered: a person must "
                                       "compare positions (`mariadbd --wsrep-recover`)")
    missing = [i for i, p in enumerate(positions) if p is None]
    if missing:
        return Decision(Action.WAIT, f"position of DB node(s) {missing} (topology order) unknown: "
                                     "wait for them, never bootstrap blindly")
    known = [p for p in positions if p is not None]
    if any(p.uuid != own.uuid for p in known):
        return Decision(Action.REFUSE, "DB nodes report different cluster UUIDs "
                        f"({', '.join(sorted({p.uuid for p in known}))}): a person must decide")
    if any(p.seqno < 0 for p in known):
        return Decision(Action.WAIT, "a DB node reports no recovered seqno: wait")
    best = max(p.seqno for p in known)
    winner = next(i for i, p in enumerate(known) if p.seqno == best)
    if winner == self_index:
        return Decision(Action.BOOTSTRAP, f"highest position of all DB nodes ({own}): bootstrap "
                                          "after setting safe_to_bootstrap: 1")
    return Decision(Action.WAIT, f"DB node {winner} (topology order) holds the highest position "
                                 f"({known[winner]}, this node {own}): wait for it, then join")


def http_status(url: str, timeout_s: float) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code
    except (OSError, ValueError):
        return None


def http_text(url: str, timeout_s: float) -> str | None:
    """The body of a 200 answer, else None."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            if response.status != 200:
                return None
            return str(response.read(256).decode("ascii", "replace"))
    except (OSError, ValueError):
        return None


def tcp_open(host: str, port: int, timeout_s: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def peer_alive(peers: list[str], check_port: int, check_path: str, galera_port: int,
               timeout_s: float) -> bool:
    for ip in peers:
        if http_status(f"http://{ip}:{check_port}{check_path}", timeout_s) == 200:
            return True
    return any(tcp_open(ip, galera_port, timeout_s) for ip in peers)


def recover_position(command: str, timeout_s: float) -> Position | None:
    """Run the recovery command (galera_recovery / mariadbd --wsrep-recover); None on failure."""
    try:
        out = subprocess.run(command, shell=True, capture_output=True, text=True,
                             timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_recovered(out.stdout + "\n" + out.stderr)


def publish_position(path: str, position: Position) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="ascii") as handle:
        handle.write(f"{position}\n")
    os.replace(tmp, path)


def withdraw_position(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def set_safe_to_bootstrap(datadir: str) -> None:
    """`safe_to_bootstrap: 1` in grastate.dat, rewritten in place (owner and mode kept)."""
    path = os.path.join(datadir, "grastate.dat")
    with open(path, "r+", encoding="utf-8") as handle:
        lines = handle.read().splitlines()
        out = [("safe_to_bootstrap: 1" if line.split(":", 1)[0].strip() == "safe_to_bootstrap"
                else line) for line in lines]
        if not any(line.startswith("safe_to_bootstrap") for line in out):
            out.append("safe_to_bootstrap: 1")
        handle.seek(0)
        handle.write("\n".join(out) + "\n")
        handle.truncate()
        handle.flush()
        os.fsync(handle.fileno())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Start this Galera node safely (join or bootstrap).")
    p.add_argument("--self", dest="self_ip", required=True, help="this node's IP")
    p.add_argument("--peers", default="", help="other DB nodes' IPs, comma separated")
    p.add_argument("--db-nodes", default="",
                   help="every DB node's IP in topology order (ties go to the first); "
                        "default: this node first with --first, else last")
    p.add_argument("--arbitrators", default="", help="garbd IPs, comma separated")
    p.add_argument("--first", action="store_true", help="this is the first DB node")
    p.add_argument("--first-deploy", action="store_true",
                   help="the stack's first deploy: a fresh first DB node may found the cluster "
                        "(without it a fresh datadir only ever joins a DB peer)")
    p.add_argument("--datadir", default="/var/lib/mysql")
    p.add_argument("--check-port", type=int, default=9200)
    p.add_argument("--check-path", default="/")
    p.add_argument("--galera-port", type=int, default=4567)
    p.add_argument("--start-cmd", default="systemctl start mariadb")
    p.add_argument("--bootstrap-cmd", default="galera_new_cluster")
    p.add_argument("--recover-cmd", default="galera_recovery",
                   help="prints the recovered position (mariadbd --wsrep-recover)")
    p.add_argument("--position-file", default="/run/mac-galera/position",
                   help="where the recovered position is published (clustercheck serves it)")
    p.add_argument("--after-cmd", default="", help="run once Synced (e.g. enable the service)")
    p.add_argument("--probe-rounds", type=int, default=3, help="peer probes before deciding")
    p.add_argument("--wait", type=float, default=600.0, help="seconds to wait for Synced")
    args = p.parse_args(argv)
    peers = [ip for ip in args.peers.split(",") if ip]
    arbitrators = [ip for ip in args.arbitrators.split(",") if ip]
    db_nodes = [ip for ip in args.db_nodes.split(",") if ip] or (
        [args.self_ip, *peers] if args.first else [*peers, args.self_ip])
    if args.self_ip not in db_nodes:
        print(f"mac-galera-start: {args.self_ip} is not in --db-nodes", file=sys.stderr)
        return 2
    self_index = db_nodes.index(args.self_ip)
    local_url = f"http://{args.self_ip}:{args.check_port}{args.check_path}"
    # A position published by an earlier run is not trusted: this run recovers its own.
    withdraw_position(args.position_file)
    try:
        return _run(args, peers, arbitrators, db_nodes, self_index, local_url)
    finally:
        withdraw_position(args.position_file)


def _run(args: argparse.Namespace, peers: list[str], arbitrators: list[str], db_nodes: list[str],
         self_index: int, local_url: str) -> int:
    def synced() -> bool:
        return http_status(local_url, 2.0) == 200

    def peer() -> bool:
        return peer_alive(peers, args.check_port, args.check_path, args.galera_port, 1.0)

    def arbitrator() -> bool:
        return any(tcp_open(ip, args.galera_port, 1.0) for ip in arbitrators)

    def positions(own: Position | None) -> list[Position | None]:
        return [own if i == self_index else parse_position(
                    http_text(f"http://{ip}:{args.check_port}{POSITION_PATH}", 1.0) or "")
                for i, ip in enumerate(db_nodes)]

    deadline = time.monotonic() + args.wait
    alive_now = False
    for round_ in range(max(1, args.probe_rounds)):
        alive_now = peer() or arbitrator()
        if alive_now or synced():
            break
        if round_ + 1 < args.probe_rounds:
            time.sleep(1.0)
    own: Position | None = None
    known: list[Position | None] | None = None
    decision = decide(synced(), peer(), arbitrator(), args.first, read_grastate(args.datadir),
                      first_deploy=args.first_deploy)
    last_reason = ""
    while decision.action in (Action.WAIT, Action.RECOVER) and time.monotonic() < deadline:
        if decision.action is Action.RECOVER:
            print(f"mac-galera-start: {decision.reason}", flush=True)
            own = recover_position(args.recover_cmd, max(10.0, deadline - time.monotonic()))
            if own is not None and own.seqno >= 0:
                publish_position(args.position_file, own)
            print(f"mac-galera-start: recovered position {own}", flush=True)
            known = [own]  # marks "recovered"; filled below
        else:
            if decision.reason != last_reason:
                print(f"mac-galera-start: wait: {decision.reason}", flush=True)
                last_reason = decision.reason
            time.sleep(1.0)
        if known is not None:
            known = positions(own)
        decision = decide(synced(), peer(), arbitrator(), args.first, read_grastate(args.datadir),
                          known, self_index, first_deploy=args.first_deploy)
    print(f"mac-galera-start: {decision.action.value}: {decision.reason}", flush=True)
    if decision.action is Action.REFUSE:
        return EXIT_REFUSED
    if decision.action in (Action.WAIT, Action.RECOVER):
        print(f"mac-galera-start: gave up after {args.wait:.0f} s; positions "
              f"{[str(p) if p else None for p in known or []]}", file=sys.stderr, flush=True)
        return EXIT_TIMEOUT
    if decision.action is not Action.ALREADY_RUNNING:
        # From here this node's position may move: withdraw it before the server starts.
        withdraw_position(args.position_file)
        if decision.action is Action.BOOTSTRAP and known is not None:
            set_safe_to_bootstrap(args.datadir)
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
