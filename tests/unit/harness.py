"""Run the Pulumi program (`__main__.py`) under mocks and record every resource it registers.

Each `evaluate()` starts from fresh runtime settings, a fresh root stack, fresh config and a fresh
mock monitor, so evaluations never see each other's resources (the Pulumi runtime keeps global
state in context variables; `reset_options` is how the SDK's own entry point starts over).
"""

from __future__ import annotations

import gc
import json
import logging
import runpy
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from google.protobuf import json_format
from pulumi.runtime import settings
from pulumi.runtime.mocks import MockMonitor
from pulumi.runtime.rpc import is_rpc_secret, unwrap_rpc_secret
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from components.roles import Secrets
from components.stack_file import config_values, read_document, stack_path
from components.topology import NAMESPACE

# pulumi-command warns about its own deprecated CopyFile class on import; we do not use it.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import pulumi_command

    _ = pulumi_command.remote.Command  # the module loads lazily, on first attribute access

PROJECT_DIR = Path(__file__).resolve().parents[2]
PROGRAM = PROJECT_DIR / "__main__.py"
STACKS = ("dev", "prod")
PASSWORD_TYPE = "random:index/randomPassword:RandomPassword"
STACK_REFERENCE_TYPE = "pulumi:pulumi:StackReference"


@dataclass
class Registered:
    """One resource as the engine would have seen it."""

    urn: str
    type: str
    name: str
    custom: bool
    inputs: dict[str, Any]
    parent: str
    provider: str  # "<provider URN>::<provider id>", empty for the default provider
    deleted_with: str
    dependencies: list[str]
    additional_secret_outputs: list[str] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)  # a component's register_outputs

    @property
    def provider_urn(self) -> str:
        return self.provider.rsplit("::", 1)[0] if self.provider else ""

    def plain(self, key: str) -> Any:
        """An input with its secret wrapper (if any) removed."""
        return unwrap_rpc_secret(self.inputs.get(key))


class RecordingMocks(pulumi.runtime.Mocks):
    """Echo inputs as outputs; give RandomPassword a `result` like the real provider does, and a
    StackReference the outputs of the stack's previous deploy (`previous_outputs`)."""

    def __init__(self, previous_outputs: Mapping[str, Any] | None = None) -> None:
        self.inputs: dict[tuple[str, str], dict[str, Any]] = {}
        self.previous_outputs = dict(previous_outputs or {})

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.inputs[(args.typ, args.name)] = dict(args.inputs)
        if args.typ == STACK_REFERENCE_TYPE:
            return args.inputs["name"], {"name": args.inputs["name"], "secret_output_names": [],
                                         "outputs": self.previous_outputs}
        outputs = dict(args.inputs)
        if args.typ == PASSWORD_TYPE:
            outputs["result"] = f"generated-{args.name}-{int(args.inputs['length'])}"
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        return {}, []


class RecordingMonitor(MockMonitor):
    """The SDK's mock monitor, also keeping the registration options mocks do not see."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.recording = mocks
        self.registered: list[Registered] = []

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.registered.append(Registered(
                urn=response.urn,
                type=request.type,
                name=request.name,
                custom=request.custom,
                inputs=self.recording.inputs[(request.type, request.name)],
                parent=request.parent,
                provider=request.provider,
                deleted_with=request.deletedWith,
                dependencies=list(request.dependencies),
                additional_secret_outputs=list(request.additionalSecretOutputs),
            ))
        return response

    def RegisterResourceOutputs(self, request: Any) -> Any:
        outputs = json_format.MessageToDict(request.outputs)
        for registered in self.registered:
            if registered.urn == request.urn:
                registered.outputs = outputs
        return super().RegisterResourceOutputs(request)


@dataclass
class Evaluation:
    """What one run of the program produced."""

    stack: str
    resources: list[Registered]
    outputs: dict[str, Any]
    secrets: Secrets = field(repr=False)  # the DB passwords the program used
    program: dict[str, Any] = field(repr=False)  # the program's globals (config, cluster, ...)

    def of_type(self, type_: str) -> list[Registered]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name: str) -> Registered:
        found = [r for r in self.of_type(type_) if r.name == name]
        assert len(found) == 1, f"{len(found)} resources {type_} named {name}"
        return found[0]

    def by_urn(self, urn: str) -> Registered:
        return next(r for r in self.resources if r.urn == urn)


def stack_config(stack: str) -> dict[str, Any]:
    """The `mac:` values of a stack file (without namespace), as plain JSON-able data."""
    values = config_values(read_document(stack_path(PROJECT_DIR, stack)))
    return json.loads(json.dumps(values))


def evaluate(
    stack: str,
    config: Mapping[str, Any] | None = None,
    secrets: Mapping[str, str] | None = None,
    previous_outputs: Mapping[str, Any] | None = None,
) -> Evaluation:
    """Run `__main__.py` once for `stack` (config from its stack file unless given) under mocks.

    `secrets` are extra config values set as secrets (e.g. {"sshPrivateKey": "..."});
    `previous_outputs` the stack outputs of its last deploy (none: a new stack).
    """
    values = dict(stack_config(stack) if config is None else config)
    values.update(secrets or {})
    all_config = {
        f"{NAMESPACE}:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in values.items()
    }
    settings.reset_options(project="mac", stack=stack, preview=False)
    pulumi.runtime.set_all_config(all_config, [f"{NAMESPACE}:{k}" for k in secrets or {}])
    mocks = RecordingMocks(previous_outputs)
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project="mac", stack=stack, preview=False, monitor=monitor)
    result: dict[str, Any] = {}

    async def program() -> None:
        result["globals"] = runpy.run_path(str(PROGRAM), run_name="__main__")
        root = settings.get_root_resource()
        assert isinstance(root, pulumi.runtime.stack.Stack)
        result["outputs"] = await pulumi.Output.from_input(dict(root.outputs)).future()
        result["secrets"] = await result["globals"]["config"].secrets.future()

    failure: Exception | None = None
    try:
        _sync_await(run_pulumi_func(program))
    except Exception as err:  # re-raised below, without the program's futures
        failure = type(err)(str(err))
    finally:
        # Leave no monitor, root stack or config behind for whatever runs next.
        settings.reset_options()
        pulumi.runtime.set_all_config({}, [])
    if failure is not None:
        _collect_failed_futures(result)
        raise failure
    return Evaluation(
        stack, list(monitor.registered), result["outputs"], result["secrets"], result["globals"]
    )


def _collect_failed_futures(result: dict[str, Any]) -> None:
    """Free a failed program's futures now: asyncio logs each unretrieved error from a
    finalizer, and CPython 3.11 breaks when that happens inside a later compile()."""
    result.clear()
    asyncio_log = logging.getLogger("asyncio")
    level = asyncio_log.level
    asyncio_log.setLevel(logging.CRITICAL)
    try:
        gc.collect()
    finally:
        asyncio_log.setLevel(level)


def walk_plain(value: Any, secret: bool = False) -> Iterator[tuple[Any, bool]]:
    """Every scalar inside an input value, with whether it sits inside a secret."""
    if is_rpc_secret(value):
        yield from walk_plain(unwrap_rpc_secret(value), True)
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from walk_plain(item, secret)
    elif isinstance(value, list):
        for item in value:
            yield from walk_plain(item, secret)
    else:
        yield value, secret
