"""The Pulumi CLI as the Automation API runs it, but as a child of our own (watchdog.children):
its own process group, recorded while it runs, and bounded by a timeout when one is set.

Same argv, environment and output handling as `pulumi.automation.PulumiCommand.run`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Iterator, Mapping

from pulumi import automation as auto
from pulumi.automation._cmd import (
    _MINIMUM_VERSION,
    _SKIP_VERSION_CHECK_VAR,
    CommandResult,
    OnOutput,
    _fixup_path,
    _parse_and_validate_pulumi_version,
)
from pulumi.automation.errors import create_command_error

from watchdog.children import Children, ChildTimedOut
from watchdog.ipmitool import PASSWORD_ENV


def _child_env(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """A pulumi child's environment: the BMC password is for the fence agents only, so pulumi
    and the program it runs never see it."""
    return {k: v for k, v in {**base, **extra}.items() if k != PASSWORD_ENV}


class GroupedPulumiCommand(auto.PulumiCommand):
    def __init__(self, children: Children, root: str | None = None) -> None:
        # PulumiCommand.__init__, but its `pulumi version` without the BMC password too.
        self.command = os.path.join(root, "bin", "pulumi") if root else "pulumi"
        env = _child_env(os.environ, {"PULUMI_SKIP_UPDATE_CHECK": "true"})
        current = subprocess.check_output([self.command, "version"], env=env).decode().strip()
        self.version = _parse_and_validate_pulumi_version(
            min_version=_MINIMUM_VERSION, current_version=current.removeprefix("v"),
            opt_out=os.getenv(_SKIP_VERSION_CHECK_VAR) is not None)
        self.children = children
        self.timeout_s: float | None = None

    @contextlib.contextmanager
    def deadline(self, timeout_s: float | None) -> Iterator[None]:
        """Bound every command run inside the block by `timeout_s` (None: unbounded)."""
        previous, self.timeout_s = self.timeout_s, timeout_s
        try:
            yield
        finally:
            self.timeout_s = previous

    def run(self, args: list[str], cwd: str, additional_env: Mapping[str, str],
            on_output: OnOutput | None = None, on_error: OnOutput | None = None) -> CommandResult:
        separator = args.index("--") if "--" in args else len(args)
        if "--non-interactive" not in args[:separator]:
            args.insert(0, "--non-interactive")
        env = _child_env(os.environ, {**additional_env, "PULUMI_AUTOMATION_API": "true"})
        if os.path.isabs(self.command):
            env = _fixup_path(env, os.path.dirname(self.command))
        what = "pulumi " + " ".join(a for a in args[:3] if not a.startswith("-"))
        proc = self.children.popen([self.command, *args], what, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, cwd=cwd, env=env, encoding="utf-8")
        out: list[str] = []
        err: list[str] = []

        def consume(stream: object, callback: OnOutput | None, chunks: list[str]) -> None:
            for line in iter(stream.readline, ""):  # type: ignore[attr-defined]
                stripped = line.rstrip()
                if callback:
                    callback(stripped)
                chunks.append(stripped)

        readers = [threading.Thread(target=consume, args=(proc.stdout, on_output, out)),
                   threading.Thread(target=consume, args=(proc.stderr, on_error, err))]
        for reader in readers:
            reader.start()
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            self.children.end_group(proc.pid)

        timer = threading.Timer(self.timeout_s, expire) if self.timeout_s is not None else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            for reader in readers:
                reader.join()
            code = self.children.wait(proc, None)
        finally:
            if timer is not None:
                timer.cancel()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        if expired.is_set():
            raise ChildTimedOut(f"`{what}` ran longer than {self.timeout_s:g} s and was cancelled")
        result = CommandResult(stdout="\n".join(out), stderr="\n".join(err), code=code)
        if code != 0:
            raise create_command_error(result)
        return result
