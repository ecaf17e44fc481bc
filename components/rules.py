"""What a single stack-file value may hold: names, addresses, paths, commands, URLs, numbers.

Each rule returns None for a good value, or the end of a problem sentence for a bad one. The rules
are strict on purpose: a name becomes a libvirt domain, a file name, a DNS label, a Galera node
name and a HAProxy server; a path and a user name go into unit files and shell lines.
"""

from __future__ import annotations

import ipaddress
import math
import posixpath
import re
import shlex
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

FENCE_NONE = "none"

# A DNS label that is also a safe file name, libvirt domain name, Galera and HAProxy name.
NAME_RE = re.compile(r"[a-z](?:[a-z0-9-]{0,30}[a-z0-9])?")
NAME_RULE = "1-32 characters a-z 0-9 -, starting with a letter, not ending with -"
# POSIX portable user name as useradd(8) takes it by default on Debian.
USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
USER_RULE = "a user name: 1-32 characters a-z 0-9 _ -, starting with a letter or _"
# An absolute, normalised directory with plain characters: safe in a unit file and a shell line.
PATH_RE = re.compile(r"/[A-Za-z0-9._/+-]{1,254}")
PATH_RULE = "an absolute, normalised path of a-z A-Z 0-9 . _ + - /"
BRIDGE_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
BRIDGE_RULE = "a Linux interface name: 1-15 characters a-z A-Z 0-9 _ . -"
HOST_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
SSH_KEY_RE = re.compile(
    r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|"
    r"sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,3}( [\x21-\x7e][\x20-\x7e]{0,199})?")
IMAGE_FILE_RE = re.compile(r"[A-Za-z0-9._+-]{1,200}")
LOCAL_PATH_RE = re.compile(r"[A-Za-z0-9._/+-]{1,1024}")
LOCAL_PATH_RULE = ("a path of a-z A-Z 0-9 . _ + - /, absolute or relative to the project directory "
                   "(where Pulumi.yaml is)")
# What golden images without a boot loader boot with (vmimage/build.py, LAB-NOTES.md).
DEFAULT_KERNEL_CMDLINE = "root=LABEL=root ro console=ttyS0,115200 net.ifnames=0"
MAX_KERNEL_CMDLINE = 1024  # x86's limit is 2048 bytes; MAC's defaults use a tenth of that
KERNEL_CMDLINE_RE = re.compile(r"[\x21-\x7e]+( [\x21-\x7e]+)*")
MAX_TEXT = 2048  # URLs, commands and keys: longer is a mistake, not a setting
SHOWN_URL_CHARS = 60  # how much of one URL in a list a message shows
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def name(value: str) -> str | None:
    if NAME_RE.fullmatch(value):
        return None
    if len(value) > 32:
        return f"is {len(value)} characters long; a name is {NAME_RULE}"
    return f"is not a valid name; use {NAME_RULE}"


def user(value: str) -> str | None:
    return None if USER_RE.fullmatch(value) else f"is not a valid user; use {USER_RULE}"


def pool_path(value: str) -> str | None:
    clean = PATH_RE.fullmatch(value) and posixpath.normpath(value) == value and "/." not in value
    return None if clean else f"is not {PATH_RULE}"


def bridge(value: str) -> str | None:
    ok = BRIDGE_RE.fullmatch(value) and value not in (".", "..")
    return None if ok else f"is not {BRIDGE_RULE}"


def address(value: str) -> str | None:
    """An IP address or a DNS host name, without a port (the watchdog probes port 22)."""
    if is_ip(value):
        return None
    head, sep, tail = value.rpartition(":")
    if sep and tail.isdigit() and (is_ip(head.strip("[]")) or _is_hostname(head)):
        return f"has a port; write the address alone ({head.strip('[]')}), the SSH port is 22"
    if _is_hostname(value):
        return None
    return "is neither an IP address nor a host name (letters, digits, - and . only)"


def _is_hostname(value: str) -> bool:
    labels = value.rstrip(".").split(".")
    return (0 < len(value) <= 253 and all(HOST_LABEL_RE.fullmatch(label) for label in labels)
            and not labels[-1].isdigit())


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def fence(value: str) -> str | None:
    """A command line the watchdog splits with shlex and runs without a shell, or `none`."""
    if CONTROL_RE.search(value):
        return "contains a control character (a newline?); write the command on one line"
    if len(value) > MAX_TEXT:
        return f"is longer than {MAX_TEXT} characters"
    try:
        argv = shlex.split(value)
    except ValueError as err:
        return f"cannot be split into a command line ({err}); fix its quoting"
    if not argv or not argv[0]:
        return f"names no command; give a power-off command or `{FENCE_NONE}`"
    return None


def http_url(value: str) -> str | None:
    if CONTROL_RE.search(value) or " " in value or len(value) > MAX_TEXT:
        return f"must be an http:// or https:// URL without spaces, at most {MAX_TEXT} characters"
    try:
        parts = urlsplit(value)
        _ = parts.port
    except ValueError as err:
        return f"is not a URL ({err})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL"
    return None


def http_url_list(value: str) -> str | None:
    """One or more http(s):// URLs, comma-separated (etcd client URLs: watchdog.etcd)."""
    if len(value) > MAX_TEXT:
        return f"must be http:// or https:// URLs, comma-separated, at most {MAX_TEXT} characters"
    urls = [u.strip() for u in value.split(",") if u.strip()]
    if not urls:
        return "must be one or more http:// or https:// URLs, comma-separated"
    for url in urls:
        if (problem := http_url(url)) is not None:
            return f"{url[:SHOWN_URL_CHARS]!r} {problem}"
    return None


def local_file(value: str) -> str | None:
    """A file read on the machine that runs pulumi: absolute, or relative to the project directory
    (where Pulumi.yaml is; the provider plugins run there). Its file name names its volume."""
    if not LOCAL_PATH_RE.fullmatch(value):
        return f"is not {LOCAL_PATH_RULE}"
    normal = posixpath.normpath(value)
    if normal != value:
        return f"is not a normalised path; write {normal}"
    filename = posixpath.basename(value)
    if filename in (".", "..") or not IMAGE_FILE_RE.fullmatch(filename):
        return "names no file; end it in a file name of a-z A-Z 0-9 . _ + -"
    return None


def image_source(value: str) -> str | None:
    """An http(s) URL or a local file (`local_file`); its file name names the volume."""
    if "://" not in value:
        problem = local_file(value)
        return None if problem is None else f"{problem}, or an http(s):// URL"
    problem = http_url(value)
    if problem is not None:
        return f"{problem}, or a path"
    filename = posixpath.basename(urlsplit(value).path)
    if filename and not IMAGE_FILE_RE.fullmatch(filename):
        return "ends in a file name with characters other than a-z A-Z 0-9 . _ + -"
    return None


def kernel_cmdline(value: str) -> str | None:
    """Words of printable ASCII separated by spaces: the kernel gets them joined by one space."""
    if len(value) > MAX_KERNEL_CMDLINE or not KERNEL_CMDLINE_RE.fullmatch(value):
        return (f"must be printable ASCII words separated by spaces, at most {MAX_KERNEL_CMDLINE} "
                "characters (e.g. root=LABEL=root ro console=ttyS0,115200)")
    return None


def libvirt_uri(value: str) -> str | None:
    """Characters only; the scheme and port rules live in topology._uri_problems."""
    if CONTROL_RE.search(value) or " " in value or len(value) > MAX_TEXT:
        return f"must be a libvirt URI without spaces or control characters, at most {MAX_TEXT}"
    try:
        urlsplit(value)
    except ValueError as err:
        return f"is not a URI ({err})"
    return None


def ssh_public_key(value: str) -> str | None:
    if SSH_KEY_RE.fullmatch(value):
        return None
    return ("is not one OpenSSH public key line (TYPE BASE64 [COMMENT], e.g. the content of "
            "~/.ssh/id_ed25519.pub)")


def secret(value: Any) -> str | None:
    """In a stack file a secret is `{secure: ...}`, written by `pulumi config set --secret`."""
    if isinstance(value, Mapping) and list(value) == ["secure"] and isinstance(value["secure"], str):
        return None
    return "must be a secret ({secure: ...}); set it with `pulumi config set --secret`"


# ---- values the Pulumi CLI stores as strings --------------------------------------------------

NUMBER_RE = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
TRUE, FALSE = ("true", "True", "TRUE"), ("false", "False", "FALSE")


def as_number(value: Any) -> Any:
    """`"2"` (how `pulumi config set` stores a number) -> 2; anything else unchanged."""
    if isinstance(value, str) and NUMBER_RE.fullmatch(value.strip()):
        text = value.strip()
        return int(text) if text.lstrip("+-").isdigit() and len(text) < 20 else float(text)
    return value


def as_bool(value: Any) -> Any:
    """`"false"` (how `pulumi config set` stores a boolean) -> False; anything else unchanged."""
    if isinstance(value, str):
        if value.strip() in TRUE:
            return True
        if value.strip() in FALSE:
            return False
    return value


def is_finite_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return isinstance(value, int) or math.isfinite(value)
