"""The product path end to end in network namespaces, without NAT: the real fz-portal, fz-relay in
portal mode, fz-gateway in portal mode and fz-client, provisioned through the fz-portal CLI, and a
resource host on the Site's LAN. `curl` (urllib) in the client's namespace reaches the resource
through ICE and WireGuard; nothing here speaks the protocol by hand.

    swift build                                        # or set FZ_{PORTAL,RELAY,GATEWAY,CLIENT}_BIN
    sudo python3 -m pytest -q Tests/interop/test_e2e.py

Topology (names unique per test; everything removed at the end, pass or fail; processes stopped by PID):

    fze-br-*   a bridge: the "public" segment 198.18.0.0/24
      ├─ fze-po-*  fz-portal        198.18.0.1
      ├─ fze-re-*  fz-relay         198.18.0.2
      ├─ fze-gw-*  fz-gateway       198.18.0.3   ── site LAN 10.91.0.1/24 ── fze-rs-* resource 10.91.0.2
      └─ fze-cl-*  fz-client        198.18.0.4

"Blocking UDP between client and gateway" is an iptables rule in the client's namespace; the
relay is then the only way, and the connection moves to it.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from conftest import kill_process, wait_for
from test_gateway_portal import HTTP_GET, HTTP_SERVER, portal_bin
from test_wireguard import gateway_bin, run

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces and TUN")

PORTAL, RELAY, GATEWAY, CLIENT = "198.18.0.1", "198.18.0.2", "198.18.0.3", "198.18.0.4"
GW_LAN, RESOURCE = "10.91.0.1", "10.91.0.2"
ELSEWHERE = "10.92.0.2"  # a resource in a Site without a gateway
HIDDEN = "10.91.0.3"  # a resource of the Site without a policy
PORTAL_PORT = 18090
_counter = itertools.count()


def _bin(env: str, name: str) -> str:
    path = os.environ.get(env) or os.path.join(os.path.dirname(gateway_bin()), name)
    if not os.access(path, os.X_OK):
        pytest.fail(f"{name} not built at {path}")
    return path


class NotifySocket:
    """A unix datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, directory: Path, name: str = "notify"):
        self.path = str(directory / f"{name}.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except (socket.timeout, BlockingIOError):
                return self.messages

    def close(self):
        self.sock.close()


class Lab:
    def __init__(self, workdir: Path):
        n = f"{os.getpid()}-{next(_counter)}"
        self.workdir = workdir
        self.id = n.replace("-", "")[-7:]
        self.br, self.po, self.re, self.gw, self.cl, self.rs = (f"fze-{k}-{n}" for k in ("br", "po", "re", "gw", "cl", "rs"))
        self.namespaces = [self.br, self.po, self.re, self.gw, self.cl, self.rs]
        self.procs: list[subprocess.Popen] = []
        self.logs: dict[str, Path] = {}
        for ns in self.namespaces:
            run("ip", "netns", "add", ns)
            self.ns(ns, "ip", "link", "set", "lo", "up")
        self.ns(self.br, "ip", "link", "add", "br0", "type", "bridge")
        self.ns(self.br, "ip", "link", "set", "br0", "up")
        for i, (ns, address) in enumerate(((self.po, PORTAL), (self.re, RELAY), (self.gw, GATEWAY), (self.cl, CLIENT))):
            outside, inside = f"fze{self.id}{i}a", f"fze{self.id}{i}b"
            run("ip", "link", "add", outside, "netns", self.br, "type", "veth", "peer", "name", inside, "netns", ns)
            self.ns(self.br, "ip", "link", "set", outside, "master", "br0", "up")
            self.ns(ns, "ip", "addr", "add", f"{address}/24", "dev", inside)
            self.ns(ns, "ip", "link", "set", inside, "up")
        run("ip", "link", "add", f"fze{self.id}sa", "netns", self.gw, "type", "veth", "peer", "name", f"fze{self.id}sb", "netns", self.rs)
        self.ns(self.gw, "ip", "addr", "add", f"{GW_LAN}/24", "dev", f"fze{self.id}sa")
        self.ns(self.gw, "ip", "link", "set", f"fze{self.id}sa", "up")
        self.ns(self.rs, "ip", "addr", "add", f"{RESOURCE}/24", "dev", f"fze{self.id}sb")
        self.ns(self.rs, "ip", "link", "set", f"fze{self.id}sb", "up")
        self.portal_url = f"http://{PORTAL}:{PORTAL_PORT}"
        self.state_dir = workdir / "client-state"
        self.notify: NotifySocket | None = None
        self.client: subprocess.Popen | None = None
        self.gateway: subprocess.Popen | None = None
        self.portal: subprocess.Popen | None = None

    # -- plumbing

    def ns(self, ns: str, *args: str, check: bool = True, timeout: float = 30.0):
        return run("ip", "netns", "exec", ns, *args, check=check, timeout=timeout)

    def spawn(self, ns: str, name: str, *args: str, env=None) -> subprocess.Popen:
        log = self.workdir / f"{name}.log"
        self.logs[name] = log
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *args], stdout=open(log, "a"), stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        return self.logs[name].read_text() if name in self.logs else ""

    def all_logs(self) -> str:
        return "\n".join(f"--- {k}\n{self.log(k)[-4000:]}" for k in self.logs)

    def cli(self, *args: str):
        env = {**os.environ, "FZ_PORTAL_TOKEN": self.admin}
        r = subprocess.run(["ip", "netns", "exec", self.po, portal_bin(), *args, "--portal-url", self.portal_url],
                           capture_output=True, text=True, env=env, timeout=30)
        assert r.returncode == 0, f"{args}: {r.stderr}"
        return json.loads(r.stdout) if r.stdout.strip() else None

    # -- the deployment

    def start_portal(self):
        log = self.workdir / "portal.log"
        self.logs["portal"] = log
        proc = subprocess.Popen(["ip", "netns", "exec", self.po, portal_bin(), "serve", "--listen", f"{PORTAL}:{PORTAL_PORT}",
                                 "--database-url", f"sqlite://{self.workdir / 'portal.sqlite'}", "--log-level", "warning"],
                                stdout=subprocess.PIPE, stderr=open(log, "a"), text=True)
        self.procs.append(proc)
        self.portal = proc
        if not hasattr(self, "admin"):
            line = proc.stdout.readline()
            assert "Initial admin token" in line, line + self.log("portal")
            self.admin = line.rsplit(" ", 1)[1].strip()
        # Later starts (same database) print nothing: wait for the port.
        wait_for(lambda: self.ns(self.po, "python3", "-c", HTTP_GET, f"{self.portal_url}/healthz", "1", check=False).returncode == 0,
                 15, interval=0.1, what="the portal's /healthz")

    def provision(self):
        site = self.cli("site", "create", "lab")
        self.resource = self.cli("resource", "create", "--site", site["id"], "--address", f"{RESOURCE}/32", "--filter", "tcp/80", "web")
        # A resource no policy grants: the client is never told about it.
        self.hidden = self.cli("resource", "create", "--site", site["id"], "--address", f"{HIDDEN}/32", "hidden")
        far = self.cli("site", "create", "far")
        self.far = self.cli("resource", "create", "--site", far["id"], "--address", f"{ELSEWHERE}/32", "far-web")
        group = self.cli("group", "create", "staff")
        actor = self.cli("actor", "create", "alice")
        self.cli("membership", "add", "--group", group["id"], "--actor", actor["id"])
        self.policy = self.cli("policy", "create", "--group", group["id"], "--resource", self.resource["id"])
        self.cli("policy", "create", "--group", group["id"], "--resource", self.far["id"])
        self.site_token = self.cli("token", "create", "--scope", "site", "--subject", site["id"])["secret"]
        self.client_token = self.cli("token", "create", "--scope", "client", "--subject", actor["id"])["secret"]
        self.relay_token = self.cli("token", "create", "--scope", "relay")["secret"]

    def start_relay(self):
        token = self.workdir / "relay.token"
        token.write_text(self.relay_token + "\n")
        self.spawn(self.re, "relay", _bin("FZ_RELAY_BIN", "fz-relay"), "--listening-ip", RELAY, "--portal-url", self.portal_url,
                   "--token-file", str(token), "--name", "relay-1", "--region", "lab", "--allow-peer", "198.18.0.0/15",
                   "--min-port", "50000", "--max-port", "50999", "--no-tcp")
        wait_for(lambda: "joined the portal" in self.log("relay"), 15, interval=0.1,
                 what="the relay joining the portal")

    def start_gateway(self):
        self.gateway_notify = NotifySocket(self.workdir, "gateway")
        self.gateway = self.spawn(self.gw, "gateway", gateway_bin(), "--interface", "fze-gw", "--name", "gw-1",
                                  env={"FZ_PORTAL_URL": self.portal_url, "FZ_TOKEN": self.site_token,
                                       "NOTIFY_SOCKET": self.gateway_notify.path})
        # READY=1 once it joined the portal and its TUN device is up.
        wait_for(lambda: self.gateway.poll() is not None or any("READY=1" in m for m in self.gateway_notify.drain()), 20,
                 interval=0.1, what="fz-gateway's READY=1")
        assert self.gateway.poll() is None, self.log("gateway")
        assert "joined the portal" in self.log("gateway")

    def start_client(self):
        self.notify = NotifySocket(self.workdir)
        self.client = self.spawn(self.cl, "client", _bin("FZ_CLIENT_BIN", "fz-client"), "run", "--interface", "fze-cl",
                                 "--state-dir", str(self.state_dir),
                                 env={"FZ_PORTAL_URL": self.portal_url, "FZ_TOKEN": self.client_token,
                                      "NOTIFY_SOCKET": self.notify.path})
        wait_for(lambda: self.client.poll() is not None or any("READY=1" in m for m in self.notify.drain()), 20, interval=0.1,
                 what="fz-client's READY=1")
        assert self.client.poll() is None, self.log("client")

    def status(self) -> dict:
        r = self.ns(self.cl, _bin("FZ_CLIENT_BIN", "fz-client"), "status", "--json", "--state-dir", str(self.state_dir), check=False)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def resource_status(self, resource_id: str) -> dict:
        for r in self.status().get("resources", []):
            if r.get("id") == resource_id:
                return r
        return {}

    def get(self, address: str, port: int = 80, timeout: float = 3.0) -> tuple[str, float]:
        start = time.monotonic()
        out = self.ns(self.cl, "python3", "-c", HTTP_GET, f"http://{address}:{port}/", str(timeout), check=False,
                      timeout=timeout + 10).stdout
        return out, time.monotonic() - start

    def fetch_until(self, address: str, expect: str, within: float) -> float:
        """Fetches until the body has `expect`; returns the seconds it took. Fails after `within`."""
        start = time.monotonic()
        body = ""
        while time.monotonic() - start < within:
            body, _ = self.get(address, timeout=2)
            if expect in body:
                return time.monotonic() - start
        raise AssertionError(f"no {expect!r} from {address} within {within}s (last: {body!r})\n{self.all_logs()}")

    def block_udp_between_client_and_gateway(self):
        for chain, flag in (("OUTPUT", "-d"), ("INPUT", "-s")):
            self.ns(self.cl, "iptables", "-A", chain, "-p", "udp", flag, GATEWAY, "-j", "DROP")

    def close(self):
        for proc in reversed(self.procs):
            kill_process(proc)
        for n in (self.notify, getattr(self, "gateway_notify", None)):
            if n:
                n.close()
        for ns in self.namespaces:
            run("ip", "netns", "del", ns, check=False)


@pytest.fixture
def lab():
    for tool in ("nft", "iptables"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} missing")
    # Short path: the notify socket's path must fit sun_path.
    with tempfile.TemporaryDirectory(prefix="fze") as d:
        lab = Lab(Path(d))
        try:
            yield lab
        finally:
            lab.close()


def _start_all(lab: Lab):
    lab.start_portal()
    lab.provision()
    lab.spawn(lab.rs, "http80", "python3", "-c", HTTP_SERVER, RESOURCE, "80")
    lab.spawn(lab.rs, "http8080", "python3", "-c", HTTP_SERVER, RESOURCE, "8080")
    lab.ns(lab.rs, "ip", "addr", "add", f"{HIDDEN}/24", "dev", f"fze{lab.id}sb")
    lab.spawn(lab.rs, "hidden80", "python3", "-c", HTTP_SERVER, HIDDEN, "80")
    lab.start_relay()
    lab.start_gateway()
    lab.start_client()


def test_a_client_reaches_the_resource_directly_then_through_the_relay_and_survives_the_portal(lab):
    _start_all(lab)
    # First packet → request_access → ICE → WireGuard → the resource.
    took = lab.fetch_until(RESOURCE, "resource on port 80", within=10)
    s = wait_for(lambda: lab.resource_status(lab.resource["id"]).get("path", "").startswith("direct") and lab.resource_status(lab.resource["id"]),
                 5, interval=0.2, what="a direct path in fz-client status")
    assert s["gateway"], s
    print(f"first fetch in {took:.2f}s; status: {s}")

    # The resource's filter is tcp/80: 8080 on the same host is dropped at the gateway.
    body, _ = lab.get(RESOURCE, 8080, timeout=2)
    assert "FAILED" in body

    # A resource whose Site has no gateway: access_denied, and the application fails fast
    # (a TCP RST from the client, not a connect timeout).
    body, seconds = lab.get(ELSEWHERE, 80, timeout=5)
    assert "FAILED" in body and seconds < 3, (body, seconds)
    assert lab.resource_status(lab.far["id"]).get("state") == "denied", lab.status()

    # A resource without a policy: not listed, not routed, unreachable at once.
    assert lab.resource_status(lab.hidden["id"]) == {}, lab.status()
    body, seconds = lab.get(HIDDEN, 80, timeout=5)
    assert "FAILED" in body and seconds < 3, (body, seconds)

    # UDP between client and gateway blocked: the connection moves to the relay.
    lab.block_udp_between_client_and_gateway()
    lab.fetch_until(RESOURCE, "resource on port 80", within=15)
    s = wait_for(lambda: "relay" in lab.resource_status(lab.resource["id"]).get("path", "") and lab.resource_status(lab.resource["id"]),
                 10, interval=0.2, what="a relayed path in fz-client status")
    assert "relay-1" in s["path"], s

    # kill -9 of the portal: the established tunnel keeps working.
    lab.portal.kill()
    lab.portal.wait(5)
    for _ in range(3):
        body, _ = lab.get(RESOURCE, 80, timeout=3)
        assert "resource on port 80" in body, body + lab.all_logs()


def test_deleting_the_policy_cuts_access_within_a_second_and_daemons_clean_up(lab):
    _start_all(lab)
    lab.fetch_until(RESOURCE, "resource on port 80", within=10)
    lab.cli("policy", "delete", lab.policy["id"])
    cut = time.monotonic()
    # From one second after the deletion on, nothing gets through.
    time.sleep(max(0.0, 1.0 - (time.monotonic() - cut)))  # the bound under test, not a race fix
    body, _ = lab.get(RESOURCE, 80, timeout=2)
    assert "FAILED" in body, body

    # SIGTERM: the gateway's nftables table and interface go; the client's TUN device too.
    lab.gateway.send_signal(signal.SIGTERM)
    assert lab.gateway.wait(10) == 0, lab.log("gateway")
    assert lab.ns(lab.gw, "nft", "list", "table", "inet", "fz_gateway_fze_gw", check=False).returncode != 0
    lab.client.send_signal(signal.SIGTERM)
    assert lab.client.wait(10) == 0, lab.log("client")
    assert lab.ns(lab.cl, "ip", "link", "show", "fze-cl", check=False).returncode != 0
