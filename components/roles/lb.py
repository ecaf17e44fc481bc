"""The lb role: HAProxy in front of the web nodes (and the DB nodes), plus the Galera arbitrator."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from components.roles.cloud_config import WriteFile
from components.roles.common import systemd_unit
from components.roles.escape import comment, haproxy_name, ip, systemd_exec
from components.roles.mysql import EVS_OPTIONS
from components.roles.web import APP_DB_BUDGET_S, APP_DB_CONNECT_TIMEOUT_S
from components.topology import (
    GALERA_PORT,
    HEALTH_ENDPOINTS,
    LB_HTTP_PORT,
    MYSQL_PORT,
    SELF_ENDPOINTS,
    Node,
    Role,
    Topology,
)

PACKAGES = ("haproxy", "galera-arbitrator-4")
# Debian's own path, written before the package installs: cloud-init runs apt-get with
# --force-confold, so dpkg keeps this file instead of asking.
HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
GARBD_UNIT = "/etc/systemd/system/mac-garbd.service"


@dataclass(frozen=True)
class Backend:
    name: str
    ip: str


@dataclass(frozen=True)
class HaproxyPaths:
    stats_socket: str = "/run/haproxy/admin.sock"
    log_target: str = "/dev/log"  # the lab logs to stdout instead
    user: str | None = "haproxy"
    group: str | None = "haproxy"


VM_PATHS = HaproxyPaths()
# Active checks: a dead server is out after 2 failed checks (~0.5-1.25 s), back after 2 good ones.
CHECK_TIMING = "inter 500ms fastinter 250ms downinter 1s fall 2 rise 2"
# A connect on the LAN takes well under a millisecond. A server that stays silent (its host died,
# no RST) fails the attempt after this long and the request is retried on another server. Checks
# use min(this, inter) as their connect timeout, so this also speeds up detecting a silent node.
CONNECT_TIMEOUT_MS = 250
# How long a web node may take to start answering before the request is replayed elsewhere
# (`retry-on response-timeout`). It bounds how long a request that was in flight on a web node
# whose host went silent waits (with 10 s, that was the worst request of a host death). It must
# not cut a healthy page: pages take milliseconds, and during a DB fail-over the app keeps trying
# for its DB budget, plus the connect timeout of the attempt in progress when the budget runs out,
# then answers (200 or 503). A query stuck on a writer that went silent is cut by the DB frontend
# below when the writer is marked down (~1 s), and the app moves on within that same budget.
# HAProxy 2.6 replays on a timeout whatever the method (measured: a POST too), so replays are
# limited to what the app makes idempotent (see the web backend).
# `on-marked-down shutdown-sessions` on the web servers was measured too: it frees the in-flight
# requests of a dead node as soon as checks mark it down (~1 s) and those are replayed, but it
# kills the requests still connecting to it at that instant, without a retry (5 to 11 failed
# requests per host death at 200 req/s).
WEB_SERVER_TIMEOUT_S = APP_DB_BUDGET_S + APP_DB_CONNECT_TIMEOUT_S


def _self_check(web: Sequence[Backend], db: Sequence[Backend]) -> str:
    """The watchdog's self-check of the LB (SELF_ENDPOINTS): 200 as long as HAProxy answers,
    whatever its backends do. The body names a degraded dependency (no web or no DB server up;
    "" when none) and, by IP, whether this LB's checks see each server up."""
    sees = ",".join(f'"{b.ip}":%[srv_is_up({backend}/{b.name}),iif(true,false)]'
                    for backend, servers in (("web", web), ("mysql", db)) for b in servers)
    body = f'{{"degraded":"%[var(txn.degraded)]","sees":{{{sees}}}}}'
    return f"""\
    acl self_check path {SELF_ENDPOINTS[Role.LB].path}
    http-request set-var(txn.degraded) str("no DB server up") if self_check {{ nbsrv(mysql) lt 1 }}
    http-request set-var(txn.degraded) str("no web server up") if self_check {{ nbsrv(web) lt 1 }}
    http-request return status 200 content-type application/json lf-string '{body}' if self_check"""


def render_haproxy_cfg(lb_name: str, lb_ip: str, web: Sequence[Backend], db: Sequence[Backend],
                       paths: HaproxyPaths, http_port: int = LB_HTTP_PORT,
                       mysql_port: int = MYSQL_PORT, vip: str | None = None) -> str:
    """haproxy.cfg: the app on `http_port`, a monitor URI, and a single-writer DB frontend;
    each also on the pair's `vip` (components/roles/keepalived.py), when there is one.

    Failover without failed requests: fast active checks, passive checks on live traffic, short
    connect and server timeouts, and L7 retries that redispatch to another server (for the
    requests the app makes idempotent).
    """
    web_check = HEALTH_ENDPOINTS[Role.WEB]
    db_check = HEALTH_ENDPOINTS[Role.MYSQL]
    monitor = HEALTH_ENDPOINTS[Role.LB]
    owner = ""
    if paths.user:
        owner += f"    user {paths.user}\n"
    if paths.group:
        owner += f"    group {paths.group}\n"
    web_servers = "\n".join(f"    server {haproxy_name(b.name)} {ip(b.ip)}:{web_check.port} check"
                            for b in web)
    # One writer at a time: the first DB node, the second only while the first is not Synced.
    db_servers = "\n".join(
        f"    server {haproxy_name(b.name)} {ip(b.ip)}:{mysql_port} check port {db_check.port}"
        + (" backup" if i else "") for i, b in enumerate(db))
    return f"""\
# MAC: load balancer {comment(lb_name)} (rendered by components/roles/lb.py)
global
    log {paths.log_target} local0 notice
    maxconn 8192
    stats socket {paths.stats_socket} mode 600 level admin
{owner}
defaults
    mode http
    log global
    option dontlognull
    timeout connect {CONNECT_TIMEOUT_MS}ms
    timeout client 30s
    timeout server {round(WEB_SERVER_TIMEOUT_S * 1000)}ms
    timeout http-request 10s
    timeout http-keep-alive 10s
    timeout check 2s
    # A request that hit a dying server is sent again, to another one.
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response junk-response response-timeout 502 503 504

frontend app
    bind {ip(lb_ip)}:{http_port}{_vip_bind(vip, http_port)}
    default_backend web

backend web
    balance roundrobin
    option httpchk GET {web_check.path}
    http-check expect status 200
    default-server {CHECK_TIMING} observe layer4 error-limit 3 on-error mark-down
    # Replays (any retry beyond a failed connect) only for what the app makes idempotent: reads,
    # and the visit counter's write when it carries its ?token= (app/index.php).
    acl replayable method GET HEAD
    acl visit path / /index.php
    acl has_token url_param(token) -m found
    http-request disable-l7-retry if !replayable || visit !has_token
{web_servers}

frontend monitor
    bind {ip(lb_ip)}:{monitor.port}{_vip_bind(vip, monitor.port)}
    monitor-uri {monitor.path}
    monitor fail if {{ nbsrv(web) lt 1 }}
    # The watchdog probes this one: unlike the monitor-uri it answers 200 with no web server up.
{_self_check(web, db)}
    stats enable
    stats uri /stats
    stats refresh 5s

listen mysql
    bind {ip(lb_ip)}:{mysql_port}{_vip_bind(vip, mysql_port)}
    mode tcp
    option dontlognull
    timeout client 60s
    timeout server 60s
    option httpchk GET {db_check.path}
    http-check expect status 200
    default-server {CHECK_TIMING} on-marked-down shutdown-sessions on-marked-up shutdown-backup-sessions
{db_servers}
"""


def _vip_bind(vip: str | None, port: int) -> str:
    # The backup binds the VIP too (net.ipv4.ip_nonlocal_bind): a takeover needs no reload.
    return "" if vip is None else f"\n    bind {ip(vip)}:{port}"


def garbd_argv(lb_name: str, lb_ip: str, db_ips: Sequence[str], cluster_name: str,
               galera_port: int = GALERA_PORT, log_file: str | None = None,
               garbd: str = "garbd") -> list[str]:
    """The arbitrator's command line; EVS timeouts identical to the data nodes'."""
    options = "; ".join([f"gmcast.listen_addr=tcp://{lb_ip}:{galera_port}",
                         *(f"{k}={v}" for k, v in EVS_OPTIONS.items())])
    argv = [garbd, "--name", lb_name, "--group", cluster_name,
            "--address", "gcomm://" + ",".join(f"{ip}:{galera_port}" for ip in db_ips),
            "--options", options]
    if log_file:
        argv += ["--log", log_file]
    return argv


def backends(topology: Topology, role: Role) -> list[Backend]:
    return [Backend(n.name, n.ip) for n in topology.nodes_of(role)]


def _garbd_unit(node: Node, topology: Topology) -> str:
    argv = garbd_argv(node.name, node.ip, [n.ip for n in topology.nodes_of(Role.MYSQL)],
                      topology.cluster_name, garbd="/usr/bin/garbd")
    return systemd_unit("MAC Galera arbitrator (keeps quorum when one DB node dies)", [
        "# garbd keeps its view of the group (gvwstate.dat) in its working directory.",
        "StateDirectory=mac-garbd",
        "WorkingDirectory=/var/lib/mac-garbd",
        f"ExecStart={systemd_exec(argv)}",
        "Restart=always",
        "RestartSec=2",
    ])


def files(node: Node, topology: Topology) -> list[WriteFile]:
    """haproxy.cfg, and garbd's unit on the one LB that runs it (Topology.arbitrator)."""
    cfg = render_haproxy_cfg(node.name, node.ip, backends(topology, Role.WEB),
                             backends(topology, Role.MYSQL), VM_PATHS, vip=topology.network.vip)
    garbd = [WriteFile(GARBD_UNIT, _garbd_unit(node, topology))]
    return [WriteFile(HAPROXY_CFG, cfg), *(garbd if node == topology.arbitrator else [])]


def runcmd() -> list[str | list[str]]:
    # garbd starts in a post-boot step, once the first DB node has formed the cluster.
    return [
        ["systemctl", "disable", "--now", "garb"],
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "haproxy"],
        ["systemctl", "restart", "haproxy"],
    ]
