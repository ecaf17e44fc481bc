"""The remediation journal: JSONL in the state dir, one line per step before and after it runs.

A restarted watchdog reads it to resume an unfinished remediation at its next step (never
repeating a finished one) and to know its history (cooldown, hourly budget, replace attempts).
Each line is flushed and fsynced before the step it announces runs.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchdog.errors import JournalError
from watchdog.events import Event, EventKind, EventSink, ignore
from watchdog.plan import Action, History, Plan, Remediation, Step

log = logging.getLogger(__name__)

JOURNAL_FILE = "journal.jsonl"

STARTED, DONE, FAILED = "started", "done", "failed"
TAIL_CHUNK = 4096


@dataclass(frozen=True)
class Pending:
    """An unfinished remediation: its plan, which steps are done, and how often a step failed."""

    id: str
    plan: Plan
    started_at: float
    done: frozenset[Step]
    failures: int
    last_failure_at: float | None

    @property
    def next_step(self) -> Step | None:
        return next((s for s in self.plan.steps if s not in self.done), None)


def _drop_torn_tail(fd: int, path: Path) -> None:
    """Cut a last line torn by a crash mid-write (no newline: never a whole entry, and the step it
    announced never ran), so the next entry starts a line of its own instead of gluing onto it."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    keep = 0
    offset = size
    while offset > 0:
        start = max(0, offset - TAIL_CHUNK)
        chunk = os.pread(fd, offset - start, start)
        newline = chunk.rfind(b"\n")
        if newline >= 0:
            keep = start + newline + 1
            break
        offset = start
    os.ftruncate(fd, keep)
    log.warning("journal %s: dropped a line torn by a crash (%d bytes)", path, size - keep)


class Journal:
    def __init__(self, state_dir: str | Path, clock: Callable[[], float] = time.time,
                 events: EventSink = ignore) -> None:
        self.state_dir = Path(state_dir)
        self.events = events
        self.path = self.state_dir / JOURNAL_FILE
        self.clock = clock
        self._cache: tuple[tuple[int, int], list[dict[str, Any]]] | None = None

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        entry = {"ts": round(self.clock(), 3), **record}
        line = json.dumps(entry, separators=(",", ":"), sort_keys=False) + "\n"
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            # 0600: the plan holds the stack's host entries, fence commands included.
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            _drop_torn_tail(fd, self.path)
            with open(fd, "a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as err:
            raise JournalError(f"cannot write the journal {self.path}: {err.strerror}; "
                               "check --state-dir") from None
        self.events(Event(EventKind.JOURNALED, entry))
        return entry

    def entries(self) -> list[dict[str, Any]]:
        """Every entry, oldest first (parsed again only when the file changed)."""
        try:
            stat = self.path.stat()
            if self._cache is not None and self._cache[0] == (stat.st_size, stat.st_mtime_ns):
                return list(self._cache[1])
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as err:
            raise JournalError(f"cannot read the journal {self.path}: {err.strerror}") from None
        entries = self._parse(text)
        self._cache = ((stat.st_size, stat.st_mtime_ns), entries)
        return list(entries)

    def _parse(self, text: str) -> list[dict[str, Any]]:
        out = []
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                if i == len(lines) - 1:
                    break  # a line torn by a crash mid-write: the step it announced never ran
                raise JournalError(f"{self.path} line {i + 1} is not JSON; fix or move the journal "
                                   "aside after checking the cluster by hand") from None
        return out

    # -- writing ---------------------------------------------------------------------------------

    def begin(self, p: Plan, trigger: str) -> str:
        rid = uuid.uuid4().hex[:12]
        self.append({"event": "planned", "id": rid, "trigger": trigger, "plan": p.to_record()})
        return rid

    def step(self, rid: str, step: Step, status: str, **detail: Any) -> None:
        self.append({"event": "step", "id": rid, "step": step.value, "status": status, **detail})

    def finish(self, rid: str, outcome: str, **detail: Any) -> None:
        self.append({"event": "finished", "id": rid, "outcome": outcome, **detail})

    # -- reading ---------------------------------------------------------------------------------

    def pending(self) -> Pending | None:
        """The last remediation that never finished, if any."""
        entries = self.entries()
        finished = {e["id"] for e in entries if e.get("event") == "finished"}
        planned = [e for e in entries if e.get("event") == "planned" and e["id"] not in finished]
        if not planned:
            return None
        last = planned[-1]
        steps = [e for e in entries if e.get("event") == "step" and e["id"] == last["id"]]
        done = frozenset(Step(e["step"]) for e in steps if e["status"] == DONE)
        failed = [e for e in steps if e["status"] == FAILED]
        return Pending(last["id"], Plan.from_record(last["plan"]), last["ts"], done, len(failed),
                       failed[-1]["ts"] if failed else None)

    def history(self) -> History:
        items = []
        for e in self.entries():
            if e.get("event") != "planned":
                continue
            p = e["plan"]
            moved = tuple(m["node"] for m in p.get("moves", ()))
            hosts = tuple(sorted({m["from"] for m in p.get("moves", ())} | set(p.get("fence", ()))))
            items.append(Remediation(e["ts"], Action(p["action"]), hosts,
                                     tuple(p.get("replace", ())) + moved, moved))
        return History(tuple(items))
