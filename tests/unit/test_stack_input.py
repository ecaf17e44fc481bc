"""Issue 10: stack files an operator could really write. Each finding has its test here."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from components.stack_file import load_topology, read_document, stack_path, write_topology
from components.topology import TopologyError, parse_topology
from tests.unit.test_topology import _set, problems_of, seed

PROJECT = Path(__file__).resolve().parents[2]
DEV = stack_path(PROJECT, "dev").read_text(encoding="utf-8")
CLI = [str(Path(sys.executable).parent / "mac-watchdog")]


def file_problems(tmp_path: Path, text: str | bytes) -> list[str]:
    path = tmp_path / "Pulumi.x.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    try:
        load_topology(path)
    except TopologyError as err:
        return [str(p) for p in err.problems]
    return []


def one(problems: list[str], *fragments: str) -> str:
    assert len(problems) == 1, problems
    for fragment in fragments:
        assert fragment in problems[0], problems
    return problems[0]


# ---- unknown keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(("typo", "known"), [("mac:spares", "mac:spare"),
                                             ("mac:failedHosts", "mac:failedhosts"),
                                             ("mac:watchdog", "mac:watchdogs")])
def test_unknown_top_level_key_is_an_error_naming_the_nearest(tmp_path: Path, typo: str,
                                                              known: str) -> None:
    problems = file_problems(tmp_path, DEV.replace(f"  {typo}:", f"  {known}:"))
    one(problems, f"{known} = ", "unknown key; did you mean", typo.split(":")[1])


def test_secret_keys_are_known_and_must_be_secret(tmp_path: Path) -> None:
    secrets = "".join(f"  mac:{k}:\n    secure: v1:AAAA==\n"
                      for k in ("dbRootPassword", "dbAppPassword", "sshPrivateKey"))
    assert file_problems(tmp_path, DEV.replace("config:\n", "config:\n" + secrets, 1)) == []
    plain = DEV.replace("config:\n", "config:\n  mac:dbRootPassword: hunter2\n", 1)
    line = one(file_problems(tmp_path, plain), "mac:dbRootPassword: must be a secret")
    assert "hunter2" not in line


def test_unknown_document_key_and_key_without_namespace(tmp_path: Path) -> None:
    problems = file_problems(tmp_path, "encryptionsalt: v1:x\nconfgi: {}\n" + DEV.replace(
        "  mac:spares:", "  spares:"))
    assert any("confgi: unknown top-level key; did you mean config?" in p for p in problems)
    assert any("config.spares: has no namespace; write mac:spares" in p for p in problems)


# ---- bytes, nesting, aliases ----------------------------------------------------------------


@pytest.mark.parametrize("data", [bytes(range(256)) * 8, DEV.replace("# dev:", "# dév:").encode("latin-1")],
                         ids=["random-bytes", "latin-1-comment"])
def test_non_utf8_file_is_one_problem(tmp_path: Path, data: bytes) -> None:
    one(file_problems(tmp_path, data), "is not UTF-8 text", "save it as UTF-8")


def test_deeply_nested_document_is_one_problem(tmp_path: Path) -> None:
    text = DEV + "  mac:sizes: " + "[" * 50_000 + "]" * 50_000 + "\n"
    one(file_problems(tmp_path, text), "nests deeper than 32 levels")


def test_oversized_file_is_refused_unread(tmp_path: Path) -> None:
    one(file_problems(tmp_path, DEV + "#" * (1024 * 1024)), "is larger than 1024 KiB")


def aliases(levels: int) -> str:
    """Config entries of another namespace, each anchored list 9 aliases of the one before."""
    lines = []
    for i in range(levels):
        items = ['"lol"'] * 9 if i == 0 else [f"*a{i - 1}"] * 9
        lines.append(f"  y:x{i}: &a{i} [{', '.join(items)}]\n")
    return "".join(lines)


def test_alias_bomb_is_refused_in_bounded_time_and_memory(tmp_path: Path) -> None:
    """9 levels: 387 million values when expanded; 42 s and 2.2 GB before this was bounded."""
    text = DEV.replace("config:\n", "config:\n" + aliases(9), 1)
    text = text.replace("  mac:watchdog:\n", "  mac:watchdog: *a8\n  z:old:\n", 1)
    tracemalloc.start()
    started = time.perf_counter()
    problems = file_problems(tmp_path, text)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    one(problems, "expands to more than 20000 YAML values")
    assert elapsed < 2 and peak < 50 * 1024 * 1024, (elapsed, peak)


def test_a_large_value_is_shown_shortened(tmp_path: Path) -> None:
    """Under the alias limit: the message shows 60 characters of the value, not all of it."""
    text = DEV.replace("config:\n", "config:\n" + aliases(4), 1)
    text = text.replace("  mac:watchdog:\n", "  mac:watchdog: *a3\n  z:old:\n", 1)
    started = time.perf_counter()
    problems = file_problems(tmp_path, text)
    assert time.perf_counter() - started < 2
    line = one(problems, "mac:watchdog = [[[['lol', 'lol'", "must be a mapping, not list")
    assert len(line) < 120 and "..." in line


# ---- names ----------------------------------------------------------------------------------

HOSTILE_NAMES = ["kvm3-é主機", "lb 1/../x;", "rack1/kvm3", "k" * 300, "db1\nwsrep_on = OFF", "Kvm1",
                 "-kvm", "kvm-", "1kvm", "", "kvm_1"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_host_and_node_names_are_rejected(name: str) -> None:
    raw = seed()
    raw["hosts"][name] = raw["hosts"].pop("kvm3")
    raw["nodes"]["lb1"]["host"] = name
    raw["nodes"][name] = raw["nodes"].pop("web2")
    problems = problems_of(raw)
    assert any("is not a valid name" in p or "characters long" in p for p in problems), problems
    assert all("\n" not in p and len(p) < 250 for p in problems), problems


@pytest.mark.parametrize("name", ["a", "kvm1", "rack1-kvm3", "x" * 32, "web-01"])
def test_plain_names_pass(name: str) -> None:
    raw = seed()
    raw["nodes"][name] = raw["nodes"].pop("web2")
    raw["clusterName"] = name
    assert problems_of(raw) == []


@pytest.mark.parametrize("cluster", ["mac\nwsrep_on = OFF", "my cluster", 'mac"x', "MAC", "c" * 33])
def test_cluster_name_is_a_name(cluster: str) -> None:
    one(problems_of({**seed(), "clusterName": cluster}), "mac:clusterName = ")


@pytest.mark.parametrize(("key", "value", "fragment"), [
    ("sshUser", "ops user", "is not a valid user"),
    ("sshUser", "root;reboot", "is not a valid user"),
    ("sshPublicKey", "ssh-ed25519 AAAA x@y\nssh-rsa BBBB evil", "one OpenSSH public key line"),
    ("sshPublicKey", "not a key", "one OpenSSH public key line"),
])
def test_user_and_key_are_checked(key: str, value: str, fragment: str) -> None:
    one(problems_of({**seed(), key: value}), f"mac:{key} = ", fragment)


@pytest.mark.parametrize("pool", ["var/lib/mac", "/var/lib/../mac", "/var/lib/mac/", "/var//lib",
                                  "/var/lib/my pool", "/var/lib/$(reboot)", "/", "/var/./lib"])
def test_pool_path_must_be_absolute_and_clean(pool: str) -> None:
    one(problems_of(_set(seed(), "hosts.kvm1.poolPath", pool)), "mac:hosts.kvm1.poolPath = ",
        "absolute, normalised path")


def test_good_pool_paths_and_users_pass() -> None:
    raw = _set(seed(), "hosts.kvm1.poolPath", "/srv/libvirt/mac-pool_1.d")
    assert problems_of({**raw, "sshUser": "debian", "sshPublicKey": "ssh-ed25519 AAAA+/x= a b"}) == []


@pytest.mark.parametrize(("path", "value"), [("network.bridge", "br0; x"), ("network.bridge", "b" * 16),
                                             ("image.source", "ftp://x/y.qcow2"),
                                             ("image.source", "https://x/a b.qcow2"),
                                             ("image.source", "relative/../path.qcow2"),
                                             ("network.cidr", "fd00::/64"),
                                             ("hosts.kvm1.uri", "qemu+ssh://root@[10.0.0.11/system"),
                                             ("watchdog", {"webhookUrl": "https://x/\nInjected: 1"})])
def test_other_rendered_strings_are_checked(path: str, value: Any) -> None:
    assert len(problems_of(_set(seed(), path, value))) == 1


# ---- numbers --------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "value", "fragment"), [
    ("interval", math.nan, "must be finite"),
    ("interval", math.inf, "must be finite"),
    ("failAfter", math.nan, "must be finite"),
    ("cooldown", math.nan, "must be finite"),
    ("cooldown", -math.inf, "must be finite"),
    ("failThreshold", 1e21, "is out of range: must be an integer from 1 to 100"),
    ("failThreshold", 2.5, "must be an integer"),
    ("cooldown", 1e9, "is out of range: must be a number from 0 to 86400 s"),
    ("probeTimeout", 0, "is out of range"),
    ("recoverThreshold", 0, "is out of range: must be an integer from 1 to 100"),
    ("maxUnhealthyShare", 0, "must be a number > 0 and <= 1"),
    ("interval", True, "must be a number"),
])
def test_numbers_are_finite_and_in_range_and_the_message_names_the_key(key: str, value: Any,
                                                                      fragment: str) -> None:
    one(problems_of({**seed(), "watchdog": {key: value}}), f"mac:watchdog.{key} = ", fragment)


@pytest.mark.parametrize(("size", "value"), [("vcpu", 1e6), ("memoryMiB", math.nan), ("diskGiB", 0)])
def test_sizes_have_ranges(size: str, value: Any) -> None:
    one(problems_of({**seed(), "sizes": {"web": {size: value}}}), f"mac:sizes.web.{size} = ")


# ---- addresses and fence lines --------------------------------------------------------------


@pytest.mark.parametrize(("address", "fragment"), [("10.0.0.11:22", "has a port"),
                                                   ("kvm1.example.org:22", "has a port"),
                                                   ("not an address!", "neither an IP address"),
                                                   ("10.0.0.300", "neither an IP address"),
                                                   ("-kvm1", "neither an IP address")])
def test_address_is_an_ip_or_host_name_without_port(address: str, fragment: str) -> None:
    one(problems_of(_set(seed(), "hosts.kvm1.address", address)), "mac:hosts.kvm1.address = ", fragment)


@pytest.mark.parametrize("address", ["10.0.0.11", "kvm1.example.org", "kvm1", "fd00::11"])
def test_good_addresses_pass(address: str) -> None:
    assert problems_of(_set(seed(), "hosts.kvm1.address", address)) == []


@pytest.mark.parametrize(("fence", "fragment"), [
    ("ipmitool -H 10.0.1.11 -P 'secret chassis power off", "No closing quotation"),
    ("   ", "must be a non-empty string"),
    ("ipmitool\n-H x", "control character"),
    ("'' -H x", "names no command"),
])
def test_fence_line_is_parsed_at_validation(fence: str, fragment: str) -> None:
    one(problems_of(_set(seed(), "hosts.kvm1.fence", fence)), "mac:hosts.kvm1.fence = ", fragment)


# ---- what the Pulumi CLI writes ---------------------------------------------------------------


def test_ci_stack_as_the_pulumi_cli_rewrites_it_is_valid_and_typed(tmp_path: Path) -> None:
    """`pulumi stack select --create ci` then `pulumi config set`: strings and encryptionsalt."""
    text = stack_path(PROJECT, "ci").read_text(encoding="utf-8")
    text = "encryptionsalt: v1:c2FsdA==:v1:aXYxMjM0NTY3ODk=:bWFj\n" + text.replace(
        "mac:postBoot: false", 'mac:postBoot: "false"').replace("vcpu: 1, memoryMiB: 256",
                                                                'vcpu: "2", memoryMiB: "512"', 1)
    text += '  mac:watchdog:\n    interval: "0.5"\n    failThreshold: "4"\n'
    path = tmp_path / "Pulumi.ci.yaml"
    path.write_text(text, encoding="utf-8")
    t = load_topology(path)
    assert t.post_boot is False
    assert (t.watchdog.interval_s, t.watchdog.fail_threshold) == (0.5, 4)
    assert t.sizes[next(iter(t.sizes))].vcpu == 2
    assert write_topology(path, t.move_nodes(["lb1"], "spare1").with_(spares=("h3",))) is True
    assert read_document(path)["encryptionsalt"] == "v1:c2FsdA==:v1:aXYxMjM0NTY3ODk=:bWFj"
    assert load_topology(path).nodes["lb1"].host == "spare1"


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("false", False), ("True", True)])
def test_booleans_as_strings(value: str, expected: bool) -> None:
    assert parse_topology({**seed(), "postBoot": value}).post_boot is expected


def test_numbers_as_strings_but_never_nan_spelled_out() -> None:
    t = parse_topology({**seed(), "watchdog": {"cooldown": "60", "maxUnhealthyShare": ".5"}})
    assert (t.watchdog.cooldown_s, t.watchdog.max_unhealthy_share) == (60, 0.5)
    one(problems_of({**seed(), "watchdog": {"cooldown": "nan"}}), "mac:watchdog.cooldown = 'nan'")


# ---- the command line -----------------------------------------------------------------------


def test_validate_takes_a_path(tmp_path: Path) -> None:
    good = tmp_path / "Pulumi.pr.yaml"
    shutil.copy(stack_path(PROJECT, "dev"), good)
    bad = tmp_path / "Pulumi.bad.yaml"
    bad.write_text(DEV.replace("mac:spares:", "mac:spare:"), encoding="utf-8")
    result = subprocess.run([*CLI, "validate", str(good)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and f"{good}: ok (4 hosts" in result.stdout, result.stderr
    result = subprocess.run([*CLI, "validate", str(good), str(bad), "--stack", "prod"], cwd=PROJECT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "prod: ok" in result.stdout
    assert result.stderr.strip().splitlines() == [
        f"{bad}: mac:spare = ['spare1']: unknown key; did you mean spares?"]
