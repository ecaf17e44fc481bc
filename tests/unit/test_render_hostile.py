"""Defence in depth: every role rendered with hostile names, parsed back with each file's syntax.

The model admits only plain names (components/rules.py); here a Topology is built around it, with
newlines, quotes, `#`, `%`, `$` and anything hypothesis finds in node and cluster names. Each
rendered file either holds the hostile value as exactly one value (parsed back: same keys, same
lines, the value intact) or the renderer refuses it with RenderError. Never an injected line.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from components.roles import Secrets, lb, mysql, user_data, web
from components.roles.escape import RenderError
from components.topology import Node, Role, Topology, parse_topology
from tests.unit.test_topology import seed

HOSTILE = st.one_of(
    st.sampled_from(["db1\nwsrep_on = OFF", 'a"b', "a'b", "x # y", "x ; y", "%n", "$HOME", "${X}",
                     "a\\nb", "a\\", "", " ", "\t", "kvm3-é主機", "lb 1/../x;", "\x00", "\r\n[mysqld]"]),
    st.text(max_size=30),
)
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def hostile_topology(name: str, cluster: str) -> Topology:
    """The seed cluster with lb1, db1 and web1 renamed to `name`-based names, cluster `cluster`."""
    t = parse_topology(seed())
    nodes = dict(t.nodes)
    for old, new in (("db1", name), ("web1", name + "w"), ("lb1", name + "l")):
        node = nodes.pop(old)
        nodes[new] = Node(new, node.role, node.host, node.ip)
    return replace(t, nodes=nodes, cluster_name=cluster)


def node_of(t: Topology, role: Role, index: int = 0) -> Node:
    return sorted(t.nodes_of(role), key=lambda n: n.ip)[index]


# ---- MariaDB option file: parsed back by MariaDB's own my_print_defaults ----------------------


def print_defaults(tmp_path: Path, text: str) -> str:
    tool = shutil.which("my_print_defaults")
    if tool is None:
        pytest.skip("my_print_defaults is not installed (apt-get install mariadb-client)")
    cnf = tmp_path / "galera.cnf"
    cnf.write_text(text, encoding="utf-8")
    return subprocess.run([tool, f"--defaults-file={cnf}", "mysqld"], capture_output=True,
                          check=True, timeout=10).stdout.decode("utf-8")


@SETTINGS
@given(HOSTILE, HOSTILE)
@example("db1\nwsrep_on = OFF", "mac\nwsrep_on = OFF")
def test_galera_cnf_holds_a_hostile_name_as_one_value(tmp_path_factory, name: str, cluster: str) -> None:
    tmp = tmp_path_factory.mktemp("cnf")
    t = hostile_topology(name, cluster)
    db = t.nodes[name]
    ips = [n.ip for n in t.nodes_of(Role.MYSQL)]
    benign = print_defaults(tmp, mysql.render_galera_cnf("db1", db.ip, ips, "mac", mysql.VM_PATHS))
    try:
        text = mysql.render_galera_cnf(name, db.ip, ips, cluster, mysql.VM_PATHS)
    except RenderError:
        assert re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029]", name + cluster)
        return
    assert len(text.split("\n")) == len(mysql.render_galera_cnf("db1", db.ip, ips, "mac",
                                                                  mysql.VM_PATHS).split("\n"))
    expected = benign.replace("--wsrep_node_name=db1\n", f"--wsrep_node_name={name}\n").replace(
        "--wsrep_cluster_name=mac\n", f"--wsrep_cluster_name={cluster}\n")
    assert print_defaults(tmp, text) == expected


# ---- systemd units: ExecStart parsed back with systemd's quoting rules -------------------------


def systemd_split(line: str) -> list[str]:
    """ExecStart= words as systemd reads them: %% and $$, quotes, C escapes (systemd.syntax(7))."""
    assert "%" not in line.replace("%%", "") and "$" not in line.replace("$$", ""), line
    line = line.replace("%%", "%").replace("$$", "$")
    words, i = [], 0
    while i < len(line):
        if line[i] == " ":
            i += 1
            continue
        word, quote = [], None
        while i < len(line) and (quote or line[i] != " "):
            char = line[i]
            if char == "\\":
                nxt = line[i + 1]
                if nxt in "xu":
                    width = 2 if nxt == "x" else 4
                    word.append(chr(int(line[i + 2:i + 2 + width], 16)))
                    i += 2 + width
                    continue
                word.append({"n": "\n", "t": "\t"}.get(nxt, nxt))
                i += 2
                continue
            if char in "\"'" and quote in (None, char):
                quote = None if quote else char
            else:
                word.append(char)
            i += 1
        words.append("".join(word))
    return words


def exec_start(unit: str) -> list[str]:
    lines = [line for line in unit.split("\n") if line.startswith("ExecStart=")]
    assert len(lines) == 1, unit
    return systemd_split(lines[0][len("ExecStart="):])


@SETTINGS
@given(HOSTILE, HOSTILE)
def test_garbd_unit_holds_hostile_names_as_one_argument(name: str, cluster: str) -> None:
    t = hostile_topology(name, cluster)
    node = t.nodes[name + "l"]
    unit = lb._garbd_unit(node, t)
    benign = lb._garbd_unit(node_of(parse_topology(seed()), Role.LB), parse_topology(seed()))
    assert [line.split("=", 1)[0] for line in unit.split("\n")] == \
        [line.split("=", 1)[0] for line in benign.split("\n")]
    assert exec_start(unit) == lb.garbd_argv(node.name, node.ip, [n.ip for n in t.nodes_of(Role.MYSQL)],
                                             cluster, garbd="/usr/bin/garbd")


def test_clustercheck_unit_argv_round_trips() -> None:
    t = parse_topology(seed())
    node = t.nodes["db1"]
    argv = mysql.clustercheck_argv(mysql.CLUSTERCHECK_SCRIPT, node.ip, mysql.VM_PATHS.socket,
                                   python="/usr/bin/python3")
    assert exec_start(mysql._clustercheck_unit(node.ip)) == argv


# ---- shell lines: the mac-galera-start wrapper, parsed back by shlex -------------------------


@SETTINGS
@given(HOSTILE)
def test_wrapper_script_holds_hostile_arguments(value: str) -> None:
    from components.roles.common import wrapper_script

    argv = ["/usr/bin/python3", "/x.py", "--start-cmd", value, "--after-cmd", value]
    assert shlex.split(wrapper_script(argv), comments=True) == ["exec", *argv, "$@"]


# ---- HAProxy and Apache ---------------------------------------------------------------------


@SETTINGS
@given(HOSTILE)
def test_haproxy_takes_only_identifiers_as_server_names(name: str) -> None:
    t = hostile_topology(name, "mac")
    lb_node = t.nodes[name + "l"]
    try:
        cfg = lb.render_haproxy_cfg(lb_node.name, lb_node.ip, lb.backends(t, Role.WEB),
                                    lb.backends(t, Role.MYSQL), lb.VM_PATHS)
    except RenderError:
        assert not re.fullmatch(r"[A-Za-z0-9_.:-]+", name)
        return
    servers = [line.split() for line in cfg.split("\n") if line.strip().startswith("server ")]
    assert sorted(s[1] for s in servers) == sorted(n.name for n in t.nodes.values()
                                                   if n.role in (Role.WEB, Role.MYSQL))
    assert "\n" not in name


def apache_word(text: str) -> str:
    """Apache's ap_getword_conf for one quoted or bare word: `\\\\` and `\\"` unescaped in quotes."""
    if not text.startswith('"'):
        return text.split()[0]
    out, i = [], 1
    while text[i] != '"':
        if text[i] == "\\" and text[i + 1] in '\\"':
            i += 1
        out.append(text[i])
        i += 1
    assert text[i + 1:].strip() == "", text
    return "".join(out)


@SETTINGS
@given(HOSTILE)
def test_apache_server_name_is_one_argument(name: str) -> None:
    try:
        conf = web.render_apache_conf(name, "192.168.50.21", web.VM_PATHS)
    except RenderError:
        assert re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029]", name)
        return
    lines = conf.split("\n")
    assert len(lines) == len(web.render_apache_conf("web1", "192.168.50.21", web.VM_PATHS).split("\n"))
    [server_name] = [line for line in lines if line.startswith("ServerName ")]
    assert apache_word(server_name[len("ServerName "):]) == name


# ---- cloud-config: the whole user-data of every node -------------------------------------------


@SETTINGS
@given(HOSTILE, HOSTILE)
def test_cloud_config_of_every_node_parses_back(name: str, cluster: str) -> None:
    t = hostile_topology(name, cluster)
    for node in t.nodes.values():
        try:
            text = user_data(node, t, Secrets("r'o\"ot", "a\npp"))
        except RenderError:
            continue  # a syntax refused a value (tested per file above)
        doc = yaml.safe_load(text)
        assert doc["hostname"] == node.name
        assert all(isinstance(f["content"], str) for f in doc["write_files"])


@pytest.mark.parametrize("key", ["ssh-ed25519 AAAA a@b\nssh-rsa BBBB evil@x", "ssh-ed25519 AAAA\r"])
def test_ssh_key_with_a_line_break_is_refused(key: str) -> None:
    t = replace(parse_topology(seed()), ssh_public_key=key)
    with pytest.raises(RenderError):
        user_data(t.nodes["web1"], t, Secrets("r", "a"))
