"""What the running watchdog last saw of each target, and since when: STATE_DIR/health.json.

`mac-watchdog run` keeps it (a `HealthBook` listens to the loop's HEALTH events); `status` reads
it to say since when a target is failed in the watchdog's eyes, beside its own one-shot probe.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import Event, EventKind

SEEN_FILE = "health.json"


@dataclass(frozen=True)
class Seen:
    state: str  # watchdog.detect.State value
    since: float  # Unix time of the change
    error: str | None = None


class HealthBook:
    """An event sink writing every target's state and since-when, atomically, on each change."""

    def __init__(self, state_dir: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(state_dir) / SEEN_FILE
        self._clock = clock
        self._seen: dict[str, dict[str, object]] = {}

    def __call__(self, event: Event) -> None:
        if event.kind is not EventKind.HEALTH:
            return
        self._seen[str(event.data["target"])] = {
            "state": event.data["state"], "since": round(self._clock(), 3), "error": event.data.get("error")}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._seen, indent=1, sort_keys=True))
        os.replace(tmp, self.path)


def read_seen(state_dir: Path) -> dict[str, Seen]:
    """target (`node:db1`) -> what the watchdog saw; empty when no watchdog wrote the file."""
    try:
        raw = json.loads((Path(state_dir) / SEEN_FILE).read_text())
        return {k: Seen(str(v["state"]), float(v["since"]), v.get("error")) for k, v in raw.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
