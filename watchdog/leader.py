"""Several watchdogs, one actor: leadership of a stack on etcd, and the shared remediation record.

Every watchdog probes and detects; the one holding the leadership key (bound to its lease) plans
and acts. The key's create revision is the fencing token: each step starts and ends with an etcd
transaction that succeeds only while the key still has that revision, and that records the step.
A leader whose lease it could not renew stops acting before etcd can expire the lease: between
steps it refuses the next one; in the middle of a step it kills the step's processes and exits
(as kube-controller-manager does when it loses its lease), and its supervisor restarts it as a
follower. The remediation record (plan, steps done) and the last topology written live in etcd,
so a new leader resumes where the old one stopped, and every watchdog's stack file follows.

Keys, under `/mac/<stack>/`: `leader` (holder, since; the holder's lease), `watchdogs/<name>`
(each watchdog's view; its lease), `remediations/<id>` (plan, steps done, outcome),
`steps/<id>/<step>/<token>` (who held a step, from when to when), `topology` (the last topology
a remediation wrote, as `mac:` config).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.stack_file import write_topology
from components.topology import Topology, parse_topology, to_config
from watchdog.alert import Alerter
from watchdog.children import kill_running
from watchdog.context import Context
from watchdog.coordinate import Coordinator, Solo, Turn
from watchdog.detect import Failures
from watchdog.errors import NotLeader, RemediationRefused, WatchdogError
from watchdog.etcd import (
    Etcd,
    EtcdError,
    EtcdUnavailable,
    KeyValue,
    compare_create,
    parse_endpoints,
    put_op,
    range_op,
)
from watchdog.journal import DONE, FAILED, Journal
from watchdog.plan import Plan, Step
from watchdog.reasons import Reason

log = logging.getLogger(__name__)

# A leader stops acting this long before etcd could expire its lease (the time to notice, kill
# the step's processes and exit, with room to spare).
STOP_MARGIN_S = 0.5
POLL_S = 0.05  # how often the mid-step check runs
EXIT_LEADERSHIP_LOST = 75  # EX_TEMPFAIL: a supervisor restarts the watchdog as a follower


def default_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def stack_prefix(stack: str) -> str:
    return f"/mac/{stack}/"


@dataclass(frozen=True)
class Keys:
    root: str

    @property
    def leader(self) -> str:
        return self.root + "leader"

    @property
    def views(self) -> str:
        return self.root + "watchdogs/"

    @property
    def remediations(self) -> str:
        return self.root + "remediations/"

    @property
    def topology(self) -> str:
        return self.root + "topology"

    def remediation(self, rid: str) -> str:
        return self.remediations + rid

    def step(self, rid: str, step: Step, token: int) -> str:
        return f"{self.root}steps/{rid}/{step.value}/{token:020d}"

    def steps(self, rid: str = "") -> str:
        return f"{self.root}steps/{rid + '/' if rid else ''}"


def stop_acting(journal: Journal, rid: str, step: Step, why: str) -> None:
    """The default when the lease lapses mid-step: kill what the step started (the process groups
    of its fence command or Pulumi CLI, watchdog.children), journal it, exit."""
    killed = kill_running()
    with contextlib.suppress(WatchdogError):
        journal.step(rid, step, FAILED, error=why, leadership_lost=True, killed=killed)
    log.critical("%s; killed %d processes of step %s; exiting (the supervisor restarts this "
                 "watchdog as a follower)", why, len(killed), step.value)
    logging.shutdown()
    os._exit(EXIT_LEADERSHIP_LOST)


class Session:
    """This watchdog's lease, kept alive by a thread, and its bid for the leadership key.

    `token` is the leadership key's create revision while this watchdog holds it; `valid_until`
    (monotonic) is when the lease may expire at etcd at the earliest: the send time of the last
    renewal that etcd answered, plus the TTL.
    """

    def __init__(self, endpoints: list[str], keys: Keys, name: str, ttl_s: int, renew_s: float,
                 timeout_s: float) -> None:
        self.keys = keys
        self.name = name
        self.ttl_s = ttl_s
        self.renew_s = renew_s
        self._etcd = Etcd(endpoints, timeout_s)
        self.lease = 0
        self.valid_until = 0.0
        self.token: int | None = None
        self.since: float | None = None
        self.leader: dict[str, Any] | None = None  # the leadership key's value, as last read
        self.error: str | None = None  # why etcd could not be used, while it cannot
        self.view: dict[str, Any] = {}
        self._published: tuple[str, float] = ("", 0.0)
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="etcd-lease", daemon=True)

    # -- what others read (any thread) -------------------------------------------------------------

    def valid(self) -> bool:
        return time.monotonic() < self.valid_until - STOP_MARGIN_S

    def leading(self) -> int | None:
        """The fencing token while this watchdog leads and its lease is surely alive; else None."""
        token = self.token
        return token if token is not None and self.valid() else None

    # -- the thread ------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def close(self, revoke: bool = True) -> None:
        self._stop.set()
        self._thread.join(timeout=self.renew_s + 3 * self._etcd.timeout_s)
        if self.lease and revoke:
            # The key and the view go with the lease: another watchdog takes over at once.
            with contextlib.suppress(EtcdError):
                self._etcd.revoke(self.lease)
        self.token = None
        self._etcd.close()

    def _loop(self) -> None:
        next_renew = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                if now >= next_renew or not self.lease:
                    self._renew()
                    next_renew = now + self.renew_s
                self._campaign()
                self._publish()
                self.error = None
            except EtcdUnavailable as err:
                self.error = str(err)
            except EtcdError as err:
                self.error = str(err)
                if "lease not found" in str(err):
                    self._lose("its lease expired at etcd")
            with self._cond:
                self._cond.notify_all()
            # A follower looks for a free key often, so a successor acts soon after the lease
            # expires; a leader only needs its renewals.
            self._stop.wait(min(self.renew_s, 0.25))

    def _renew(self) -> None:
        sent = time.monotonic()
        if self.lease:
            ttl = self._etcd.keepalive(self.lease)
            if ttl > 0:
                self.valid_until = sent + ttl
                return
            self._lose("its lease expired at etcd")
        self.lease = self._etcd.grant(self.ttl_s)
        self.valid_until = sent + self.ttl_s

    def _lose(self, why: str) -> None:
        if self.token is not None:
            log.warning("leadership lost: %s", why)
        self.lease, self.token, self.since, self.valid_until = 0, None, None, 0.0

    def _campaign(self) -> None:
        if time.monotonic() >= self.valid_until:
            return  # a lease etcd may have expired proves nothing
        current = self._etcd.get(self.keys.leader, serializable=self.token is None)
        if current is None:
            me = {"name": self.name, "since": time.time()}
            result = self._etcd.txn([compare_create(self.keys.leader, 0)],
                                    [put_op(self.keys.leader, me, self.lease)],
                                    [range_op(self.keys.leader)])
            current = (KeyValue(self.keys.leader, json.dumps(me).encode(), result.revision,
                                result.revision, self.lease) if result.succeeded
                       else next(iter(result.kvs()), None))
        if current is None:
            return
        self.leader = current.json()
        if current.lease == self.lease:
            if self.token != current.create_revision:
                self.since = float(self.leader.get("since", time.time()))
                log.info("leading stack %s (fencing token %d)", self.keys.root, current.create_revision)
            self.token = current.create_revision
        elif self.token is not None:
            self._lose(f"the key is held by {self.leader.get('name')}")

    def _publish(self) -> None:
        view = {**self.view, "name": self.name, "leading": self.leading() is not None}
        text = json.dumps(view, sort_keys=True)
        now = time.monotonic()
        if text == self._published[0] and now - self._published[1] < self.renew_s:
            return
        self._etcd.put(self.keys.views + self.name, {**view, "at": time.time()}, self.lease)
        self._published = (text, now)

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Block until `predicate()` after a pass of the thread, or `timeout_s` (tests, bench)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True


def _record_new(rid: str, p: Plan) -> dict[str, Any]:
    return {"id": rid, "plan": p.to_record(), "planned_at": round(time.time(), 3), "done": [],
            "failures": 0, "outcome": None}


class Leadership:
    """The `Coordinator` for a watchdog beside others: `turn` says whether it leads, the step
    guard proves it before every step and records each step in etcd beside the local journal."""

    def __init__(self, endpoints: list[str], stack: str, stack_file: Path, journal: Journal,
                 alerter: Callable[[], Alerter], *, name: str | None = None, ttl_s: int = 5,
                 renew_s: float = 1.0, timeout_s: float | None = None,
                 on_lost: Callable[[Journal, str, Step, str], None] = stop_acting) -> None:
        self.keys = Keys(stack_prefix(stack))
        self.name = name or default_name()
        timeout = timeout_s if timeout_s is not None else min(1.0, ttl_s / 5)
        self.session = Session(endpoints, self.keys, self.name, ttl_s, renew_s, timeout)
        self.etcd = Etcd(endpoints, timeout)  # the loop's (turn)
        self._guard_etcd = Etcd(endpoints, timeout)  # the remediation worker's (the step guard)
        self.stack_file = stack_file
        self.journal = journal
        self.alerter = alerter
        self.on_lost = on_lost
        self._records: dict[str, dict[str, Any]] = {}
        self._synced_token: int | None = None
        self._applied_revision = 0
        self._step: tuple[str, Step, int] | None = None  # running: (rid, step, token)
        self._attempt: dict[str, Any] = {}
        self._token_used = 0
        self._alerted: set[object] = set()
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._monitor = threading.Thread(target=self._watch_step, name="leader-step", daemon=True)
        self.session.start()
        self._monitor.start()

    # -- the loop's seam ---------------------------------------------------------------------------

    def turn(self, topology: Topology, failures: Failures) -> Turn:
        token = self.session.leading()
        self.session.view = {"leader": (self.session.leader or {}).get("name"),
                             "failedHosts": list(failures.hosts), "failedNodes": list(failures.nodes),
                             "isolated": failures.isolated, "failing": failures.failing,
                             "total": failures.total, "etcd": self.session.error}
        if not self.session.valid():
            self._unavailable(failures)
            return Turn(False)
        adopted = self._follow_topology(topology)
        self._alerted.clear()  # the next outage is news again
        if token is None:
            return Turn(False, adopted)
        if self._synced_token != token:
            try:
                self._sync_journal(token)
            except (EtcdError, NotLeader) as err:
                log.warning("cannot read the remediation record yet: %s", err)
                return Turn(False, adopted)
            self._synced_token = token
        return Turn(True, adopted)

    def _unavailable(self, failures: Failures) -> None:
        if self.session.error is None and time.monotonic() - self._started < self.session.ttl_s:
            return  # still starting: the first lease is on its way
        why = self.session.error or "its lease could not be renewed"
        if "etcd" not in self._alerted:
            self._alerted.add("etcd")
            self.alerter().alert("etcd_unavailable", f"watchdog {self.name} cannot prove leadership "
                                 f"on etcd ({why}); it does not act until etcd answers with a quorum",
                                 reason=Reason.ETCD_UNAVAILABLE)
        key = ("failed", failures.hosts, failures.nodes)
        if not failures.empty and key not in self._alerted:
            self._alerted.add(key)
            what = ", ".join((*failures.hosts, *failures.nodes)) or "too much at once"
            self.alerter().alert("refused", f"{what} failed, but no watchdog may act: etcd is "
                                 f"unreachable or without quorum ({why})",
                                 reason=Reason.ETCD_UNAVAILABLE)

    def close(self) -> None:
        # A step still running (a worker thread outliving the loop) keeps the lease until it
        # expires: handing over now would let a successor run the same step beside it.
        running = self._step is not None
        self.session.close(revoke=not running)
        if running:
            return  # the mid-step check stays on: it stops the step when the lease lapses
        self._stop.set()
        self.etcd.close()
        self._guard_etcd.close()

    # -- the shared topology ---------------------------------------------------------------------

    def _follow_topology(self, current: Topology) -> Topology | None:
        """Bring the stack file up to the last topology a remediation wrote (any watchdog's)."""
        try:
            kv = self.etcd.get(self.keys.topology, serializable=True)
        except EtcdError:
            return None
        if kv is None or kv.mod_revision <= self._applied_revision:
            return None
        record = kv.json()
        if record.get("pending"):
            return None  # its write has not succeeded (yet): never copy it into a stack file
        topology = parse_topology(record["config"])
        first = self._applied_revision == 0
        self._applied_revision = kv.mod_revision
        if topology == current:
            return None
        try:
            newer = record.get("written_at", 0) > self.stack_file.stat().st_mtime
        except OSError:
            newer = True
        if first and not newer:
            return None  # the file was edited after the last remediation: the operator's word
        if write_topology(self.stack_file, topology):
            log.info("stack file updated from the record of remediation %s", record.get("id"))
        return topology

    # -- the journal follows the record ----------------------------------------------------------

    def _sync_journal(self, token: int) -> None:
        """A new leader's local journal takes in every remediation etcd knows, so it resumes the
        open one at its next step and counts the others (cooldown, budget). One remediation at a
        time: an open record older than the newest (one a leader abandoned) is closed."""
        records = {r["id"]: r for r in (kv.json() for kv in self.etcd.prefix(self.keys.remediations))}
        entries = self.journal.entries()
        known = {e["id"] for e in entries if e.get("event") == "planned"}
        done_here = {(e["id"], e["step"]) for e in entries
                     if e.get("event") == "step" and e.get("status") == DONE}
        finished = {e["id"] for e in entries if e.get("event") == "finished"}
        pending = self.journal.pending()
        if pending is not None and pending.id not in records:
            if pending.done:  # etcd lost it (restored from an old snapshot?): publish ours
                record = {**_record_new(pending.id, pending.plan),
                          "done": [s.value for s in pending.plan.steps if s in pending.done]}
                self._commit(token, [put_op(self.keys.remediation(pending.id), record)],
                             f"remediation {pending.id} from the journal")
                records[pending.id] = record
            else:  # planned here by a leader that was deposed before its first step
                self.journal.finish(pending.id, "superseded", by="etcd")
                finished.add(pending.id)
        newest = max(records.values(), key=lambda r: r.get("planned_at", 0), default=None)
        for r in records.values():
            if not r.get("outcome") and r is not newest:
                r["outcome"] = "superseded"
                self._commit(token, [put_op(self.keys.remediation(r["id"]), r)],
                             f"the end of stale remediation {r['id']}")
        for rid, r in sorted(records.items(), key=lambda item: item[1].get("planned_at", 0)):
            if rid not in known:
                self.journal.append({"ts": r.get("planned_at"), "event": "planned", "id": rid,
                                     "trigger": "adopted", "plan": r["plan"]})
            for step in r.get("done", []):
                if (rid, step) not in done_here:
                    self.journal.append({"event": "step", "id": rid, "step": step, "status": DONE,
                                         "adopted": True})
            if r.get("outcome") and rid not in finished:
                self.journal.append({"event": "finished", "id": rid, "outcome": r["outcome"],
                                     "adopted": True})
        self._records = {rid: dict(r) for rid, r in records.items() if not r.get("outcome")}

    # -- the step guard --------------------------------------------------------------------------

    def _token(self, step: Step) -> int:
        token = self.session.leading()
        if token is None:
            raise NotLeader(f"watchdog {self.name} does not lead stack {self.keys.root} (leader: "
                            f"{(self.session.leader or {}).get('name')}); not running {step.value}")
        return token

    def _record(self, rid: str, p: Plan) -> dict[str, Any]:
        if rid not in self._records:
            kv = self._guard_etcd.get(self.keys.remediation(rid))
            self._records[rid] = kv.json() if kv is not None else _record_new(rid, p)
        return self._records[rid]

    def _commit(self, token: int, ops: list[dict[str, Any]], what: str) -> None:
        try:
            result = self._guard_etcd.txn([compare_create(self.keys.leader, token)], ops,
                                   [range_op(self.keys.leader)])
        except EtcdError as err:
            raise NotLeader(f"watchdog {self.name} cannot prove leadership for {what}: {err}") from None
        if not result.succeeded:
            holder = next((kv.json().get("name") for kv in result.kvs()), None)
            raise NotLeader(f"watchdog {self.name} no longer leads (fencing token {token} is stale; "
                            f"leader: {holder}); not recording {what}")

    def before_step(self, rid: str, p: Plan, step: Step) -> None:
        self._step = None
        token = self._token(step)
        record = {**self._record(rid, p), "holder": self.name, "token": token, "running": step.value}
        attempt = {"id": rid, "step": step.value, "holder": self.name, "token": token,
                   "status": "started", "started_at": time.time()}
        ops = [put_op(self.keys.remediation(rid), record), put_op(self.keys.step(rid, step, token), attempt)]
        if step is Step.WRITE_CONFIG:
            # Recorded before the file is written: the record is never older than any stack file.
            # Pending until the write succeeds: a write that refuses (a person edited the file)
            # must not reach the other watchdogs' stack files either.
            ops.append(put_op(self.keys.topology, self._topology_record(rid, p, pending=True)))
        self._commit(token, ops, f"step {step.value}")
        self._records[rid] = record
        self._attempt = attempt
        self._token_used = token
        self._step = (rid, step, token)

    @staticmethod
    def _topology_record(rid: str, p: Plan, pending: bool) -> dict[str, Any]:
        return {"id": rid, "config": to_config(p.topology), "written_at": time.time(),
                "pending": pending}

    def after_step(self, rid: str, p: Plan, step: Step, status: str,
                   detail: Mapping[str, Any]) -> None:
        self._step = None
        record = dict(self._record(rid, p))
        if status == DONE:
            record["done"] = [*record.get("done", []), step.value]
        else:
            record["failures"] = record.get("failures", 0) + 1
        record["running"] = None
        attempt = {**self._attempt, "status": status, "ended_at": time.time()}
        ops = [put_op(self.keys.remediation(rid), record),
               put_op(self.keys.step(rid, step, self._token_used), attempt)]
        if step is Step.WRITE_CONFIG and status == DONE:
            ops.append(put_op(self.keys.topology, self._topology_record(rid, p, pending=False)))
        try:
            self._commit(self._token_used, ops, f"step {step.value} {status}")
        except NotLeader:
            if status == DONE:
                raise
            return
        self._records[rid] = record

    def finished(self, rid: str, p: Plan, outcome: str) -> None:
        self._step = None  # a failed verify ends here, without after_step
        record = {**self._record(rid, p), "outcome": outcome, "finished_at": time.time()}
        try:
            self._commit(self._token_used, [put_op(self.keys.remediation(rid), record)],
                         f"the end of remediation {rid}")
        except NotLeader:
            if outcome == "ok":
                raise
            return
        self._records.pop(rid, None)

    def _watch_step(self) -> None:
        """Mid-step, the lease must stay provably alive; when it cannot, stop acting now."""
        while not self._stop.wait(POLL_S):
            running = self._step
            if running is None or self.session.valid():
                continue
            rid, step, token = running
            self.on_lost(self.journal, rid, step,
                         f"leadership of {self.keys.root} (token {token}) could not be renewed "
                         f"within the lease TTL in the middle of step {step.value}")
            self._step = None


# -- `mac-watchdog status` -------------------------------------------------------------------------


def leadership_report(etcd: Etcd, stack: str) -> dict[str, Any]:
    """Who leads, since when, each watchdog's view and the open remediation, as etcd has them."""
    keys = Keys(stack_prefix(stack))
    leader = etcd.get(keys.leader)
    views = [kv.json() for kv in etcd.prefix(keys.views)]
    records = [kv.json() for kv in etcd.prefix(keys.remediations)]
    open_ = [r for r in records if not r.get("outcome")]
    return {"leader": None if leader is None else {**leader.json(), "token": leader.create_revision},
            "watchdogs": sorted(views, key=lambda v: str(v.get("name"))),
            "openRemediation": None if not open_ else {
                k: open_[-1].get(k) for k in ("id", "holder", "token", "done", "running")}}


def leadership_lines(report: Mapping[str, Any]) -> list[str]:
    leader = report.get("leader")
    if report.get("error"):
        return [f"leader: unknown ({report['error']})"]
    if leader is None:
        lines = ["leader: none (no watchdog holds the key: none running, or etcd just expired one)"]
    else:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(leader.get("since", 0)))
        lines = [f"leader: {leader.get('name')} since {since} (fencing token {leader.get('token')})"]
    for v in report.get("watchdogs", []):
        failed = ", ".join([*v.get("failedHosts", []), *v.get("failedNodes", [])]) or "-"
        lines.append(f"watchdog {v.get('name')}: {'leader' if v.get('leading') else 'follower'}, "
                     f"sees leader {v.get('leader')}, failing {v.get('failing')}/{v.get('total')}, "
                     f"failed: {failed}" + (f", etcd: {v['etcd']}" if v.get("etcd") else ""))
    r = report.get("openRemediation")
    if r:
        lines.append(f"open remediation {r['id']}: done {', '.join(r.get('done') or []) or '-'}; "
                     f"held by {r.get('holder')} (token {r.get('token')})")
    return lines


# -- the CLI's entry points --------------------------------------------------------------------------


def coordinator(ctx: Context, etcd: str | None, name: str | None) -> Coordinator:
    """`run`'s coordinator: alone (Solo) unless etcd URLs come from --etcd or mac:watchdog.etcd."""
    topology = ctx.topology()
    urls = etcd or topology.watchdog.etcd
    if not urls:
        return Solo()
    s = topology.watchdog
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per lease renewal
    log.info("leadership on etcd %s: lease %d s, renewed every %g s", urls, s.lease_ttl_s, s.lease_renew_s)
    return Leadership(list(parse_endpoints(urls)), ctx.stack, ctx.stack_file, ctx.journal,
                      lambda: ctx.alerts(topology), name=name, ttl_s=s.lease_ttl_s,
                      renew_s=s.lease_renew_s)


def leader_status(etcd: str | None, stack: str) -> dict[str, Any] | None:
    """For `status`: the leadership report, None without etcd, or the reason etcd cannot tell."""
    if not etcd:
        return None
    client = Etcd(list(parse_endpoints(etcd)))
    try:
        return leadership_report(client, stack)
    except EtcdError as err:
        return {"leader": None, "watchdogs": [], "openRemediation": None, "error": str(err)}
    finally:
        client.close()


def take_the_lead(ctx: Context, etcd: str | None, command: str, wait_s: float = 3.0) -> Coordinator:
    """For a one-shot command that changes the cluster (`failover`, `reclaim`): alone, go ahead;
    beside watchdogs on etcd, act only as the leader, so never beside a watchdog that leads."""
    c = coordinator(ctx, etcd, f"{command}@{default_name()}")
    if not isinstance(c, Leadership):
        return c
    session = c.session
    session.wait_for(lambda: session.leading() is not None or session.leader is not None
                     or session.error is not None, wait_s)
    turn = c.turn(ctx.topology(), Failures()) if session.leading() is not None else None
    if turn is None or not turn.act:
        c.close()
        holder = (session.leader or {}).get("name")
        raise RemediationRefused(
            f"watchdog {holder} leads stack {ctx.stack} on etcd; let it act, or stop it first"
            if holder else f"cannot take the lead of stack {ctx.stack} on etcd: "
            f"{session.error or 'no answer'}")
    return c
