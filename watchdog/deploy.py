"""Deploy through the Pulumi Automation API: select the stack, export/import state, `up`.

A `LocalWorkspace` in the project directory runs the project's own program with the stack file
we just wrote. The CLI is `pulumi` on PATH or `ROOT/bin/pulumi` (`PulumiCommand(root=ROOT)`).
Errors become the watchdog's own classes with one readable message each.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pulumi import automation as auto
from pulumi.automation import errors as auto_errors

from watchdog.children import Children, ChildTimedOut
from watchdog.errors import DeployError, DeployFailed, DeployTimedOut, PulumiNotFound, StackLocked
from watchdog.pulumi_command import GroupedPulumiCommand

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_LOCK_RETRIES = 6
DEFAULT_LOCK_WAIT_S = 10.0
INSTALL_HINT = ("install it (curl -fsSL https://get.pulumi.com | sh, or `make engine` for the "
                "source build) or point --pulumi-root at a directory holding bin/pulumi")


def _last_error_line(err: auto_errors.CommandError) -> str:
    text = str(err)
    stderr = text.split("stderr:", 1)[-1] if "stderr:" in text else text
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.lower().startswith("error")]
    return (errors or lines or ["no output"])[-1][:300]


class Deployer:
    """The Pulumi side of a remediation, for one stack of the project in `project_dir`."""

    def __init__(self, project_dir: str | Path, stack: str, *, pulumi_root: str | Path | None = None,
                 env: Mapping[str, str] | None = None, lock_retries: int = DEFAULT_LOCK_RETRIES,
                 lock_wait_s: float = DEFAULT_LOCK_WAIT_S,
                 sleep: Callable[[float], None] = time.sleep,
                 on_output: Callable[[str], None] | None = None,
                 children: Children | None = None) -> None:
        self.project_dir = Path(project_dir).resolve()
        self.stack_name = stack
        self.pulumi_root = Path(pulumi_root).resolve() if pulumi_root else None
        self.env = dict(env or {})
        self.lock_retries = lock_retries
        self.lock_wait_s = lock_wait_s
        self.sleep = sleep
        self.on_output = on_output or (lambda line: log.info("pulumi: %s", line))
        self._stack: auto.Stack | None = None
        self._command: GroupedPulumiCommand | None = None
        # Every CLI run is a child in its own process group, recorded there (orphans, timeouts).
        self.children = children or Children(None)

    def command(self) -> GroupedPulumiCommand:
        if self._command is None:
            self._command = self._find_command()
        return self._command

    def _find_command(self) -> GroupedPulumiCommand:
        where = f"{self.pulumi_root}/bin/pulumi" if self.pulumi_root else "`pulumi` on PATH"
        try:
            return GroupedPulumiCommand(self.children,
                                        root=str(self.pulumi_root) if self.pulumi_root else None)
        except FileNotFoundError:
            raise PulumiNotFound(f"the Pulumi CLI was not found ({where}); {INSTALL_HINT}") from None
        except PermissionError:
            raise PulumiNotFound(f"the Pulumi CLI at {where} is not executable; {INSTALL_HINT}") from None
        except auto_errors.InvalidVersionError as err:
            raise PulumiNotFound(f"the Pulumi CLI ({where}) cannot be used: {err}") from None
        except OSError as err:
            raise PulumiNotFound(f"the Pulumi CLI ({where}) cannot run: {err.strerror}") from None

    def stack(self) -> auto.Stack:
        if self._stack is None:
            options = auto.LocalWorkspaceOptions(work_dir=str(self.project_dir),
                                                 pulumi_command=self.command(), env_vars=self.env)
            self._stack = self._call("stack select", lambda: auto.select_stack(
                self.stack_name, work_dir=str(self.project_dir), opts=options))
        return self._stack

    def check(self) -> None:
        """Find the CLI and select the stack (once); raises what a later call would raise."""
        self.stack()

    def export_state(self) -> dict[str, Any]:
        """The stack's state, `{"version": N, "deployment": {...}}` (holds secrets: never log it)."""
        stack = self.stack()
        exported = self._call("stack export", stack.export_stack)
        return {"version": exported.version, "deployment": exported.deployment}

    def import_state(self, state: Mapping[str, Any]) -> None:
        """`pulumi stack import --file F`, the same argv as `Stack.import_stack`. Our own file,
        though: the SDK leaves its temp file (plaintext secrets) behind when the import fails."""
        self.stack()
        assert self._command is not None
        command = self._command
        with tempfile.TemporaryDirectory(prefix="mac-watchdog-") as private:  # 0700
            path = Path(private) / "state.json"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"version": state.get("version"), "deployment": state.get("deployment")},
                          handle)
            args = ["stack", "import", "--file", str(path), "--stack", self.stack_name]
            self._call("stack import", lambda: command.run(args, str(self.project_dir), self.env))

    def up(self, replace: Sequence[str] = (), message: str | None = None,
           timeout_s: float | None = None) -> str:
        """Run `pulumi up`, streaming its output to the log; the update's result. Past
        `timeout_s` the CLI gets SIGINT (it cancels the update and releases the stack's lock),
        then SIGKILL: DeployTimedOut."""
        stack = self.stack()
        try:
            with self.command().deadline(timeout_s):
                result = self._call("up", lambda: stack.up(
                    replace=list(replace) or None, message=message, on_output=self.on_output,
                    on_error=self.on_output, color="never"))
        except ChildTimedOut:
            raise DeployTimedOut(f"`pulumi up` ran longer than {timeout_s:g} s "
                                 "(mac:watchdog.upTimeout) and was cancelled") from None
        return str(result.summary.result)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        for attempt in range(self.lock_retries + 1):
            try:
                return fn()
            except auto_errors.ConcurrentUpdateError:
                if attempt == self.lock_retries:
                    raise StackLocked(f"stack {self.stack_name} stayed locked by another update "
                                      f"through {self.lock_retries + 1} tries of `pulumi {what}`; "
                                      "check `pulumi cancel` or a running update") from None
                log.warning("stack %s is locked by another update; retrying `pulumi %s` in %g s",
                            self.stack_name, what, self.lock_wait_s)
                self.sleep(self.lock_wait_s)
            except auto_errors.StackNotFoundError:
                raise DeployFailed(f"stack {self.stack_name} does not exist in the Pulumi backend; "
                                   f"create it with `pulumi stack init {self.stack_name}`") from None
            except auto_errors.CommandError as err:
                raise DeployFailed(f"`pulumi {what}` failed: {_last_error_line(err)}") from None
            except FileNotFoundError:
                raise PulumiNotFound(f"the Pulumi CLI disappeared while running `pulumi {what}`; "
                                     f"{INSTALL_HINT}") from None
        raise DeployError("unreachable")  # pragma: no cover
