"""The stack file's schema: every `mac:` key, what it may hold, its default and its documentation.

One declaration read by the parser (components/topology.py), by `mac-watchdog validate` and its
messages, and by the generators of Pulumi.yaml's `config:` block and the README's key table
(`python -m components.schema readme|pulumi`); tests/unit/test_schema.py keeps the three equal.
"""

from __future__ import annotations

import difflib
import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from components import rules

NAMESPACE = "mac"
# Top-level keys of a stack file that the Pulumi CLI itself writes; kept as they are.
DOCUMENT_KEYS = ("config", "secretsprovider", "encryptedkey", "encryptionsalt", "environment")
SHOWN_CHARS = 60  # how much of a value a message shows


@dataclass(frozen=True)
class Number:
    """A numeric setting with its finite range; `low_open`: the low end itself is not allowed."""

    key: str
    attr: str
    integer: bool
    low: float
    high: float
    unit: str = ""
    low_open: bool = False
    out_of_range: str = ""  # the message when the value is out of range; default: the range

    @property
    def allowed(self) -> str:
        kind = "an integer" if self.integer else "a number"
        unit = f" {self.unit}" if self.unit else ""
        if self.low_open:
            return f"{kind} > {_num(self.low)} and <= {_num(self.high)}{unit}"
        return f"{kind} from {_num(self.low)} to {_num(self.high)}{unit}"

    def check(self, value: Any) -> tuple[Any, str | None]:
        """(the parsed value, None) or (None, what is wrong)."""
        value = rules.as_number(value)
        if isinstance(value, float) and not math.isfinite(value):
            return None, f"must be finite: {self.allowed}"
        ok = rules.is_finite_number(value)
        if ok and self.integer and not float(value).is_integer():
            ok = False
        if not ok:
            return None, f"must be {self.allowed}"
        below = value <= self.low if self.low_open else value < self.low
        if below or value > self.high:
            return None, self.out_of_range or f"is out of range: must be {self.allowed}"
        return (int(value) if self.integer else float(value)), None


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# mac:watchdog: stack key -> model field, with ranges that keep the watchdog sane.
WATCHDOG_NUMBERS: tuple[Number, ...] = (
    Number("interval", "interval_s", False, 0.01, 3600, "s"),
    Number("suspectInterval", "suspect_interval_s", False, 0, 3600, "s (and <= interval)", True,
           "must be > 0 and <= mac:watchdog.interval: suspect targets are re-probed at least as "
           "often as healthy ones"),
    Number("probeTimeout", "probe_timeout_s", False, 0, 60, "s", True),
    Number("failThreshold", "fail_threshold", True, 1, 100),
    Number("failAfter", "fail_after_s", False, 0, 3600, "s"),
    Number("recoverThreshold", "recover_threshold", True, 1, 100),
    Number("maxUnhealthyShare", "max_unhealthy_share", False, 0, 1, "", True),
    Number("cooldown", "cooldown_s", False, 0, 86400, "s"),
    Number("remediationsPerHour", "remediations_per_hour", True, 0, 60),
    Number("replaceAttempts", "replace_attempts", True, 0, 10),
    Number("verifyTimeout", "verify_timeout_s", False, 0, 86400, "s", True),
    Number("upTimeout", "up_timeout_s", False, 0, 86400, "s", True),
    # Several watchdogs on etcd (watchdog.leader): the leadership lease, whole seconds as etcd
    # takes it, and how often it is renewed (at least three renewals per TTL).
    Number("leaseTtl", "lease_ttl_s", True, 2, 60, "s", False,
           "must be 2..60 s (etcd's shortest lease is 2 s)"),
    Number("leaseRenew", "lease_renew_s", False, 0, 20, "s (and <= a third of leaseTtl)", True,
           "must be > 0 and <= a third of mac:watchdog.leaseTtl"),
)
# String settings: stack key -> model field, and the rule each value must follow.
WATCHDOG_STRINGS = {"webhookUrl": "webhook_url", "etcd": "etcd"}
WATCHDOG_STRING_RULES = {"webhookUrl": rules.http_url, "etcd": rules.http_url_list}
SIZE_NUMBERS: tuple[Number, ...] = (
    Number("vcpu", "vcpu", True, 1, 256),
    Number("memoryMiB", "memory_mib", True, 256, 4 * 1024 * 1024, "MiB"),
    Number("diskGiB", "disk_gib", True, 1, 65536, "GiB"),
)
NETWORK_FIELDS = ("bridge", "cidr", "gateway", "dns", "vip")
IMAGE_FIELDS = ("source", "kernel", "initrd", "cmdline")
HOST_FIELDS = ("uri", "address", "fence", "poolPath", "domainType")
NODE_FIELDS = ("role", "host", "ip")
MAX_HOSTS = 100
MAX_NODES = 500


@dataclass(frozen=True)
class Key:
    """One top-level `mac:` key: its shape, whether required or secret, and its documentation."""

    name: str
    shape: str  # object | map | list | string | boolean | secret
    summary: str  # the README's "what it means"
    allowed: str  # the README's "allowed values"
    required: bool = False
    default: Any = None
    description: str = ""  # Pulumi.yaml's one-line description; the summary when empty

    @property
    def full(self) -> str:
        return f"{NAMESPACE}:{self.name}"


def _numbers(numbers: Iterable[Number]) -> str:
    return "; ".join(f"`{n.key}` {n.allowed}" for n in numbers)


KEYS: tuple[Key, ...] = (
    Key("network", "object", required=True,
        summary="The bridge on every host the VMs attach to, the VM subnet, its gateway and resolvers; "
        "with `vip`, the floating IP of a load-balancer pair (keepalived VRRP).",
        allowed="`{bridge, cidr, gateway, dns: [IP...], vip}`: `bridge` " + rules.BRIDGE_RULE
        + "; `cidr` an IPv4 network (`192.168.50.0/24`); `gateway` an IP inside it; `dns` IPs. "
        "Every node IP lies inside `cidr` and is not the gateway. `vip` (optional): an IP inside "
        "`cidr`, not the gateway nor a node's IP; set it with exactly 2 `lb` nodes, leave it out "
        "with 1.",
        description="VM network: {bridge, cidr, gateway, dns: [IP...], vip}. Every node IP lies "
        "inside cidr. vip: the floating IP of a pair of lb nodes (optional)."),
    Key("image", "object", required=True,
        summary="The base image every root volume is cloned from: one for all roles, or one per "
        "role (`make images` builds one per tier). With `kernel` and `initrd` the VMs boot that "
        "kernel directly (golden images without a boot loader).",
        allowed="`{source, kernel, initrd, cmdline}` or `{mysql: {...}, web: {...}, lb: {...}}` "
        "(every role with nodes). `source`: an http(s):// URL or a path; `kernel`, `initrd` "
        "(both or neither): paths. A path is absolute or relative to the project directory (where "
        "Pulumi.yaml is, e.g. `.images/mysql.qcow2`), read on the machine that runs `pulumi` (or "
        "the watchdog) and uploaded into every live host's pool; its file name of a-z A-Z 0-9 . _ "
        "+ -. `cmdline` (only with `kernel`): the kernel command line, printable ASCII words "
        f"(default `{rules.DEFAULT_KERNEL_CMDLINE}`).",
        description="Base image, one for all roles or one per role ({mysql: {...}, web: {...}, "
        "lb: {...}}): {source: http(s) URL or path, kernel, initrd: paths for direct kernel "
        "boot, cmdline}. Paths are absolute or relative to the project directory, read on the "
        "machine that runs pulumi (or the watchdog) and uploaded into every host's pool. Every "
        "VM's root volume is a copy-on-write clone of its role's image."),
    Key("hosts", "map", required=True,
        summary="Each physical host, by name.",
        allowed="`NAME -> {uri, address, fence, poolPath, domainType}`. NAME: " + rules.NAME_RULE
        + ". `uri`: its libvirt URI (`qemu+ssh://root@HOST[:PORT]/system`, `qemu+tcp://...`, "
        "`qemu:///system`, `qemu+unix:///system?socket=...`, `test:///default`). `address`: an IP or host "
        "name without a port, probed on TCP 22. `fence`: a command line that powers the host off "
        "(split like a shell line, run without a shell; for a BMC `fence_ipmilan ... --action off`, "
        "see *Fencing with IPMI*), or "
        "`none` to let the watchdog act without fencing. `poolPath`: the storage pool directory "
        "(default `/var/lib/libvirt/mac`), " + rules.PATH_RULE + ". `domainType`: `kvm` (default) or "
        "`qemu` for hosts without KVM.",
        description="Physical KVM hosts: name -> {uri: libvirt URI (qemu+ssh://root@HOST[:PORT]/system, "
        "qemu+tcp://..., qemu+unix:///system?socket=...), address: management IP or host name "
        "probed on SSH port 22, fence: power-off command "
        "or 'none', poolPath, domainType: kvm|qemu}."),
    Key("spares", "list", default=[],
        summary="Hosts kept idle and warm (pool and every base image ready, no nodes).",
        allowed="a list of names from `mac:hosts`, e.g. `[spare1]`.",
        description="Names of hosts kept idle as warm spares (pool and base image ready, no nodes)."),
    Key("failedHosts", "list", default=[],
        summary="Hosts the watchdog took out of service. Nothing is managed on them; "
        "`mac-watchdog reclaim HOST` puts a repaired one back as a spare. Every deploy also "
        "records them in the stack's state (see *Guarantees*), so an older copy of this file "
        "cannot bring them back.",
        allowed="a list of names from `mac:hosts`, none of them a spare.",
        description="Hosts the watchdog took out of service; the program manages nothing on them. "
        "Remove a host from here with `mac-watchdog reclaim HOST`."),
    Key("nodes", "map", required=True,
        summary="The VMs, by name. A node keeps its name and IP when it moves.",
        allowed="`NAME -> {role, host, ip}`. NAME: " + rules.NAME_RULE + ". `role` `mysql` "
        "(exactly 2), `web` (at least 2) or `lb` (at least 1; exactly 2 with `mac:network.vip`, on "
        "distinct hosts; garbd runs on the first by name); `host` a name in `mac:hosts`; `ip` "
        "inside `mac:network.cidr`, unique. Nodes of one role sit on distinct hosts.",
        description="VMs: name -> {role: mysql|web|lb, host: a name in hosts, ip: static IP}. A node "
        "keeps name and IP when it moves."),
    Key("sizes", "object", default={},
        summary="Optional per-role VM sizes (defaults: mysql 2/2048/20, web 1/1024/10, lb 1/512/8).",
        allowed="`{mysql|web|lb: {vcpu, memoryMiB, diskGiB}}`: " + _numbers(SIZE_NUMBERS) + ".",
        description="Per-role VM size overrides: {mysql|web|lb: {vcpu, memoryMiB, diskGiB}}."),
    Key("watchdog", "object", default={},
        summary="Optional watchdog settings (seconds unless said). `suspectInterval` is the "
        "re-probe period of a target whose last probe failed (default 0.5); `upTimeout` how long "
        "a `pulumi up` may run before it is cancelled and retried with backoff (default 1800); "
        "`etcd` the etcd client URLs of several watchdogs on one stack, of which only the leader "
        "acts (see *Running several watchdogs*), `leaseTtl` its leadership lease (default 5) "
        "and `leaseRenew` how often the lease is renewed (default 1).",
        allowed=_numbers(WATCHDOG_NUMBERS) + "; `webhookUrl` an http(s):// URL; `etcd` one or "
        "more http(s):// URLs, comma-separated.",
        description="Watchdog settings: {"
        + ", ".join([*(n.key for n in WATCHDOG_NUMBERS), *WATCHDOG_STRINGS]) + "}."),
    Key("sshUser", "string", default="root",
        summary="Who the post-boot steps log in as (default `root`).",
        allowed=rules.USER_RULE + ".",
        description="User the post-boot steps log in as (default root)."),
    Key("sshPublicKey", "string", default="",
        summary="The key put into every VM's authorized_keys.",
        allowed="one OpenSSH public key line (`ssh-ed25519 AAAA... comment`).",
        description="Public key put into every VM's authorized_keys."),
    Key("clusterName", "string", default="mac",
        summary="Galera cluster name (default `mac`).",
        allowed=rules.NAME_RULE + ".",
        description="Galera cluster name (default mac)."),
    Key("postBoot", "boolean", default=True,
        summary="Run the post-boot steps over SSH. `false` only for test stacks whose VMs never "
        "boot (`stacks/Pulumi.ci.yaml`).",
        allowed="`true` (default) or `false` (also as the strings the Pulumi CLI writes).",
        description="Run the post-boot steps over SSH (wait for cloud-init, start Galera, app "
        "schema). false only for test stacks whose VMs never boot."),
    Key("sshPrivateKey", "secret",
        summary="The key the post-boot steps log in with; without it, your SSH agent.",
        allowed="a Pulumi secret (`pulumi config set --secret`), never plain text."),
    Key("dbRootPassword", "secret",
        summary="MariaDB root password; generated when unset.",
        allowed="a Pulumi secret (`pulumi config set --secret`), never plain text."),
    Key("dbAppPassword", "secret",
        summary="The app's DB password; generated when unset.",
        allowed="a Pulumi secret (`pulumi config set --secret`), never plain text."),
)
BY_NAME: dict[str, Key] = {k.name: k for k in KEYS}
# How Pulumi config hands each key to the program (components/pulumi_config.py).
STRUCTURED_KEYS = tuple(k.name for k in KEYS if k.shape in ("object", "map", "list"))
STRING_KEYS = tuple(k.name for k in KEYS if k.shape == "string")
BOOL_KEYS = tuple(k.name for k in KEYS if k.shape == "boolean")
SECRET_KEYS = tuple(k.name for k in KEYS if k.shape == "secret")


# ---- messages -------------------------------------------------------------------------------


def suggest(key: str, known: Iterable[str]) -> str:
    """`; did you mean X?` for the nearest known key, or an empty string."""
    known = list(known)
    folded = {k.lower(): k for k in known}
    match = folded.get(str(key).lower()) or next(
        iter(difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)), None)
    return f"; did you mean {match}?" if match else ""


def show(value: Any, limit: int = SHOWN_CHARS) -> str:
    """A short repr of `value`, never longer than `limit` (+ an ellipsis), whatever its size.

    Walks at most `limit` characters' worth of the value: an aliased YAML structure that expands
    to millions of items costs no more than a small one.
    """
    out: list[str] = []
    room = [limit + 1]

    def emit(text: str) -> None:
        out.append(text[: room[0]])
        room[0] -= len(text)

    def walk(v: Any, depth: int) -> None:
        if room[0] <= 0:
            return
        if isinstance(v, Mapping | list | tuple):
            items = list(v.items()) if isinstance(v, Mapping) else None
            opened, closed = ("{", "}") if items is not None else ("[", "]")
            emit(opened)
            if depth > 4:
                emit("...")
            for i, item in enumerate(v.items() if isinstance(v, Mapping) else v):
                if room[0] <= 0:
                    return
                if i:
                    emit(", ")
                if isinstance(v, Mapping):
                    walk(item[0], depth + 1)
                    emit(": ")
                    walk(item[1], depth + 1)
                else:
                    walk(item, depth + 1)
            emit(closed)
        elif isinstance(v, str):
            emit(repr(str(v)[: room[0]]) if len(v) > room[0] else repr(str(v)))
        elif isinstance(v, bool) or v is None:
            emit(repr(v))
        elif isinstance(v, int):
            emit(repr(int(v)) if v.bit_length() < 200 else f"<an integer of {v.bit_length()} bits>")
        elif isinstance(v, float):
            emit(repr(float(v)))
        else:
            emit(f"<{type(v).__name__}>")

    walk(value, 0)
    text = "".join(out)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def path_segment(key: Any) -> str:
    """A mapping key as shown in a problem's path: plain when it is a plain word, else quoted."""
    text = key if isinstance(key, str) else None
    if text is not None and text and len(text) <= 40 and all(c.isascii() and (c.isalnum() or c in "_-")
                                                             for c in text):
        return text
    return f"[{show(key, 40)}]"


# ---- generated documentation -----------------------------------------------------------------

README_HEADER = "| key | what it means | allowed values |\n|---|---|---|"


def readme_table() -> str:
    """The README's key table (between its `<!-- keys -->` markers)."""
    rows = [README_HEADER]
    for key in KEYS:
        required = " Required." if key.required else ""
        cells = (f"`{key.full}`", key.summary + required, key.allowed)
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


def pulumi_config() -> dict[str, dict[str, Any]]:
    """Pulumi.yaml's `config:` declarations (secrets are left out: see the comment there)."""
    declared: dict[str, dict[str, Any]] = {}
    for key in KEYS:
        if key.shape == "secret":
            continue
        spec: dict[str, Any] = {"description": key.description or key.summary}
        if not key.required:
            spec["default"] = key.default
        if key.shape == "list":
            spec["type"] = "array"
            spec["items"] = {"type": "string"}
        elif key.shape in ("string", "boolean"):
            spec["type"] = key.shape
        declared[key.name] = spec
    return declared


def _main(argv: list[str]) -> int:
    if argv == ["readme"]:
        print(readme_table())
        return 0
    if argv == ["pulumi"]:
        import json

        print(json.dumps(pulumi_config(), indent=2))
        return 0
    print("usage: python -m components.schema readme|pulumi", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
