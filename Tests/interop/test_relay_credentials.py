"""The TURN REST credentials the portal mints (one function, FZCrypto.TURNRESTCredentials) are
accepted by relays nobody here wrote: coturn's turnserver with `--use-auth-secret`, given the
deployment's TURN secret the portal hands its relays, relays coturn's own turnutils_uclient with
the username and password a client received in `init` — and so does fz-relay with the same
secret. So an fz deployment can use coturn relays, and fz-relay checks exactly what coturn does.

Everything runs on loopback; every process is stopped by its PID.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.parse

import pytest

from conftest import assert_clean_echo, free_port, kill_process, run_uclient, wait_for, UCLIENT_LOAD
import stunproto
from test_portal import Portal, cli, portal_bin, tmpdb, wg_key  # noqa: F401 (fixtures)

websockets = pytest.importorskip("websockets")
from websockets.asyncio.client import connect as ws_connect  # noqa: E402


class Coturn:
    """coturn's turnserver on 127.0.0.1 with the TURN REST API shared secret."""

    def __init__(self, secret: str, tmp_path, realm: str = "fz"):
        self.host = "127.0.0.1"
        self.port = free_port()
        self.log_path = tmp_path / "coturn.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            ["turnserver", "-n", "--listening-ip", self.host, "-L", self.host, "-p", str(self.port),
             "--relay-ip", self.host, "--min-port", "40000", "--max-port", "59999",
             "--use-auth-secret", f"--static-auth-secret={secret}", "-r", realm,
             "--allow-loopback-peers", "--no-tcp", "--no-tls", "--no-dtls", "--no-cli",
             "--log-file", "stdout", "--simple-log"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
        )
        wait_for(lambda: self.proc.poll() is not None or stunproto.binding(self.host, self.port, timeout=0.2) is not None,
                 20, 0.05, "turnserver to answer a Binding")
        assert self.proc.poll() is None, self.log_path.read_text(errors="replace")

    def stop(self):
        kill_process(self.proc)
        self.log.close()


async def _credentials_from_portal(p: Portal, relay_token: str, client_token: str, relay_address: str):
    """Connects a relay (which gets the TURN secret) and then a client (whose init lists the relay
    with credentials minted for it)."""
    ws = p.url.replace("http://", "ws://")
    q = urllib.parse.urlencode({"name": "relay-eu", "region": "eu", "addresses": relay_address})
    relay = await ws_connect(f"{ws}/api/v1/ws/relay?{q}", additional_headers={"Authorization": f"Bearer {relay_token}"})
    try:
        rinit = json.loads(await asyncio.wait_for(relay.recv(), 5))
        assert rinit["type"] == "init" and rinit["turn_secret"], rinit
        key = urllib.parse.quote(wg_key(), safe="")
        client = await ws_connect(f"{ws}/api/v1/ws/client?public_key={key}",
                                  additional_headers={"Authorization": f"Bearer {client_token}"})
        try:
            cinit = json.loads(await asyncio.wait_for(client.recv(), 5))
        finally:
            await client.close()
    finally:
        await relay.close()
    assert cinit["type"] == "init" and len(cinit["relays"]) == 1, cinit
    r = cinit["relays"][0]
    assert r["addresses"] == [relay_address] and r["username"].endswith(":" + cinit["client_id"]), r
    return rinit["turn_secret"], r["username"], r["password"]


def test_portal_minted_credentials_are_accepted_by_coturn_and_fz_relay(portal_bin, tmpdb, tmp_path, echo_peer, start_relay):
    p = Portal(portal_bin, tmpdb)
    coturn = None
    try:
        p.read_admin_token()
        actor = cli(portal_bin, p, "actor", "create", "alice")
        client_token = cli(portal_bin, p, "token", "create", "--scope", "client", "--subject", actor["id"],
                           "--expires-in", "1h")["secret"]
        relay_token = cli(portal_bin, p, "token", "create", "--scope", "relay", "--expires-in", "1h")["secret"]
        # The relay's advertised address is only a label here; both relays below serve 127.0.0.1.
        secret, username, password = asyncio.run(
            _credentials_from_portal(p, relay_token, client_token, "127.0.0.1:3478"))

        coturn = Coturn(secret, tmp_path)
        result = run_uclient(coturn, echo_peer.address, "-u", username, "-w", password, *UCLIENT_LOAD)
        assert_clean_echo(result)

        # A wrong password is refused by coturn, so the run above proves the password is right.
        bad = run_uclient(coturn, echo_peer.address, "-u", username, "-w", password[:-2] + "A=", "-m", "1", "-n", "5",
                          "-c", timeout=30)
        assert bad.totals != (5, 5), bad.describe()

        relay = start_relay("--static-auth-secret", secret, "--allow-loopback-peers")
        assert_clean_echo(run_uclient(relay, echo_peer.address, "-u", username, "-w", password, *UCLIENT_LOAD))
    finally:
        if coturn is not None:
            coturn.stop()
        p.stop()


async def _client_relays(p: Portal, client_token: str, want: int, timeout: float = 15.0):
    """The relays a client's init lists, polled (bounded) until there are `want` of them."""
    ws = p.url.replace("http://", "ws://")
    deadline = asyncio.get_running_loop().time() + timeout
    # One key for every poll: the portal bounds the public keys a token may register per hour.
    key = urllib.parse.quote(wg_key(), safe="")
    while True:
        client = await ws_connect(f"{ws}/api/v1/ws/client?public_key={key}",
                                  additional_headers={"Authorization": f"Bearer {client_token}"})
        try:
            cinit = json.loads(await asyncio.wait_for(client.recv(), 5))
        finally:
            await client.close()
        if len(cinit["relays"]) == want or asyncio.get_running_loop().time() > deadline:
            return cinit["relays"]
        await asyncio.sleep(0.1)  # polling the portal's view with a deadline


def test_fz_relay_joins_the_portal_and_serves_its_clients_also_while_the_portal_is_away(
        portal_bin, tmpdb, tmp_path, echo_peer, start_relay):
    """fz-relay --portal-url: announces itself over /api/v1/ws/relay, takes the deployment's TURN
    secret from init, and relays turnutils_uclient with the credentials a client got from the
    portal; it keeps relaying while the portal is down and rejoins when it is back."""
    p = Portal(portal_bin, tmpdb)
    try:
        p.read_admin_token()
        actor = cli(portal_bin, p, "actor", "create", "alice")
        client_token = cli(portal_bin, p, "token", "create", "--scope", "client", "--subject", actor["id"],
                           "--expires-in", "1h")["secret"]
        relay_token = cli(portal_bin, p, "token", "create", "--scope", "relay", "--expires-in", "1h")["secret"]
        token_file = tmp_path / "relay.token"
        token_file.write_text(relay_token + "\n")

        relay = start_relay("--portal-url", p.url, "--token-file", str(token_file), "--region", "eu", "--name", "relay-eu",
                            "--allow-loopback-peers")
        relays = asyncio.run(_client_relays(p, client_token, want=1))
        assert len(relays) == 1, relays
        r = relays[0]
        assert (r["name"], r["region"]) == ("relay-eu", "eu"), r
        assert r["addresses"] == [f"127.0.0.1:{relay.port}"], r
        assert_clean_echo(run_uclient(relay, echo_peer.address, "-u", r["username"], "-w", r["password"], *UCLIENT_LOAD))

        # The portal goes away: the relay keeps relaying with the secret it has.
        p.proc.kill()
        p.proc.wait(timeout=10)
        assert_clean_echo(run_uclient(relay, echo_peer.address, "-u", r["username"], "-w", r["password"], *UCLIENT_LOAD))
        assert relay.proc.poll() is None

        # It is back (same database): the relay rejoins and is listed again.
        p2 = Portal(portal_bin, tmpdb, port=p.port)
        try:
            again = asyncio.run(_client_relays(p2, client_token, want=1))
            assert [x["name"] for x in again] == ["relay-eu"], again
        finally:
            p2.stop()
    finally:
        p.stop()


@pytest.mark.parametrize("args,env,flag", [
    (["--portal-url", "ftp://portal"], {"FZ_TOKEN": "fz_x"}, "--portal-url"),
    (["--portal-url", "http://127.0.0.1:1", "--token-file", "/nonexistent/token"], {}, "--token-file"),
    ([], {"FZ_PORTAL_URL": "portal.example:8080", "FZ_TOKEN": "fz_x"}, "FZ_PORTAL_URL"),
])
def test_fz_relay_portal_flags_are_checked(relay_bin, args, env, flag):
    import os
    r = subprocess.run([relay_bin, "--listening-ip", "127.0.0.1", "--listening-port", str(free_port()), *args],
                       capture_output=True, text=True, timeout=30, env={**os.environ, **env})
    assert r.returncode != 0
    assert flag in r.stderr, r.stderr
