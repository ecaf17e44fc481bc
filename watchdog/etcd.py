"""A small etcd v3 client over etcd's JSON gateway (grpc-gateway) with httpx.

Only what leadership needs: ranges, puts, transactions and leases. Keys and values travel
base64-encoded, 64-bit numbers as strings, and proto3 leaves zero values out (a failed `txn` has
no `succeeded`, an expired lease no `TTL`). Endpoints are tried in turn; the last one that
answered is tried first next time.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from watchdog.errors import BadInput, WatchdogError

DEFAULT_ETCD_TIMEOUT_S = 1.0


class EtcdError(WatchdogError):
    """etcd answered with an error (a request it refused)."""


class EtcdUnavailable(EtcdError):
    """No endpoint answered in time, or the cluster has no leader (lost quorum)."""


def _b64(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode()


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_end(prefix: str) -> str:
    """The range_end that makes a range cover every key starting with `prefix`."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return bytes(raw).decode()


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int

    def json(self) -> Any:
        return json.loads(self.value)

    @classmethod
    def from_wire(cls, raw: Mapping[str, Any]) -> KeyValue:
        return cls(_unb64(raw.get("key")).decode(), _unb64(raw.get("value")),
                   int(raw.get("create_revision", 0)), int(raw.get("mod_revision", 0)),
                   int(raw.get("lease", 0)))


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int
    responses: list[dict[str, Any]]

    def kvs(self) -> list[KeyValue]:
        """The key-values of every range in the branch that ran."""
        out = []
        for r in self.responses:
            out += [KeyValue.from_wire(kv) for kv in r.get("response_range", {}).get("kvs", [])]
        return out


# Request builders for `txn`: plain dicts as the gateway takes them.
def compare_create(key: str, revision: int) -> dict[str, Any]:
    """True when `key` was created at `revision` (0: the key does not exist)."""
    return {"key": _b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": revision}


def put_op(key: str, value: Any, lease: int = 0) -> dict[str, Any]:
    body: dict[str, Any] = {"key": _b64(key), "value": _b64(json.dumps(value, separators=(",", ":")))}
    if lease:
        body["lease"] = str(lease)
    return {"request_put": body}


def range_op(key: str) -> dict[str, Any]:
    return {"request_range": {"key": _b64(key)}}


def parse_endpoints(text: str) -> tuple[str, ...]:
    """`http://a:2379,http://b:2379` -> the URLs; BadInput naming the bad one."""
    urls = tuple(u.strip().rstrip("/") for u in text.split(",") if u.strip())
    if not urls:
        raise BadInput("--etcd is empty; give one or more http://HOST:PORT client URLs, comma-separated")
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadInput(f"--etcd = {url!r}: not an http:// or https:// URL of an etcd member")
    return urls


class Etcd:
    """A blocking client; one instance per thread that uses it (httpx pools are per client)."""

    def __init__(self, endpoints: Sequence[str], timeout_s: float = DEFAULT_ETCD_TIMEOUT_S,
                 client_factory: Callable[[float], httpx.Client] | None = None) -> None:
        if not endpoints:
            raise BadInput("no etcd endpoints")
        self.endpoints = list(endpoints)
        self.timeout_s = timeout_s
        self._client = (client_factory or (lambda t: httpx.Client(timeout=t)))(timeout_s)
        self._first = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def call(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST `body` to `path` on the first endpoint that answers; EtcdUnavailable if none does."""
        problems = []
        with self._lock:
            order = self.endpoints[self._first:] + self.endpoints[:self._first]
        for url in order:
            try:
                response = self._client.post(url + path, json=body)
                answer = response.json()
            except (httpx.HTTPError, ValueError) as err:
                problems.append(f"{url}: {type(err).__name__}")
                continue
            if response.status_code == 200 and "error" not in answer:
                with self._lock:
                    self._first = self.endpoints.index(url)
                return dict(answer.get("result", answer))
            message = str(answer.get("message") or answer.get("error") or response.status_code)
            if _unavailable(message):
                problems.append(f"{url}: {message}")
                continue
            raise EtcdError(f"etcd {url}{path}: {message}")
        raise EtcdUnavailable("etcd unreachable or without quorum (" + "; ".join(problems) + ")")

    # -- kv --------------------------------------------------------------------------------------

    def get(self, key: str, serializable: bool = False) -> KeyValue | None:
        kvs = self.range(key, serializable=serializable)
        return kvs[0] if kvs else None

    def range(self, key: str, end: str | None = None, serializable: bool = False) -> list[KeyValue]:
        body: dict[str, Any] = {"key": _b64(key)}
        if end is not None:
            body["range_end"] = _b64(end)
        if serializable:
            body["serializable"] = True
        return [KeyValue.from_wire(kv) for kv in self.call("/v3/kv/range", body).get("kvs", [])]

    def prefix(self, prefix: str, serializable: bool = False) -> list[KeyValue]:
        return self.range(prefix, prefix_end(prefix), serializable)

    def put(self, key: str, value: Any, lease: int = 0) -> int:
        """Store `value` as JSON; the revision of the write."""
        answer = self.call("/v3/kv/put", put_op(key, value, lease)["request_put"])
        return int(answer.get("header", {}).get("revision", 0))

    def delete(self, key: str) -> None:
        self.call("/v3/kv/deleterange", {"key": _b64(key)})

    def txn(self, compare: Sequence[Mapping[str, Any]], success: Sequence[Mapping[str, Any]],
            failure: Sequence[Mapping[str, Any]] = ()) -> TxnResult:
        answer = self.call("/v3/kv/txn", {"compare": list(compare), "success": list(success),
                                          "failure": list(failure)})
        return TxnResult(bool(answer.get("succeeded", False)),
                         int(answer.get("header", {}).get("revision", 0)),
                         list(answer.get("responses", [])))

    # -- leases ----------------------------------------------------------------------------------

    def grant(self, ttl_s: int) -> int:
        return int(self.call("/v3/lease/grant", {"TTL": str(ttl_s)})["ID"])

    def keepalive(self, lease: int) -> int:
        """Renew `lease`: its TTL in seconds, 0 when it has expired already."""
        return int(self.call("/v3/lease/keepalive", {"ID": str(lease)}).get("TTL", 0))

    def revoke(self, lease: int) -> None:
        self.call("/v3/lease/revoke", {"ID": str(lease)})


def _unavailable(message: str) -> bool:
    """Errors that say "this member cannot serve now" (try another), not "your request is wrong"."""
    return any(s in message for s in ("no leader", "timed out", "unavailable", "not capable",
                                      "leader changed", "too many requests", "stopped"))
