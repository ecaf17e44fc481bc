"""Open-loop HTTP load at a fixed rate, with per-request outcomes for the drills and the bench.

Request i is due at start + i/rate; a bounded pool of worker threads (each with its own
keep-alive client) sends them. Every request carries a unique token, so the app's write is
idempotent and the drills can check that each acknowledged write is on every DB node.
"""

from __future__ import annotations

import http.client
import itertools
import json
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Outcome:
    index: int
    token: str
    sent: float  # monotonic seconds
    done: float
    status: int | None
    error: str | None = None
    connected: float | None = None  # when the (keep-alive) connection it went over was opened

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class LoadReport:
    outcomes: list[Outcome] = field(default_factory=list)
    started: float = 0.0

    @property
    def requests(self) -> int:
        return len(self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def acknowledged_tokens(self) -> set[str]:
        return {o.token for o in self.outcomes if o.ok}

    def longest_stall_s(self) -> float:
        """The longest time without any successful response (across all workers)."""
        done = sorted(o.done for o in self.outcomes if o.ok)
        if len(done) < 2:
            return float("inf") if self.outcomes else 0.0
        return max(b - a for a, b in itertools.pairwise(done))

    def latency_ms(self, quantile: float) -> float:
        values = sorted((o.done - o.sent) * 1000 for o in self.outcomes if o.ok)
        if not values:
            return float("nan")
        if len(values) == 1:
            return values[0]
        return statistics.quantiles(values, n=100, method="inclusive")[int(quantile * 100) - 1]

    def longest_request_s(self) -> float:
        """The longest a single client waited for an answer, whatever the answer."""
        return max((o.done - o.sent for o in self.outcomes), default=0.0)

    def summary(self) -> dict[str, float | int]:
        return {"requests": self.requests, "failed": len(self.failed),
                "longest_stall_s": round(self.longest_stall_s(), 3),
                "p50_ms": round(self.latency_ms(0.50), 2), "p99_ms": round(self.latency_ms(0.99), 2),
                "max_ms": round(self.longest_request_s() * 1000, 2)}


class Load:
    """`with Load(url, rate, duration) as load: ...; report = load.report()`."""

    def __init__(self, base_url: str, rate: float, duration_s: float, workers: int = 32,
                 path: str = "/index.php", timeout_s: float = 15.0, check_token: bool = True) -> None:
        url = urlsplit(base_url)
        self._host, self._port = url.hostname or "127.0.0.1", url.port or 80
        self.check_token = check_token
        self.rate = rate
        self.total = int(rate * duration_s)
        self.workers = workers
        self.path = path
        self.timeout_s = timeout_s
        self.run_id = uuid.uuid4().hex[:8]
        self._next = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._report = LoadReport()

    def __enter__(self) -> Load:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            self._stop.set()
        self.join()

    def start(self) -> None:
        self._report.started = time.monotonic() + 0.05
        for _ in range(self.workers):
            thread = threading.Thread(target=self._work, daemon=True)
            thread.start()
            self._threads.append(thread)

    def elapsed(self) -> float:
        return time.monotonic() - self._report.started

    def join(self) -> LoadReport:
        # Bounded: a cluster slower than the rate gets twice the planned time, then we stop.
        deadline = time.monotonic() + 2 * self.total / self.rate + self.timeout_s + 10
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._stop.set()
        return self.report()

    def report(self) -> LoadReport:
        with self._lock:
            return LoadReport(sorted(self._report.outcomes, key=lambda o: o.index),
                              self._report.started)

    def outcomes_since(self, count: int) -> list[Outcome]:
        """Outcomes after the first `count`, in the order they finished (for a live rate line)."""
        with self._lock:
            return self._report.outcomes[count:]

    def stop(self) -> None:
        """Send no more requests; those in flight finish (then `join`)."""
        self._stop.set()

    def _claim(self) -> int | None:
        with self._lock:
            if self._next >= self.total or self._stop.is_set():
                return None
            self._next += 1
            return self._next - 1

    def _work(self) -> None:
        # http.client, not httpx: a tenth of the CPU per request, and on a 2-core machine the
        # load generator competes with the cluster it measures.
        conn: http.client.HTTPConnection | None = None
        opened = 0.0
        while (index := self._claim()) is not None:
            due = self._report.started + index / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            token = f"{self.run_id}-{index}"
            sent = time.monotonic()
            status: int | None = None
            error = None
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout_s)
                    opened = sent
                conn.request("GET", f"{self.path}?token={token}")
                response = conn.getresponse()
                body = response.read()
                status = response.status
                if response.will_close:
                    conn.close()
                    conn = None
                if status == 200 and self.check_token and json.loads(body).get("token") != token:
                    status, error = None, "response for another token"
            except (OSError, http.client.HTTPException, ValueError) as err:
                error = f"{type(err).__name__}: {err}"
                if conn is not None:
                    conn.close()
                conn = None
            outcome = Outcome(index, token, sent, time.monotonic(), status, error, opened)
            with self._lock:
                self._report.outcomes.append(outcome)
        if conn is not None:
            conn.close()
