"""One schema, three readers: the parser, Pulumi.yaml's config declarations and the README table."""

from __future__ import annotations

import json
from pathlib import Path

from ruamel.yaml import YAML

from components import schema
from components.topology import WATCHDOG_KEYS, WatchdogSettings, parse_topology, to_config
from tests.unit.test_topology import seed

PROJECT = Path(__file__).resolve().parents[2]


def test_readme_key_table_is_the_generated_one() -> None:
    text = (PROJECT / "README.md").read_text(encoding="utf-8")
    start = text.index("| key | what it means |")
    end = text.index("\n<!-- /keys -->", start)
    assert text[start:end] == schema.readme_table(), "run: python -m components.schema readme"


def test_readme_table_states_each_keys_allowed_values() -> None:
    rows = schema.readme_table().splitlines()[2:]
    assert len(rows) == len(schema.KEYS)
    for key, row in zip(schema.KEYS, rows, strict=True):
        assert row.startswith(f"| `{key.full}` |")
        assert row.count(" | ") == 2 and key.allowed.replace("|", "\\|") in row


def test_pulumi_yaml_declarations_are_the_generated_ones() -> None:
    declared = YAML(typ="safe").load((PROJECT / "Pulumi.yaml").read_text())["config"]
    assert json.loads(json.dumps(declared)) == schema.pulumi_config(), \
        "run: python -m components.schema pulumi"


def test_schema_covers_what_the_model_reads_and_writes() -> None:
    t = parse_topology(seed()).with_(post_boot=False, ssh_user="ops", cluster_name="c",
                                     ssh_public_key="ssh-ed25519 AAAA x@y")
    assert set(to_config(t)) <= set(schema.BY_NAME)
    fields = set(WatchdogSettings.__dataclass_fields__)
    assert {attr for attr, _ in WATCHDOG_KEYS.values()} == fields


def test_generator_command_prints_both(capsys) -> None:
    assert schema._main(["readme"]) == 0
    assert capsys.readouterr().out.strip() == schema.readme_table()
    assert schema._main(["pulumi"]) == 0
    assert json.loads(capsys.readouterr().out) == schema.pulumi_config()
    assert schema._main([]) == 2
