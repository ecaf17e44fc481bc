"""Every mocked libvirt/command resource's inputs, checked against the providers' own schemas.

The SDKs do not catch a misspelled key inside a plain dict, and libvirt resources have no
required inputs, so a wrong name would register silently; the published schemas know better.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Set
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pulumi.runtime.rpc import is_rpc_secret, unwrap_rpc_secret

from tests.unit.harness import Evaluation, evaluate

SCHEMA_DIR = Path(__file__).resolve().parents[3] / "shared" / "schemas"
SCHEMA_FILES = {
    "libvirt": "pulumi-libvirt-0.5.4.schema.json",
    "command": "pulumi-command-1.2.1.schema.json",
}
# Inputs the engine adds to every provider resource, not part of a provider's schema.
PROVIDER_ENGINE_INPUTS = {"version", "pluginDownloadURL"}

pytestmark = pytest.mark.skipif(
    not all((SCHEMA_DIR / f).is_file() for f in SCHEMA_FILES.values()),
    reason=f"provider schemas not found in {SCHEMA_DIR} (they live beside the project, "
    "in ../shared/schemas; a plain clone has none)",
)


@cache
def schema(package: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / SCHEMA_FILES[package]).read_text())


def resource_spec(type_: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(schema, {inputProperties, requiredInputs}) for a resource type, None if not ours."""
    if type_.startswith("pulumi:providers:"):
        package = type_.rsplit(":", 1)[1]
        if package not in SCHEMA_FILES:
            return None
        s = schema(package)
        return s, {"inputProperties": s["provider"].get("inputProperties", {}),
                   "requiredInputs": s["provider"].get("requiredInputs", [])}
    package = type_.split(":", 1)[0]
    if package not in SCHEMA_FILES:
        return None
    s = schema(package)
    assert type_ in s["resources"], f"{type_} is not a resource of {SCHEMA_FILES[package]}"
    return s, s["resources"][type_]


def check_value(s: dict[str, Any], spec: Mapping[str, Any], value: Any, path: str) -> list[str]:
    """Problems with `value` against a property spec (type, items, $ref, enum)."""
    value = unwrap_rpc_secret(value) if is_rpc_secret(value) else value
    if value is None:
        return []
    ref = spec.get("$ref")
    if ref is not None:
        if ref.startswith("pulumi.json#/"):  # Any, Archive, Asset, Json: nothing to check here
            return []
        type_spec = s["types"][ref.removeprefix("#/types/")]
        return check_object(s, type_spec, value, path)
    kind = spec.get("type")
    if kind == "string":
        return [] if isinstance(value, str) else [f"{path}: {value!r} is not a string"]
    if kind == "boolean":
        return [] if isinstance(value, bool) else [f"{path}: {value!r} is not a boolean"]
    if kind == "integer":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()
        return [] if ok else [f"{path}: {value!r} is not an integer"]
    if kind == "number":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return [] if ok else [f"{path}: {value!r} is not a number"]
    if kind == "array":
        if not isinstance(value, list):
            return [f"{path}: {value!r} is not an array"]
        items = spec["items"]
        return [p for i, item in enumerate(value) for p in check_value(s, items, item, f"{path}[{i}]")]
    if kind == "object":
        if not isinstance(value, Mapping):
            return [f"{path}: {value!r} is not an object"]
        inner = spec.get("additionalProperties", {})
        return [p for k, v in value.items() for p in check_value(s, inner, v, f"{path}.{k}")]
    return [f"{path}: the schema's spec {spec!r} is not understood by this test"]


def check_object(s: dict[str, Any], type_spec: Mapping[str, Any], value: Any, path: str) -> list[str]:
    """Problems with `value` against an object or enum type of the schema's `types`."""
    if "enum" in type_spec:
        allowed = [e["value"] for e in type_spec["enum"]]
        return [] if value in allowed else [f"{path}: {value!r} is not one of {allowed}"]
    if not isinstance(value, Mapping):
        return [f"{path}: {value!r} is not an object"]
    return check_inputs(s, type_spec.get("properties", {}), type_spec.get("required", []), value, path)


def check_inputs(
    s: dict[str, Any], properties: Mapping[str, Any], required: list[str], value: Mapping[str, Any],
    path: str, ignore: Set[str] = frozenset(),
) -> list[str]:
    problems = [f"{path}.{k}: unknown input (known: {', '.join(sorted(properties))})"
                for k in value if k not in properties and k not in ignore]
    problems += [f"{path}.{k}: required input missing" for k in required if value.get(k) is None]
    for key, item in value.items():
        if key in properties:
            problems += check_value(s, properties[key], item, f"{path}.{key}")
    return problems


def resource_problems(type_: str, name: str, inputs: Mapping[str, Any]) -> list[str] | None:
    """Problems with one registered resource's inputs; None when no schema covers its type."""
    found = resource_spec(type_)
    if found is None:
        return None
    s, spec = found
    ignore = PROVIDER_ENGINE_INPUTS if type_.startswith("pulumi:providers:") else frozenset()
    return check_inputs(s, spec.get("inputProperties", {}), spec.get("requiredInputs", []),
                        inputs, f"{type_} {name}", ignore)


@pytest.fixture(scope="module", params=["dev", "prod"])
def stack_evaluation(request: pytest.FixtureRequest) -> Evaluation:
    return evaluate(request.param, secrets={"sshPrivateKey": "dummy-key"})


def test_every_provider_resource_matches_its_schema(stack_evaluation: Evaluation) -> None:
    checked = 0
    report: list[str] = []
    for r in stack_evaluation.resources:
        found = resource_problems(r.type, r.name, r.inputs)
        if found is not None:
            checked += 1
            report += found
    assert not report, "\n".join(report)
    types = {r.type for r in stack_evaluation.resources if resource_spec(r.type) is not None}
    assert {"pulumi:providers:libvirt", "libvirt:index/domain:Domain", "libvirt:index/volume:Volume",
            "libvirt:index/pool:Pool", "libvirt:index/cloudInitDisk:CloudInitDisk",
            "command:remote:Command"} <= types
    assert checked > 20


# --- the checker itself catches what it is for --------------------------------------------

DOMAIN = "libvirt:index/domain:Domain"


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ({"autostart": False, "vcpu": 2.0}, None),
        ({"autoStart": False}, "autoStart: unknown input"),
        ({"vcpu": "2"}, "vcpu: '2' is not an integer"),
        ({"vcpu": 1.5}, "vcpu: 1.5 is not an integer"),
        ({"disks": [{"volumeID": "v"}]}, "disks[0].volumeID: unknown input"),
        ({"disks": {"volumeId": "v"}}, "is not an array"),
        ({"networkInterfaces": [{"bridge": "br0", "waitForLease": "no"}]},
         "networkInterfaces[0].waitForLease: 'no' is not a boolean"),
    ],
)
def test_checker_catches_wrong_domain_inputs(inputs: dict[str, Any], expected: str | None) -> None:
    problems = resource_problems(DOMAIN, "d", inputs)
    assert problems is not None
    if expected is None:
        assert problems == []
    else:
        assert any(expected in p for p in problems), problems


def test_checker_sees_through_secrets_and_required_nested_fields() -> None:
    secret_connection = {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270",
                         "value": {"user": "root", "prot": 22}}
    problems = resource_problems("command:remote:Command", "c", {"connection": secret_connection})
    assert problems is not None
    assert any("connection.prot: unknown input" in p for p in problems)
    assert any("connection.host: required input missing" in p for p in problems)
    assert resource_problems("command:remote:Command", "c", {}) == [
        "command:remote:Command c.connection: required input missing"
    ]


def test_checker_covers_pool_and_provider() -> None:
    assert resource_problems("libvirt:index/pool:Pool", "p", {"name": "x"}) == [
        "libvirt:index/pool:Pool p.type: required input missing"
    ]
    assert resource_problems("pulumi:providers:libvirt", "kvm1", {"uri": "qemu:///system"}) == []
    assert resource_problems("pulumi:providers:libvirt", "kvm1", {"url": "qemu:///system"})
    assert resource_problems("random:index/randomPassword:RandomPassword", "r", {}) is None
