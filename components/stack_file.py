"""Read and write `stacks/Pulumi.<stack>.yaml`: the topology in, a changed topology out.

Round-trip YAML (ruamel) keeps comments, key order and `secure:` values; writes are atomic
(temp file in the same directory, fsync, rename), so a crash never leaves half a stack file.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)

from components.schema import DOCUMENT_KEYS, path_segment, suggest
from components.topology import NAMESPACE, Problem, Topology, TopologyError, parse_topology, to_config

STACKS_DIR = "stacks"


def stack_path(project_dir: str | Path, stack: str) -> Path:
    return Path(project_dir) / STACKS_DIR / f"Pulumi.{stack}.yaml"


def stack_names(project_dir: str | Path) -> list[str]:
    """Every stack that has a file in `stacks/`, sorted."""
    files = (Path(project_dir) / STACKS_DIR).glob("Pulumi.*.yaml")
    return sorted(f.name[len("Pulumi."):-len(".yaml")] for f in files)


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


# Bounds on what a stack file may cost before any Python object is built from it. A real stack
# file is a few KiB, nests 4 levels and has a few hundred YAML nodes.
MAX_FILE_BYTES = 1024 * 1024
MAX_DEPTH = 32
MAX_NODES = 20_000  # counted with every alias expanded (a "billion laughs" stays small on disk)
_ERROR_CHARS = 160


def read_document(path: str | Path) -> Any:
    """The stack file as a round-trip document; TopologyError for a missing or broken file."""
    path = Path(path)
    text = _read_text(path)
    try:
        _check_shape(text, path)
        doc = _yaml().load(text)
    except TopologyError:
        raise
    except MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise _problem(path, f"YAML syntax error at {where}: {err.problem or err.context}") from None
    except YAMLError as err:
        raise _problem(path, f"YAML error: {err}") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as err:
        # Values the YAML constructor cannot build (an integer of 5000 digits, a date 2024-13-45).
        raise _problem(path, f"cannot be read as YAML ({type(err).__name__}: {err})") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, Mapping):
        raise TopologyError([Problem(str(path), type(doc).__name__,
                                     "must be a YAML mapping with a `config:` key")])
    return doc


def _problem(path: Path, message: str) -> TopologyError:
    message = " ".join(message.split())
    if len(message) > _ERROR_CHARS:
        message = message[: _ERROR_CHARS - 3] + "..."
    return TopologyError([Problem(str(path), None, message)])


def _read_text(path: Path) -> str:
    """At most MAX_FILE_BYTES of UTF-8 text, or one problem saying why not."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise _problem(path, "no such stack file; create it or check --stack / --project-dir") from None
    except OSError as err:
        raise _problem(path, f"cannot be read: {err.strerror}") from None
    if len(data) > MAX_FILE_BYTES:
        raise _problem(path, f"is larger than {MAX_FILE_BYTES // 1024} KiB; a stack file is a few "
                       "KiB, is this the right file?")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise _problem(path, f"is not UTF-8 text (byte 0x{data[err.start]:02x} on line {line}); "
                       "save it as UTF-8") from None


def _check_shape(text: str, path: Path) -> None:
    """Refuse deep nesting and alias bombs from the event stream, before anything is built.

    The parser is iterative (no recursion), and an alias is counted with the full size of what it
    points to, so the check costs one pass over the text whatever the document expands to.
    """
    sizes: dict[str, int] = {}  # anchor -> expanded node count of its node
    open_: list[tuple[str | None, int]] = []  # collections being read: (anchor, count so far)
    total = 0
    for event in _yaml().parse(text):
        if isinstance(event, MappingStartEvent | SequenceStartEvent):
            if len(open_) >= MAX_DEPTH:
                raise _problem(path, f"nests deeper than {MAX_DEPTH} levels "
                               f"(line {event.start_mark.line + 1}); a stack file nests about 4")
            open_.append((event.anchor, 1))
            continue
        if isinstance(event, MappingEndEvent | SequenceEndEvent):
            anchor, count = open_.pop()
        elif isinstance(event, AliasEvent):
            anchor, count = None, sizes.get(str(event.anchor), 1)
        elif isinstance(event, ScalarEvent):
            anchor, count = event.anchor, 1
        else:
            continue
        if anchor is not None:
            sizes[str(anchor)] = count
        if open_:
            parent_anchor, parent_count = open_[-1]
            open_[-1] = (parent_anchor, parent_count + count)
        else:
            total += count
        if count > MAX_NODES or total > MAX_NODES:
            raise _problem(path, f"expands to more than {MAX_NODES} YAML values (aliases `*x` "
                           "repeat what they point to); a stack file has a few hundred")


def config_values(doc: Mapping[str, Any], path: str | Path = "") -> dict[str, Any]:
    """The project's config values from a stack document, keyed without the `mac:` namespace."""
    config = doc.get("config") or {}
    if not isinstance(config, Mapping):
        raise TopologyError([Problem(f"{path}: config", config, "must be a mapping of keys")])
    prefix = f"{NAMESPACE}:"
    return {k[len(prefix):]: v for k, v in config.items() if isinstance(k, str) and k.startswith(prefix)}


def document_problems(doc: Mapping[Any, Any], path: str | Path = "") -> list[Problem]:
    """Keys outside `mac:` that cannot be right: unknown top-level keys, config keys without a
    namespace. The Pulumi CLI's own keys (encryptionsalt, ...) and other namespaces are fine."""
    problems = []
    for key in doc:
        if key not in DOCUMENT_KEYS:
            problems.append(Problem(f"{path}: {path_segment(key)}", None,
                                    f"unknown top-level key{suggest(key, DOCUMENT_KEYS)} (a stack "
                                    f"file holds: {', '.join(DOCUMENT_KEYS)})"))
    config = doc.get("config")
    for key in config if isinstance(config, Mapping) else ():
        if not isinstance(key, str) or ":" not in key:
            problems.append(Problem(f"config.{path_segment(key)}", None,
                                    f"has no namespace; write {NAMESPACE}:{path_segment(key)}"
                                    if isinstance(key, str) else "config keys are NAMESPACE:NAME strings"))
    return problems


def load_topology(path: str | Path) -> Topology:
    """Parse and validate the topology of one stack file (TopologyError with every problem)."""
    doc = read_document(path)
    problems = document_problems(doc, path)
    try:
        topology = parse_topology(config_values(doc, path))
    except TopologyError as err:
        raise TopologyError([*problems, *err.problems]) from None
    if problems:
        raise TopologyError(problems)
    return topology


def write_topology(path: str | Path, topology: Topology, expected_hash: str | None = None) -> bool:
    """Write `topology` into the stack file, changing only what differs. Atomic.

    Returns True when the file changed. Keys outside the topology (secrets, other
    namespaces, comments) are left exactly as they were. With `expected_hash` it is a
    compare-and-swap: StackFileChanged, and nothing written, unless the file still has that hash.
    """
    path = Path(path)
    doc = read_document(path)
    if doc.get("config") is None:
        doc["config"] = {}
    config = doc["config"]
    try:
        before = to_config(parse_topology(config_values(doc, path)))
    except TopologyError:
        before = {}
    changed = False
    for key, value in to_config(topology).items():
        if key in before and before[key] == value:
            continue  # same meaning: keep the operator's spelling (explicit defaults, 2 vs 2.0)
        full = f"{NAMESPACE}:{key}"
        if full in config:
            merged, key_changed = _merge(config[full], value)
            if key_changed:
                config[full] = merged
                changed = True
        elif value not in ({}, []):
            config[full] = value
            changed = True
    if changed:
        buffer = io.StringIO()
        _yaml().dump(doc, buffer)
        if expected_hash is not None:
            check_unchanged(path, expected_hash)
        atomic_write_text(path, buffer.getvalue())
    return changed


def _merge(old: Any, new: Any) -> tuple[Any, bool]:
    """Update `old` in place towards `new` so comments on unchanged entries survive."""
    if isinstance(old, dict) and isinstance(new, dict):
        changed = False
        for key in [k for k in old if k not in new]:
            del old[key]
            changed = True
        for key, value in new.items():
            if key in old:
                merged, sub_changed = _merge(old[key], value)
                if sub_changed:
                    old[key] = merged
                    changed = True
            else:
                old[key] = value
                changed = True
        return old, changed
    if isinstance(old, list) and isinstance(new, list):
        if list(old) == new:
            return old, False
        old[:] = new
        return old, True
    # 2 and 2.0 are the same setting: only a real change (or a change of kind) rewrites it.
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (old, new))
    return new, old != new or (type(old) is not type(new) and not numbers)


def atomic_write_text(path: str | Path, text: str, mode: int | None = None) -> None:
    """Replace `path` with `text` so readers see the old file or the new one, never a mix.
    `mode`: the new file's mode (default: the old file's, else 0644); the text is written while
    the file is still 0600 (mkstemp), so a private file is never readable by others."""
    path = Path(path)
    if mode is None:
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class StackFileChanged(Exception):
    """The stack file is not the one a change was planned from (a person or process edited it)."""


def file_hash(path: str | Path) -> str:
    """The SHA-256 of the stack file's bytes ("" when there is no file): what a plan was made from."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except FileNotFoundError:
        return ""


def check_unchanged(path: str | Path, expected_hash: str) -> None:
    """StackFileChanged unless `path` still has `expected_hash`."""
    actual = file_hash(path)
    if actual != expected_hash:
        raise StackFileChanged(f"{path} changed since the plan was made (sha256 "
                               f"{expected_hash[:12] or 'none'} -> {actual[:12] or 'none'}); "
                               "nothing was written over it")

