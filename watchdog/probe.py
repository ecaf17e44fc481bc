"""Probes: is each node's health endpoint answering 200, is each host's SSH port open?

Async, bounded concurrency, one timeout per probe that covers connect, headers and body. Nothing
here blocks the event loop. HTTP goes through `watchdog.http1` (one keep-alive connection per
target) by default, or through httpx with `backend="httpx"`; see http1.py for why.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Literal

import httpx

from watchdog.http1 import Connection, HttpError
from watchdog.target import Kind, ProbeResult, Target, TargetKey

DEFAULT_CONCURRENCY = 64
# Re-probes of suspect targets, on slots of their own: as many as the rounds have, so a burst of
# suspects hanging until their timeout (each holds a slot that long) does not queue the others'.
DEFAULT_FAST_CONCURRENCY = DEFAULT_CONCURRENCY
Backend = Literal["native", "httpx"]
Clock = Callable[[], float]


def _describe(err: BaseException) -> str:
    text = str(err).strip()
    if isinstance(err, ConnectionRefusedError) or (
            isinstance(err, httpx.ConnectError) and "all connection attempts failed" in text.lower()):
        return "connection refused"
    if isinstance(err, HttpError):
        return text
    name = type(err).__name__
    return f"{name}: {text}" if text else name


class Prober:
    """Runs probes with at most `concurrency` in flight and `timeout_s` for each one.

    Re-probes of suspect targets (`probe(target, fast=True)`) run on `fast_concurrency` slots of
    their own, so they never take a slot from the regular rounds: at most `concurrency +
    fast_concurrency` probes are in flight. The caller never probes one target twice at once
    (each target has one keep-alive connection).

    Use as `async with Prober(...) as prober:`; the HTTP client (and its keep-alive pool) lives as
    long as the block.
    """

    def __init__(self, timeout_s: float, concurrency: int = DEFAULT_CONCURRENCY,
                 clock: Clock = time.monotonic, backend: Backend = "native",
                 fast_concurrency: int = DEFAULT_FAST_CONCURRENCY) -> None:
        if timeout_s <= 0 or concurrency < 1 or fast_concurrency < 1:
            raise ValueError("timeout_s must be > 0, concurrency and fast_concurrency >= 1")
        self.timeout_s = timeout_s
        self.clock = clock
        self.backend = backend
        self._semaphore = asyncio.Semaphore(concurrency)
        self._fast_semaphore = asyncio.Semaphore(fast_concurrency)
        self._client: httpx.AsyncClient | None = None
        self._connections: dict[TargetKey, Connection] = {}
        self._concurrency = concurrency + fast_concurrency  # both lanes, for the httpx pool

    async def __aenter__(self) -> Prober:
        if self.backend == "httpx":
            limits = httpx.Limits(max_connections=self._concurrency,
                                  max_keepalive_connections=self._concurrency)
            # trust_env=False: a proxy from the environment must never sit between us and a node.
            self._client = httpx.AsyncClient(timeout=self.timeout_s, limits=limits, trust_env=False,
                                             follow_redirects=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()

    async def probe_all(self, items: Iterable[Target]) -> list[ProbeResult]:
        return list(await asyncio.gather(*(self.probe(t) for t in items)))

    async def probe_each(self, items: Iterable[Target]) -> AsyncIterator[ProbeResult]:
        """Probe concurrently and yield each result as it arrives, so one target hanging until
        its timeout does not hold back what the others already told us."""
        for next_result in asyncio.as_completed([self.probe(t) for t in items]):
            yield await next_result

    async def probe(self, target: Target, fast: bool = False) -> ProbeResult:
        """One probe; `fast` for a re-probe of a suspect target (its own slots)."""
        asked = self.clock()
        async with self._fast_semaphore if fast else self._semaphore:
            start = self.clock()
            ok, error = False, None
            try:
                async with asyncio.timeout(self.timeout_s):
                    if target.kind is Kind.HOST:
                        await self._tcp(target.address)
                        ok = True
                    else:
                        status = await self._http(target.key, target.address)
                        ok = status == 200
                        error = None if ok else f"HTTP {status}"
            except TimeoutError:
                error = f"timeout after {self.timeout_s:g} s"
                self._drop(target.key)
            except asyncio.CancelledError:
                self._drop(target.key)  # cut off mid-request: the connection is in no known state
                raise
            except (httpx.HTTPError, HttpError, OSError, asyncio.IncompleteReadError) as err:
                error = _describe(err)
                self._drop(target.key)
            end = self.clock()
            return ProbeResult(target.key, ok, end - start, error, end, asked)

    async def _http(self, key: TargetKey, url: str) -> int:
        if self.backend == "httpx":
            if self._client is None:
                raise RuntimeError("use Prober inside `async with`")
            response = await self._client.get(url)  # reads the whole body: a cut-off body fails
            return response.status_code
        connection = self._connections.get(key)
        if connection is None:
            connection = self._connections[key] = Connection(url)
        return await connection.get()

    def _drop(self, key: TargetKey) -> None:
        """Forget a connection left in an unknown state by an error or a timeout."""
        connection = self._connections.pop(key, None)
        if connection is not None:
            connection.close()

    @staticmethod
    async def _tcp(address: str) -> None:
        host, _, port = address.rpartition(":")
        _reader, writer = await asyncio.open_connection(host, int(port))
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def probe_once(items: Sequence[Target], timeout_s: float,
                     concurrency: int = DEFAULT_CONCURRENCY) -> list[ProbeResult]:
    """One round of probes with fresh connections (for one-shot commands)."""
    async with Prober(timeout_s, concurrency) as prober:
        return await prober.probe_all(items)
