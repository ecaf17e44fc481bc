"""The cluster's topology: typed model, parsing from stack config and validation.

This is the single source of truth that both the Pulumi program and the watchdog read. It has no
Pulumi imports: the stack file reader/writer lives in `components/stack_file.py`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from components import rules, schema
from components.rules import FENCE_NONE as FENCE_NONE  # re-exported: the watchdog imports it here
from components.schema import BOOL_KEYS as BOOL_KEYS
from components.schema import NAMESPACE, path_segment, show, suggest
from components.schema import STRING_KEYS as STRING_KEYS
from components.schema import STRUCTURED_KEYS as STRUCTURED_KEYS


class Role(StrEnum):
    MYSQL = "mysql"
    WEB = "web"
    LB = "lb"


# Minimum number of nodes per role for a working Medium Availability Cluster.
MIN_NODES: dict[Role, int] = {Role.MYSQL: 2, Role.WEB: 2, Role.LB: 1}
# Exactly this many nodes for roles with an upper bound (Galera with garbd on the LB: 2 data nodes).
MAX_NODES: dict[Role, int] = {Role.MYSQL: 2}


@dataclass(frozen=True)
class HealthEndpoint:
    """Where a role answers its health check: HTTP 200 means healthy."""

    port: int
    path: str


# One place for the ports and paths that roles serve and the watchdog probes.
HEALTH_ENDPOINTS: dict[Role, HealthEndpoint] = {
    Role.MYSQL: HealthEndpoint(9200, "/"),  # clustercheck: 200 only when wsrep_local_state=4
    Role.WEB: HealthEndpoint(80, "/health.php"),  # 200 only when SELECT 1 succeeds
    Role.LB: HealthEndpoint(8404, "/healthz"),  # HAProxy monitor-uri
}
# What the watchdog probes: the node's own service, whatever its dependencies do. 200 while the
# node works; the JSON body names a degraded dependency (`degraded`: a reason, or null) and the
# peers this node sees up (`sees`: {IP: true|false}). A node is never failed for a dependency.
# HAProxy keeps routing on the strict HEALTH_ENDPOINTS above.
SELF_ENDPOINTS: dict[Role, HealthEndpoint] = {
    Role.MYSQL: HealthEndpoint(9200, "/node"),  # clustercheck: 200 while mysqld answers
    Role.WEB: HealthEndpoint(80, "/alive.php"),  # 200 while Apache + PHP serve the app
    Role.LB: HealthEndpoint(8404, "/node"),  # HAProxy answers, with or without backends
}
LB_HTTP_PORT = 80
MYSQL_PORT = 3306
GALERA_PORT = 4567
SSH_PORT = 22

DEFAULT_POOL_PATH = "/var/lib/libvirt/mac"
DEFAULT_KERNEL_CMDLINE = rules.DEFAULT_KERNEL_CMDLINE
DOMAIN_TYPES = ("kvm", "qemu")
URI_SCHEMES = ("qemu", "qemu+ssh", "qemu+tcp", "qemu+unix", "test")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a stack config: where, what value, and what to do."""

    path: str
    value: Any
    message: str

    def __str__(self) -> str:
        """One line, however long or hostile the value: values are shortened (schema.show)."""
        message = " ".join(self.message.split())
        if self.value is None:
            return f"{self.path}: {message}"
        return f"{self.path} = {show(self.value)}: {message}"


class TopologyError(ValueError):
    """A stack config that does not describe a valid cluster; holds every problem found."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class Host:
    """A physical KVM host, reached by libvirt at `uri` and probed at `address`."""

    name: str
    uri: str
    address: str
    fence: str | None = None  # shell command that powers the host off; "none" to opt out
    pool_path: str = DEFAULT_POOL_PATH
    domain_type: str = "kvm"  # "qemu" for hosts without KVM (software emulation, TCG)


@dataclass(frozen=True)
class Node:
    """A VM with one role. It keeps its name and IP when it moves to another host."""

    name: str
    role: Role
    host: str
    ip: str


@dataclass(frozen=True)
class Network:
    bridge: str
    cidr: str
    gateway: str
    dns: tuple[str, ...] = ()
    vip: str | None = None  # the floating IP of a load-balancer pair (keepalived VRRP)

    @property
    def prefix_len(self) -> int:
        return ipaddress.ip_network(self.cidr, strict=False).prefixlen


@dataclass(frozen=True)
class Image:
    """What a VM's root volume is cloned from and, for direct kernel boot, the kernel it boots.

    Paths are read on the machine that runs pulumi; a relative one from the project directory.
    """

    source: str  # an http(s) URL or a path
    kernel: str | None = None  # kernel and initrd go together
    initrd: str | None = None
    cmdline: str | None = None  # only with a kernel; None: DEFAULT_KERNEL_CMDLINE

    @property
    def kernel_cmdline(self) -> str | None:
        """The command line the kernel gets; None without direct kernel boot."""
        if self.kernel is None:
            return None
        return self.cmdline if self.cmdline is not None else DEFAULT_KERNEL_CMDLINE


@dataclass(frozen=True)
class Size:
    vcpu: int
    memory_mib: int
    disk_gib: int


DEFAULT_SIZES: dict[Role, Size] = {
    Role.MYSQL: Size(vcpu=2, memory_mib=2048, disk_gib=20),
    Role.WEB: Size(vcpu=1, memory_mib=1024, disk_gib=10),
    Role.LB: Size(vcpu=1, memory_mib=512, disk_gib=8),
}


@dataclass(frozen=True)
class WatchdogSettings:
    """How the watchdog probes, decides and acts (stack key `mac:watchdog`)."""

    interval_s: float = 1.0
    probe_timeout_s: float = 0.8
    fail_threshold: int = 3  # consecutive failed probes before "failed"...
    fail_after_s: float = 1.0  # ...spanning at least this long
    recover_threshold: int = 3  # consecutive good probes before "healthy" again
    max_unhealthy_share: float = 0.5  # more than this failing at once: suspect our own network
    cooldown_s: float = 300.0
    remediations_per_hour: int = 3
    replace_attempts: int = 2  # in-place replacements of a node before moving it
    verify_timeout_s: float = 600.0
    webhook_url: str | None = None
    up_timeout_s: float = 1800.0  # a `pulumi up` running longer is cancelled and retried
    # A target whose last probe failed (suspect) is probed again this often until it is failed or
    # healthy (HAProxy's `fastinter`). Never slower than `interval_s`: when left at the default
    # under a shorter interval, the interval is used (watchdog.detect.reprobe_interval).
    suspect_interval_s: float = 0.5
    # Several watchdogs (watchdog.leader): etcd client URLs, comma-separated; the leadership
    # lease's TTL (whole seconds, as etcd takes it) and how often it is renewed.
    etcd: str | None = None
    lease_ttl_s: int = 5
    lease_renew_s: float = 1.0


# Stack key (camelCase, as in the stack file) -> (dataclass field, type); ranges in schema.py.
WATCHDOG_KEYS: dict[str, tuple[str, type]] = {
    **{n.key: (n.attr, int if n.integer else float) for n in schema.WATCHDOG_NUMBERS},
    **{key: (attr, str) for key, attr in schema.WATCHDOG_STRINGS.items()},
}


@dataclass(frozen=True)
class Topology:
    """What the cluster is. Immutable: changes produce a new Topology (see `with_`)."""

    network: Network
    image: Image | Mapping[Role, Image]  # one for all roles, or one per role (see image_of)
    hosts: Mapping[str, Host]
    nodes: Mapping[str, Node]
    spares: tuple[str, ...] = ()
    failed_hosts: tuple[str, ...] = ()
    sizes: Mapping[Role, Size] = field(default_factory=lambda: dict(DEFAULT_SIZES))
    watchdog: WatchdogSettings = field(default_factory=WatchdogSettings)
    ssh_user: str = "root"
    ssh_public_key: str | None = None
    cluster_name: str = "mac"
    post_boot: bool = True  # False: no post-boot SSH steps (a test stack whose VMs never boot)

    def nodes_on(self, host: str) -> list[Node]:
        return [n for n in self.nodes.values() if n.host == host]

    def nodes_of(self, role: Role) -> list[Node]:
        return sorted((n for n in self.nodes.values() if n.role == role), key=lambda n: n.name)

    @property
    def active_hosts(self) -> list[str]:
        """Hosts that are neither spare nor failed (they may run nodes)."""
        idle = set(self.spares) | set(self.failed_hosts)
        return [h for h in self.hosts if h not in idle]

    @property
    def live_hosts(self) -> list[str]:
        """Hosts the Pulumi program manages: every host that is not recorded as failed."""
        return [h for h in self.hosts if h not in self.failed_hosts]

    def image_of(self, role: Role) -> Image:
        """The image `role`'s VMs are cloned from (and boot, with a kernel)."""
        if isinstance(self.image, Image):
            return self.image
        return self.image[role]

    @property
    def images(self) -> tuple[Image, ...]:
        """Every distinct image, in role order: what each live host keeps ready."""
        if isinstance(self.image, Image):
            return (self.image,)
        return tuple(dict.fromkeys(self.image[r] for r in Role if r in self.image))

    @property
    def image_per_role(self) -> bool:
        return not isinstance(self.image, Image)

    def size_of(self, role: Role) -> Size:
        return self.sizes.get(role, DEFAULT_SIZES[role])

    @property
    def front_ip(self) -> str:
        """Where clients and the app's DB writer path reach the LB: the VIP of a pair, else the
        one LB's own IP."""
        return self.network.vip or self.nodes_of(Role.LB)[0].ip

    @property
    def arbitrator(self) -> Node:
        """The LB that runs garbd: the first by name. Exactly one, with one LB or a pair: two
        arbitrators and two data nodes make four Galera votes, and a 2/2 split (one host with a
        DB node and an LB each side) would leave neither side a majority."""
        return self.nodes_of(Role.LB)[0]

    def health_url(self, node: Node) -> str:
        endpoint = HEALTH_ENDPOINTS[node.role]
        return f"http://{node.ip}:{endpoint.port}{endpoint.path}"

    def self_url(self, node: Node) -> str:
        """Where the watchdog probes `node` (SELF_ENDPOINTS)."""
        endpoint = SELF_ENDPOINTS[node.role]
        return f"http://{node.ip}:{endpoint.port}{endpoint.path}"

    def with_(self, **changes: Any) -> Topology:
        return replace(self, **changes)

    def move_nodes(self, names: Iterable[str], to_host: str) -> Topology:
        nodes = dict(self.nodes)
        for name in names:
            nodes[name] = replace(nodes[name], host=to_host)
        return replace(self, nodes=nodes)


# --------------------------------------------------------------------------------------------
# Parsing: raw config (the values under `mac:` keys) -> Topology, collecting every problem.
# What each key may hold is declared in components/schema.py; the value rules in rules.py.
# --------------------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    for kind, label in ((bool, "bool"), (str, "str"), (int, "int"), (float, "float"),
                        (Mapping, "mapping"), (list, "list")):
        if isinstance(value, kind):
            return label
    return "null" if value is None else type(value).__name__


class _Collector:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, path: str, value: Any, message: str) -> None:
        self.problems.append(Problem(path, value, message))

    def mapping(self, path: str, value: Any, required: bool = True,
                max_items: int | None = None) -> Mapping[Any, Any] | None:
        if value is None:
            if required:
                self.add(path, None, "is missing; add it to the stack file's config")
            return None
        if not isinstance(value, Mapping):
            self.add(path, value, f"must be a mapping, not {_type_name(value)}")
            return None
        if max_items is not None and len(value) > max_items:
            self.add(path, None, f"has {len(value)} entries; at most {max_items} are supported")
            return None
        return value

    def string(self, path: str, value: Any, required: bool = True,
               rule: Callable[[str], str | None] | None = None) -> str | None:
        if value is None or (value == "" and not required):  # "": Pulumi.yaml's default
            if required:
                self.add(path, None, "is missing; set it to a string")
            return None
        if not isinstance(value, str) or not value.strip():
            self.add(path, value, f"must be a non-empty string, not {_type_name(value)}")
            return None
        problem = rule(value) if rule is not None else None
        if problem is not None:
            self.add(path, value, problem)
            return None
        return str(value)

    def number(self, path: str, spec: schema.Number, value: Any) -> Any:
        parsed, problem = spec.check(value)
        if problem is not None:
            self.add(path, value, problem)
        return parsed

    def names(self, path: str, value: Any) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.add(path, value, "must be a list of names, e.g. [spare1]")
            return ()
        good = []
        for i, item in enumerate(value):
            problem = rules.name(item)
            if problem is None:
                good.append(str(item))
            else:
                self.add(f"{path}[{i}]", item, problem)
        return tuple(good)

    def unknown_keys(self, path: str, value: Mapping[Any, Any], allowed: Iterable[str]) -> None:
        allowed = list(allowed)
        for key in value:
            if key not in allowed:
                self.add(f"{path}.{path_segment(key)}", value[key],
                         f"unknown key{suggest(key, allowed)} (allowed: {', '.join(allowed)})")

    def named(self, path: str, raw: Mapping[Any, Any]) -> Iterator[tuple[str, str, Any]]:
        """(name, its path, its spec) for every entry whose name is a valid name."""
        for name, spec in raw.items():
            sub = f"{path}.{path_segment(name)}"
            problem = rules.name(name) if isinstance(name, str) else "must be a name (a string)"
            if problem is not None:
                self.add(sub, None, problem)
                continue
            yield str(name), sub, spec


def _key(name: str) -> str:
    return f"{NAMESPACE}:{name}"


def parse_topology(raw: Mapping[str, Any]) -> Topology:
    """Build a Topology from config values keyed without namespace (`hosts`, `nodes`, ...).

    Raises TopologyError listing every problem (types first, then the cluster rules).
    """
    c = _Collector()
    for key in raw:
        if key not in schema.BY_NAME:
            c.add(f"{NAMESPACE}:{path_segment(key)}", raw[key],
                  "unknown key" + (suggest(key, schema.BY_NAME)
                                   or "; the README's key table lists the known ones"))
    for key in schema.SECRET_KEYS:
        if key in raw and (problem := rules.secret(raw[key])) is not None:
            c.add(_key(key), None, problem)  # a secret's value is never shown
    network = _parse_network(c, raw.get("network"))
    image = _parse_image(c, raw.get("image"))
    hosts = _parse_hosts(c, raw.get("hosts"))
    nodes = _parse_nodes(c, raw.get("nodes"))
    spares = c.names(_key("spares"), raw.get("spares"))
    failed = c.names(_key("failedHosts"), raw.get("failedHosts"))
    sizes = _parse_sizes(c, raw.get("sizes"))
    watchdog = _parse_watchdog(c, raw.get("watchdog"))
    ssh_user = c.string(_key("sshUser"), raw.get("sshUser"), False, rules.user) or "root"
    ssh_key = c.string(_key("sshPublicKey"), raw.get("sshPublicKey"), False, rules.ssh_public_key)
    cluster = c.string(_key("clusterName"), raw.get("clusterName"), False, rules.name) or "mac"
    post_boot = rules.as_bool(raw.get("postBoot", True))
    if not isinstance(post_boot, bool):
        c.add(_key("postBoot"), raw.get("postBoot"), "must be true or false")
    if c.problems or network is None or image is None:
        raise TopologyError(c.problems)
    topology = Topology(
        network=network,
        image=image,
        hosts=hosts,
        nodes=nodes,
        spares=spares,
        failed_hosts=failed,
        sizes=sizes,
        watchdog=watchdog,
        ssh_user=ssh_user,
        ssh_public_key=ssh_key,
        cluster_name=cluster,
        post_boot=post_boot is not False,
    )
    problems = validate(topology)
    if problems:
        raise TopologyError(problems)
    return topology


def _parse_network(c: _Collector, value: Any) -> Network | None:
    path = _key("network")
    raw = c.mapping(path, value)
    if raw is None:
        return None
    c.unknown_keys(path, raw, schema.NETWORK_FIELDS)
    bridge = c.string(f"{path}.bridge", raw.get("bridge"), rule=rules.bridge)
    cidr = c.string(f"{path}.cidr", raw.get("cidr"))
    gateway = c.string(f"{path}.gateway", raw.get("gateway"))
    dns = _ips(c, f"{path}.dns", raw.get("dns"))
    vip = c.string(f"{path}.vip", raw.get("vip"), required=False)
    if vip is not None and not rules.is_ip(vip):
        c.add(f"{path}.vip", vip, "must be an IP address")
        vip = None
    if cidr is not None:
        try:
            net = ipaddress.ip_network(cidr, strict=True)
        except ValueError as err:
            # ipaddress's reason ("has host bits set") helps; it also repeats the whole value.
            why = f" ({err})" if len(str(err)) <= 80 else ""
            c.add(f"{path}.cidr", cidr, f"is not a network in CIDR form like 192.168.50.0/24{why}")
            cidr = None
        else:
            if net.version != 4:
                c.add(f"{path}.cidr", cidr, "must be an IPv4 network (the roles render IPv4 only)")
                cidr = None
    if gateway is not None and not rules.is_ip(gateway):
        c.add(f"{path}.gateway", gateway, "must be an IP address")
        gateway = None
    if bridge is None or cidr is None or gateway is None or dns is None:
        return None
    return Network(bridge=bridge, cidr=cidr, gateway=gateway, dns=dns, vip=vip)


def _ips(c: _Collector, path: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        c.add(path, value, "must be a list of IP addresses, e.g. [192.168.50.1]")
        return None
    bad = [i for i, server in enumerate(value) if not rules.is_ip(server)]
    for i in bad:
        c.add(f"{path}[{i}]", value[i], "must be an IP address")
    return None if bad else tuple(str(v) for v in value)


def _parse_image(c: _Collector, value: Any) -> Image | dict[Role, Image] | None:
    """One image for all roles (`{source, ...}`) or one per role (`{mysql: {source, ...}, ...}`):
    per role when no image field is among the keys and a role is, or every value is a mapping."""
    path = _key("image")
    raw = c.mapping(path, value)
    if raw is None:
        return None
    roles = [r.value for r in Role]
    per_role = not any(k in schema.IMAGE_FIELDS for k in raw) and (
        any(k in roles for k in raw) or (bool(raw) and all(isinstance(v, Mapping) for v in raw.values())))
    if not per_role:
        return _parse_one_image(c, path, raw)
    c.unknown_keys(path, raw, roles)
    images: dict[Role, Image] = {}
    for role in Role:
        if role.value in raw:
            spec = c.mapping(f"{path}.{role.value}", raw[role.value])
            image = _parse_one_image(c, f"{path}.{role.value}", spec) if spec is not None else None
            if image is not None:
                images[role] = image
    return images


def _parse_one_image(c: _Collector, path: str, raw: Mapping[Any, Any]) -> Image | None:
    c.unknown_keys(path, raw, schema.IMAGE_FIELDS)
    source = c.string(f"{path}.source", raw.get("source"), rule=rules.image_source)
    kernel = c.string(f"{path}.kernel", raw.get("kernel"), False, rules.local_file)
    initrd = c.string(f"{path}.initrd", raw.get("initrd"), False, rules.local_file)
    cmdline = c.string(f"{path}.cmdline", raw.get("cmdline"), False, rules.kernel_cmdline)
    both = "kernel and initrd go together (direct kernel boot): set both or neither"
    if raw.get("kernel") is not None and raw.get("initrd") is None:
        c.add(f"{path}.initrd", None, f"is missing; {both}")
    if raw.get("initrd") is not None and raw.get("kernel") is None:
        c.add(f"{path}.kernel", None, f"is missing; {both}")
    if raw.get("cmdline") is not None and raw.get("kernel") is None:
        c.add(f"{path}.cmdline", raw.get("cmdline"),
              "applies to direct kernel boot only; set kernel and initrd too, or drop it")
    if source is None or (kernel is None) != (initrd is None):
        return None
    return Image(source, kernel, initrd, cmdline)


def _parse_hosts(c: _Collector, value: Any) -> dict[str, Host]:
    path = _key("hosts")
    raw = c.mapping(path, value, max_items=schema.MAX_HOSTS)
    hosts: dict[str, Host] = {}
    for name, hpath, spec in c.named(path, raw or {}):
        spec_map = c.mapping(hpath, spec)
        if spec_map is None:
            continue
        c.unknown_keys(hpath, spec_map, schema.HOST_FIELDS)
        uri = c.string(f"{hpath}.uri", spec_map.get("uri"), rule=rules.libvirt_uri)
        address = c.string(f"{hpath}.address", spec_map.get("address"), rule=rules.address)
        fence = c.string(f"{hpath}.fence", spec_map.get("fence"), False, rules.fence)
        pool = c.string(f"{hpath}.poolPath", spec_map.get("poolPath"), False, rules.pool_path)
        domain_type = c.string(f"{hpath}.domainType", spec_map.get("domainType"), required=False)
        if domain_type is not None and domain_type not in DOMAIN_TYPES:
            c.add(f"{hpath}.domainType", domain_type,
                  f"use one of: {', '.join(DOMAIN_TYPES)} (qemu: software emulation, no KVM)")
            domain_type = None
        if uri is not None and address is not None:
            hosts[name] = Host(name, uri, address, fence, pool or DEFAULT_POOL_PATH, domain_type or "kvm")
    return hosts


def _parse_nodes(c: _Collector, value: Any) -> dict[str, Node]:
    path = _key("nodes")
    raw = c.mapping(path, value, max_items=schema.MAX_NODES)
    nodes: dict[str, Node] = {}
    for name, npath, spec in c.named(path, raw or {}):
        spec_map = c.mapping(npath, spec)
        if spec_map is None:
            continue
        c.unknown_keys(npath, spec_map, schema.NODE_FIELDS)
        role_raw = c.string(f"{npath}.role", spec_map.get("role"))
        host = c.string(f"{npath}.host", spec_map.get("host"))
        ip = c.string(f"{npath}.ip", spec_map.get("ip"))
        role = None
        if role_raw is not None:
            try:
                role = Role(role_raw)
            except ValueError:
                roles = ", ".join(r.value for r in Role)
                c.add(f"{npath}.role", role_raw, f"unknown role; use one of: {roles}")
        if role is not None and host is not None and ip is not None:
            nodes[name] = Node(name, role, host, ip)
    return nodes


def _parse_sizes(c: _Collector, value: Any) -> dict[Role, Size]:
    path = _key("sizes")
    sizes = dict(DEFAULT_SIZES)
    raw = c.mapping(path, value, required=False)
    if raw is None:
        return sizes
    c.unknown_keys(path, raw, [r.value for r in Role])
    for role in Role:
        spath = f"{path}.{role.value}"
        spec = c.mapping(spath, raw.get(role.value), required=False)
        if spec is None:
            continue
        c.unknown_keys(spath, spec, [n.key for n in schema.SIZE_NUMBERS])
        values = {n.attr: getattr(DEFAULT_SIZES[role], n.attr) for n in schema.SIZE_NUMBERS}
        for n in schema.SIZE_NUMBERS:
            if n.key in spec:
                values[n.attr] = c.number(f"{spath}.{n.key}", n, spec[n.key])
        if None not in values.values():
            sizes[role] = Size(**values)
    return sizes


def _parse_watchdog(c: _Collector, value: Any) -> WatchdogSettings:
    path = _key("watchdog")
    raw = c.mapping(path, value, required=False)
    if raw is None:
        return WatchdogSettings()
    c.unknown_keys(path, raw, WATCHDOG_KEYS)
    values: dict[str, Any] = {}
    for n in schema.WATCHDOG_NUMBERS:
        if n.key in raw and (parsed := c.number(f"{path}.{n.key}", n, raw[n.key])) is not None:
            values[n.attr] = parsed
    for key, attr in schema.WATCHDOG_STRINGS.items():
        rule = schema.WATCHDOG_STRING_RULES[key]
        if key in raw and (text := c.string(f"{path}.{key}", raw[key], rule=rule)):
            values[attr] = text
    settings = WatchdogSettings(**values)
    if "suspect_interval_s" in values and settings.suspect_interval_s > settings.interval_s:
        c.add(f"{path}.suspectInterval", settings.suspect_interval_s,
              f"must be > 0 and <= mac:watchdog.interval ({settings.interval_s:g} s): suspect "
              "targets are re-probed at least as often as healthy ones")
    if settings.lease_renew_s > settings.lease_ttl_s / 3:
        c.add(f"{path}.leaseRenew", settings.lease_renew_s,
              f"must be > 0 and <= a third of mac:watchdog.leaseTtl ({settings.lease_ttl_s} s)")
    return settings


def _is_ip(value: str) -> bool:
    return rules.is_ip(value)

# --------------------------------------------------------------------------------------------
# Validation: the cluster rules. The watchdog runs this on every topology it plans, too.
# --------------------------------------------------------------------------------------------


def validate(t: Topology) -> list[Problem]:
    """Every rule the cluster must keep, as a list of problems (empty when valid)."""
    problems: list[Problem] = []
    add = problems.append
    network = ipaddress.ip_network(t.network.cidr, strict=False)
    gateway = ipaddress.ip_address(t.network.gateway)
    if gateway not in network:
        add(Problem(_key("network.gateway"), t.network.gateway, f"is outside {t.network.cidr}"))

    for name, host in t.hosts.items():
        problems.extend(_uri_problems(f"{_key('hosts')}.{name}.uri", host.uri))

    for key, names in (("spares", t.spares), ("failedHosts", t.failed_hosts)):
        seen: set[str] = set()
        for i, name in enumerate(names):
            if name not in t.hosts:
                add(Problem(f"{_key(key)}[{i}]", name, "is not a host in mac:hosts; add it there"))
            if name in seen:
                add(Problem(f"{_key(key)}[{i}]", name, "is listed twice; keep one"))
            seen.add(name)
    for name in set(t.spares) & set(t.failed_hosts):
        add(Problem(_key("spares"), name, "is also in mac:failedHosts; a host is one or the other"))

    ips: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, str] = {}
    placed: dict[tuple[Role, str], str] = {}
    for name, node in sorted(t.nodes.items()):
        path = f"{_key('nodes')}.{name}"
        if node.host not in t.hosts:
            known = ", ".join(t.hosts) or "none defined"
            add(Problem(f"{path}.host", node.host, f"is not a host in mac:hosts (known: {known})"))
        elif node.host in t.spares:
            add(Problem(f"{path}.host", node.host,
                        "is a spare; a spare runs no node: move the node or drop it from mac:spares"))
        elif node.host in t.failed_hosts:
            add(Problem(f"{path}.host", node.host,
                        "is in mac:failedHosts; move the node to a live host"))
        other = placed.get((node.role, node.host))
        if other is not None:
            add(Problem(f"{path}.host", node.host,
                        f"also runs {other} ({node.role.value}): nodes of one role need distinct "
                        "hosts so one host failure cannot take both"))
        placed[(node.role, node.host)] = name
        try:
            ip = ipaddress.ip_address(node.ip)
        except ValueError:
            add(Problem(f"{path}.ip", node.ip, "is not an IP address"))
            continue
        if ip not in network:
            add(Problem(f"{path}.ip", node.ip, f"is outside mac:network.cidr {t.network.cidr}"))
        elif ip in (network.network_address, network.broadcast_address):
            add(Problem(f"{path}.ip", node.ip, "is the network or broadcast address"))
        if ip == gateway:
            add(Problem(f"{path}.ip", node.ip, "is the gateway's address; pick a free one"))
        if ip in ips:
            add(Problem(f"{path}.ip", node.ip, f"is also the IP of {ips[ip]}; IPs must be unique"))
        ips.setdefault(ip, name)

    problems.extend(_vip_problems(t, network, gateway, ips))
    if not isinstance(t.image, Image):
        for role in Role:
            if role not in t.image and t.nodes_of(role):
                add(Problem(f"{_key('image')}.{role.value}", None,
                            f"is missing: {role.value} nodes need an image; add {role.value}: "
                            "{source: ...} to mac:image, or use one image for all roles"))
    for role in Role:
        count = len(t.nodes_of(role))
        if count < MIN_NODES[role]:
            add(Problem(_key("nodes"), f"{count} {role.value}",
                        f"the cluster needs at least {MIN_NODES[role]} {role.value} nodes"))
        if role in MAX_NODES and count > MAX_NODES[role]:
            add(Problem(_key("nodes"), f"{count} {role.value}",
                        f"the cluster takes exactly {MAX_NODES[role]} {role.value} nodes"))
    return problems


def _vip_problems(t: Topology, network: ipaddress.IPv4Network | ipaddress.IPv6Network,
                  gateway: ipaddress.IPv4Address | ipaddress.IPv6Address,
                  node_ips: Mapping[ipaddress.IPv4Address | ipaddress.IPv6Address, str]) -> list[Problem]:
    """A VIP lies inside the network, belongs to nobody else, and comes with exactly two LBs."""
    path = _key("network.vip")
    lbs = len(t.nodes_of(Role.LB))
    if t.network.vip is None:
        return []
    problems = []
    vip = ipaddress.ip_address(t.network.vip)
    if vip not in network:
        problems.append(Problem(path, t.network.vip, f"is outside mac:network.cidr {t.network.cidr}"))
    elif vip in (network.network_address, network.broadcast_address):
        problems.append(Problem(path, t.network.vip, "is the network or broadcast address"))
    if vip == gateway:
        problems.append(Problem(path, t.network.vip, "is the gateway's address; pick a free one"))
    if vip in node_ips:
        problems.append(Problem(path, t.network.vip,
                                f"is also the IP of {node_ips[vip]}; the VIP floats between the "
                                "two LBs and must belong to no node"))
    if lbs != 2:
        problems.append(Problem(path, t.network.vip,
                                f"needs exactly 2 lb nodes (a pair that hands it over), not {lbs}; "
                                "drop the vip for a single LB"))
    return problems


def _uri_problems(path: str, uri: str) -> list[Problem]:
    parts = urlsplit(uri)
    if parts.scheme not in URI_SCHEMES:
        examples = ("qemu:///system, qemu+ssh://root@10.0.0.11[:PORT]/system, qemu+tcp://..., "
                    "qemu+unix:///system?socket=..., test:///default")
        return [Problem(path, uri, f"unsupported libvirt URI scheme; use one of: {examples}")]
    if parts.scheme == "qemu+ssh":
        if not parts.hostname:
            return [Problem(path, uri, "names no host; write qemu+ssh://USER@HOST[:PORT]/system")]
        try:
            parts.port  # noqa: B018 (an explicit port is fine with MAC's libvirt provider)
        except ValueError:
            return [Problem(path, uri, "has a malformed port")]
    return []


# --------------------------------------------------------------------------------------------
# Serialising: Topology -> raw config values (the inverse of parse_topology).
# --------------------------------------------------------------------------------------------


def to_config(t: Topology) -> dict[str, Any]:
    """The `mac:` config values (without namespace) that describe `t`; defaults are left out."""
    raw: dict[str, Any] = {
        "network": {"bridge": t.network.bridge, "cidr": t.network.cidr,
                    "gateway": t.network.gateway},
        "image": (_image_config(t.image) if isinstance(t.image, Image)
                  else {role.value: _image_config(image) for role, image in t.image.items()}),
        "hosts": {name: _host_config(h) for name, h in t.hosts.items()},
        "spares": list(t.spares),
        "failedHosts": list(t.failed_hosts),
        "nodes": {name: {"role": n.role.value, "host": n.host, "ip": n.ip}
                  for name, n in t.nodes.items()},
    }
    if t.network.dns:
        raw["network"]["dns"] = list(t.network.dns)
    if t.network.vip:
        raw["network"]["vip"] = t.network.vip
    sizes = {role.value: {"vcpu": s.vcpu, "memoryMiB": s.memory_mib, "diskGiB": s.disk_gib}
             for role, s in t.sizes.items() if s != DEFAULT_SIZES[role]}
    if sizes:
        raw["sizes"] = sizes
    defaults = WatchdogSettings()
    watchdog = {key: getattr(t.watchdog, attr) for key, (attr, _) in WATCHDOG_KEYS.items()
                if getattr(t.watchdog, attr) != getattr(defaults, attr)}
    if watchdog:
        raw["watchdog"] = watchdog
    if t.ssh_user != "root":
        raw["sshUser"] = t.ssh_user
    if t.ssh_public_key:
        raw["sshPublicKey"] = t.ssh_public_key
    if t.cluster_name != "mac":
        raw["clusterName"] = t.cluster_name
    if not t.post_boot:
        raw["postBoot"] = False
    return raw


def _host_config(h: Host) -> dict[str, Any]:
    spec: dict[str, Any] = {"uri": h.uri, "address": h.address}
    if h.fence is not None:
        spec["fence"] = h.fence
    if h.pool_path != DEFAULT_POOL_PATH:
        spec["poolPath"] = h.pool_path
    if h.domain_type != "kvm":
        spec["domainType"] = h.domain_type
    return spec


def _image_config(image: Image) -> dict[str, Any]:
    spec: dict[str, Any] = {"source": image.source}
    for key in ("kernel", "initrd", "cmdline"):
        if getattr(image, key) is not None:
            spec[key] = getattr(image, key)
    return spec
