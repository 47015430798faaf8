"""fz-relay as a daemon: sd_notify readiness and watchdog, SIGTERM, flag and environment
validation, SIGHUP reload of --config, and the metrics/health endpoints."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest
from aioice import stun as aioice_stun
from aioice.turn import create_turn_endpoint

import stunproto
from conftest import free_port, http_get, wait_for

WATCHDOG_USEC = 400_000


# --------------------------------------------------------------------------- sd_notify


class NotifySocket:
    """A fake systemd: a unix datagram socket that records what the service sends."""

    def __init__(self):
        # sun_path holds 108 bytes: keep the path short, outside pytest's long tmp names.
        self.dir = tempfile.mkdtemp(prefix="fzn", dir="/tmp")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[tuple[float, str]] = []

    def receive(self, timeout: float) -> str | None:
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return None
        msg = data.decode(errors="replace")
        self.messages.append((time.monotonic(), msg))
        return msg

    def wait_for(self, predicate, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching notification in {timeout}s; got {self.messages}")
            msg = self.receive(left)
            if msg is not None and predicate(msg):
                return msg

    def close(self):
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify_socket():
    ns = NotifySocket()
    try:
        yield ns
    finally:
        ns.close()


def notify_env(ns: NotifySocket) -> dict:
    return {"NOTIFY_SOCKET": ns.path, "WATCHDOG_USEC": str(WATCHDOG_USEC)}


def test_ready_is_notified_once_serving_and_binding_is_answered_at_once(start_relay, notify_socket):
    relay = start_relay(env=notify_env(notify_socket), wait=False)
    ready = notify_socket.wait_for(lambda m: "READY=1" in m.split("\n"), timeout=8)
    # Right when READY=1 arrives, the relay must already answer (no retransmission needed:
    # loopback does not lose, so one request and a short wait).
    assert stunproto.binding(relay.host, relay.port, timeout=1.0) is not None, relay.log()
    assert "STATUS=" in ready, ready
    # READY=1 is the first thing the relay says (no WATCHDOG= or STATUS= before it).
    before = [m for _, m in notify_socket.messages[:-1]]
    assert before == [], before


def test_watchdog_is_pinged_repeatedly(start_relay, notify_socket):
    relay = start_relay(env=notify_env(notify_socket))
    for _ in range(3):
        notify_socket.wait_for(lambda m: "WATCHDOG=1" in m.split("\n"), timeout=5)
    assert relay.alive()


def test_watchdog_pings_come_within_half_the_watchdog_period(start_relay, notify_socket):
    relay = start_relay(env=notify_env(notify_socket))
    times = []
    for _ in range(5):
        notify_socket.wait_for(lambda m: "WATCHDOG=1" in m.split("\n"), timeout=5)
        times.append(time.monotonic())
    gaps = [round(b - a, 3) for a, b in zip(times, times[1:])]
    # WATCHDOG_USEC/2 = 0.2 s is the target; 0.3 s leaves room for scheduling noise while
    # still staying inside the 0.4 s after which systemd would act.
    assert max(gaps) < 0.3, f"gaps between WATCHDOG=1 (s): {gaps}"
    assert relay.alive()


def test_sigterm_notifies_stopping_and_exits_zero(start_relay, notify_socket):
    relay = start_relay(env=notify_env(notify_socket))  # serving: it answered a Binding
    relay.signal(signal.SIGTERM)
    stopping = notify_socket.wait_for(lambda m: "STOPPING=1" in m.split("\n"), timeout=10)
    assert "STOPPING=1" in stopping
    assert relay.wait_exit(timeout=10) == 0, relay.log()


def test_sigterm_without_notify_socket_exits_zero(start_relay):
    relay = start_relay()
    relay.signal(signal.SIGTERM)
    assert relay.wait_exit(timeout=10) == 0, relay.log()


# --------------------------------------------------------------------------- flags and environment


def run_relay_expecting_exit(relay_bin, args, env_extra=None, timeout=10):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FZ_RELAY_") and k != "NOTIFY_SOCKET"}
    env.update(env_extra or {})
    proc = subprocess.Popen([relay_bin, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"fz-relay {args} kept running (expected it to refuse):\n{err}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, err


BAD_FLAGS = [
    (["--listening-port", "0x"], "--listening-port"),
    (["--listening-port", "70000"], "--listening-port"),
    (["--min-port", "60000", "--max-port", "50000"], "--min-port"),
    (["--allow-peer", "notacidr"], "--allow-peer"),
    (["--deny-peer", "10.0.0.0/33"], "--deny-peer"),
    (["--user", "nopassword"], "--user"),
    (["--log-format", "xml"], "--log-format"),
    (["--log-level", "loud"], "--log-level"),
    (["--metrics-listen", "nowhere"], "--metrics-listen"),
    (["--no-such-flag"], "--no-such-flag"),
]


@pytest.mark.parametrize("args,flag", BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_a_bad_flag_exits_non_zero_naming_the_flag(relay_bin, args, flag):
    port = free_port()
    code, _, err = run_relay_expecting_exit(
        relay_bin, ["--listening-ip", "127.0.0.1", "--listening-port", str(port), *args]
        if args[0] != "--listening-port" else ["--listening-ip", "127.0.0.1", *args])
    assert code != 0, err
    assert flag in err, err


@pytest.mark.parametrize("wildcard", ["0.0.0.0", "::"])
def test_a_wildcard_listening_ip_without_relay_ip_exits_naming_relay_ip(relay_bin, wildcard):
    code, _, err = run_relay_expecting_exit(
        relay_bin, ["--listening-ip", wildcard, "--listening-port", str(free_port())])
    assert code != 0, err
    assert "--relay-ip" in err, err


def test_an_unknown_flag_is_named_even_with_default_listening_address(relay_bin):
    code, _, err = run_relay_expecting_exit(relay_bin, ["--no-such-flag"])
    assert code != 0, err
    assert "--no-such-flag" in err, err


def test_a_bad_environment_value_exits_naming_the_flag(relay_bin):
    code, _, err = run_relay_expecting_exit(
        relay_bin, ["--listening-ip", "127.0.0.1"], {"FZ_RELAY_LISTENING_PORT": "70000"})
    assert code != 0, err
    assert "--listening-port" in err, err


async def aioice_allocate(server, username, password, peer=None):
    """An aioice allocation; with `peer`, one echo round trip through it. The transport."""
    class Collector(asyncio.DatagramProtocol):
        def __init__(self):
            self.queue = asyncio.Queue()

        def datagram_received(self, data, addr):
            self.queue.put_nowait(data)

        def error_received(self, exc):
            self.queue.put_nowait(exc)

    turn, collector = await asyncio.wait_for(
        create_turn_endpoint(Collector, server_addr=server, username=username, password=password), 10)
    if peer is not None:
        await echo_once(turn, collector, peer)
    return turn, collector


async def echo_once(turn, collector, peer, timeout=3.0):
    payload = os.urandom(48)
    turn.sendto(payload, peer)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await asyncio.wait_for(collector.queue.get(), max(0.001, deadline - asyncio.get_running_loop().time()))
        if isinstance(got, Exception):
            raise got
        if got == payload:
            return


async def udp_echo_peer():
    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            self.transport.sendto(data, addr)

    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        Echo, local_addr=("127.0.0.1", 0))
    return transport, transport.get_extra_info("sockname")[:2]


def test_environment_variables_work_like_the_flags(start_relay):
    port = free_port()
    relay = start_relay("--allow-loopback-peers", env={
        "FZ_RELAY_LISTENING_PORT": str(port),
        "FZ_RELAY_USER": "envuser:env-pass,second:second-pass",
    })
    assert "--listening-port" not in relay.argv
    assert relay.binding() is not None

    async def scenario():
        echo, peer = await udp_echo_peer()
        try:
            for user, password in (("envuser", "env-pass"), ("second", "second-pass")):
                turn, _ = await aioice_allocate(relay.address, user, password, peer)
                turn.close()
            with pytest.raises(aioice_stun.TransactionFailed):
                await aioice_allocate(relay.address, "envuser", "wrong")
        finally:
            echo.close()

    asyncio.run(scenario())


# --------------------------------------------------------------------------- SIGHUP reload


def test_sighup_adds_a_user_keeps_allocations_and_survives_a_broken_file(start_relay, tmp_path):
    config = tmp_path / "relay.conf"
    config.write_text("# interop\nuser = alice:alice-pass\n")
    relay = start_relay("--config", str(config), "--allow-loopback-peers")

    async def scenario():
        echo, peer = await udp_echo_peer()
        echo2, peer2 = await udp_echo_peer()
        transports = []
        try:
            alice, alice_q = await aioice_allocate(relay.address, "alice", "alice-pass", peer)
            transports.append(alice)
            with pytest.raises(aioice_stun.TransactionFailed):
                await aioice_allocate(relay.address, "bob", "bob-pass")

            config.write_text("user = alice:alice-pass\nuser = bob:bob-pass\n")
            relay.signal(signal.SIGHUP)

            # Bob can allocate once the reload is applied (bounded polling).
            deadline = time.monotonic() + 10
            while True:
                try:
                    bob, _ = await aioice_allocate(relay.address, "bob", "bob-pass", peer)
                    transports.append(bob)
                    break
                except aioice_stun.TransactionFailed:
                    if time.monotonic() > deadline:
                        raise AssertionError("bob still refused 10s after SIGHUP:\n" + relay.log())
                    await asyncio.sleep(0.05)

            # Alice's allocation made before the reload still relays, over its channel and
            # over a new ChannelBind (an authenticated request after the reload).
            await echo_once(alice, alice_q, peer)
            await echo_once(alice, alice_q, peer2)

            # A broken file: an error is logged and the previous configuration stays.
            log_before = len(relay.log())
            # (bob is left out of it: if it were applied, bob would be refused.)
            config.write_text("user = alice:alice-pass\nthis line has no equals sign\n")
            relay.signal(signal.SIGHUP)
            wait_for(lambda: " error " in relay.log()[log_before:] or "\"error\"" in relay.log()[log_before:],
                     10, what="an error logged for the broken config")
            new_lines = relay.log()[log_before:]
            assert "reload" in new_lines and "relay.conf:2" in new_lines, new_lines
            assert relay.alive()
            bob_again, _ = await aioice_allocate(relay.address, "bob", "bob-pass", peer)
            transports.append(bob_again)
            await echo_once(alice, alice_q, peer)
        finally:
            for t in transports:
                t.close()
            echo.close()
            echo2.close()

    asyncio.run(scenario())


def test_config_file_accepts_allow_loopback_peers_as_option_equals_value(start_relay, tmp_path):
    config = tmp_path / "relay.conf"
    config.write_text("user = alice:alice-pass\nallow-loopback-peers = true\n")
    relay = start_relay("--config", str(config))

    async def scenario():
        echo, peer = await udp_echo_peer()
        try:
            turn, _ = await aioice_allocate(relay.address, "alice", "alice-pass", peer)
            turn.close()
        finally:
            echo.close()

    asyncio.run(scenario())


def test_config_file_with_a_bare_allow_loopback_peers_line_allows_loopback(start_relay, tmp_path):
    config = tmp_path / "relay.conf"
    config.write_text("user = alice:alice-pass\nallow-loopback-peers\n")
    relay = start_relay("--config", str(config))

    async def scenario():
        echo, peer = await udp_echo_peer()
        try:
            turn, _ = await aioice_allocate(relay.address, "alice", "alice-pass", peer)
            turn.close()
        finally:
            echo.close()

    asyncio.run(scenario())


# --------------------------------------------------------------------------- metrics and health


def test_metrics_and_healthz_answer(start_relay):
    relay = start_relay("--user", "alice:alice-pass", metrics=True)
    assert relay.binding() is not None
    status, body = http_get(relay.url("/metrics"))
    assert status == 200, body
    assert "# TYPE fz_relay_binding_requests_total counter" in body, body[:2000]
    m = relay.metrics()
    for name in ("fz_relay_allocations", "fz_relay_malformed_dropped_total",
                 "fz_relay_relayed_bytes_to_peers_total"):
        assert name in m, f"{name} missing:\n{body[:3000]}"
    relay.wait_metric("fz_relay_binding_requests_total", lambda v: v >= 1)
    status, body = http_get(relay.url("/healthz"))
    assert status == 200, (status, body)


def test_readyz_answers_200_once_serving(start_relay):
    relay = start_relay(metrics=True)
    assert relay.binding() is not None
    last = {}

    def ready():
        last["r"] = http_get(relay.url("/readyz"))
        return last["r"][0] == 200

    try:
        wait_for(ready, 5, interval=0.1, what="/readyz to answer 200")
    except AssertionError:
        raise AssertionError(f"/readyz still answers {last['r']} 5s after the relay answered a Binding")


def test_readyz_answers_503_after_sigterm_or_the_endpoint_is_gone(start_relay, notify_socket):
    """While stopping, the relay must not report ready."""
    relay = start_relay(metrics=True, env=notify_env(notify_socket))
    relay.signal(signal.SIGTERM)
    notify_socket.wait_for(lambda m: "STOPPING=1" in m.split("\n"), timeout=10)
    try:
        status, _ = http_get(relay.url("/readyz"), timeout=1)
    except OSError:
        status = None  # the endpoint is already closed: fine
    assert status != 200
    assert relay.wait_exit(timeout=10) == 0, relay.log()


def test_json_log_format_writes_one_json_object_per_line(start_relay):
    relay = start_relay("--log-format", "json", "--user", "alice:alice-pass")
    client = stunproto.TurnClient(relay.address, "alice", "alice-pass")
    try:
        assert client.allocate().cls == stunproto.SUCCESS  # logs "allocation created"
    finally:
        client.close()

    def lines():
        return [l for l in relay.log().splitlines() if l.strip() and not l.startswith("--- ")]

    wait_for(lambda: any("allocation" in l for l in lines()), 5, what="an allocation log line")
    records = [json.loads(l) for l in lines()]
    assert all(isinstance(r, dict) for r in records), records


def _plain_env():
    return {k: v for k, v in os.environ.items() if not k.startswith("FZ_RELAY_")}


@pytest.mark.parametrize("first_threads", ["1", "2"])
@pytest.mark.parametrize("threads", ["1", "2"])
def test_a_second_relay_on_a_served_address_fails_naming_it(start_relay, relay_bin, first_threads, threads):
    # With several shards every listening socket has SO_REUSEPORT, which would also let a second
    # relay process of the same user share the port, the kernel splitting clients between them.
    first = start_relay("--threads", first_threads)
    second = subprocess.run(
        [relay_bin, "--listening-ip", first.host, "--listening-port", str(first.port), "--threads", threads,
         "--min-port", "40000", "--max-port", "59999"],
        capture_output=True, text=True, timeout=20, env=_plain_env())
    assert second.returncode != 0, second.stderr
    assert f"address in use: {first.host}:{first.port} (UDP)" in second.stderr, second.stderr
    assert "Address already in use" in second.stderr, second.stderr
    assert first.alive() and first.binding() is not None


def test_relays_started_at_once_on_one_address_leave_exactly_one_serving(relay_bin, tmp_path):
    # The probe alone would leave a window (both probe, both bind with SO_REUSEPORT); the
    # start-up lock closes it. Started together, all but one must exit with "address in use".
    from conftest import free_port, kill_process

    port = free_port()
    procs = []
    logs = []
    try:
        for i in range(4):
            log = open(tmp_path / f"racer{i}.log", "wb")
            logs.append(log)
            procs.append(subprocess.Popen(
                [relay_bin, "--listening-ip", "127.0.0.1", "--listening-port", str(port), "--threads", "2",
                 "--min-port", str(40000 + 5000 * i), "--max-port", str(44999 + 5000 * i)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=_plain_env()))
        wait_for(lambda: sum(p.poll() is not None for p in procs) >= 3, 20, what="three of four relays to exit")
        running = [p for p in procs if p.poll() is None]
        texts = [(tmp_path / f"racer{i}.log").read_text(errors="replace") for i in range(4)]
        assert len(running) == 1, texts
        for p, text in zip(procs, texts):
            if p.poll() is not None:
                assert p.returncode != 0 and f"address in use: 127.0.0.1:{port} (UDP)" in text, text
        wait_for(lambda: stunproto.binding("127.0.0.1", port, timeout=0.2) is not None, 10,
                 what="the remaining relay to answer")
        assert running[0].poll() is None
    finally:
        for p in procs:
            kill_process(p)
        for log in logs:
            log.close()
