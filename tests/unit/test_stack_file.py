"""Stack files: reading, atomic round-trip writing that keeps comments and secrets."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from components.stack_file import (
    StackFileChanged,
    file_hash,
    load_topology,
    stack_names,
    stack_path,
    write_topology,
)
from components.topology import TopologyError

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def dev_copy(tmp_path: Path) -> Path:
    target = tmp_path / "Pulumi.dev.yaml"
    shutil.copy(stack_path(PROJECT, "dev"), target)
    return target


def test_shipped_stacks_load() -> None:
    assert {"dev", "prod"} <= set(stack_names(PROJECT))
    dev = load_topology(stack_path(PROJECT, "dev"))
    prod = load_topology(stack_path(PROJECT, "prod"))
    assert (len(dev.hosts), len(dev.spares), len(dev.nodes)) == (4, 1, 5)
    assert len(prod.spares) == 2 and len(prod.nodes_of(prod.nodes["web1"].role)) == 3


def test_write_keeps_comments_order_and_secrets(dev_copy: Path) -> None:
    text = dev_copy.read_text()
    text = text.replace("config:\n", "config:\n  mac:dbRootPassword:\n    secure: v1:abc==\n", 1)
    text += "  other:key: untouched  # trailing comment\n"
    dev_copy.write_text(text)
    t = load_topology(dev_copy)
    moved = t.move_nodes(["db1", "web1"], "spare1").with_(spares=(), failed_hosts=("kvm1",))

    assert write_topology(dev_copy, moved) is True
    after = dev_copy.read_text()
    assert after.startswith("# dev: the seed cluster")
    assert "secure: v1:abc==" in after
    assert "other:key: untouched  # trailing comment" in after
    assert "db1: {role: mysql, host: spare1, ip: 192.168.50.11}" in after
    assert "db2: {role: mysql, host: kvm2, ip: 192.168.50.12}" in after  # untouched line kept as is
    assert load_topology(dev_copy) == moved
    # Unchanged topology: the file is not rewritten at all.
    mtime = dev_copy.stat().st_mtime_ns
    assert write_topology(dev_copy, moved) is False
    assert dev_copy.stat().st_mtime_ns == mtime


def test_write_is_atomic_when_interrupted(dev_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = dev_copy.read_text()
    t = load_topology(dev_copy).move_nodes(["lb1"], "spare1").with_(spares=())

    def crash(src: str, dst: str) -> None:
        raise OSError("disk went away")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        write_topology(dev_copy, t)
    assert dev_copy.read_text() == before
    assert [p.name for p in dev_copy.parent.iterdir()] == [dev_copy.name]  # no temp file left


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    broken = tmp_path / "Pulumi.bad.yaml"
    broken.write_text("config:\n  mac:nodes:\n    db1: {role: mysql, host: kvm1\n  mac:spares: []\n")
    with pytest.raises(TopologyError) as err:
        load_topology(broken)
    assert len(err.value.problems) == 1
    assert "YAML syntax error at line" in str(err.value)


def test_missing_file_is_one_clear_problem(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="no such stack file"):
        load_topology(tmp_path / "Pulumi.none.yaml")


def test_unchanged_topology_never_rewrites_any_shipped_stack(tmp_path: Path) -> None:
    """Numbers written as 2 in a file and held as 2.0 in the model are the same value."""
    for name in stack_names(PROJECT):
        copy = tmp_path / f"Pulumi.{name}.yaml"
        shutil.copy(stack_path(PROJECT, name), copy)
        assert write_topology(copy, load_topology(copy)) is False, name


def test_write_is_a_compare_and_swap_on_the_planned_hash(tmp_path: Path) -> None:
    """A person's edit made after the plan (while the fence ran) is never overwritten."""
    path = tmp_path / "Pulumi.dev.yaml"
    shutil.copy(stack_path(PROJECT, "dev"), path)
    planned_from = file_hash(path)
    topology = load_topology(path)
    new = topology.with_(failed_hosts=("kvm1",), spares=()).move_nodes(["db1", "web1"], "spare1")
    edited = path.read_text().replace("cooldown: 300", "cooldown: 600  # a person's edit")
    path.write_text(edited)
    with pytest.raises(StackFileChanged, match="changed since the plan was made"):
        write_topology(path, new, expected_hash=planned_from)
    assert path.read_text() == edited
    assert write_topology(path, new, expected_hash=file_hash(path))
    assert load_topology(path).nodes["db1"].host == "spare1" and "a person's edit" in path.read_text()
    assert file_hash(tmp_path / "missing.yaml") == ""
