"""keepalived beside HAProxy on a pair of LBs: VRRPv3 over unicast, the VIP (`mac:network.vip`)
on whichever LB's HAProxy answers. Rendered only when the stack sets a VIP (one LB: no keepalived).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from components.roles.cloud_config import WriteFile
from components.roles.escape import comment, ip
from components.topology import SELF_ENDPOINTS, Node, Role, Topology

PACKAGES = ("keepalived",)
KEEPALIVED_CONF = "/etc/keepalived/keepalived.conf"
# HAProxy binds the VIP on both LBs (the backup too, so a takeover needs no HAProxy reload).
SYSCTL_CONF = "/etc/sysctl.d/60-mac-vip.conf"
NONLOCAL_BIND = "net.ipv4.ip_nonlocal_bind"
VIRTUAL_ROUTER_ID = 51
# The VIP lives on a macvlan with VRRP's virtual MAC (00:00:5e:00:01:<id>), so it keeps its MAC
# when it moves: clients' ARP entries stay right and only the bridge relearns the port from the
# new master's gratuitous ARP. With the real MACs, a client that ignored the gratuitous ARP (Linux
# does within `locktime` of its entry's last update) kept sending to the old LB: one lab run
# stalled 15 s that way.
VMAC_INTERFACE = f"vrrp.{VIRTUAL_ROUTER_ID}"
# VRRPv3 adverts every 100 ms: a silent master is taken over after 3 missed adverts plus the skew
# ((256 - priority) / 256 adverts), ~0.35 s. The clients' in-flight requests to the dead LB learn
# of the move at their TCP retransmit (200 ms RTO, doubling: 0.2, 0.6, 1.4 s after sending): with
# 200 ms adverts (~0.7 s) a host death stalled clients 0.86-0.89 s in the lab, at ~0.35 s
# 0.27-0.34 s. vrrp_rt_priority keeps the adverts on time
# on a busy machine (a late one would move the VIP for nothing).
ADVERT_INT_S = 0.1
# The first LB by name starts as the preferred master (and runs garbd: Topology.arbitrator).
PRIORITIES = (150, 100)
# keepalived runs scripts at whole seconds at best: the process is also tracked (netlink events,
# no polling), so a dead HAProxy moves the VIP at once; the HTTP check catches a hung one.
CHECK_INTERVAL_S = 1
CHECK_FALL = 2
CHECK_RISE = 2
CHECK_MAX_TIME_S = 0.8
# What the check asks: the LB's self-check (SELF_ENDPOINTS, `/node` on the monitor port), answered
# by HAProxy itself (`http-request return`) whatever its backends do: with every web node down
# both LBs still answer 200 (naming the dependency as degraded), and the VIP stays put instead of
# vanishing. (The monitor-uri fails with no web server up: not that one.)
CHECK = SELF_ENDPOINTS[Role.LB]


@dataclass(frozen=True)
class KeepalivedPaths:
    """What differs between a VM and the lab: the interface, and how to spot HAProxy's process."""

    interface: str = "eth0"
    # Process name, then the exact parameters to match (none: any `haproxy`). The lab runs one
    # HAProxy per LB in one PID namespace and matches its own by its config file.
    haproxy_process: tuple[str, ...] = ("haproxy",)
    curl: str = "/usr/bin/curl"
    script_user: str = "nobody"


VM_PATHS = KeepalivedPaths()


def priority(node: Node, topology: Topology) -> int:
    names = [n.name for n in topology.nodes_of(Role.LB)]
    return PRIORITIES[min(names.index(node.name), len(PRIORITIES) - 1)]


def peers(node: Node, topology: Topology) -> list[str]:
    return [n.ip for n in topology.nodes_of(Role.LB) if n.name != node.name]


def check_url(lb_ip: str) -> str:
    return f"http://{lb_ip}:{CHECK.port}{CHECK.path}"


def render_keepalived_conf(lb_name: str, lb_ip: str, peer_ips: Sequence[str], vip: str,
                           prefix_len: int, prio: int, paths: KeepalivedPaths,
                           preempt: bool = False) -> str:
    """keepalived.conf: one VRRPv3 instance holding the VIP while this LB's HAProxy answers.

    Both start BACKUP with `nopreempt`: an LB that comes back (or recovers from FAULT) stays
    backup, so the VIP moves once per failure, not twice. `preempt=True` drops `nopreempt` (the
    higher priority takes the VIP back as soon as it is up).
    """
    process = " ".join(paths.haproxy_process)
    preemption = "" if preempt else "    nopreempt\n"
    peer_lines = "\n".join(f"        {ip(p)}" for p in peer_ips)
    curl = (f"{paths.curl} -fsS -o /dev/null --max-time {CHECK_MAX_TIME_S:g} "
            f"{check_url(ip(lb_ip))}")
    return f"""\
# MAC: keepalived for load balancer {comment(lb_name)} (rendered by components/roles/keepalived.py)
global_defs {{
    router_id {comment(lb_name)}
    vrrp_version 3
    script_user {paths.script_user}
    enable_script_security
    # Adverts must leave on time on a busy machine, or the backup takes over for nothing.
    vrrp_rt_priority 50
    # After a split (two masters), the one that stays master re-announces the VIP as soon as it
    # hears the other's lower-priority advert, so clients do not keep the loser's MAC.
    vrrp_higher_prio_send_advert true
    vrrp_garp_lower_prio_repeat 5
}}

vrrp_script haproxy_answers {{
    script "{curl}"
    interval {CHECK_INTERVAL_S}
    timeout {CHECK_INTERVAL_S}
    fall {CHECK_FALL}
    rise {CHECK_RISE}
}}

vrrp_track_process haproxy {{
    process {process}
    quorum 1
    weight 0
}}

vrrp_instance front {{
    state BACKUP
{preemption}\
    interface {paths.interface}
    use_vmac {VMAC_INTERFACE}
    # Adverts leave from the interface's own address and MAC (the peer knows that one).
    vmac_xmit_base
    virtual_router_id {VIRTUAL_ROUTER_ID}
    priority {prio}
    advert_int {ADVERT_INT_S:g}
    unicast_src_ip {ip(lb_ip)}
    unicast_peer {{
{peer_lines}
    }}
    virtual_ipaddress {{
        {ip(vip)}/{prefix_len}
    }}
    track_script {{
        haproxy_answers
    }}
    track_process {{
        haproxy
    }}
}}
"""


def sysctl_conf() -> str:
    return f"# MAC: HAProxy binds the VIP before keepalived puts it here\n{NONLOCAL_BIND} = 1\n"


def files(node: Node, topology: Topology) -> list[WriteFile]:
    """keepalived.conf and the sysctl for a pair's LB; nothing for a single LB."""
    vip = topology.network.vip
    if vip is None:
        return []
    conf = render_keepalived_conf(node.name, node.ip, peers(node, topology), vip,
                                  topology.network.prefix_len, priority(node, topology), VM_PATHS)
    return [WriteFile(SYSCTL_CONF, sysctl_conf()), WriteFile(KEEPALIVED_CONF, conf)]


def runcmd(topology: Topology) -> list[str | list[str]]:
    """Before HAProxy starts (it binds the VIP): the sysctl; after it: keepalived."""
    if topology.network.vip is None:
        return []
    return [["sysctl", "-p", SYSCTL_CONF]]


def start_cmd(topology: Topology) -> list[str | list[str]]:
    if topology.network.vip is None:
        return []
    return [["systemctl", "enable", "keepalived"], ["systemctl", "restart", "keepalived"]]
