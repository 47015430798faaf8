"""fz-portal end to end: the admin CLI against a running `fz-portal serve`, persistence across
restarts, systemd readiness (a fake NOTIFY_SOCKET), graceful shutdown of control channel peers,
and flag validation.

Binary: $FZ_PORTAL_BIN, else `swift build --show-bin-path`/fz-portal. Every process is stopped
by its PID; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import selectors
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest

from conftest import REPO, http_get, kill_process, wait_for

websockets = pytest.importorskip("websockets")
from websockets.asyncio.client import connect as ws_connect  # noqa: E402

START_TIMEOUT = 20.0


@pytest.fixture(scope="session")
def portal_bin() -> str:
    path = os.environ.get("FZ_PORTAL_BIN")
    if not path:
        try:
            out = subprocess.run(
                ["swift", "build", "--show-bin-path"], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
            )
        except (OSError, subprocess.SubprocessError) as e:
            pytest.skip(f"cannot locate the build directory: {e}")
        path = str(Path(out.stdout.strip()) / "fz-portal")
    if not os.access(path, os.X_OK):
        pytest.skip(f"{path} not built (swift build --product fz-portal)")
    return path


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Portal:
    """One `fz-portal serve` process on loopback."""

    def __init__(self, binary: str, db: Path, env: dict | None = None, wait_ready: bool = True, args: list[str] = (),
                 port: int | None = None):
        self.port = port or free_tcp_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [binary, "serve", "--listen", f"127.0.0.1:{self.port}", "--database-url", f"sqlite://{db}", "--log-level", "warning", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **(env or {})},
        )
        self.admin_token = None
        if wait_ready:
            self.wait_ready()

    def wait_ready(self):
        wait_for(lambda: self.proc.poll() is not None or self.ready(), START_TIMEOUT, 0.05, "fz-portal /readyz")
        assert self.proc.poll() is None, self.proc.stderr.read().decode(errors="replace")

    def ready(self) -> bool:
        try:
            return http_get(self.url + "/readyz", timeout=1)[0] == 200
        except OSError:
            return False

    def read_admin_token(self, timeout: float = START_TIMEOUT) -> str:
        """The token printed once on a fresh database (first stdout line)."""
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        assert sel.select(timeout), "no admin token printed"
        line = self.proc.stdout.readline().decode()
        assert "Initial admin token" in line, line
        self.admin_token = line.rsplit(" ", 1)[1].strip()
        return self.admin_token

    def stop(self) -> int | None:
        return kill_process(self.proc)


@pytest.fixture
def tmpdb(tmp_path) -> Path:
    return tmp_path / "portal.sqlite"


def cli(binary: str, portal: Portal, *args: str, token: str | None = None, check: bool = True):
    env = {**os.environ, "FZ_PORTAL_TOKEN": token or portal.admin_token or ""}
    r = subprocess.run([binary, *args, "--portal-url", portal.url], capture_output=True, text=True, env=env, timeout=30)
    if check:
        assert r.returncode == 0, f"{args}: rc={r.returncode} {r.stderr}"
        return json.loads(r.stdout) if r.stdout.strip() else None
    return r


def wg_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


# --------------------------------------------------------------------------- CLI


def test_cli_creates_lists_and_survives_restart(portal_bin, tmpdb):
    p = Portal(portal_bin, tmpdb)
    try:
        p.read_admin_token()
        site = cli(portal_bin, p, "site", "create", "north")
        assert site["id"].startswith("site_") and site["name"] == "north"
        res = cli(portal_bin, p, "resource", "create", "--site", site["id"], "--address", "10.0.0.0/24",
                  "--filter", "tcp/443", "--filter", "udp/5000-5100", "db")
        assert res["filters"] == ["tcp/443", "udp/5000-5100"] and res["site_id"] == site["id"]
        grp = cli(portal_bin, p, "group", "create", "engineers")
        act = cli(portal_bin, p, "actor", "create", "alice")
        assert act["kind"] == "user"
        mem = cli(portal_bin, p, "membership", "add", "--group", grp["id"], "--actor", act["id"])
        assert mem == {"group_id": grp["id"], "actor_id": act["id"]}
        pol = cli(portal_bin, p, "policy", "create", "--group", grp["id"], "--resource", res["id"],
                  "--source-cidr", "127.0.0.0/8")
        assert pol["conditions"]["source_cidrs"] == ["127.0.0.0/8"]
        pol2 = cli(portal_bin, p, "policy", "create", "--group", grp["id"], "--resource", res["id"])
        assert cli(portal_bin, p, "policy", "delete", pol2["id"]) is None
        tok = cli(portal_bin, p, "token", "create", "--scope", "site", "--subject", site["id"], "--expires-in", "1h")
        assert tok["secret"].startswith("fz_") and tok["token"]["scope"] == "site"
        assert 3500 <= tok["token"]["expires_at"] - time.time() <= 3700

        # The server's message, non-zero exit.
        bad = cli(portal_bin, p, "resource", "create", "--site", "site_nope", "--address", "10.0.0.1", "x", check=False)
        assert bad.returncode != 0 and "site_id" in bad.stderr
        bad = cli(portal_bin, p, "policy", "delete", "pol_nope", check=False)
        assert bad.returncode != 0 and "not_found" in bad.stderr
        bad = cli(portal_bin, p, "site", "list", token="fz_wrong", check=False)
        assert bad.returncode != 0 and "unauthorized" in bad.stderr
        bad = cli(portal_bin, p, "token", "create", "--scope", "admin", "--expires-in", "soon", check=False)
        assert bad.returncode != 0 and "--expires-in" in bad.stderr

        for kind in ("gateway", "relay", "client"):
            assert cli(portal_bin, p, kind, "list") == []
        assert p.stop() == 0
    finally:
        p.stop()


def test_cli_state_persists_across_restart(portal_bin, tmpdb):
    p = Portal(portal_bin, tmpdb)
    token = p.read_admin_token()
    try:
        site = cli(portal_bin, p, "site", "create", "north")
        res = cli(portal_bin, p, "resource", "create", "--site", site["id"], "--address", "*.corp.example", "wiki")
        grp = cli(portal_bin, p, "group", "create", "ops")
        act = cli(portal_bin, p, "actor", "create", "--kind", "service_account", "ci")
        cli(portal_bin, p, "membership", "add", "--group", grp["id"], "--actor", act["id"])
        pol = cli(portal_bin, p, "policy", "create", "--group", grp["id"], "--resource", res["id"])
        tok = cli(portal_bin, p, "token", "create", "--scope", "client", "--subject", act["id"])
        assert p.stop() == 0

        p = Portal(portal_bin, tmpdb)
        p.admin_token = token
        sel = selectors.DefaultSelector()
        sel.register(p.proc.stdout, selectors.EVENT_READ)
        assert not sel.select(0.2), "a second admin token was printed"
        assert [s["id"] for s in cli(portal_bin, p, "site", "list")] == [site["id"]]
        assert [r["id"] for r in cli(portal_bin, p, "resource", "list")] == [res["id"]]
        assert [g["id"] for g in cli(portal_bin, p, "group", "list")] == [grp["id"]]
        assert [a["id"] for a in cli(portal_bin, p, "actor", "list")] == [act["id"]]
        assert cli(portal_bin, p, "membership", "list") == [{"group_id": grp["id"], "actor_id": act["id"]}]
        assert [x["id"] for x in cli(portal_bin, p, "policy", "list")] == [pol["id"]]
        assert tok["token"]["id"] in [t["id"] for t in cli(portal_bin, p, "token", "list")]
    finally:
        p.stop()


# --------------------------------------------------------------------------- readiness & shutdown


class NotifySocket:
    """A unix datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def receive(self, timeout: float) -> str:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode()

    def wait_for(self, key: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no {key} from fz-portal"
            msg = self.receive(left)
            if key in msg.splitlines():
                return msg

    def close(self):
        self.sock.close()


async def _open_peers(p: Portal, site_token: str, client_token: str):
    headers = lambda t: {"Authorization": f"Bearer {t}"}  # noqa: E731
    q = lambda: urllib.parse.quote(wg_key(), safe="")  # noqa: E731
    ws_base = p.url.replace("http://", "ws://")
    gw = await ws_connect(f"{ws_base}/api/v1/ws/gateway?public_key={q()}", additional_headers=headers(site_token))
    cl = await ws_connect(f"{ws_base}/api/v1/ws/client?public_key={q()}", additional_headers=headers(client_token))
    for ws in (gw, cl):
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "init"
    return gw, cl


async def _expect_reconnect(ws) -> int:
    msgs = []
    try:
        while True:
            msgs.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
    except websockets.exceptions.ConnectionClosed as e:
        assert msgs and msgs[-1] == {"v": 1, "type": "reconnect"}, msgs
        return e.rcvd.code if e.rcvd else -1


def test_ready_after_migrations_and_stopping_on_sigterm(portal_bin, tmp_path, tmpdb):
    notify = NotifySocket(tmp_path / "notify.sock")
    p = None
    try:
        p = Portal(portal_bin, tmpdb, env={"NOTIFY_SOCKET": notify.path}, wait_ready=False)
        msg = notify.wait_for("READY=1", START_TIMEOUT)
        assert "STATUS=listening on 127.0.0.1:" in msg
        # READY=1 comes after the migrations and once /readyz answers.
        assert http_get(p.url + "/readyz")[0] == 200
        with sqlite3.connect(f"file:{tmpdb}?mode=ro", uri=True) as db:
            tables = {r[0] for r in db.execute("select name from sqlite_master where type='table'")}
        assert {"sites", "resources", "policies", "tokens"} <= tables, tables
        p.read_admin_token()

        site = cli(portal_bin, p, "site", "create", "north")
        act = cli(portal_bin, p, "actor", "create", "alice")
        st = cli(portal_bin, p, "token", "create", "--scope", "site", "--subject", site["id"])["secret"]
        ct = cli(portal_bin, p, "token", "create", "--scope", "client", "--subject", act["id"])["secret"]

        async def scenario():
            gw, cl = await _open_peers(p, st, ct)
            p.proc.send_signal(signal.SIGTERM)
            codes = await asyncio.gather(_expect_reconnect(gw), _expect_reconnect(cl))
            return codes

        codes = asyncio.run(scenario())
        assert codes == [1001, 1001], codes
        notify.wait_for("STOPPING=1", 10)
        assert p.proc.wait(timeout=10) == 0
    finally:
        if p:
            p.stop()
        notify.close()


def test_watchdog_pings_when_asked(portal_bin, tmp_path, tmpdb):
    notify = NotifySocket(tmp_path / "notify.sock")
    p = None
    try:
        env = {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "400000"}
        p = Portal(portal_bin, tmpdb, env=env, wait_ready=False)
        notify.wait_for("READY=1", START_TIMEOUT)
        notify.wait_for("WATCHDOG=1", 2)
        notify.wait_for("WATCHDOG=1", 2)  # again, at about 200 ms
        assert p.stop() == 0
    finally:
        if p:
            p.stop()
        notify.close()


@pytest.mark.parametrize(
    "args,flag",
    [
        (["--listen", "nonsense"], "--listen"),
        (["--listen", "127.0.0.1:99999"], "--listen"),
        (["--database-url", "mysql://x"], "--database-url"),
        (["--database-url", "sqlite://{tmp}/a-file/p.sqlite"], "--database-url"),  # parent is a file
    ],
)
def test_bad_flags_exit_nonzero_naming_the_flag(portal_bin, tmp_path, args, flag):
    (tmp_path / "a-file").write_text("")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "--listen" not in args:
        args = args + ["--listen", f"127.0.0.1:{free_tcp_port()}"]
    r = subprocess.run([portal_bin, "serve", *args], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert flag in r.stderr, r.stderr


def test_metrics_record_intents_peers_and_refusals(portal_bin, tmpdb):
    """/metrics is recorded, not just served: intents by outcome with their latency, connected
    peers by kind, presence pushes and refused registrations."""
    p = Portal(portal_bin, tmpdb)
    try:
        p.read_admin_token()
        site = cli(portal_bin, p, "site", "create", "north")
        act = cli(portal_bin, p, "actor", "create", "alice")
        grp = cli(portal_bin, p, "group", "create", "eng")
        cli(portal_bin, p, "membership", "add", "--group", grp["id"], "--actor", act["id"])
        res = cli(portal_bin, p, "resource", "create", "--site", site["id"], "--address", "10.0.0.0/24", "db")
        cli(portal_bin, p, "policy", "create", "--group", grp["id"], "--resource", res["id"])
        st = cli(portal_bin, p, "token", "create", "--scope", "site", "--subject", site["id"])["secret"]
        ct = cli(portal_bin, p, "token", "create", "--scope", "client", "--subject", act["id"])["secret"]

        async def scenario():
            gw, cl = await _open_peers(p, st, ct)
            await cl.send(json.dumps({"v": 1, "type": "request_access", "resource_id": res["id"]}))
            auth = json.loads(await asyncio.wait_for(gw.recv(), 5))
            assert auth["type"] == "authorize", auth
            await gw.send(json.dumps({"v": 1, "type": "authorized", "request_id": auth["request_id"]}))
            assert json.loads(await asyncio.wait_for(cl.recv(), 5))["type"] == "access_granted"
            await cl.send(json.dumps({"v": 1, "type": "request_access", "resource_id": "res_nope"}))
            denied = json.loads(await asyncio.wait_for(cl.recv(), 5))
            assert denied["reason"] == "not_found", denied
            return await asyncio.to_thread(http_get, p.url + "/metrics")

        status, body = asyncio.run(scenario())
        text = body.decode() if isinstance(body, bytes) else body
        assert status == 200

        def value(line_start: str) -> float:
            for line in text.splitlines():
                if line.startswith(line_start):
                    return float(line.rsplit(" ", 1)[1])
            raise AssertionError(f"no {line_start} in /metrics:\n{text}")

        assert value('fz_portal_intents_total{result="granted"}') == 1
        assert value('fz_portal_intents_total{result="not_found"}') == 1
        assert value('fz_portal_intents_total{result="forbidden"}') == 0
        assert value("fz_portal_intent_duration_seconds_count") == 2
        assert value('fz_portal_connected_peers{kind="gateway"}') == 1
        assert value('fz_portal_connected_peers{kind="client"}') == 1
        assert value('fz_portal_registrations_refused_total{reason="conflict"}') == 0
    finally:
        p.stop()
