"""fz-portal against unauthenticated sockets, as an attacker would hold them: idle sockets, request
heads that never end or come a byte at a time, oversized heads, and tens of thousands of idle
connections. The portal must close what costs it without paying, and keep answering `/healthz`.

Everything runs on loopback (127.0.0.0/8 source addresses); every socket and process is closed or
stopped by the test, also on failure; every wait is bounded.
"""

from __future__ import annotations

import os
import resource
import selectors
import subprocess
import socket
import time

import pytest

from conftest import http_get
from test_portal import Portal, portal_bin, tmpdb  # noqa: F401 (fixtures)


def closed_by_peer(s: socket.socket, within: float) -> bool:
    """True when the portal closes `s` (EOF or reset) within `within` seconds."""
    s.settimeout(within)
    try:
        while True:
            data = s.recv(4096)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def healthz_seconds(p: Portal) -> float:
    start = time.monotonic()
    status, _ = http_get(p.url + "/healthz", timeout=2)
    assert status == 200
    return time.monotonic() - start


def test_idle_partial_slow_and_oversized_heads_are_closed(portal_bin, tmpdb):
    p = Portal(portal_bin, tmpdb, args=["--header-timeout", "1"])
    socks = []
    try:
        idle = connect(p.port)
        partial = connect(p.port)
        partial.sendall(b"GET /healthz HTTP/1.1\r\nHost: portal\r\n")
        huge = connect(p.port)
        huge.sendall(b"GET /healthz HTTP/1.1\r\nHost: portal\r\nX-Pad: " + b"a" * 100_000)
        socks += [idle, partial, huge]
        assert closed_by_peer(huge, 1.0), "a 100 KB head is refused at once, not after the header timeout"
        assert closed_by_peer(idle, 3.0), "an idle socket is closed after --header-timeout"
        assert closed_by_peer(partial, 3.0), "a head that never ends is closed after --header-timeout"

        # A head trickled one byte every 200 ms keeps sending but never finishes in time.
        slow = connect(p.port)
        socks.append(slow)
        slow.settimeout(0.2)
        head = b"GET /healthz HTTP/1.1\r\nHost: portal\r\nX-Slow: " + b"b" * 200
        start, closed = time.monotonic(), False
        for byte in head:
            try:
                slow.sendall(bytes([byte]))
                if slow.recv(1) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
        assert closed and time.monotonic() - start < 3.0, "a trickled head is closed at the header timeout"

        # A complete request is answered, and the keep-alive connection stays open past the
        # header timeout (the idle timeout governs it from then on).
        ok = connect(p.port)
        socks.append(ok)
        ok.sendall(b"GET /healthz HTTP/1.1\r\nHost: portal\r\n\r\n")
        ok.settimeout(2)
        assert ok.recv(4096).startswith(b"HTTP/1.1 200")
        assert not closed_by_peer(ok, 1.5)
        assert p.proc.poll() is None
    finally:
        for s in socks:
            s.close()
        p.stop()


def test_one_source_gets_at_most_its_limit(portal_bin, tmpdb):
    p = Portal(portal_bin, tmpdb, args=["--max-connections-per-source", "4", "--header-timeout", "30"])
    held = []
    try:
        # Five from one source: exactly one is closed at accept. (Which one is not defined: the
        # portal sets connections up on several event loops, so the fifth to connect is not
        # always the fifth to be counted.)
        held = [connect(p.port, "127.0.0.2") for _ in range(5)]
        closed = [s for s in held if closed_by_peer(s, 0.5)]
        assert len(closed) == 1, f"{len(closed)} of 5 connections from one source were closed, expected 1"
        held = [s for s in held if s not in closed] + closed
        assert all(not closed_by_peer(s, 0.05) for s in held[:4]), "the other four are held"
        # Another source is not affected.
        assert healthz_seconds(p) < 1.0
        # A held one that closes makes room again.
        held[0].close()
        deadline = time.monotonic() + 2
        while True:
            again = connect(p.port, "127.0.0.2")
            held.append(again)
            if not closed_by_peer(again, 0.2):
                break
            assert time.monotonic() < deadline, "a freed slot is reusable"
    finally:
        for s in held:
            s.close()
        p.stop()


def test_healthz_answers_while_20000_idle_sockets_are_held(portal_bin, tmpdb):
    # 20,000 sockets, or as many as this machine's hard descriptor limit leaves room for in this
    # process and in the portal (each holds one end); below 10,000 the test says so and skips.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(20_000, hard - 1_000)
    if want < 10_000:
        pytest.skip(f"the hard RLIMIT_NOFILE ({hard}) leaves room for fewer than 10,000 sockets")
    # For this process and, inherited, for the portal (which raises its soft limit to the hard one).
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    p = Portal(portal_bin, tmpdb, args=["--header-timeout", "120"])
    socks: list[socket.socket] = []
    sel = selectors.DefaultSelector()
    try:
        # 100 source addresses, 200 sockets each: under the per-source limit, so the portal
        # really holds all of them. In batches of 1,000 that the portal accepts before the next:
        # a connection the kernel completed but the full accept queue dropped is one the client
        # believes open and the portal never saw, which would prove nothing.
        def sockets_held() -> int:
            """Connections from the test's sources that the portal process has accepted (an fd
            of its own; ones still in the kernel's accept queue have no owner)."""
            out = subprocess.run(
                ["ss", "-Htnp", "state", "established", "dst", "127.0.1.0/24", "src", f"127.0.0.1:{p.port}"],
                capture_output=True, text=True, timeout=30).stdout
            return sum(1 for line in out.splitlines() if f"pid={p.proc.pid}," in line)

        base = 0
        for start in range(0, want, 1_000):
            pending = {}
            for i in range(start, min(want, start + 1_000)):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                s.bind((f"127.0.1.{1 + i % 100}", 0))
                s.connect_ex(("127.0.0.1", p.port))
                socks.append(s)
                pending[s.fileno()] = s
                sel.register(s, selectors.EVENT_WRITE)
            deadline = time.monotonic() + 30
            while pending and time.monotonic() < deadline:
                for key, _ in sel.select(timeout=1):
                    sel.unregister(key.fileobj)
                    pending.pop(key.fd, None)
            assert not pending, f"{len(pending)} of a batch of sockets did not connect"
            while sockets_held() < base + len(socks) and time.monotonic() < deadline:
                time.sleep(0.05)  # polling a count with a deadline
            held = sockets_held() - base
            assert held >= len(socks), f"the portal accepted {held} of {len(socks)} sockets"
        # Accepted and held: none of them was closed by the portal.
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        closed = len(sel.select(timeout=0.5))
        assert closed == 0, f"{closed} idle sockets were closed before the header timeout"
        for _ in range(5):
            assert healthz_seconds(p) < 1.0, f"/healthz answers while {want} idle sockets are held"
        assert p.proc.poll() is None
    finally:
        sel.close()
        for s in socks:
            s.close()
        p.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
