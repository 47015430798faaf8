"""fz-gateway's portal mode end to end in network namespaces: the real fz-portal, a client played by
wireguard-go plus a WebSocket session, and a resource host on the Site's LAN.

    swift build --product fz-gateway --product fz-portal      # or set FZ_GATEWAY_BIN / FZ_PORTAL_BIN
    sudo python3 -m pytest -q Tests/interop/test_gateway_portal.py

Namespaces (per test, all removed at the end, pass or fail; processes stopped by PID):
- `fzgp-gw-<pid>-<n>`: fz-portal on 198.18.0.1 and fz-gateway (portal mode), with the public veth
  (198.18.0.1/24) and the Site veth (10.90.0.1/24);
- `fzgp-cl-<pid>-<n>`: the client: wireguard-go and the WebSocket session, on 198.18.0.2;
- `fzgp-rs-<pid>-<n>`: the resource host 10.90.0.2 with HTTP servers on ports 80 and 8080.

wireguard-go does no ICE: it reaches the gateway's UDP port directly, and the gateway's peer, which
has no ICE path, roams to the client's authenticated datagrams. test_e2e.py runs fz-client, ICE
included.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from conftest import kill_process, parse_metrics, wait_for
from test_wireguard import gateway_bin, run

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces and TUN")

GW_PUBLIC, CL_PUBLIC = "198.18.0.1", "198.18.0.2"
GW_LAN, RESOURCE = "10.90.0.1", "10.90.0.2"
OUTSIDE = "10.90.0.3"  # on the resource host too, but not the resource
PORTAL_PORT, GW_PORT, METRICS_PORT = 18080, 51900, 19100
_counter = itertools.count()

CLIENT_SESSION = textwrap.dedent("""
    import asyncio, json, sys
    from websockets.asyncio.client import connect
    async def main(url, token, key, resource):
        async with connect(url.replace("http://", "ws://") + "/api/v1/ws/client?public_key=" + key.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D"),
                           additional_headers={"Authorization": "Bearer " + token}) as ws:
            init = json.loads(await ws.recv())
            print(json.dumps(init), flush=True)
            await ws.send(json.dumps({"v": 1, "type": "request_access", "resource_id": resource}))
            while True:
                m = json.loads(await ws.recv())
                if m["type"] in ("access_granted", "access_denied"):
                    print(json.dumps(m), flush=True)
                    break
            # Stay connected until the test closes stdin.
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    asyncio.run(main(*sys.argv[1:5]))
""")

# HTTPServer.server_bind resolves the address back to a name (socket.getfqdn), which waits for a
# DNS server a namespace cannot reach: bind as a plain TCPServer instead.
HTTP_SERVER = textwrap.dedent("""
    import http.server, socketserver, sys
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = ("resource on port " + sys.argv[2]).encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
        def log_message(self, *a): pass
    class S(http.server.HTTPServer):
        def server_bind(self):
            socketserver.TCPServer.server_bind(self)
            self.server_name, self.server_port = self.server_address[:2]
    S((sys.argv[1], int(sys.argv[2])), H).serve_forever()
""")

HTTP_GET = textwrap.dedent("""
    import sys, urllib.request
    try:
        print(urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).read().decode())
    except Exception as e:
        print("FAILED", e); sys.exit(1)
""")


def portal_bin() -> str:
    path = os.environ.get("FZ_PORTAL_BIN") or os.path.join(os.path.dirname(gateway_bin()), "fz-portal")
    if not os.access(path, os.X_OK):
        pytest.fail(f"fz-portal not built at {path}")
    return path


class Site:
    def __init__(self, workdir: Path):
        n = f"{os.getpid()}-{next(_counter)}"
        self.workdir = workdir
        self.gw, self.cl, self.rs = f"fzgp-gw-{n}", f"fzgp-cl-{n}", f"fzgp-rs-{n}"
        self.procs: list[subprocess.Popen] = []
        self.gateway: subprocess.Popen | None = None
        self.session: subprocess.Popen | None = None
        suffix = n.replace("-", "")[-8:]
        for ns in (self.gw, self.cl, self.rs):
            run("ip", "netns", "add", ns)
            self.ns(ns, "ip", "link", "set", "lo", "up")
        run("ip", "link", "add", f"fzgpa{suffix}", "netns", self.gw, "type", "veth", "peer", "name", f"fzgpb{suffix}", "netns", self.cl)
        run("ip", "link", "add", f"fzgpc{suffix}", "netns", self.gw, "type", "veth", "peer", "name", f"fzgpd{suffix}", "netns", self.rs)
        for ns, dev, addr in ((self.gw, f"fzgpa{suffix}", f"{GW_PUBLIC}/24"), (self.cl, f"fzgpb{suffix}", f"{CL_PUBLIC}/24"),
                              (self.gw, f"fzgpc{suffix}", f"{GW_LAN}/24"), (self.rs, f"fzgpd{suffix}", f"{RESOURCE}/24")):
            self.ns(ns, "ip", "addr", "add", addr, "dev", dev)
            self.ns(ns, "ip", "link", "set", dev, "up")
        self.rs_if = f"fzgpd{suffix}"
        # The resource host knows no route to the clients' tunnel addresses: only masquerade gets replies back.
        self.portal_url = f"http://{GW_PUBLIC}:{PORTAL_PORT}"

    def ns(self, ns: str, *args: str, check: bool = True, timeout: float = 30.0):
        return run("ip", "netns", "exec", ns, *args, check=check, timeout=timeout)

    def spawn(self, ns: str, *args: str, **kw) -> subprocess.Popen:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *args], **kw)
        self.procs.append(proc)
        return proc

    def cli(self, *args: str, check: bool = True):
        env = {**os.environ, "FZ_PORTAL_TOKEN": self.admin}
        r = subprocess.run(["ip", "netns", "exec", self.gw, portal_bin(), *args, "--portal-url", self.portal_url],
                           capture_output=True, text=True, env=env, timeout=30)
        if check:
            assert r.returncode == 0, f"{args}: {r.stderr}"
            return json.loads(r.stdout) if r.stdout.strip() else None
        return r

    def start_portal(self):
        proc = self.spawn(self.gw, portal_bin(), "serve", "--listen", f"{GW_PUBLIC}:{PORTAL_PORT}", "--database-url",
                          f"sqlite://{self.workdir / 'portal.sqlite'}", "--log-level", "warning",
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = proc.stdout.readline()
        assert "Initial admin token" in line, line + proc.stderr.read()
        self.admin = line.rsplit(" ", 1)[1].strip()

    def provision(self, filters=("tcp/80",)):
        site = self.cli("site", "create", "lab")
        args = ["resource", "create", "--site", site["id"], "--address", f"{RESOURCE}/32"]
        for f in filters:
            args += ["--filter", f]
        self.resource = self.cli(*args, "web")
        group = self.cli("group", "create", "staff")
        actor = self.cli("actor", "create", "alice")
        self.cli("membership", "add", "--group", group["id"], "--actor", actor["id"])
        self.policy = self.cli("policy", "create", "--group", group["id"], "--resource", self.resource["id"])
        self.site_token = self.cli("token", "create", "--scope", "site", "--subject", site["id"])["secret"]
        self.client_token = self.cli("token", "create", "--scope", "client", "--subject", actor["id"])["secret"]

    def start_gateway(self):
        log = open(self.workdir / "gateway.log", "w")
        self.gateway = self.spawn(self.gw, gateway_bin(), "--interface", "fzgp0", "--listen-port", str(GW_PORT),
                                  "--metrics-listen", f"127.0.0.1:{METRICS_PORT}", "--name", "gw-1",
                                  env={**os.environ, "FZ_PORTAL_URL": self.portal_url, "FZ_TOKEN": self.site_token},
                                  stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.gateway.poll() is not None or self.metrics().get("fz_gateway_peers") is not None, 20,
                 what="fz-gateway's /metrics")
        assert self.gateway.poll() is None, self.gateway_log()
        wait_for(lambda: self.gateway.poll() is not None or "joined the portal" in self.gateway_log(), 10, what="the gateway joining the portal")
        assert self.gateway.poll() is None, self.gateway_log()

    def gateway_log(self) -> str:
        return (self.workdir / "gateway.log").read_text()

    def metrics(self) -> dict[str, float]:
        r = self.ns(self.gw, "python3", "-c", HTTP_GET, f"http://127.0.0.1:{METRICS_PORT}/metrics", "1", check=False)
        return parse_metrics(r.stdout) if r.returncode == 0 else {}

    def connect_client(self):
        self.client_priv = run("wg", "genkey").stdout.strip()
        self.client_pub = subprocess.run(["wg", "pubkey"], input=self.client_priv, capture_output=True, text=True).stdout.strip()
        self.session = self.spawn(self.cl, "python3", "-c", CLIENT_SESSION, self.portal_url, self.client_token, self.client_pub,
                                  self.resource["id"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.init = json.loads(self.session.stdout.readline() or "{}")
        answer = self.session.stdout.readline()
        assert answer, self.session.stderr.read()
        return json.loads(answer)

    def start_wireguard_go(self, grant):
        self.spawn(self.cl, "wireguard-go", "-f", "fzgpc0", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: os.path.exists("/var/run/wireguard/fzgpc0.sock"), 10, what="wireguard-go's socket")
        (self.workdir / "key").write_text(self.client_priv + "\n")
        (self.workdir / "psk").write_text(grant["preshared_key"] + "\n")
        self.ns(self.cl, "wg", "set", "fzgpc0", "private-key", str(self.workdir / "key"), "peer", grant["gateway_public_key"],
                "preshared-key", str(self.workdir / "psk"), "allowed-ips", f"{RESOURCE}/32,{OUTSIDE}/32", "endpoint", f"{GW_PUBLIC}:{GW_PORT}")
        self.ns(self.cl, "ip", "addr", "add", f"{self.init['tunnel']['ipv4']}/32", "dev", "fzgpc0")
        self.ns(self.cl, "ip", "link", "set", "fzgpc0", "mtu", "1280", "up")
        self.ns(self.cl, "ip", "route", "add", f"{RESOURCE}/32", "dev", "fzgpc0")
        # A client that sends to an address outside its resource (the portal would never route it
        # there; this one is hand-configured): the gateway must drop it.
        self.ns(self.cl, "ip", "route", "add", f"{OUTSIDE}/32", "dev", "fzgpc0")

    def get(self, port: int, timeout: float = 3.0, address: str = RESOURCE) -> str:
        return self.ns(self.cl, "python3", "-c", HTTP_GET, f"http://{address}:{port}/", str(timeout), check=False,
                       timeout=timeout + 10).stdout

    def nft_table_exists(self) -> bool:
        return self.ns(self.gw, "nft", "list", "table", "inet", "fz_gateway_fzgp0", check=False).returncode == 0

    def close(self):
        if self.session and self.session.stdin:
            try:
                self.session.stdin.close()
            except OSError:
                pass
        for proc in reversed(self.procs):
            kill_process(proc)
        for ns in (self.gw, self.cl, self.rs):
            run("ip", "netns", "del", ns, check=False)
        try:
            os.unlink("/var/run/wireguard/fzgpc0.sock")
        except OSError:
            pass


@pytest.fixture
def site(tmp_path):
    for tool in ("wireguard-go", "wg", "nft"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} missing")
    s = Site(tmp_path)
    try:
        yield s
    finally:
        s.close()


def test_a_client_reaches_the_resource_through_the_portal_driven_gateway(site):
    site.start_portal()
    site.provision(filters=("tcp/80",))
    for port in (80, 8080):
        site.spawn(site.rs, "python3", "-c", HTTP_SERVER, RESOURCE, str(port))
    site.ns(site.rs, "ip", "addr", "add", f"{OUTSIDE}/24", "dev", site.rs_if)
    site.spawn(site.rs, "python3", "-c", HTTP_SERVER, OUTSIDE, "80")
    site.start_gateway()
    assert site.nft_table_exists(), "the gateway installs its masquerade table"

    grant = site.connect_client()
    assert grant["type"] == "access_granted", grant
    # /metrics is published once a second.
    wait_for(lambda: site.metrics().get("fz_gateway_peers") == 1, 3, what="authorize adding the client as a peer")
    site.start_wireguard_go(grant)

    body = ""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and "resource on port 80" not in body:
        body = site.get(80)
    assert "resource on port 80" in body, body + site.gateway_log()

    # The filter (tcp/80): 8080 on the same host is dropped at the gateway.
    assert "FAILED" in site.get(8080, timeout=2)
    m = site.metrics()
    assert m.get('fz_gateway_dropped_total{reason="filtered"}', 0) >= 1, m
    # wireguard-go does no ICE: its peer roams; the engine's counters are exported (no relays here).
    assert m.get('fz_gateway_paths{kind="roaming"}') == 1 and m.get('fz_gateway_paths{kind="direct"}') == 0, m
    assert m.get("fz_gateway_relay_allocations_total") == 0, m
    # An address outside the resource (another host of the Site's LAN, serving port 80): dropped too.
    before = m.get('fz_gateway_dropped_total{reason="filtered"}', 0)
    assert "FAILED" in site.get(80, timeout=2, address=OUTSIDE)
    wait_for(lambda: site.metrics().get('fz_gateway_dropped_total{reason="filtered"}', 0) > before, 3,
             what="the packet to an address outside the resource counted as filtered")

    # Deleting the policy revokes the authorization: the peer is gone (seen within the 1 s
    # publication period of /metrics, plus 1 s).
    site.cli("policy", "delete", site.policy["id"])
    wait_for(lambda: site.metrics().get("fz_gateway_peers") == 0, 2.0, what="the peer removed after revoke")
    assert "FAILED" in site.get(80, timeout=2)

    # SIGTERM: exit 0, the masquerade table and the interface are gone.
    site.gateway.send_signal(signal.SIGTERM)
    assert site.gateway.wait(10) == 0, site.gateway_log()
    assert not site.nft_table_exists()
    assert site.ns(site.gw, "ip", "link", "show", "fzgp0", check=False).returncode != 0


def test_a_bad_token_exits_non_zero_saying_so(site):
    site.start_portal()
    site.provision()
    site.site_token = "fz_not_a_token"
    log = open(site.workdir / "gateway.log", "w")
    proc = site.spawn(site.gw, gateway_bin(), "--interface", "fzgp0",
                      env={**os.environ, "FZ_PORTAL_URL": site.portal_url, "FZ_TOKEN": site.site_token},
                      stdout=log, stderr=subprocess.STDOUT)
    assert proc.wait(20) != 0
    assert "refused" in site.gateway_log(), site.gateway_log()
    assert not site.nft_table_exists(), "the table is removed on that exit too"


def test_missing_portal_settings_name_the_flag(tmp_path):
    r = subprocess.run([gateway_bin()], capture_output=True, text=True, env={"PATH": os.environ["PATH"]}, timeout=30)
    assert r.returncode != 0 and "--portal-url" in r.stderr
    r = subprocess.run([gateway_bin(), "--portal-url", "ftp://x"], capture_output=True, text=True,
                       env={"PATH": os.environ["PATH"], "FZ_TOKEN": "fz_x"}, timeout=30)
    assert r.returncode != 0 and "--portal-url" in r.stderr
    r = subprocess.run([gateway_bin(), "--portal-url", "http://127.0.0.1:1", "--token-file", str(tmp_path / "none")],
                       capture_output=True, text=True, env={"PATH": os.environ["PATH"]}, timeout=30)
    assert r.returncode != 0 and "--token-file" in r.stderr
