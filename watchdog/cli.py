"""`mac-watchdog`: the command line. Each command is a thin shell over the pure core."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.status import Status as RichStatus
from typer.core import TyperArgument, TyperOption

from components.stack_file import file_hash, load_topology, stack_names, stack_path
from components.topology import Topology, TopologyError
from watchdog.context import Context, Seams
from watchdog.detect import Failures
from watchdog.errors import BadInput, RemediationRefused, WatchdogError
from watchdog.events import Event, EventKind, EventSink, fan_out
from watchdog.git import GitRecorder
from watchdog.jsonlog import JsonFormatter
from watchdog.leader import coordinator, leader_status, leadership_lines, take_the_lead
from watchdog.metrics import DEFAULT_METRICS_ADDRESS, DEFAULT_METRICS_PORT, Metrics, MetricsSink, serve
from watchdog.plan import Action, plan
from watchdog.present import Status, plan_lines
from watchdog.reclaim import reclaim as reclaim_host
from watchdog.sdnotify import LoopNotifier, Notifier
from watchdog.seen import HealthBook, read_seen
from watchdog.target import Kind, fenced_host_targets
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


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mac-watchdog {_package_version()}")
        raise typer.Exit(EXIT_OK)


def _package_version() -> str:
    try:
        return metadata.version("mac")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


@app.callback()
def _root(
    version: Annotated[bool | None, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = None,
) -> None:
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
EtcdOption = Annotated[
    str | None,
    typer.Option("--etcd", envvar="MAC_ETCD", help="etcd client URLs (URL[,URL...]): several "
                 "watchdogs share the stack, the leader acts; default mac:watchdog.etcd."),
]


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
             pulumi_root: Path | None = None, *listeners: EventSink) -> Context:
    """The command's Context; `listeners` hear its events beside the caller's seams."""
    name = _resolve_stack(project_dir, stack)
    seams = command.obj if isinstance(command.obj, Seams) else Seams()
    return Context(project_dir=project_dir, stack=name,
                   state_dir=state_dir or project_dir / STATE_DIR_NAME / name,
                   pulumi_root=pulumi_root, events=fan_out(seams.events, *listeners),
                   transport=seams.transport)


@app.command()
def validate(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(help="Stack files to validate (e.g. a PR's changed Pulumi.x.yaml).",
                       show_default=False),
    ] = None,
    stack: Annotated[
        list[str] | None,
        typer.Option("--stack", "-s", help="Stack to validate (repeatable); default: every stack file."),
    ] = None,
    project_dir: ProjectDirOption = Path("."),
) -> None:
    """Check stack files against the cluster rules; one line per problem, exit 2 when any."""
    files = [(str(p), p) for p in paths or []]
    files += [(name, stack_path(project_dir, name)) for name in stack or []]
    if not files:
        files = [(name, stack_path(project_dir, name)) for name in stack_names(project_dir)]
    if not files:
        typer.echo(f"error: no stack files in {project_dir / 'stacks'}; expected Pulumi.<stack>.yaml",
                   err=True)
        raise typer.Exit(EXIT_BAD_INPUT)
    failed = False
    for name, path in files:
        try:
            topology = load_topology(path)
        except TopologyError as err:
            failed = True
            for problem in err.problems:
                line = str(problem)  # a whole-file problem already starts with the file's path
                typer.echo(line if line.startswith(f"{path}:") else f"{name}: {line}", err=True)
            continue
        typer.echo(f"{name}: ok ({_count(len(topology.hosts), 'host')}, "
                   f"{_count(len(topology.spares), 'spare')}, {_count(len(topology.nodes), 'node')})")
    if failed:
        raise typer.Exit(EXIT_BAD_INPUT)


@app.command()
def status(
    command: typer.Context,
    stack: StackOption = None,
    project_dir: ProjectDirOption = Path("."),
    state_dir: StateDirOption = None,
    as_json: JsonOption = False,
    watch: Annotated[bool, typer.Option(
        "--watch", "-w", help="Keep probing and redraw (Ctrl-C to leave): a failover as it happens.")
    ] = False,
    interval: Annotated[float, typer.Option(
        "--interval", min=0.2, help="Seconds between redraws with --watch.")] = 2.0,
    etcd: EtcdOption = None,
) -> None:
    """Probe everything once: hosts and nodes with role, where each runs, health, since when, and
    the pending remediation (or --json); exit 0 all healthy, 1 something unhealthy. With etcd: who
    leads, since when, and each watchdog's view."""
    with _errors():
        if watch and as_json:
            raise BadInput("--watch draws a live table; --json prints one snapshot: pick one")
        ctx = _context(command, project_dir, stack, state_dir)
        report = _status(ctx)
        if watch:
            _watch(ctx, report, interval)
            raise typer.Exit(EXIT_OK)
        leaders = leader_status(etcd or report.topology.watchdog.etcd, ctx.stack)
    if as_json:
        typer.echo(json.dumps({**report.to_json(), **({"leadership": leaders} if leaders else {})},
                              indent=2))
    else:
        _console().print(report.table())
        _echo(leadership_lines(leaders) if leaders else [])
    raise typer.Exit(EXIT_OK if report.healthy else EXIT_FOUND)


def _status(ctx: Context) -> Status:
    topology = ctx.topology()
    results = asyncio.run(ctx.probe_all(topology))
    fenced = fenced_host_targets(topology)  # a fenced host that answers again: split brain?
    back = asyncio.run(ctx.probe(fenced, topology.watchdog.probe_timeout_s)) if fenced else []
    pending = ctx.journal.pending()
    entries = [] if pending is None else [e for e in ctx.journal.entries() if e.get("id") == pending.id]
    return Status(ctx.stack, topology, ctx.targets(topology), results, pending,
                  answering=tuple(r.key.name for r in back if r.ok),
                  seen=read_seen(ctx.state_dir), journal=entries, now=ctx.clock())


class _StepProgress:
    """Shows a remediation's steps as the journal records them (failover, reclaim): a spinner on
    the running step in a terminal, and one line per step with how long it took."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._steps: list[str] = []
        self._started: dict[str, float] = {}
        self._spinner: RichStatus | None = None

    def __call__(self, event: Event) -> None:
        if event.kind is not EventKind.JOURNALED:
            return
        entry = event.data
        if entry.get("event") == "planned":
            self._steps = [str(s) for s in entry.get("plan", {}).get("steps", ())]
        elif entry.get("event") == "step":
            step, status = str(entry.get("step")), entry.get("status")
            where = f"[{self._steps.index(step) + 1}/{len(self._steps)}] " if step in self._steps else ""
            if status == "started":
                self._started[step] = time.monotonic()
                if self.console.is_terminal:
                    self._spinner = self.console.status(f"{where}{step} ...")
                    self._spinner.start()
                return
            if self._spinner is not None:
                self._spinner.stop()
                self._spinner = None
            took = time.monotonic() - self._started.pop(step, time.monotonic())
            error = f": {entry['error']}" if entry.get("error") else ""
            self.console.print(f"{where}{step}: {status} in {took:.1f} s{error}")


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def _watch(ctx: Context, report: Status, interval: float) -> None:
    """Redraw the status every `interval` until Ctrl-C."""
    console = _console()
    with contextlib.suppress(KeyboardInterrupt), \
            Live(report.table(), console=console, auto_refresh=False, transient=False) as live:
        while True:
            time.sleep(interval)
            live.update(_status(ctx).table(), refresh=True)


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


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


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
    etcd: EtcdOption = None,
) -> None:
    """Manual failover of HOST through the same pipeline as `run` (skips cooldown and budget).
    Beside watchdogs on etcd, only while none of them leads."""
    _setup_logging()
    with _errors():
        ctx = _context(command, project_dir, stack, state_dir, pulumi_root,
                       _StepProgress(Console(stderr=True, highlight=False)))
        source = file_hash(ctx.stack_file)
        topology = ctx.topology()
        if not dry_run:
            ctx.coordinator = take_the_lead(ctx, etcd, "failover")
        if host not in topology.hosts:
            raise BadInput(f"HOST = {host!r}: not a host in mac:hosts (known: {', '.join(topology.hosts)})")
        if not dry_run and ctx.journal.pending() is not None:
            log.warning("an unfinished remediation comes first: resuming it")
            ctx.remediator(topology).resume()
            source = file_hash(ctx.stack_file)
            topology = ctx.topology()
        # Which nodes answer now: a DB node is only rebuilt on a fresh disk beside a healthy peer.
        results = asyncio.run(ctx.probe_all(topology))
        healthy = {r.key.name for r in results if r.ok and r.key.kind is Kind.NODE}
        # The plan remembers the file it was made from: if another failover (or a person) changes
        # it while this one waits at its prompt, the write refuses instead of undoing that change.
        p = replace(plan(topology, Failures(hosts=(host,)), ctx.journal.history(), ctx.clock(),
                         manual=True, healthy=healthy), source_hash=source)
        _echo(plan_lines(p))
        if p.action is Action.REFUSE:  # the plan's `reason:` line said why; nothing more to add
            raise typer.Exit(EXIT_FOUND)
        if dry_run or not p.steps:
            raise typer.Exit(EXIT_OK)
        question = (f"Fence {', '.join(p.fence)} and carry out this plan?" if p.fence
                    else f"Carry out this plan for {host}?")
        if not yes and not typer.confirm(question, default=False):
            raise _fail("not confirmed; nothing changed (pass --yes to skip the question)", EXIT_FOUND)
        try:
            outcome = ctx.remediator(topology).execute(p, "manual")
        finally:
            ctx.coordinator.close()
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
        "--json-log", help="Log one JSON object per line on stderr (decisions carry the whole plan).")
    ] = False,
    etcd: EtcdOption = None,
    name: Annotated[str | None, typer.Option(
        "--name", help="This watchdog's name among several (default HOSTNAME:PID).")] = None,
    git_commit: Annotated[bool, typer.Option(
        "--git-commit", help="Commit every stack file the watchdog writes (what moved where, why), "
                             "so a later deploy from git cannot undo a failover.")] = False,
    git_push: Annotated[bool, typer.Option(
        "--git-push", help="Push each such commit too (implies --git-commit).")] = False,
    metrics_address: Annotated[str, typer.Option(
        "--metrics-address", help="Address to serve Prometheus metrics on (/metrics).")
    ] = DEFAULT_METRICS_ADDRESS,
    metrics_port: Annotated[int, typer.Option(
        "--metrics-port", help="Port of the metrics endpoint; 0 turns it off.")] = DEFAULT_METRICS_PORT,
) -> None:
    """The watchdog loop: probe, detect, plan, remediate.

    Ctrl-C stops the loop (a step that is running finishes first); an unfinished remediation
    resumes at the next start. Under systemd (Type=notify) it reports READY and pings the service
    manager's watchdog after every round."""
    _setup_logging(json_log=json_log)
    with _errors():
        stack_name = _resolve_stack(project_dir, stack)
        metrics = Metrics(stack_name)
        notify = LoopNotifier(Notifier.from_environ(), stack_name)
        state = state_dir or project_dir / STATE_DIR_NAME / stack_name
        ctx = _context(command, project_dir, stack_name, state, pulumi_root, MetricsSink(metrics),
                       HealthBook(state), notify)
        ctx.coordinator = coordinator(ctx, etcd, name)
        if git_commit or git_push:
            ctx.git = GitRecorder(ctx.stack_file, push=git_push)
        watchdog = Watchdog(ctx, dry_run=dry_run)
        server = serve(metrics, metrics_address, metrics_port) if metrics_port else None
        try:
            code = asyncio.run(watchdog.run(once=once))
        except KeyboardInterrupt:
            pending = None if dry_run else ctx.journal.pending()
            if pending is None:
                raise _fail("interrupted", 130) from None
            raise _fail(f"interrupted; remediation {pending.id} ({pending.plan.reason}) resumes at "
                        f"step {pending.next_step} at the next start", 130) from None
        finally:
            ctx.coordinator.close()
            notify.stopping()
            if server is not None:
                server.close()
    raise typer.Exit(code)


@app.command()
def reclaim(
    command: typer.Context,
    host: Annotated[str, typer.Argument(help="The repaired host to put back as a spare.")],
    force: Annotated[bool, typer.Option("--force", help="Skip the domain check (no virsh here).")] = False,
    stack: StackOption = None,
    project_dir: ProjectDirOption = Path("."),
    state_dir: StateDirOption = None,
    pulumi_root: PulumiRootOption = None,
    etcd: EtcdOption = None,
) -> None:
    """Put a repaired host back as a spare: once reachable, its stale MAC domains destroyed, and
    dropped from the stack's record of fenced hosts (so the program may use it again). Beside
    watchdogs on etcd, only while none of them leads."""
    with _errors():
        ctx = _context(command, project_dir, stack, state_dir, pulumi_root,
                       _StepProgress(Console(stderr=True, highlight=False)))
        ctx.coordinator = take_the_lead(ctx, etcd, "reclaim")
        try:
            outcome = reclaim_host(ctx, host, force)
        finally:
            ctx.coordinator.close()
    typer.echo(f"{host} is a spare again (spares: {', '.join(outcome.plan.topology.spares)}); the "
               "next `pulumi up` prepares its pool and base image")


class _PlainArgument(TyperArgument):
    """An argument that reads HOST in the usage line, as in pulumi's and kubectl's help."""

    def _usage_display_name(self) -> str:
        return self.display_name_raw


def _tidy(command: Any) -> None:
    """Help as people expect it: a flag shows no `<bool>`, an argument is HOST, not {host}."""
    for param in command.params:
        if isinstance(param, TyperOption) and param.is_flag:
            param.metavar = ""
        elif isinstance(param, TyperArgument):
            param.metavar = param.metavar or (param.name or "").upper()
            param.__class__ = _PlainArgument
    make_help_option = command.get_help_option

    def help_option(ctx: Any) -> Any:  # --help is made per call, not kept in params
        option = make_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option
    command.get_help_option = help_option
    for sub in getattr(command, "commands", {}).values():
        _tidy(sub)


def main(argv: list[str] | None = None, seams: Seams | None = None) -> None:
    """Entry point: usage errors too become one `error:` line and exit 2. `seams`: what a test
    or a benchmark plugs in (events, the probe transport)."""
    command = typer.main.get_command(app)
    _tidy(command)
    try:
        code = command.main(args=argv, prog_name="mac-watchdog", standalone_mode=False,
                            obj=seams or Seams())
    except typer.TyperException as err:  # click's usage errors, as typer re-exports them
        message = err.format_message()
        if type(err).__name__ == "NoArgsIsHelpError":  # no arguments: the help, like pulumi's
            if message.strip():  # (typer's rich help is printed already, and this is empty)
                typer.echo(message)
            sys.exit(EXIT_OK)
        if "\n" in message:  # a help text
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
