"""The roles' rendered cloud-config and configs: right addresses, valid for the real daemons."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from ruamel.yaml import YAML

from components.roles import Secrets, lb, mysql, post_boot_steps, user_data, web
from components.roles.scripts.clustercheck import make_handler, read_position
from components.roles.scripts.galera_start import (
    EXIT_TIMEOUT,
    ZERO_UUID,
    Action,
    GraState,
    Position,
    decide,
    parse_grastate,
    parse_position,
    parse_recovered,
    set_safe_to_bootstrap,
)
from components.roles.scripts.galera_start import main as galera_main
from components.stack_file import load_topology
from components.topology import HEALTH_ENDPOINTS, LB_HTTP_PORT, Role, Topology

ROOT = Path(__file__).resolve().parents[2]
SECRETS = Secrets(db_root_password="r00t'pw\"S3cret", db_app_password="app'pw\\S3cret")


@pytest.fixture(scope="module", params=["dev", "prod"])
def topology(request: pytest.FixtureRequest) -> Topology:
    return load_topology(ROOT / "stacks" / f"Pulumi.{request.param}.yaml")


def _cloud_config(text: str) -> dict:
    assert text.startswith("#cloud-config\n")
    return YAML(typ="safe").load(io.StringIO(text))


def _files(doc: dict) -> dict[str, str]:
    return {f["path"]: f["content"] for f in doc["write_files"]}


def test_every_node_gets_its_roles_packages_and_files(topology: Topology) -> None:
    expected = {Role.MYSQL: (mysql.PACKAGES, mysql.CNF_PATH), Role.WEB: (web.PACKAGES, web.CONF_PATH),
                Role.LB: (lb.PACKAGES, lb.HAPROXY_CFG)}
    for node in topology.nodes.values():
        doc = _cloud_config(user_data(node, topology, SECRETS))
        packages, config_path = expected[node.role]
        assert set(packages) <= set(doc["packages"])
        assert config_path in _files(doc)
        assert doc["hostname"] == node.name
        assert ["rm", "-f", "/usr/sbin/policy-rc.d"] in doc["runcmd"]


def test_galera_config_lists_both_db_nodes(topology: Topology) -> None:
    dbs = topology.nodes_of(Role.MYSQL)
    for node in dbs:
        cnf = _files(_cloud_config(user_data(node, topology, SECRETS)))[mysql.CNF_PATH]
        members = ",".join(f"{n.ip}:4567" for n in dbs)
        assert f"wsrep_cluster_address    = gcomm://{members}" in cnf
        assert f"bind-address             = {node.ip}" in cnf
        assert f"wsrep_node_address       = {node.ip}:4567" in cnf
        for line in ("binlog_format            = ROW", "innodb_autoinc_lock_mode = 2",
                     "wsrep_sst_method         = rsync", "evs.suspect_timeout="):
            assert line in cnf


def test_evs_timeouts_are_the_same_on_every_member(topology: Topology) -> None:
    lb1 = topology.nodes_of(Role.LB)[0]
    garbd = " ".join(lb.garbd_argv(lb1.name, lb1.ip, ["10.0.0.1", "10.0.0.2"], "mac"))
    cnf = mysql.render_galera_cnf("db1", "10.0.0.1", ["10.0.0.1", "10.0.0.2"], "mac", mysql.VM_PATHS)
    for key, value in mysql.EVS_OPTIONS.items():
        assert f"{key}={value}" in garbd
        assert f"{key}={value}" in cnf


def test_evs_keepalive_is_below_a_third_of_suspect_timeout() -> None:
    def seconds(iso: str) -> float:
        return float(iso.removeprefix("PT").removesuffix("S"))

    keepalive = seconds(mysql.EVS_OPTIONS["evs.keepalive_period"])
    suspect = seconds(mysql.EVS_OPTIONS["evs.suspect_timeout"])
    inactive = seconds(mysql.EVS_OPTIONS["evs.inactive_timeout"])
    assert keepalive < suspect / 3
    assert suspect <= inactive


def test_haproxy_fronts_every_web_node_and_the_db_nodes(topology: Topology) -> None:
    node = topology.nodes_of(Role.LB)[0]
    files = _files(_cloud_config(user_data(node, topology, SECRETS)))
    cfg = files[lb.HAPROXY_CFG]
    assert f"bind {node.ip}:{LB_HTTP_PORT}" in cfg
    monitor = HEALTH_ENDPOINTS[Role.LB]
    assert f"bind {node.ip}:{monitor.port}" in cfg and f"monitor-uri {monitor.path}" in cfg
    for web_node in topology.nodes_of(Role.WEB):
        assert f"server {web_node.name} {web_node.ip}:80 check" in cfg
    for db in topology.nodes_of(Role.MYSQL):
        assert f"server {db.name} {db.ip}:3306 check port 9200" in cfg
    for needle in ("option httpchk GET /health.php", "http-check expect status 200",
                   "option redispatch", "retries 3", "retry-on conn-failure empty-response"):
        assert needle in cfg


def test_lb_server_timeout_covers_the_app_and_replays_only_idempotent_requests(
        topology: Topology) -> None:
    node = topology.nodes_of(Role.LB)[0]
    cfg = _files(_cloud_config(user_data(node, topology, SECRETS)))[lb.HAPROXY_CFG]
    # A page answers within its DB budget plus the connect timeout of its last attempt.
    assert lb.WEB_SERVER_TIMEOUT_S >= web.APP_DB_BUDGET_S + web.APP_DB_CONNECT_TIMEOUT_S
    assert f"timeout server {round(lb.WEB_SERVER_TIMEOUT_S * 1000)}ms" in cfg
    assert f"timeout connect {lb.CONNECT_TIMEOUT_MS}ms" in cfg
    assert lb.CONNECT_TIMEOUT_MS <= 500  # checks connect with min(timeout connect, inter 500ms)
    assert "response-timeout" in cfg
    assert "http-request disable-l7-retry if !replayable || visit !has_token" in cfg
    web_backend = cfg.split("backend web", 1)[1].split("\nfrontend", 1)[0]
    # It kills the requests still connecting to a node marked down, without a retry.
    assert "shutdown-sessions" not in web_backend


def test_web_app_config_points_at_lb_then_db_nodes(topology: Topology) -> None:
    node = topology.nodes_of(Role.WEB)[0]
    files = _files(_cloud_config(user_data(node, topology, SECRETS)))
    config = json.loads(files[web.VM_PATHS.app_config])
    db = [n.ip for n in topology.nodes_of(Role.MYSQL)]
    # The LB first; then the LB's backup (where it fails over to), its preferred writer last.
    expected = [*(n.ip for n in topology.nodes_of(Role.LB)), *db[1:], db[0]]
    assert config["hosts"] == expected
    assert config["retry_budget_s"] == config["health_budget_s"] == web.APP_DB_BUDGET_S
    assert config["password"] == SECRETS.db_app_password
    assert f"Listen {node.ip}:80" in files[web.CONF_PATH]
    for name in web.APP_FILES:
        assert f"{web.VM_PATHS.docroot}/{name}" in files


def test_secrets_never_reach_a_command(topology: Topology) -> None:
    steps = post_boot_steps(topology)
    for step in steps:
        for secret in (SECRETS.db_root_password, SECRETS.db_app_password):
            assert secret not in step.command
    schema = next(s for s in steps if s.name == "app-schema")
    assert schema.stdin is not None
    sql = schema.stdin(SECRETS)
    assert "r00t\\'pw\"S3cret" in sql and "app\\'pw\\\\S3cret" in sql


def test_post_boot_steps_start_galera_in_order(topology: Topology) -> None:
    steps = {s.name: s for s in post_boot_steps(topology)}
    db1, db2 = (n.name for n in topology.nodes_of(Role.MYSQL))
    assert f"galera-start-{db1}" in steps[f"galera-start-{db2}"].after
    assert f"galera-start-{db1}" in steps["app-schema"].after
    names = list(steps)
    for step in steps.values():
        assert all(names.index(dep) < names.index(step.name) for dep in step.after)
    assert {n.name for n in topology.nodes.values()} <= {s.node for s in steps.values()}


def test_only_the_first_db_node_may_bootstrap(topology: Topology) -> None:
    db1, db2 = topology.nodes_of(Role.MYSQL)
    start1 = (_files(_cloud_config(user_data(db1, topology, SECRETS)))[mysql.GALERA_START])
    start2 = (_files(_cloud_config(user_data(db2, topology, SECRETS)))[mysql.GALERA_START])
    assert "--first" in start1 and "--first" not in start2


def test_every_boot_starts_galera_through_mac_galera_start(topology: Topology) -> None:
    """A plain mariadb.service start cannot recover a full outage: later boots (a site power-on)
    go through mac-galera-start, which compares positions; mariadb itself is never enabled."""
    db1, _ = topology.nodes_of(Role.MYSQL)
    doc = _cloud_config(user_data(db1, topology, SECRETS))
    unit = _files(doc)[mysql.GALERA_START_UNIT]
    assert f"ExecStart={mysql.GALERA_START}\n" in unit and "mac-clustercheck.service" in unit
    assert ["systemctl", "enable", "mac-galera-start.service"] in doc["runcmd"]
    assert not any("enable" in cmd and "mariadb" in cmd for cmd in doc["runcmd"])
    start = _files(doc)[mysql.GALERA_START]
    assert "enable mariadb" not in start and "--position-file" in start and "--db-nodes" in start


FRESH = None
CLEAN = GraState("7d0e1c6a-0000-0000-0000-000000000001", 42, True)
UNCLEAN = GraState("7d0e1c6a-0000-0000-0000-000000000001", -1, False)


# synced, DB peer alive, arbitrator alive, first, grastate -> action (before any position is known)
@pytest.mark.parametrize(("synced", "peer", "arb", "first", "state", "action"), [
    (True, False, False, True, UNCLEAN, Action.ALREADY_RUNNING),
    (False, True, False, True, FRESH, Action.JOIN),  # a replaced db1 joins the survivor
    (False, True, False, True, UNCLEAN, Action.JOIN),
    (False, True, False, False, FRESH, Action.JOIN),
    (False, True, True, False, UNCLEAN, Action.JOIN),
    (False, False, True, True, FRESH, Action.JOIN),  # the arbitrator answers: never bootstrap
    (False, False, True, True, CLEAN, Action.JOIN),
    (False, False, True, False, FRESH, Action.JOIN),
    (False, False, False, False, FRESH, Action.WAIT),  # db2 never bootstraps a fresh datadir
    (False, False, False, True, FRESH, Action.BOOTSTRAP),
    (False, False, False, True, CLEAN, Action.BOOTSTRAP),
    # an unclean stop (full outage): compare positions instead of refusing
    (False, False, False, True, UNCLEAN, Action.RECOVER),
    (False, False, False, False, UNCLEAN, Action.RECOVER),
    (False, False, True, True, UNCLEAN, Action.RECOVER),  # garbd alone holds no data
    (False, False, False, False, CLEAN, Action.RECOVER),  # db2 left last: it may bootstrap
])
def test_galera_start_decision(synced: bool, peer: bool, arb: bool, first: bool,
                               state: GraState | None, action: Action) -> None:
    """On the stack's first deploy (the only time a fresh datadir may found the cluster)."""
    assert decide(synced, peer, arb, first, state, first_deploy=True).action is action


# After the first deploy a fresh datadir is a node rebuilt on a new disk: it joins a DB peer that
# holds the data, or waits; never a new empty cluster, never garbd alone (it holds no data).
@pytest.mark.parametrize(("synced", "peer", "arb", "first", "state", "action"), [
    (False, True, False, True, FRESH, Action.JOIN),  # the survivor answers: SST from it
    (False, True, True, False, FRESH, Action.JOIN),
    (False, False, False, True, FRESH, Action.WAIT),  # db1 moved while db2 is down: no bootstrap
    (False, False, True, True, FRESH, Action.WAIT),  # garbd alone holds no data: no join
    (False, False, True, False, FRESH, Action.WAIT),
    (False, False, False, False, FRESH, Action.WAIT),
    (False, False, False, True, GraState(ZERO_UUID, -1, True), Action.WAIT),
    (False, False, False, True, GraState("", -1, False), Action.WAIT),
    (True, False, False, True, FRESH, Action.ALREADY_RUNNING),
    # a datadir that holds data keeps its rules
    (False, False, False, True, CLEAN, Action.BOOTSTRAP),
    (False, False, True, True, CLEAN, Action.JOIN),
    (False, False, False, True, UNCLEAN, Action.RECOVER),
])
def test_fresh_datadir_never_bootstraps_after_the_first_deploy(
        synced: bool, peer: bool, arb: bool, first: bool, state: GraState | None,
        action: Action) -> None:
    decision = decide(synced, peer, arb, first, state)
    assert decision.action is action
    if action is Action.WAIT:
        assert "never found a new cluster" in decision.reason


def test_galera_start_script_takes_first_deploy_flag(tmp_path: Path) -> None:
    """Without --first-deploy a lone fresh first node waits (and times out) instead of running
    the bootstrap command; with it, it bootstraps."""
    marker = tmp_path / "bootstrapped"
    base = [
        "--self", "127.0.0.1", "--peers", "", "--first", "--datadir", str(tmp_path),
        "--check-port", "9", "--galera-port", "9", "--probe-rounds", "1", "--wait", "0",
        "--position-file", str(tmp_path / "position"), "--bootstrap-cmd", f"touch {marker}"]
    assert galera_main(base) == EXIT_TIMEOUT and not marker.exists()
    galera_main([*base, "--first-deploy"])
    assert marker.exists()


U = "7d0e1c6a-0000-0000-0000-000000000001"
V = "9a9a9a9a-0000-0000-0000-000000000002"


# positions in topology order, this node's index -> action (no member answers, unclean state)
@pytest.mark.parametrize(("positions", "me", "action"), [
    ((Position(U, 10), Position(U, 9)), 0, Action.BOOTSTRAP),
    ((Position(U, 10), Position(U, 9)), 1, Action.WAIT),
    ((Position(U, 9), Position(U, 10)), 1, Action.BOOTSTRAP),
    ((Position(U, 9), Position(U, 10)), 0, Action.WAIT),
    ((Position(U, 10), Position(U, 10)), 0, Action.BOOTSTRAP),  # tie: the first DB node
    ((Position(U, 10), Position(U, 10)), 1, Action.WAIT),
    ((Position(U, 10), None), 0, Action.WAIT),  # peer silent: never bootstrap blindly
    ((None, Position(U, 99)), 1, Action.WAIT),
    ((Position(U, 10), Position(V, 3)), 0, Action.REFUSE),  # diverged histories
    ((Position(U, -1), Position(U, 3)), 0, Action.REFUSE),  # own position not recovered
    ((None, Position(U, 3)), 0, Action.REFUSE),
    ((Position(U, 10), Position(U, -1)), 0, Action.WAIT),
])
def test_galera_start_full_outage_decision(positions: tuple[Position | None, ...], me: int,
                                           action: Action) -> None:
    assert decide(False, False, False, me == 0, UNCLEAN, positions, me).action is action
    # the arbitrator answering changes nothing: it cannot be Primary without a DB node
    assert decide(False, False, True, me == 0, UNCLEAN, positions, me).action is action
    # a DB peer answering always means join
    assert decide(False, True, False, me == 0, UNCLEAN, positions, me).action is Action.JOIN


def test_parse_grastate() -> None:
    text = ("# GALERA saved state\nversion: 2.1\nuuid:    3f1e-aa\nseqno:   -1\n"
            "safe_to_bootstrap: 0\n")
    assert parse_grastate(text) == GraState("3f1e-aa", -1, False)


def test_parse_recovered_position() -> None:
    log = ("2026-11-26 10:00:00 0 [Note] InnoDB: Starting shutdown...\n"
           f"2026-11-26 10:00:01 0 [Note] WSREP: Recovered position: {U}:1234\n")
    assert parse_recovered(log) == Position(U, 1234)
    assert parse_recovered(f"--wsrep_start_position={U.upper()}:-1\n") == Position(U, -1)
    assert parse_recovered("WSREP: Failed to recover position\n") is None
    assert parse_position(f"{U}:42\n") == Position(U, 42)
    assert parse_position("42") is None and parse_position("") is None


def test_set_safe_to_bootstrap_keeps_the_rest(tmp_path: Path) -> None:
    text = f"# GALERA saved state\nversion: 2.1\nuuid:    {U}\nseqno:   -1\nsafe_to_bootstrap: 0\n"
    (tmp_path / "grastate.dat").write_text(text)
    set_safe_to_bootstrap(str(tmp_path))
    after = (tmp_path / "grastate.dat").read_text()
    assert after == text.replace("safe_to_bootstrap: 0", "safe_to_bootstrap: 1")
    assert parse_grastate(after) == GraState(U, -1, True)


def test_clustercheck_serves_the_position_only_while_the_server_is_down(tmp_path: Path) -> None:
    import threading
    from http.server import ThreadingHTTPServer

    import httpx

    position = tmp_path / "position"
    state: dict[str, str] = {}

    class Cache:
        def state(self) -> dict[str, str]:
            return state

    assert read_position(str(position)) is None
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(Cache(), str(position)))  # type: ignore[arg-type]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert httpx.get(f"{url}/position", timeout=5).status_code == 404
        position.write_text(f"{U}:77\n")
        answer = httpx.get(f"{url}/position", timeout=5)
        assert (answer.status_code, answer.text) == (200, f"{U}:77\n")
        assert httpx.get(url, timeout=5).status_code == 503
        state.update(wsrep_local_state="4", wsrep_cluster_status="Primary")
        assert httpx.get(url, timeout=5).status_code == 200
        assert httpx.get(f"{url}/position", timeout=5).status_code == 404  # server runs
        state.clear()
        position.write_text("rm -rf /\n")
        assert httpx.get(f"{url}/position", timeout=5).status_code == 404
    finally:
        server.shutdown()
        server.server_close()


# ---- offline validation with the real binaries (skipped where they are not installed) ----

def _need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed here (apt-get install it to validate offline)")
    return path


def test_haproxy_accepts_the_rendered_config(topology: Topology, tmp_path: Path) -> None:
    haproxy = _need("haproxy")
    node = topology.nodes_of(Role.LB)[0]
    cfg = tmp_path / "haproxy.cfg"
    paths = lb.HaproxyPaths(stats_socket=str(tmp_path / "admin.sock"), log_target="stdout",
                            user=None, group=None)
    cfg.write_text(lb.render_haproxy_cfg(node.name, node.ip, lb.backends(topology, Role.WEB),
                                         lb.backends(topology, Role.MYSQL), paths))
    out = subprocess.run([haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ALERT" not in out.stdout + out.stderr


def test_apache_accepts_the_rendered_config(topology: Topology, tmp_path: Path) -> None:
    apache2 = _need("apache2")
    php_module = Path(web.VM_PATHS.modules_dir) / web.VM_PATHS.php_module
    if not php_module.exists():
        pytest.skip(f"{php_module} is missing (apt-get install libapache2-mod-php)")
    node = topology.nodes_of(Role.WEB)[0]
    (tmp_path / "www").mkdir()
    paths = web.ApachePaths(server_root=str(tmp_path), docroot=str(tmp_path / "www"),
                            runtime_dir=str(tmp_path), pid_file=str(tmp_path / "httpd.pid"),
                            error_log=str(tmp_path / "error.log"),
                            access_log=str(tmp_path / "access.log"),
                            app_config=str(tmp_path / "app.json"))
    conf = tmp_path / "httpd.conf"
    conf.write_text(web.render_apache_conf(node.name, node.ip, paths))
    out = subprocess.run([apache2, "-t", "-f", str(conf)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert "Syntax OK" in out.stderr + out.stdout


@pytest.mark.parametrize("name", web.APP_FILES)
def test_php_app_files_parse(name: str) -> None:
    php = _need("php")
    out = subprocess.run([php, "-l", str(web.APP_SOURCE_DIR / name)], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("script", ["clustercheck.py", "galera_start.py"])
def test_node_scripts_run_under_plain_python(script: str) -> None:
    from components.roles.common import script_path

    out = subprocess.run(["python3", str(script_path(script)), "--help"], capture_output=True,
                         text=True, check=False)
    assert out.returncode == 0, out.stderr


GRASTATES = st.one_of(st.none(), st.builds(
    GraState, st.sampled_from(["", "00000000-0000-0000-0000-000000000000", U]),
    st.integers(-1, 10**6), st.booleans()))
POSITIONS = st.lists(st.one_of(st.none(), st.builds(Position, st.sampled_from([U, V]),
                                                    st.integers(-1, 50))), min_size=2, max_size=4)


@given(synced=st.booleans(), peer=st.booleans(), arb=st.booleans(), first=st.booleans(),
       state=GRASTATES, positions=st.one_of(st.none(), POSITIONS), me=st.integers(0, 3),
       first_deploy=st.booleans())
def test_galera_start_never_bootstraps_beside_a_live_group(
        synced: bool, peer: bool, arb: bool, first: bool, state: GraState | None,
        positions: list[Position | None] | None, me: int, first_deploy: bool) -> None:
    decision = decide(synced, peer, arb, first, state, positions, me, first_deploy=first_deploy)
    if (state is None or state.fresh) and not first_deploy:
        # no data here and the cluster exists: only a DB peer (which holds the data) may be joined
        assert decision.action is (Action.ALREADY_RUNNING if synced else
                                   Action.JOIN if peer else Action.WAIT)
    if synced or peer:
        assert decision.action is not Action.BOOTSTRAP
    unclean = state is not None and not state.fresh and not (first and state.safe_to_bootstrap)
    if decision.action is Action.BOOTSTRAP and unclean:
        # only with every position known, one cluster UUID, and this node the highest
        assert positions is not None and all(p is not None for p in positions)
        known = [p for p in positions if p is not None]
        assert len({p.uuid for p in known}) == 1
        assert known[me].seqno == max(p.seqno for p in known) >= 0
        assert all(p.seqno < known[me].seqno for p in known[:me])  # ties: the first
    if not unclean and not first:  # a later DB node never bootstraps a fresh datadir
        assert decision.action is not Action.BOOTSTRAP


@given(positions=POSITIONS, arb=st.booleans())
def test_full_outage_never_splits_the_brain(positions: list[Position | None], arb: bool) -> None:
    """Every DB node decides on the same published positions: at most one bootstraps, and
    exactly one when they are all known, recovered and from one cluster."""
    actions = [decide(False, False, arb, me == 0, UNCLEAN, positions, me).action
               for me in range(len(positions)) if positions[me] is not None]
    assert actions.count(Action.BOOTSTRAP) <= 1
    known = [p for p in positions if p is not None]
    if len(known) == len(positions) and len({p.uuid for p in known}) == 1 and all(
            p.seqno >= 0 for p in known):
        assert actions.count(Action.BOOTSTRAP) == 1
    if len(known) < len(positions):
        assert Action.BOOTSTRAP not in actions


def test_cloud_init_accepts_every_node_config(topology: Topology, tmp_path: Path) -> None:
    cloud_init = _need("cloud-init")
    for node in topology.nodes.values():
        path = tmp_path / f"{node.name}.yaml"
        path.write_text(user_data(node, topology, SECRETS))
        out = subprocess.run([cloud_init, "schema", "--config-file", str(path)], capture_output=True,
                             text=True, check=False)
        assert out.returncode == 0, out.stdout + out.stderr
