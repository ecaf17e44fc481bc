"""Network plumbing for the lab: a bridge, one namespace + veth per node, links, tc netem."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path

ETC_NETNS = Path("/etc/netns")


class LabError(RuntimeError):
    """A lab step failed; the message says which command and why."""


class NetemUnavailable(LabError):
    """This kernel has no sch_netem (CONFIG_NET_SCH_NETEM), so no latency/loss injection."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["ip", *args], check=check)


def run(argv: Sequence[str], check: bool = True, input: str | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(list(argv), capture_output=True, text=True, input=input, timeout=timeout,
                         check=False)
    if check and out.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` exited {out.returncode}: {out.stderr.strip()}")
    return out


def veth_name(node: str) -> str:
    return f"mlv-{node}"[:15]  # IFNAMSIZ


def create_bridge(bridge: str, address: str, prefix: int) -> None:
    if not Path(f"/sys/class/net/{bridge}").exists():
        ip("link", "add", bridge, "type", "bridge")
    ip("addr", "replace", f"{address}/{prefix}", "dev", bridge)
    ip("link", "set", bridge, "up")


def delete_link(name: str) -> None:
    if Path(f"/sys/class/net/{name}").exists():
        ip("link", "del", name, check=False)


def create_namespace(ns: str, veth: str, address: str, prefix: int, bridge: str,
                     gateway: str) -> None:
    """A namespace with `lo` up and `eth0` = one end of a veth whose other end is on `bridge`."""
    if ns not in namespaces():
        ip("netns", "add", ns)
    ip("-n", ns, "link", "set", "lo", "up")
    delete_link(veth)
    ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
    ip("link", "set", veth, "master", bridge, "up")
    ip("-n", ns, "addr", "add", f"{address}/{prefix}", "dev", "eth0")
    ip("-n", ns, "link", "set", "eth0", "up")
    ip("-n", ns, "route", "add", "default", "via", gateway)


def write_etc(ns: str, hosts: Mapping[str, str]) -> Path:
    """resolv.conf + hosts that `ip netns exec` mounts over /etc: no 10 s DNS timeouts inside."""
    directory = ETC_NETNS / ns
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
    lines = ["127.0.0.1 localhost", *(f"{addr} {name}" for name, addr in hosts.items())]
    (directory / "hosts").write_text("\n".join(lines) + "\n")
    return directory


def namespaces() -> list[str]:
    out = ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def namespace_pids(ns: str) -> list[int]:
    out = ip("netns", "pids", ns, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def exited(pid: int) -> bool:
    """Gone, or a zombie with no thread left (it holds no files; only its parent can reap it).
    A killed thread-group leader shows Z while its other threads still exit."""
    try:
        zombie = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        return zombie and len(os.listdir(f"/proc/{pid}/task")) <= 1
    except OSError:
        return True


def group_members(pgids: Collection[int]) -> list[int]:
    """Every live process whose process group is one of `pgids` (field 5 of /proc/PID/stat)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in pgids and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def wait_exited(pids: Iterable[int], timeout_s: float = 10.0) -> list[int]:
    """Wait until every one of `pids` (just SIGKILLed) has exited; returns those still running.

    SIGKILL is delivered asynchronously: a daemon mid-syscall may still create or unlink files
    for a moment, which made a `shutil.rmtree` of its data directory fail.
    """
    pending = set(pids)
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        pending = {p for p in pending if not exited(p)}
        if pending:
            time.sleep(0.02)
    return sorted(pending)


def kill_namespace_processes(ns: str) -> list[int]:
    """SIGKILL every process inside `ns` (a node's daemons and all their children)."""
    killed = []
    for _ in range(5):  # a parent may fork while we kill: repeat until the namespace is empty
        pids = [p for p in namespace_pids(ns) if p != os.getpid() and not exited(p)]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
    return killed


def delete_namespace(ns: str) -> list[int]:
    """Kill what runs inside, remove the namespace; returns the PIDs killed (to wait for)."""
    killed = kill_namespace_processes(ns)
    if ns in namespaces():
        ip("netns", "del", ns, check=False)
    shutil.rmtree(ETC_NETNS / ns, ignore_errors=True)
    return killed


def set_link(veth: str, up: bool) -> None:
    """Cut (or restore) a node's link at the bridge: packets vanish, nobody gets a reset."""
    ip("link", "set", veth, "up" if up else "down")


def netem(ns: str, delay_ms: float = 0, loss_pct: float = 0) -> None:
    args = ["tc", "qdisc", "replace", "dev", "eth0", "root", "netem"]
    if delay_ms:
        args += ["delay", f"{delay_ms}ms"]
    if loss_pct:
        args += ["loss", f"{loss_pct}%"]
    out = run(["ip", "netns", "exec", ns, *args], check=False)
    if "qdisc kind is unknown" in out.stderr:
        raise NetemUnavailable("this kernel has no sch_netem (CONFIG_NET_SCH_NETEM is not set): "
                               "latency/loss injection needs a kernel with netem")
    if out.returncode != 0:
        raise LabError(f"tc netem in {ns} exited {out.returncode}: {out.stderr.strip()}")


def clear_netem(ns: str) -> None:
    run(["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", "eth0", "root"], check=False)


ISOLATION_PREF = "1050"  # before the main table (32766)


def isolation_rule(cidr: str) -> list[str]:
    """An `ip rule` that makes `cidr` unreachable from the root namespace only: what the watchdog
    sees when its own network fails. Bridged traffic between the namespaces is not routed, so the
    cluster itself keeps talking (Galera stays Primary)."""
    return ["to", cidr, "unreachable", "pref", ISOLATION_PREF]


def add_rule(rule: list[str]) -> None:
    ip("rule", "add", *rule)


def delete_rule(rule: list[str]) -> None:
    while ip("rule", "del", *rule, check=False).returncode == 0:
        pass  # added twice by a crashed run: remove every copy
