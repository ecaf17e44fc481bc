"""Alerts: always a log line, and a JSON POST to the webhook when one is configured."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

from watchdog.events import Event, EventKind, EventSink, ignore
from watchdog.reasons import Reason

DEFAULT_ALERT_TIMEOUT_S = 5.0
log = logging.getLogger(__name__)


class Alerter:
    """Sends alerts; a failing webhook is logged, never raised (alerting must not stop healing)."""

    def __init__(self, webhook_url: str | None, stack: str, timeout_s: float = DEFAULT_ALERT_TIMEOUT_S,
                 client_factory: Callable[[], httpx.Client] | None = None,
                 events: EventSink = ignore) -> None:
        self.webhook_url = webhook_url
        self.stack = stack
        self.timeout_s = timeout_s
        self._client_factory = client_factory or (lambda: httpx.Client(timeout=timeout_s))
        self.events = events

    def alert(self, event: str, message: str, *, reason: Reason, **details: Any) -> bool:
        """Log the alert and POST it; True when the webhook accepted it (or none is configured).
        `reason` is the code a receiver routes and de-duplicates on; `message` is for people."""
        payload = {"stack": self.stack, "event": event, "reason": reason.value, "message": message,
                   "time": time.time(), **details}
        self.events(Event(EventKind.ALERT, payload))
        log.warning("ALERT %s (%s): %s", event, reason.value, message)
        if not self.webhook_url:
            return True
        try:
            with self._client_factory() as client:
                response = client.post(self.webhook_url, json=payload)
            if response.status_code >= 300:
                # The URL may carry a token: name the status, never the URL.
                log.error("alert webhook answered HTTP %s; alert only logged", response.status_code)
                return False
        except httpx.HTTPError as err:
            log.error("alert webhook unreachable (%s); alert only logged", type(err).__name__)
            return False
        return True
