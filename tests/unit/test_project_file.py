"""Pulumi.yaml's declared config agrees with what the program reads and what the stacks set.

The real CLI treats a declared key without a `default` as required and refuses a stack that
leaves it out ("Stack 'dev' is missing configuration values ..."); the mocks never check that,
so this test does, offline.
"""

from __future__ import annotations

from pathlib import Path

from ruamel.yaml import YAML

from components.stack_file import config_values, read_document, stack_names, stack_path
from components.topology import BOOL_KEYS, STRING_KEYS, STRUCTURED_KEYS

PROJECT = Path(__file__).resolve().parents[2]


def declared() -> dict[str, dict]:
    return dict(YAML(typ="safe").load((PROJECT / "Pulumi.yaml").read_text())["config"])


def test_every_key_the_program_reads_is_declared_with_a_description() -> None:
    keys = declared()
    for key in (*STRUCTURED_KEYS, *STRING_KEYS, *BOOL_KEYS):
        assert key in keys, f"Pulumi.yaml does not declare mac:{key}"
        assert keys[key].get("description"), f"mac:{key} has no description"


def test_every_stack_sets_each_required_key() -> None:
    required = [k for k, spec in declared().items() if "default" not in spec]
    assert set(required) == {"network", "image", "hosts", "nodes"}
    for stack in stack_names(PROJECT):
        values = config_values(read_document(stack_path(PROJECT, stack)))
        missing = [k for k in required if k not in values]
        assert not missing, f"stack {stack} lacks required keys {missing}"


def test_no_declared_secret_has_a_plain_default() -> None:
    for key, spec in declared().items():
        assert not (spec.get("secret") and "default" in spec), key
