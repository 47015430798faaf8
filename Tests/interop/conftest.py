"""Fixtures for running fz-relay against independent clients (coturn's tools, aioice).

Everything stays on loopback (127.0.0.1 and ::1). Every process a test starts is
stopped by its PID at the end of the test, pass or fail. Waiting is done by bounded
polling on a condition, never by fixed sleeps.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import stunproto

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 15.0  # seconds for a relay to answer its first Binding
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL


# --------------------------------------------------------------------------- helpers


def wait_for(condition, timeout: float, interval: float = 0.02, what: str = "condition"):
    """Polls `condition()` until it returns something truthy; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _bindable(family: int, kind: int, host: str, port: int) -> bool:
    s = socket.socket(family, kind)
    try:
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_port(kind: int = socket.SOCK_DGRAM, hosts=("127.0.0.1", "::1"), span: int = 1) -> int:
    """A port the kernel just handed out on the first host, also free on the others, with
    the `span - 1` ports above it free too (turnutils_peer listens on PORT and PORT+1)."""
    for _ in range(200):
        s = socket.socket(stunproto.family_of(hosts[0]), kind)
        s.bind((hosts[0], 0))
        port = s.getsockname()[1]
        s.close()
        if port + span - 1 > 65535:
            continue
        if all(
            _bindable(stunproto.family_of(h), kind, h, p)
            for h in hosts
            for p in range(port, port + span)
        ):
            return port
    raise RuntimeError("no free port found")


def kill_process(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> int | None:
    """SIGTERM, then SIGKILL after `timeout`; by PID only. The exit code."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    return proc.returncode


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text: every series by its full name (with labels), and every metric name
    also bare, summed over its label sets (a per-thread gauge reads as the relay's total)."""
    out: dict[str, float] = {}
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{[^}]*\})?\s+(\S+)", line)
        if m:
            value = float(m.group(3))
            out[m.group(1) + (m.group(2) or "")] = value
            totals[m.group(1)] = totals.get(m.group(1), 0.0) + value
    out.update(totals)
    return out


# --------------------------------------------------------------------------- relay binary


@pytest.fixture(scope="session")
def relay_bin() -> str:
    path = os.environ.get("FZ_RELAY_BIN")
    if not path:
        try:
            out = subprocess.run(
                ["swift", "build", "--show-bin-path"],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=600,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            pytest.fail(f"cannot run `swift build --show-bin-path` in {REPO}: {e}; set FZ_RELAY_BIN")
        if out.returncode != 0:
            pytest.fail(f"`swift build --show-bin-path` failed: {out.stderr.strip()}; set FZ_RELAY_BIN")
        path = os.path.join(out.stdout.strip().splitlines()[-1], "fz-relay")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(
            f"fz-relay binary not found at {path}: run `swift build --product fz-relay` "
            "in the package root, or set FZ_RELAY_BIN"
        )
    return path


@pytest.fixture(scope="session")
def client_bin() -> str:
    """fz-client: $FZ_CLIENT_BIN, else `swift build --show-bin-path`/fz-client (built, not built here)."""
    path = os.environ.get("FZ_CLIENT_BIN")
    if not path:
        out = subprocess.run(["swift", "build", "--show-bin-path"], cwd=REPO, capture_output=True, text=True,
                             timeout=600)
        if out.returncode != 0:
            pytest.fail(f"`swift build --show-bin-path` failed: {out.stderr.strip()}; set FZ_CLIENT_BIN")
        path = os.path.join(out.stdout.strip().splitlines()[-1], "fz-client")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"fz-client binary not found at {path}: run `swift build --product fz-client` "
                    "in the package root, or set FZ_CLIENT_BIN")
    return path


# --------------------------------------------------------------------------- the relay


class Relay:
    """One fz-relay process on a free port with a wide relay port range."""

    def __init__(self, binary: str, workdir: Path, args=(), env=None, listen=("127.0.0.1",),
                 metrics: bool = False, port: int | None = None, name: str = "relay"):
        self.binary = binary
        self.workdir = workdir
        self.extra_args = list(args)
        self.extra_env = dict(env or {})
        self.listen = tuple(listen)
        self.want_metrics = metrics
        self.fixed_port = port
        self.name = name
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.metrics_port: int | None = None
        self.stderr_path = workdir / f"{name}.stderr"
        self.stderr_file = None
        self.argv: list[str] = []

    # -- lifecycle

    @property
    def host(self) -> str:
        return self.listen[0] if self.listen else "127.0.0.1"

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _command(self) -> list[str]:
        argv = [self.binary]
        for ip in self.listen:
            argv += ["--listening-ip", ip]
        if (self.port is not None and "--listening-port" not in self.extra_args
                and "FZ_RELAY_LISTENING_PORT" not in self.extra_env):
            argv += ["--listening-port", str(self.port)]
        argv += ["--min-port", "40000", "--max-port", "59999"]
        if self.metrics_port is not None:
            argv += ["--metrics-listen", f"127.0.0.1:{self.metrics_port}"]
        return argv + self.extra_args

    def start(self, wait: bool = True) -> "Relay":
        """Starts the relay; with `wait`, returns once a Binding on its port is answered.
        A port lost to a race (EADDRINUSE) is retried on another port."""
        for attempt in range(3):
            if "FZ_RELAY_LISTENING_PORT" in self.extra_env:
                self.fixed_port = int(self.extra_env["FZ_RELAY_LISTENING_PORT"])
            self.port = self.fixed_port or free_port(hosts=self.listen or ("127.0.0.1",))
            if self.want_metrics:
                self.metrics_port = free_port(socket.SOCK_STREAM, hosts=("127.0.0.1",))
            self.argv = self._command()
            env = {k: v for k, v in os.environ.items() if not k.startswith("FZ_RELAY_")}
            env.pop("NOTIFY_SOCKET", None)
            env.pop("WATCHDOG_USEC", None)
            env.update(self.extra_env)
            self.stderr_file = open(self.stderr_path, "ab")
            self.stderr_file.write(f"--- {' '.join(self.argv)}\n".encode())
            self.stderr_file.flush()
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=self.stderr_file,
                stderr=self.stderr_file, env=env,
            )
            if not wait:
                return self
            try:
                self.wait_ready()
                return self
            except AssertionError:
                if self.proc.poll() is not None and "Address already in use" in self.log() \
                        and self.fixed_port is None and attempt < 2:
                    continue
                raise
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        def answered():
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.proc.returncode} before answering:\n{self.log()}"
                )
            return stunproto.binding(self.host, self.port, timeout=0.2) is not None

        wait_for(answered, timeout, interval=0.01, what=f"{self.name} to answer a Binding on port {self.port}")
        if self.want_metrics:
            wait_for(lambda: self._metrics_up(), timeout, what=f"{self.name} metrics endpoint")

    def _metrics_up(self) -> bool:
        try:
            return http_get(self.url("/healthz"), timeout=0.5)[0] == 200
        except OSError:
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        if self.proc is None:
            return None
        code = kill_process(self.proc, timeout)
        if self.stderr_file is not None:
            self.stderr_file.close()
            self.stderr_file = None
        return code

    def wait_exit(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    # -- observation

    def log(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def binding(self, host: str | None = None, timeout: float = 0.5):
        return stunproto.binding(host or self.host, self.port, timeout=timeout)

    def url(self, path: str) -> str:
        assert self.metrics_port is not None, "start the relay with metrics=True"
        return f"http://127.0.0.1:{self.metrics_port}{path}"

    def metrics(self) -> dict[str, float]:
        status, body = http_get(self.url("/metrics"))
        assert status == 200, f"/metrics answered {status}: {body[:500]}"
        return parse_metrics(body)

    def wait_metric(self, name: str, predicate, timeout: float = 5.0) -> float:
        """Polls /metrics (published about once a second) until `predicate(value)` holds."""
        last = {}

        def check():
            last["v"] = self.metrics().get(name)
            return last["v"] is not None and predicate(last["v"])

        try:
            wait_for(check, timeout, interval=0.1, what=f"metric {name}")
        except AssertionError:
            raise AssertionError(f"metric {name} is {last.get('v')} after {timeout}s") from None
        return last["v"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for relay in getattr(item, "_fz_relays", []):
            rep.sections.append((f"{relay.name} stderr ({relay.stderr_path})", relay.log()[-20000:]))


@pytest.fixture
def start_relay(request, relay_bin, tmp_path):
    """start_relay(*args, env=..., listen=..., metrics=..., wait=True) -> Relay; all are
    stopped at the end of the test (SIGTERM, then SIGKILL)."""
    relays: list[Relay] = []
    request.node._fz_relays = relays

    def start(*args, env=None, listen=("127.0.0.1",), metrics=False, wait=True, port=None):
        relay = Relay(relay_bin, tmp_path, args=args, env=env, listen=listen, metrics=metrics,
                      port=port, name=f"relay{len(relays)}")
        relays.append(relay)
        return relay.start(wait=wait)

    try:
        yield start
    finally:
        for relay in relays:
            relay.stop()


# --------------------------------------------------------------------------- peers


class EchoPeer:
    """coturn's turnutils_peer: echoes every datagram on PORT and PORT+1."""

    def __init__(self, tmp_path: Path, host: str = "127.0.0.1"):
        self.host = host
        self.tmp_path = tmp_path
        self.log_file = None
        for attempt in range(3):  # a port pair lost to a race is retried on another
            try:
                self._start()
                return
            except AssertionError:
                self.stop()
                if attempt == 2:
                    raise

    def _start(self) -> None:
        host = self.host
        self.port = free_port(hosts=(host,), span=2)
        self.log_path = self.tmp_path / f"peer-{self.port}.log"
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            ["turnutils_peer", "-L", host, "-p", str(self.port)],
            stdin=subprocess.DEVNULL, stdout=self.log_file, stderr=subprocess.STDOUT,
        )
        probe = socket.socket(stunproto.family_of(host), socket.SOCK_DGRAM)
        try:
            def echoes():
                if self.proc.poll() is not None:
                    raise AssertionError(f"turnutils_peer exited: {self.log_path.read_text()}")
                probe.sendto(b"probe", (host, self.port))
                probe.settimeout(0.1)
                try:
                    return probe.recvfrom(64)[0] == b"probe"
                except (socket.timeout, ConnectionRefusedError):
                    return False

            wait_for(echoes, 10, interval=0.01, what="turnutils_peer to echo")
        finally:
            probe.close()

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def stop(self) -> None:
        if getattr(self, "proc", None) is not None:
            kill_process(self.proc)
        if self.log_file is not None:
            self.log_file.close()
            self.log_file = None


@pytest.fixture
def echo_peer(tmp_path):
    peer = EchoPeer(tmp_path)
    try:
        yield peer
    finally:
        peer.stop()


class CountingPeer:
    """A Python UDP socket that records what it receives (and optionally echoes it)."""

    def __init__(self, host: str = "127.0.0.1", echo: bool = False):
        import threading

        self.sock = socket.socket(stunproto.family_of(host), socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.05)
        self.address = self.sock.getsockname()[:2]
        self.echo = echo
        self.received: list[tuple[bytes, tuple]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            self.received.append((data, addr))
            if self.echo:
                try:
                    self.sock.sendto(data, addr)
                except OSError:
                    pass

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def counting_peer():
    peers = []

    def make(host="127.0.0.1", echo=False):
        p = CountingPeer(host, echo)
        peers.append(p)
        return p

    try:
        yield make
    finally:
        for p in peers:
            p.stop()


# --------------------------------------------------------------------------- coturn's uclient


class UclientResult:
    def __init__(self, argv, returncode, output):
        self.argv = argv
        self.returncode = returncode
        self.output = output

    def _last(self, pattern):
        found = re.findall(pattern, self.output)
        return found[-1] if found else None

    @property
    def lost(self) -> int | None:
        m = self._last(r"Total lost packets (\d+) \(")
        return None if m is None else int(m)

    @property
    def totals(self) -> tuple[int, int] | None:
        """(sent, received) messages from the final 'tot_send_msgs=N, tot_recv_msgs=M' line."""
        m = self._last(r"start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)")
        return None if m is None else (int(m[0]), int(m[1]))

    @property
    def transmit_time(self) -> int | None:
        m = self._last(r"Total transmit time is (\d+)")
        return None if m is None else int(m)

    @property
    def round_trip(self) -> float | None:
        m = self._last(r"Average round trip delay ([\d.]+) ms")
        return None if m is None else float(m)

    def describe(self) -> str:
        return f"$ {' '.join(self.argv)}\nexit {self.returncode}\n{self.output[-6000:]}"


def run_uclient(relay: Relay, peer: tuple[str, int], *flags: str, timeout: float = 90) -> UclientResult:
    """turnutils_uclient against `relay`, relaying to `peer`; killed if it outlives `timeout`."""
    argv = ["turnutils_uclient", "-p", str(relay.port), "-e", peer[0], "-r", str(peer[1]),
            *flags, relay.host]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"turnutils_uclient ran longer than {timeout}s:\n{out[-6000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return UclientResult(argv, proc.returncode, out)


UCLIENT_LOAD = ("-m", "4", "-n", "200", "-l", "120", "-c")


def assert_clean_echo(result: UclientResult, clients: int = 4, messages: int = 200) -> None:
    assert result.returncode == 0, result.describe()
    assert result.transmit_time is not None, "no 'Total transmit time' line\n" + result.describe()
    assert result.round_trip is not None, "no 'Average round trip delay' line\n" + result.describe()
    assert result.lost == 0, result.describe()
    assert result.totals == (clients * messages, clients * messages), result.describe()
