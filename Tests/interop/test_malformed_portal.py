"""What fz-client and fz-gateway do with portal messages they cannot use: a stand-in portal (a
Python WebSocket server) sends each daemon a valid `init`, then malformed messages (bad keys,
missing fields, unknown types, not JSON), then a valid message. The daemon drops and logs each bad
one, keeps its session and its state, and acts on the valid message after them; a malformed
`authorize` gets no `authorized` (the real portal then answers the client `access_denied` when its
reply timeout passes, docs/protocol.md).

Each daemon runs in a network namespace of its own with the stand-in on its loopback.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import tempfile
import textwrap
from pathlib import Path

import pytest

from conftest import client_bin, kill_process, wait_for  # noqa: F401 (fixtures)
from test_wireguard import gateway_bin, run

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces and TUN")

PORT = 18200
_counter = itertools.count()

# Serves one WebSocket peer: sends the messages of argv[2] (a JSON list) one by one, logs what
# the peer sends to stdout (one JSON per line) and keeps the connection open.
FAKE_PORTAL = textwrap.dedent("""
    import asyncio, json, sys
    from websockets.asyncio.server import serve
    script = json.loads(open(sys.argv[2]).read())
    async def handler(ws):
        for m in script:
            await ws.send(m if isinstance(m, str) else json.dumps(m))
        async for message in ws:
            print(message, flush=True)
    async def main():
        async with serve(handler, "127.0.0.1", int(sys.argv[1])):
            await asyncio.Future()
    asyncio.run(main())
""")

KEY_A = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
PSK = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="
ICE = {"client": {"username": "cccc1111", "password": "c" * 32}, "gateway": {"username": "gggg2222", "password": "g" * 32}}
RESOURCE = {"id": "res_web", "site_id": "site_a", "name": "web", "address": "10.95.0.0/24", "filters": []}


class Namespace:
    def __init__(self, workdir: Path):
        self.name = f"fzmp-{os.getpid()}-{next(_counter)}"
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []
        run("ip", "netns", "add", self.name)
        self.ns("ip", "link", "set", "lo", "up")

    def ns(self, *args: str, check: bool = True):
        return run("ip", "netns", "exec", self.name, *args, check=check)

    def spawn(self, name: str, *args: str, env=None) -> subprocess.Popen:
        proc = subprocess.Popen(["ip", "netns", "exec", self.name, *args], stdout=open(self.workdir / f"{name}.log", "a"),
                                stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        p = self.workdir / f"{name}.log"
        return p.read_text() if p.exists() else ""

    def fake_portal(self, script: list) -> None:
        (self.workdir / "script.json").write_text(json.dumps(script))
        self.spawn("portal", "python3", "-c", FAKE_PORTAL, str(PORT), str(self.workdir / "script.json"))
        wait_for(lambda: self.ns("python3", "-c", f"import socket; socket.create_connection(('127.0.0.1', {PORT}), 1)",
                                 check=False).returncode == 0, 10, interval=0.05, what="the stand-in portal")

    def close(self):
        for p in reversed(self.procs):
            kill_process(p)
        run("ip", "netns", "del", self.name, check=False)


@pytest.fixture
def netns():
    with tempfile.TemporaryDirectory(prefix="fzmp") as d:
        n = Namespace(Path(d))
        try:
            yield n
        finally:
            n.close()


def test_the_client_drops_malformed_portal_messages_and_keeps_going(netns, client_bin):
    init = {"v": 1, "type": "init", "client_id": "cli_1", "actor_id": "act_1",
            "tunnel": {"ipv4": "100.64.0.9", "ipv6": "fd00:2021:1111::9"}, "resources": [RESOURCE], "relays": []}
    good_grant = {"v": 1, "type": "access_granted", "resource_id": "res_web", "gateway_id": "gw_1", "gateway_public_key": KEY_A,
                  "site_id": "site_a", "expires_at": 4102444800, "ice_credentials": ICE, "preshared_key": PSK, "relays": []}
    renamed = {**RESOURCE, "name": "web-renamed"}
    netns.fake_portal([
        init,
        {**good_grant, "preshared_key": "not-a-key"},
        {**good_grant, "gateway_public_key": "A" * 43 + "="},  # the all-zero key
        {k: v for k, v in good_grant.items() if k != "ice_credentials"},
        {"v": 1, "type": "authorize"},  # a gateway's message on the client's channel
        {"v": 2, "type": "resource_updated", "resource": renamed},
        "not json at all",
        {"v": 1, "type": "resource_updated", "resource": renamed},
    ])
    state = netns.workdir / "state"
    proc = netns.spawn("client", client_bin, "run", "--interface", "fzmp0", "--state-dir", str(state),
                       env={"FZ_TOKEN": "fz_test", "FZ_PORTAL_URL": f"http://127.0.0.1:{PORT}"})

    def renamed_in_status():
        r = netns.ns(client_bin, "status", "--json", "--state-dir", str(state), check=False)
        return r.returncode == 0 and any(x["name"] == "web-renamed" for x in json.loads(r.stdout)["resources"])

    wait_for(lambda: proc.poll() is not None or renamed_in_status(), 15, interval=0.1, what="the valid message after the bad ones")
    assert proc.poll() is None, netns.log("client")
    log = netns.log("client")
    assert log.count("undecodable portal message dropped") == 6, log
    assert "access granted" not in log, log
    # Its state is intact: the route of the resource, the tunnel address, one session.
    assert "10.95.0.0/24" in netns.ns("ip", "route", "show", "dev", "fzmp0").stdout
    assert "100.64.0.9" in netns.ns("ip", "addr", "show", "dev", "fzmp0").stdout
    assert log.count("connected to the portal") == 1, log


def test_the_gateway_refuses_a_malformed_authorize_without_answering_and_serves_the_next(netns):
    init = {"v": 1, "type": "init", "gateway_id": "gw_1", "site_id": "site_a", "relays": [], "authorizations": []}
    good = {"v": 1, "type": "authorize", "request_id": "req_good", "client_id": "cli_1", "client_public_key": KEY_A,
            "client_tunnel_ips": ["100.64.0.9", "fd00:2021:1111::9"], "resource": RESOURCE, "filters": [],
            "expires_at": 4102444800, "ice_credentials": ICE, "preshared_key": PSK}
    netns.fake_portal([
        init,
        {**good, "request_id": "req_badkey", "client_public_key": "short"},
        {**good, "request_id": "req_badip", "client_tunnel_ips": ["300.1.1.1"]},
        {**good, "request_id": "req_badfilter", "filters": ["tcp/99999"]},
        {k: v for k, v in good.items() if k != "preshared_key"},
        {"v": 1, "type": "access_granted"},  # a client's message on the gateway's channel
        good,
    ])
    proc = netns.spawn("gateway", gateway_bin(), "--interface", "fzmpg0", "--name", "gw-1",
                       env={"FZ_TOKEN": "fz_test", "FZ_PORTAL_URL": f"http://127.0.0.1:{PORT}"})
    wait_for(lambda: proc.poll() is not None or "req_good" in netns.log("portal"), 15, interval=0.1,
             what="authorized for the valid authorize")
    assert proc.poll() is None, netns.log("gateway")
    answers = [json.loads(line) for line in netns.log("portal").splitlines() if line.startswith("{")]
    authorized = [a["request_id"] for a in answers if a.get("type") == "authorized"]
    assert authorized == ["req_good"], answers
    log = netns.log("gateway")
    assert log.count("undecodable portal message dropped") == 5, log
    assert log.count("connected to the portal") == 1, log
