"""`mac-watchdog`: the command line. Each command is a thin shell over the pure core."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from components.stack_file import load_topology, stack_names, stack_path
from components.topology import TopologyError

app = typer.Typer(
    name="mac-watchdog",
    help="Keeps a Medium Availability Cluster alive: probe, detect, plan, fence, redeploy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_OK = 0
EXIT_FOUND = 1  # something unhealthy / a refusal
EXIT_BAD_INPUT = 2



@app.callback()
def _root() -> None:
    """Keeps a Medium Availability Cluster alive: probe, detect, plan, fence, redeploy."""


ProjectDirOption = Annotated[
    Path, typer.Option("--project-dir", help="Directory holding Pulumi.yaml and stacks/.")
]


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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
