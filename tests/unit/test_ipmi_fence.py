"""IPMI fencing without root: mac-ipmitool's argument rewriting, the rendered fence line, the
simulated BMC's config and chassis program (tests/vm/test_bmc.py runs them all for real)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from components import rules
from components.topology import Host
from vmsite import bmc, chassis
from watchdog import ipmitool
from watchdog.errors import FenceError
from watchdog.fence import fence

# What fence_ipmilan 4.12 runs for `--lanplus --cipher 3` without a password.
AGENT_ARGS = ["-I", "lanplus", "-H", "192.168.160.201", "-p", "623", "-U", "mac-fence", "-P", "",
              "-C", "3", "-L", "ADMINISTRATOR", "-N", "2", "chassis", "power", "status"]


def test_the_wrapper_drops_the_empty_password_and_reads_the_environment() -> None:
    out = ipmitool.rewrite(AGENT_ARGS)
    assert out[0] == "-E" and "-P" not in out
    assert out[1:] == [a for a in AGENT_ARGS if a not in ("-P", "")]


@pytest.mark.parametrize("args", [["-P", "secret", "chassis"], ["-Psecret", "chassis"], ["-P"],
                                  ["-f", "/tmp/pw", "chassis"]])
def test_the_wrapper_refuses_a_password_on_the_command_line(args: list[str],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ipmitool.WrapperError, match="IPMI_PASSWORD"):
        ipmitool.rewrite(args)
    assert ipmitool.main(args) == ipmitool.EXIT_USAGE
    err = capsys.readouterr().err
    assert "secret" not in err and err.startswith("mac-ipmitool: error:")


def test_the_wrapper_says_when_the_password_is_missing(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("IPMI_PASSWORD", raising=False)
    assert ipmitool.main(AGENT_ARGS) == ipmitool.EXIT_USAGE
    assert "IPMI_PASSWORD is not set" in capsys.readouterr().err


def test_the_fence_line_is_a_valid_stack_value_without_a_password() -> None:
    line = bmc.fence_line("192.168.160.201", ipmitool_path="/opt/mac/.venv/bin/mac-ipmitool")
    assert rules.fence(line) is None
    argv = shlex.split(line)
    assert argv[0] == "fence_ipmilan" and argv[-2:] == ["--action", "off"]
    assert "--password" not in line and "-p" not in argv and "--password-script" not in line
    assert argv[argv.index("--cipher") + 1] != "0"  # cipher suite 0 authenticates nobody
    assert ipmitool.uses_wrapper(argv)
    assert ipmitool.uses_wrapper(["fence_ipmilan", "--ipmitool-path=/x/mac-ipmitool"])
    assert not ipmitool.uses_wrapper(["fence_ipmilan", "--ipmitool-path", "/usr/bin/ipmitool"])


def test_the_watchdog_refuses_a_wrapper_fence_without_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IPMI_PASSWORD", raising=False)
    host = Host("kvm1", "qemu:///system", "192.168.160.11",
                bmc.fence_line("192.168.160.201", ipmitool_path="/nonexistent/mac-ipmitool"))
    with pytest.raises(FenceError, match="IPMI_PASSWORD, which is not set"):
        fence(host)


def _spec() -> bmc.BmcSpec:
    return bmc.BmcSpec("kvm1", "192.168.160.201", bmc.PowerActions(("true",), ("true",), ("echo", "on")))


def test_the_bmc_config_has_one_admin_user_md5_and_the_chassis_program() -> None:
    text = bmc.render_lan_conf(_spec(), "Secret123", "/usr/bin/python3 -I /x/chassis.py /x/c.json")
    assert "addr 192.168.160.201 623" in text
    assert 'user 2 true "mac-fence" "Secret123" admin 10 md5' in text
    assert 'chassis_control "/usr/bin/python3 -I /x/chassis.py /x/c.json"' in text
    assert "none" not in text and "straight" not in text  # no unauthenticated IPMI 1.5 logins
    with pytest.raises(bmc.BmcError, match="quotes"):
        bmc.render_lan_conf(_spec(), 'pass"word', "/x")


def test_the_password_is_generated_once_per_run_dir_with_mode_0600(tmp_path: Path) -> None:
    first = bmc.password(tmp_path)
    assert len(first) == bmc.PASSWORD_LENGTH and first.isalnum()
    assert bmc.password(tmp_path) == first
    assert (tmp_path / "bmc" / "password").stat().st_mode & 0o777 == 0o600
    assert bmc.environment(tmp_path) == {"IPMI_PASSWORD": first}
    assert bmc.password(tmp_path / "other") != first


@pytest.mark.parametrize("address", ["fe80::1", "kvm1.example", "300.1.1.1"])
def test_a_bmc_needs_an_ipv4_address(address: str) -> None:
    spec = bmc.BmcSpec("kvm1", address, _spec().actions)
    with pytest.raises(bmc.BmcError, match="IPv4"):
        bmc._check_spec(spec)


def _chassis_config(tmp_path: Path, status: list[str], on: list[str] | None = None,
                    off: list[str] | None = None) -> str:
    path = tmp_path / "chassis.json"
    path.write_text(json.dumps({"on": on or ["true"], "off": off or ["true"], "status": status,
                                "log": str(tmp_path / "chassis.log")}))
    return str(path)


def test_the_chassis_program_reports_power_as_ipmi_sim_expects(tmp_path: Path) -> None:
    assert chassis.run([_chassis_config(tmp_path, ["echo", "on"]), "get", "power"]) == "power:1"
    assert chassis.run([_chassis_config(tmp_path, ["echo", "off"]), "get", "power"]) == "power:0"


@pytest.mark.parametrize("status", [["echo", "maybe"], ["false"], ["sh", "-c", "echo off; exit 3"],
                                    ["/nonexistent/status"]])
def test_an_unclear_status_is_an_error_never_off(tmp_path: Path, status: list[str]) -> None:
    """A BMC that said "off" when it cannot tell would let a fence pass with the host running."""
    with pytest.raises(chassis.ChassisError):
        chassis.run([_chassis_config(tmp_path, status), "get", "power"])
    assert chassis.main([_chassis_config(tmp_path, status), "get", "power"]) == 1


def test_the_chassis_program_runs_the_power_actions(tmp_path: Path) -> None:
    mark = tmp_path / "powered"
    config = _chassis_config(tmp_path, ["echo", "on"], on=["touch", str(mark)], off=["rm", str(mark)])
    assert chassis.run([config, "set", "power", '"1"']) == ""
    assert mark.exists()
    assert chassis.run([config, "set", "power", "0"]) == ""
    assert not mark.exists()
    with pytest.raises(chassis.ChassisError, match="exited 1"):
        chassis.run([config, "set", "power", "0"])  # rm fails: the BMC answers with an error
    assert "power off: exit 1" in (tmp_path / "chassis.log").read_text()


def test_power_actions_run_in_a_session_of_their_own(tmp_path: Path) -> None:
    """What power-on starts (a host's daemons) must not die with the BMC's process group."""
    seen = tmp_path / "sid"
    config = _chassis_config(tmp_path, ["echo", "on"],
                             on=["sh", "-c", f"ps -o sid= -p $$ > {seen}"])
    chassis.run([config, "set", "power", "1"])
    assert int(seen.read_text()) != os.getsid(0)


@pytest.mark.parametrize("args", [["get", "boot"], ["set", "reset", "1"], ["check", "power", "1"],
                                  ["set", "power"]])
def test_other_chassis_requests_are_refused(tmp_path: Path, args: list[str]) -> None:
    with pytest.raises(chassis.ChassisError):
        chassis.run([_chassis_config(tmp_path, ["echo", "on"]), *args])


def test_the_chassis_program_runs_by_path_with_the_standard_library_only(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-I", str(bmc.CHASSIS), _chassis_config(tmp_path, ["echo", "on"]),
                          "get", "power"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "power:1"
