"""`mac-watchdog`: the command line. Each command is a thin shell over the pure core."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from components.stack_file import load_topology, stack_names, stack_path
from components.topology import Topology, TopologyError
from watchdog.context import Context, Seams
from watchdog.detect import Failures
from watchdog.errors import BadInput, RemediationRefused, WatchdogError
from watchdog.jsonlog import JsonFormatter
from watchdog.plan import Action, plan
from watchdog.present import Status, plan_lines
from watchdog.reclaim import reclaim as reclaim_host
from watchdog.watch import Watchdog

app = typer.Typer(
    name="mac-watchdog",
    help="Keeps a Medium Availability Cluster alive: probe, detect, plan, fence, redeploy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_OK = 0
EXIT_FOUND = 1  # something unhealthy / a refusal / a failed remediation
EXIT_BAD_INPUT = 2
STATE_DIR_NAME = ".watchdog"
log = logging.getLogger("mac-watchdog")


@app.callback()
def _root() -> None:
    """Keeps a Medium Availability Cluster alive: probe, detect, plan, fence, redeploy."""


ProjectDirOption = Annotated[
    Path, typer.Option("--project-dir", help="Directory holding Pulumi.yaml and stacks/.")
]
StackOption = Annotated[
    str | None,
    typer.Option("--stack", "-s", envvar="MAC_STACK",
                 help="Stack name (stacks/Pulumi.<stack>.yaml); default: the only stack file."),
]
StateDirOption = Annotated[
    Path | None,
    typer.Option("--state-dir", help="Where the journal and lock live; default PROJECT/.watchdog/STACK."),
]
PulumiRootOption = Annotated[
    Path | None,
    typer.Option("--pulumi-root", help="Directory with bin/pulumi; default: `pulumi` on PATH."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


@contextmanager
def _errors() -> Iterator[None]:
    """Every failure class -> one line on stderr and its exit code; never a traceback."""
    try:
        yield
    except TopologyError as err:
        for problem in err.problems:
            typer.echo(f"error: {problem}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    except BadInput as err:
        raise _fail(str(err), EXIT_BAD_INPUT) from None
    except RemediationRefused as err:
        raise _fail(f"refused: {err}", EXIT_FOUND) from None
    except WatchdogError as err:
        raise _fail(str(err), EXIT_FOUND) from None


def _setup_logging(verbose: bool = False, json_log: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_log else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # A no-op where logging is set up already (in-process tests: records still carry the fields).
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])


def _resolve_stack(project_dir: Path, stack: str | None) -> str:
    names = stack_names(project_dir)
    if stack is None:
        if len(names) == 1:
            return names[0]
        known = ", ".join(names) or f"none in {project_dir / 'stacks'}"
        raise BadInput(f"--stack is missing; pass --stack NAME (stack files: {known})")
    if not stack_path(project_dir, stack).exists():
        known = ", ".join(names) or "none"
        raise BadInput(f"--stack = {stack!r}: no file {stack_path(project_dir, stack)}; "
                       f"known stacks: {known}")
    return stack


def _context(command: typer.Context, project_dir: Path, stack: str | None, state_dir: Path | None,
             pulumi_root: Path | None = None) -> Context:
    name = _resolve_stack(project_dir, stack)
    seams = command.obj if isinstance(command.obj, Seams) else Seams()
    return Context(project_dir=project_dir, stack=name,
                   state_dir=state_dir or project_dir / STATE_DIR_NAME / name,
                   pulumi_root=pulumi_root, events=seams.events, transport=seams.transport)


@app.command()
def validate(
    stack: Annotated[
        list[str] | None,
        typer.Option("--stack", "-s", help="Stack to validate (repeatable); default: every stack file."),
    ] = None,
    project_dir: ProjectDirOption = Path("."),
) -> None:
    """Check stack files against the cluster rules; one line per problem, exit 2 when any."""
    names = stack or stack_names(project_dir)
    if not names:
        typer.echo(f"error: no stack files in {project_dir / 'stacks'}; expected Pulumi.<stack>.yaml",
                   err=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    failed = False
    for name in names:
        path = stack_path(project_dir, name)
        try:
            topology = load_topology(path)
        except TopologyError as err:
            failed = True
            for problem in err.problems:
                typer.echo(f"{name}: {problem}", err=True)
            continue
        typer.echo(f"{name}: ok ({len(topology.hosts)} hosts, {len(topology.spares)} spares, "
                   f"{len(topology.nodes)} nodes)")
    if failed:
        raise typer.Exit(EXIT_BAD_INPUT)


@app.command()
def status(
    command: typer.Context,
    stack: StackOption = None,
    project_dir: ProjectDirOption = Path("."),
    state_dir: StateDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Probe everything once: a table (or --json); exit 0 all healthy, 1 something unhealthy."""
    with _errors():
        ctx = _context(command, project_dir, stack, state_dir)
        topology = ctx.topology()
        results = asyncio.run(ctx.probe_all(topology))
        report = Status(ctx.stack, topology, ctx.targets(topology), results, ctx.journal.pending())
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        _echo(report.lines())
    raise typer.Exit(EXIT_OK if report.healthy else EXIT_FOUND)


def _failures_for(topology: Topology, names: list[str]) -> Failures:
    hosts, nodes, unknown = [], [], []
    for name in names:
        if name in topology.hosts:
            hosts.append(name)
        elif name in topology.nodes:
            nodes.append(name)
        else:
            unknown.append(name)
    if unknown:
        raise BadInput(f"--fail = {unknown[0]!r}: neither a host nor a node of this stack "
                       f"(hosts: {', '.join(topology.hosts)}; nodes: {', '.join(topology.nodes)})")
    return Failures(hosts=tuple(sorted(set(hosts))), nodes=tuple(sorted(set(nodes))))


def _echo(lines: list[str]) -> None:
    for line in lines:
        typer.echo(line)


@app.command("plan")
def plan_command(
    command: typer.Context,
    fail: Annotated[list[str], typer.Option("--fail", help="A host or node to assume failed (repeatable).")],
    stack: StackOption = None,
    project_dir: ProjectDirOption = Path("."),
    state_dir: StateDirOption = None,
    as_json: JsonOption = False,
) -> None:
    """What the watchdog would do if these failed (pure). Exit 0 failover/replace/none, 1 refuse."""
    with _errors():
        ctx = _context(command, project_dir, stack, state_dir)
        topology = ctx.topology()
        failures = _failures_for(topology, fail)
        p = plan(topology, failures, ctx.journal.history(), ctx.clock())
    if as_json:
        typer.echo(json.dumps(p.to_json(), indent=2))
    else:
        _echo(plan_lines(p))
    raise typer.Exit(EXIT_FOUND if p.action is Action.REFUSE else EXIT_OK)


@app.command()
def failover(
    command: typer.Context,
    host: Annotated[str, typer.Argument(help="The host to fence and move off.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan and steps; change nothing.")] = False,
    stack: StackOption = None,
    project_dir: ProjectDirOption = Path("."),
    state_dir: StateDirOption = None,
    pulumi_root: PulumiRootOption = None,
) -> None:
    """Manual failover of HOST through the same pipeline as `run` (skips cooldown and budget)."""
    _setup_logging()
    with _errors():
        ctx = _context(command, project_dir, stack, state_dir, pulumi_root)
        topology = ctx.topology()
        if host not in topology.hosts:
            raise BadInput(f"HOST = {host!r}: not a host in mac:hosts (known: {', '.join(topology.hosts)})")
        if not dry_run and ctx.journal.pending() is not None:
            log.warning("an unfinished remediation comes first: resuming it")
            ctx.remediator(topology).resume()
            topology = ctx.topology()
        p = plan(topology, Failures(hosts=(host,)), ctx.journal.history(), ctx.clock(), manual=True)
        _echo(plan_lines(p))
        if p.action is Action.REFUSE:
            raise RemediationRefused(p.reason)
        if dry_run or not p.steps:
            raise typer.Exit(EXIT_OK)
        question = (f"Fence {', '.join(p.fence)} and carry out this plan?" if p.fence
                    else f"Carry out this plan for {host}?")
        if not yes and not typer.confirm(question, default=False):
            raise _fail("not confirmed; nothing changed (pass --yes to skip the question)", EXIT_FOUND)
        outcome = ctx.remediator(topology).execute(p, "manual")
    typer.echo(f"done: remediation {outcome.id} ({', '.join(s.value for s in outcome.ran)})")


@app.command()
def run(
    command: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="Watch one detection window, act, then exit.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Do everything but fence/write/deploy.")] = False,
    stack: StackOption = None,
    project_dir: ProjectDirOption = Path("."),
    state_dir: StateDirOption = None,
    pulumi_root: PulumiRootOption = None,
    json_log: Annotated[bool, typer.Option(
        "--json-log", help="Log one JSON object per line (decisions carry the whole plan).")] = False,
) -> None:
    """The watchdog loop: probe, detect, plan, remediate. Ctrl-C stops the loop (a step that is
    running finishes first); an unfinished remediation resumes at the next start."""
    _setup_logging(json_log=json_log)
    with _errors():
        ctx = _context(command, project_dir, stack, state_dir, pulumi_root)
        watchdog = Watchdog(ctx, dry_run=dry_run)
        try:
            code = asyncio.run(watchdog.run(once=once))
        except KeyboardInterrupt:
            raise _fail("interrupted; an unfinished remediation resumes at the next start", 130) from None
    raise typer.Exit(code)


@app.command()
def reclaim(
    command: typer.Context,
    host: Annotated[str, typer.Argument(help="The repaired host to put back as a spare.")],
    force: Annotated[bool, typer.Option("--force", help="Skip the domain check (no virsh here).")] = False,
    stack: StackOption = None,
    project_dir: ProjectDirOption = Path("."),
    state_dir: StateDirOption = None,
) -> None:
    """Put a repaired host back as a spare: only when reachable and running none of our domains."""
    with _errors():
        ctx = _context(command, project_dir, stack, state_dir)
        outcome = reclaim_host(ctx, host, force)
    typer.echo(f"{host} is a spare again (spares: {', '.join(outcome.plan.topology.spares)}); the "
               "next `pulumi up` prepares its pool and base image")


def main(argv: list[str] | None = None, seams: Seams | None = None) -> None:
    """Entry point: usage errors too become one `error:` line and exit 2. `seams`: what a test
    or a benchmark plugs in (events, the probe transport)."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="mac-watchdog", standalone_mode=False,
                            obj=seams or Seams())
    except typer.TyperException as err:  # click's usage errors, as typer re-exports them
        message = err.format_message()
        if "\n" in message:  # no arguments at all: the help text
            typer.echo(message, err=True)
        else:
            ctx = getattr(err, "ctx", None)
            where = ctx.command_path if ctx is not None else "mac-watchdog"
            typer.echo(f"error: {message} (see `{where} --help`)", err=True)
        sys.exit(err.exit_code)
    except (typer.Abort, KeyboardInterrupt, EOFError):
        typer.echo("error: aborted; nothing changed", err=True)
        sys.exit(EXIT_FOUND)
    sys.exit(code if isinstance(code, int) else EXIT_OK)
