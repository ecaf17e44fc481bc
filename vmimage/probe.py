"""One probe of a VM, run inside the test's network namespace (`ip netns exec NS python -m vmimage.probe`).

Prints what it saw on one line and exits 0 when the target answered, 1 otherwise:
  icmp IP          an ICMP echo reply from IP (root: raw socket)
  banner IP PORT   the first line the server sends (sshd: `SSH-2.0-...`)
  http URL [TEXT]  the HTTP status code, whether TEXT is in the body, the body's first 200 characters
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import time
import urllib.error
import urllib.request

TIMEOUT_S = 2.0


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def icmp(ip: str) -> bool:
    ident = os.getpid() & 0xFFFF
    header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
    payload = b"mac-images"
    packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, 1) + payload
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        s.settimeout(TIMEOUT_S)
        s.sendto(packet, (ip, 0))
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                data, (source, _) = s.recvfrom(1024)
            except TimeoutError:
                return False
            header_len = (data[0] & 0x0F) * 4
            kind, _, _, reply_ident, _ = struct.unpack("!BBHHH", data[header_len:header_len + 8])
            if source == ip and kind == 0 and reply_ident == ident:
                return True
    return False


def banner(ip: str, port: int) -> str | None:
    try:
        with socket.create_connection((ip, port), TIMEOUT_S) as s:
            s.settimeout(TIMEOUT_S)
            return s.recv(256).split(b"\r\n")[0].decode(errors="replace")
    except OSError:
        return None


def http(url: str) -> tuple[int, str] | None:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return response.status, response.read(1 << 20).decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read(1 << 20).decode(errors="replace")
    except (OSError, ValueError):
        return None


def main(argv: list[str]) -> int:
    kind, *args = argv
    if kind == "icmp":
        ok = icmp(args[0])
        print("reply" if ok else "no reply")
        return 0 if ok else 1
    if kind == "banner":
        line = banner(args[0], int(args[1]))
        print(line or "")
        return 0 if line else 1
    if kind == "http":
        answer = http(args[0])
        if answer is None:
            return 1
        status, body = answer
        found = "" if len(args) < 2 else ("found" if args[1] in body else "missing") + " "
        print(status, found + body[:200].replace("\n", " "))
        return 0
    print(f"unknown probe {kind!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
