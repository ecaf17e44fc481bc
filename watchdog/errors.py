"""The watchdog's exceptions: one class per failure an operator must tell apart.

Every class carries a message that is a complete sentence naming what failed and what to do, so
the CLI prints `error: <message>` and nothing else.
"""

from __future__ import annotations


class WatchdogError(Exception):
    """Base class: something the watchdog could not do."""


class BadInput(WatchdogError):
    """A command-line value or stack setting that cannot be used (exit 2)."""


class RemediationRefused(WatchdogError):
    """The safety rules forbid acting (no fence configured, lock held, host not reclaimable)."""


class LockHeld(RemediationRefused):
    """Another remediation holds the lock file."""


class LockUnavailable(RemediationRefused):
    """The lock file cannot be created (a read-only stacks directory)."""


class StackFileMoved(RemediationRefused):
    """The stack file is not the one the plan was made from, or no longer holds its result:
    nothing is written over it; the loop plans again from the file as it is."""


class FenceError(WatchdogError):
    """The fence command failed, timed out or could not be started."""


class FenceRefused(RemediationRefused):
    """The host has no fence command and does not say `fence: none` explicitly."""


class StateError(WatchdogError):
    """Reading, pruning or writing the Pulumi state failed."""


class DeployError(WatchdogError):
    """Base class for failures of the Pulumi CLI."""


class PulumiNotFound(DeployError):
    """The Pulumi CLI is not installed where we looked."""


class StackLocked(DeployError):
    """The stack stayed locked by another update through every retry."""


class DeployFailed(DeployError):
    """`pulumi up` (or another CLI command) failed; the written change is kept for a retry."""


class DeployTimedOut(DeployFailed):
    """`pulumi up` ran past mac:watchdog.upTimeout and was cancelled; retried with backoff."""


class VerifyFailed(WatchdogError):
    """The moved or replaced nodes did not turn healthy within the verify timeout."""


class StackFileUnwritable(WatchdogError):
    """The stack file cannot be written (a read-only stacks directory); resumed at that step."""


class JournalError(WatchdogError):
    """The journal cannot be read or written."""


class NotLeader(WatchdogError):
    """Several watchdogs share the stack and this one cannot prove it leads: it must not act."""
