"""What a failed `pulumi` run tells the user: the line that says why, also when `up` streamed its
output (the Automation API then hands the error no stderr)."""

from __future__ import annotations

from pulumi.automation._cmd import CommandResult
from pulumi.automation.errors import CommandError

from watchdog.deploy import _last_error_line


def failed(stderr: str = "", stdout: str = "") -> CommandError:
    return CommandError(CommandResult(stdout, stderr, 255))


def test_the_last_error_line_of_stderr() -> None:
    err = failed("Updating (ci):\nerror: update failed\nerror: h1-provider: cannot connect\n")
    assert _last_error_line(err) == "error: h1-provider: cannot connect"


def test_a_streamed_up_names_its_error_instead_of_no_output() -> None:
    streamed = ["Updating (ci):", "    libvirt:index:Domain db1-domain creating failed error: ...",
                "Diagnostics:", "  libvirt:index:Domain (db1-domain):",
                "    error: db1-domain: cannot connect to libvirt at qemu+unix:///system?socket=/h1",
                "  pulumi:pulumi:Stack (mac-ci):", "    error: update failed", ""]
    assert _last_error_line(failed(), streamed) == (
        "error: db1-domain: cannot connect to libvirt at qemu+unix:///system?socket=/h1")


def test_nothing_at_all_says_so() -> None:
    assert _last_error_line(failed()) == "no output"
