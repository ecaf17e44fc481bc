"""Probes: is each node's self-check answering 200 (and what it reports), is each host's SSH port
open?

Async, bounded concurrency, one timeout per probe that covers connect, headers and body. Nothing
here blocks the event loop. How a probe reaches its target is a `Transport`: `NativeTransport`
(`watchdog.http1`, one keep-alive connection per target; see http1.py for why) by default,
`HttpxTransport` with `backend="httpx"`, or any transport passed in (as httpx's `MockTransport`
is: tests answer probes without patching the Prober).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Literal, NamedTuple, Protocol

import httpx

from watchdog.http1 import Connection, HttpError
from watchdog.target import Kind, ProbeResult, SelfReport, Target, TargetKey

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


class Answer(NamedTuple):
    """An HTTP answer to a probe: the status and the body."""

    status: int
    body: bytes = b""


class Transport(Protocol):
    """How probes reach targets; one per Prober block, closed with it."""

    async def http_get(self, key: TargetKey, url: str) -> Answer | int:
        """GET `url` and read the whole response; the answer (a bare status: no body read).
        Raises OSError, HttpError or httpx.HTTPError when there is no answer."""

    async def connect(self, address: str) -> None:
        """Reach HOST:PORT and read its SSH banner (`ssh_banner`); raises OSError when not."""

    def drop(self, key: TargetKey) -> None:
        """Forget the connection of `key`: an error or a timeout left it in an unknown state."""

    async def aclose(self) -> None: ...


# (per-probe timeout, connections at most) -> a transport for one Prober block
TransportFactory = Callable[[float, int], Transport]


SSH_BANNERS = (b"SSH-2.0-", b"SSH-1.99-")
SSH_BANNER_MAX = 255  # RFC 4253 4.2: the identification line is at most 255 bytes


async def ssh_banner(address: str) -> None:
    """Connect to HOST:PORT and read sshd's identification line: a middlebox or a dead host's
    port forwarder that merely accepts connections does not make a host up. Raises OSError."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        line = await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if not line.startswith(SSH_BANNERS):
        shown = line[:24].decode("ascii", "replace").strip() or "nothing"
        raise ConnectionError(f"no SSH banner (got {shown!r})")


async def tcp_connect(address: str) -> None:
    host, _, port = address.rpartition(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


class NativeTransport:
    """HTTP/1.1 through `watchdog.http1`: one keep-alive connection per target."""

    def __init__(self, timeout_s: float = 0.0, max_connections: int = 0) -> None:
        self._connections: dict[TargetKey, Connection] = {}

    async def http_get(self, key: TargetKey, url: str) -> Answer:
        connection = self._connections.get(key)
        if connection is None:
            connection = self._connections[key] = Connection(url)
        return Answer(*await connection.fetch())

    async def connect(self, address: str) -> None:
        await ssh_banner(address)

    def drop(self, key: TargetKey) -> None:
        connection = self._connections.pop(key, None)
        if connection is not None:
            connection.close()

    async def aclose(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()


class HttpxTransport:
    """HTTP through an httpx client with a keep-alive pool of `max_connections`."""

    def __init__(self, timeout_s: float, max_connections: int) -> None:
        limits = httpx.Limits(max_connections=max_connections,
                              max_keepalive_connections=max_connections)
        # trust_env=False: a proxy from the environment must never sit between us and a node.
        self._client = httpx.AsyncClient(timeout=timeout_s, limits=limits, trust_env=False,
                                         follow_redirects=False)

    async def http_get(self, key: TargetKey, url: str) -> Answer:
        response = await self._client.get(url)  # reads the whole body: a cut-off body fails
        return Answer(response.status_code, response.content)

    async def connect(self, address: str) -> None:
        await ssh_banner(address)

    def drop(self, key: TargetKey) -> None:
        pass  # the pool discards a broken connection itself

    async def aclose(self) -> None:
        await self._client.aclose()


BACKENDS: dict[str, TransportFactory] = {"native": NativeTransport, "httpx": HttpxTransport}


class Prober:
    """Runs probes with at most `concurrency` in flight and `timeout_s` for each one.

    Re-probes of suspect targets (`probe(target, fast=True)`) run on `fast_concurrency` slots of
    their own, so they never take a slot from the regular rounds: at most `concurrency +
    fast_concurrency` probes are in flight. The caller never probes one target twice at once
    (each target has one keep-alive connection).

    Use as `async with Prober(...) as prober:`; the transport (and its keep-alive connections)
    lives as long as the block. `transport` makes it (default: the one named by `backend`).
    """

    def __init__(self, timeout_s: float, concurrency: int = DEFAULT_CONCURRENCY,
                 clock: Clock = time.monotonic, backend: Backend = "native",
                 fast_concurrency: int = DEFAULT_FAST_CONCURRENCY,
                 transport: TransportFactory | None = None) -> None:
        if timeout_s <= 0 or concurrency < 1 or fast_concurrency < 1:
            raise ValueError("timeout_s must be > 0, concurrency and fast_concurrency >= 1")
        self.timeout_s = timeout_s
        self.clock = clock
        self._make_transport = transport or BACKENDS[backend]
        self._transport: Transport | None = None
        self._semaphore = asyncio.Semaphore(concurrency)
        self._fast_semaphore = asyncio.Semaphore(fast_concurrency)
        self._concurrency = concurrency + fast_concurrency  # both lanes, for a connection pool

    async def __aenter__(self) -> Prober:
        self._transport = self._make_transport(self.timeout_s, self._concurrency)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._transport is not None:
            await self._transport.aclose()
            self._transport = None

    @property
    def transport(self) -> Transport:
        if self._transport is None:
            raise RuntimeError("use Prober inside `async with`")
        return self._transport

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
        transport = self.transport
        async with self._fast_semaphore if fast else self._semaphore:
            start = self.clock()
            ok, error, report = False, None, SelfReport()
            try:
                async with asyncio.timeout(self.timeout_s):
                    if target.kind is Kind.HOST:
                        await transport.connect(target.address)
                        ok = True
                    else:
                        answer = await transport.http_get(target.key, target.address)
                        status, body = (answer, b"") if isinstance(answer, int) else answer
                        ok = status == 200
                        error = None if ok else f"HTTP {status}"
                        if ok:
                            report = SelfReport.parse(body)
            except TimeoutError:
                error = f"timeout after {self.timeout_s:g} s"
                transport.drop(target.key)
            except asyncio.CancelledError:
                transport.drop(target.key)  # cut off mid-request: the connection is in no known state
                raise
            except (httpx.HTTPError, HttpError, OSError, asyncio.IncompleteReadError) as err:
                error = _describe(err)
                transport.drop(target.key)
            end = self.clock()
            return ProbeResult(target.key, ok, end - start, error, end, asked, report.degraded,
                               report.sees)
