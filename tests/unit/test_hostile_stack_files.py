"""Property: whatever a stack file holds, `validate` answers in one line per problem, exit 0 or 2.

Mutated and hostile stack files (hypothesis): random bytes and text spliced into a shipped stack
file, any value or key replaced by a hostile one. For each: exit 0 or 2, every problem one line
naming the file and the key, no traceback (an exception fails the test), bounded time and memory,
nothing written next to the file.
"""

from __future__ import annotations

import io
import math
import resource
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML
from typer.testing import CliRunner

from components.schema import WATCHDOG_NUMBERS
from components.stack_file import stack_names, stack_path
from components.topology import TopologyError, parse_topology
from tests.unit.test_topology import seed
from watchdog.cli import app

PROJECT = Path(__file__).resolve().parents[2]
STACK_TEXTS = {name: stack_path(PROJECT, name).read_text(encoding="utf-8")
               for name in stack_names(PROJECT)}
MAX_LINE = 400  # a problem line: path + 60 characters of value + the message
SECONDS = 3.0
MAX_RSS_GROWTH_KIB = 300 * 1024
FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

HOSTILE_TEXT = st.sampled_from([
    "kvm3-é主機", "lb 1/../x;", "rack1/kvm3", "k" * 300, "db1\nwsrep_on = OFF", "$(reboot)", "`id`",
    "a'b\"c", "%n%s", "\x00", "\u202e", "10.0.0.11:22", "not an address!", "-1", "1e21", ".nan", "",
    " ", "\\", "#", "{", "*", "&a", "!!python/object:os.system", "true", "none", "0x10", "1_000",
])
SCALARS = st.one_of(
    HOSTILE_TEXT, st.text(max_size=80), st.booleans(), st.none(),
    st.integers(min_value=-(10**30), max_value=10**30), st.floats(allow_nan=True, allow_infinity=True),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(HOSTILE_TEXT, st.text(max_size=12)),
                                                 inner, max_size=4)), max_leaves=12)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _paths(item, (*prefix, i))
    return found


def _dump(doc: Any) -> str:
    yaml = YAML(typ="safe", pure=True)
    yaml.allow_unicode = True
    buffer = io.StringIO()
    yaml.dump(doc, buffer)
    return buffer.getvalue()


@st.composite
def mutated_values(draw: st.DrawFn) -> str:
    """A shipped stack file with one value (or one key) replaced by something hostile."""
    doc = YAML(typ="safe", pure=True).load(STACK_TEXTS[draw(st.sampled_from(sorted(STACK_TEXTS)))])
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)))
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()) and isinstance(parent, dict):
            parent[draw(st.one_of(HOSTILE_TEXT, st.text(max_size=12)))] = parent.pop(path[-1])
        else:
            parent[path[-1]] = draw(VALUES)
    return _dump(doc)


@st.composite
def mutated_text(draw: st.DrawFn) -> bytes:
    """A shipped stack file with random bytes or text spliced in, or cut short."""
    data = STACK_TEXTS[draw(st.sampled_from(sorted(STACK_TEXTS)))].encode("utf-8")
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        insert = draw(st.one_of(st.binary(max_size=20), st.text(max_size=20).map(str.encode),
                                HOSTILE_TEXT.map(str.encode),
                                st.sampled_from([b"[" * 40, b"&x [1]\n", b"*x", b"\t", b"\r",
                                                 b": :", b"\xef\xbb\xbf"])))
        cut = draw(st.integers(0, 5))
        data = data[:at] + insert + data[at + cut:]
    return data


def _snapshot(folder: Path) -> list[tuple[str, int, int]]:
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir())


def check_validate(tmp_path: Path, content: str | bytes) -> None:
    folder = tmp_path / "case"
    folder.mkdir(exist_ok=True)
    path = folder / "Pulumi.fuzz.yaml"
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    before = _snapshot(folder)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    result = CliRunner().invoke(app, ["validate", str(path)], catch_exceptions=False)
    elapsed = time.perf_counter() - started
    assert result.exit_code in (0, 2), (result.exit_code, result.stdout, result.stderr)
    assert elapsed < SECONDS, elapsed
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < MAX_RSS_GROWTH_KIB
    assert _snapshot(folder) == before, "validate wrote something"
    assert "Traceback" not in result.stderr
    if result.exit_code == 0:
        assert result.stdout.startswith(f"{path}: ok (") and not result.stderr
        return
    lines = result.stderr.splitlines()
    assert lines, "exit 2 without a problem line"
    for line in lines:
        assert line.startswith(f"{path}: "), line
        assert len(line) <= MAX_LINE, line
        where = line[len(f"{path}: "):]
        # Each line names the key (mac:..., config...) or, for the file as a whole, only the file
        # (its path once, then what is wrong with it).
        assert where.strip() and not where.startswith(f"{path}:"), line


@FUZZ
@given(mutated_values())
def test_any_value_or_key_replaced(tmp_path_factory: Any, text: str) -> None:
    check_validate(tmp_path_factory.mktemp("v"), text)


@FUZZ
@given(mutated_text())
def test_any_bytes_spliced_in(tmp_path_factory: Any, data: bytes) -> None:
    check_validate(tmp_path_factory.mktemp("t"), data)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["interval", "probeTimeout", "failThreshold", "failAfter", "recoverThreshold",
                        "maxUnhealthyShare", "cooldown", "remediationsPerHour", "replaceAttempts",
                        "verifyTimeout", "suspectInterval"]),
       st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**25), 10**25)))
def test_watchdog_numbers_are_finite_and_bounded_or_named(key: str, value: float) -> None:
    """Whatever number is set, the model holds a finite one in range, or says which key is wrong."""
    spec = next(n for n in WATCHDOG_NUMBERS if n.key == key)
    try:
        t = parse_topology({**seed(), "watchdog": {key: value}})
    except TopologyError as err:
        assert all(p.path.startswith(f"mac:watchdog.{key}") for p in err.problems), err
        return
    held = getattr(t.watchdog, spec.attr)
    assert math.isfinite(held) and spec.low <= held <= spec.high
