"""Events: what the watchdog reports to whoever listens (tests, benchmarks), beside its log.

A listener is an `EventSink` passed in (`Context.events`, `mac-watchdog`'s `Seams`); the product
never looks at who listens, keeps no record of what it sent, and reads no hidden switch. The sink
runs in the thread that emits (the remediation worker, say): keep it quick.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    HEALTH = "health"  # the run loop saw a target change state (data: target, state, error)
    JOURNALED = "journaled"  # a journal entry was written and fsynced (data: the entry)
    ALERT = "alert"  # an alert was raised (data: the payload, as POSTed)
    PROBED = "probed"  # the run loop got a probe result (data: target, ok, latency_s, error)
    DECIDED = "decided"  # the run loop decided on detected failures (data: action, code, reason)
    # The run loop finished a round (data: round, refusing: the code of the refusal in force or
    # None, remediating, spares, failed_hosts). Only a live loop emits it: the service manager's
    # watchdog ping rides on it (watchdog.sdnotify).
    ROUND = "round"


@dataclass(frozen=True)
class Event:
    kind: EventKind
    data: Mapping[str, Any] = field(default_factory=dict)


EventSink = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The default sink: nobody listens."""


def fan_out(*sinks: EventSink) -> EventSink:
    """One sink that hands every event to each of `sinks`, in order."""
    chosen = [s for s in sinks if s is not ignore]
    if not chosen:
        return ignore
    if len(chosen) == 1:
        return chosen[0]

    def sink(event: Event) -> None:
        for each in chosen:
            each(event)
    return sink
