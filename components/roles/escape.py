"""Quoting for each file syntax the roles render into: MariaDB option files, systemd units,
HAProxy and Apache configs. Defence in depth: the model already admits only plain names; these
keep a hostile value one value (quoted, escaped) or refuse it, never a new line or directive.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

_PLAIN = re.compile(r"[A-Za-z0-9_.:/,@+=-]+")
# Control characters and everything some reader takes for a line break (NEL, LS, PS).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_HAPROXY_NAME = re.compile(r"[A-Za-z0-9_.:-]+")  # HAProxy's identifier characters


class RenderError(ValueError):
    """A value the target file's syntax cannot hold as one value."""


def cnf_value(value: str) -> str:
    """A MariaDB option-file value: plain when safe, else double-quoted with backslash escapes
    (the server unescapes \\\\ \\" \\n \\t \\r \\b; `#` inside quotes is not a comment)."""
    if _PLAIN.fullmatch(value):
        return value
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
               .replace("\t", "\\t").replace("\r", "\\r").replace("\b", "\\b"))
    if _CONTROL.search(escaped):
        raise RenderError(f"{value!r}: a control character cannot go into a MariaDB option file")
    return f'"{escaped}"'


def systemd_arg(value: str) -> str:
    """One ExecStart= argument: C-style escapes inside double quotes, `%%` and `$$` for the
    specifier and variable characters systemd expands even inside quotes."""
    if _PLAIN.fullmatch(value):
        return value
    out = []
    for char in value:
        if char in '\\"':
            out.append("\\" + char)
        elif _CONTROL.fullmatch(char):
            out.append(f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out).replace("%", "%%").replace("$", "$$") + '"'


def systemd_exec(argv: Sequence[str]) -> str:
    return " ".join(systemd_arg(a) for a in argv)


def haproxy_name(value: str) -> str:
    """A HAProxy server/proxy name: its identifier characters or a RenderError."""
    if not _HAPROXY_NAME.fullmatch(value):
        raise RenderError(f"{value!r}: a HAProxy name takes only A-Z a-z 0-9 _ . : -")
    return value


def ip(value: str) -> str:
    """An IP address for any config line; anything else is refused."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise RenderError(f"{value!r}: not an IP address") from None


def apache_arg(value: str) -> str:
    """An Apache directive argument: plain when safe, else double-quoted with `\\` and `"`
    escaped; no line breaks."""
    if _PLAIN.fullmatch(value):
        return value
    if _CONTROL.search(value):
        raise RenderError(f"{value!r}: a control character cannot go into an Apache config")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def comment(value: str) -> str:
    """Text inside a `#` comment line: control characters (a newline) shown escaped."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], value)


def one_line(value: str, what: str) -> str:
    """A value that must stay on one line (an authorized_keys entry)."""
    if _CONTROL.search(value):
        raise RenderError(f"{what} {value[:60]!r}...: a line break or control character")
    return value
