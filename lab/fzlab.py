"""The fz lab: a small internet of network namespaces on one machine, with the real daemons.

    portal   198.18.1.2 ─┐
    relay-1  198.18.2.2 ─┤  (region "near")
    relay-2  198.18.3.2 ─┤  (region "far": 30 ms added towards it from both sites)
                        core (routes 198.18.0.0/16)
    client site NAT ─────┤  WAN 198.18.10.2 ── LAN 10.10.0.0/24: the client 10.10.0.2
    gateway site NAT ────┘  WAN 198.18.20.2 ── LAN 10.20.0.0/24: gateways 10.20.0.11, .12,
                                                                   resource host 10.20.0.100

NAT flavours per site (`../shared/reference/design.md`): `none` (the site's hosts get public
addresses, 198.18.1x.0/24 routed to them, no translation), `easy` (MASQUERADE: endpoint-
independent mapping), `hard` (MASQUERADE --random-fully: endpoint-dependent mapping). Every NAT
router drops unsolicited inbound traffic to itself, as home routers do. Delay comes from a TUN
device the core routes into (`tundelay.py`; this kernel has no netem).

Names are unique per run (`fzl<id>-…`); `Lab.close()` stops every process it started (by PID) and
deletes every namespace (with its veths and TUN devices), also after a failure or Ctrl-C.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
TUNDELAY = REPO / "Tests" / "interop" / "tundelay.py"

PORTAL, RELAY1, RELAY2 = "198.18.1.2", "198.18.2.2", "198.18.3.2"
CLIENT_WAN, GATEWAY_WAN = "198.18.10.2", "198.18.20.2"
PORTAL_PORT = 8080
FAR_DELAY_MS = 30

# HTTPServer.server_bind resolves the address back to a name (socket.getfqdn), which waits for
# a DNS server a namespace cannot reach: bind as a plain TCPServer instead.
HTTP_SERVER = textwrap.dedent("""
    import http.server, socketserver, sys
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = ("hello from the resource " + sys.argv[1] + "\\n").encode()
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
        def log_message(self, *a): pass
    class S(http.server.ThreadingHTTPServer):
        def server_bind(self):
            socketserver.TCPServer.server_bind(self)
            self.server_name, self.server_port = self.server_address[:2]
    S((sys.argv[1], int(sys.argv[2])), H).serve_forever()
""")


class LabError(Exception):
    pass


def sh(*args: str, check: bool = True, timeout: float = 30.0, input: str | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, input=input)
    if check and out.returncode != 0:
        raise LabError(f"{' '.join(args)} failed ({out.returncode}): {out.stderr.strip()}")
    return out


def wait_for(condition, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)  # polling with a deadline


class NotifySocket:
    """A unix datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def ready(self) -> bool:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return any("READY=1" in m for m in self.messages)

    def close(self):
        self.sock.close()


class Binaries:
    def __init__(self, directory: str):
        self.dir = Path(directory)
        for name in ("fz-portal", "fz-relay", "fz-gateway", "fz-client"):
            if not os.access(self.dir / name, os.X_OK):
                raise LabError(f"{self.dir / name} is not built (swift build)")

    def __getitem__(self, name: str) -> str:
        return str(self.dir / name)


class Lab:
    def __init__(self, bins: Binaries, workdir: Path, client_nat: str = "easy", gateway_nat: str = "easy", gateways: int = 2,
                 filters: tuple[str, ...] = ("tcp/80",), clients: int = 1):
        self.filters = filters
        if not 1 <= clients <= 50:
            raise LabError("clients must be 1-50")
        # The first client is "client"; more (for load) are client2, client3, ... on the same LAN.
        self.client_roles = ["client"] + [f"client{k}" for k in range(2, clients + 1)]
        for nat in (client_nat, gateway_nat):
            if nat not in ("none", "easy", "hard"):
                raise LabError(f"unknown NAT flavour {nat!r} (none, easy, hard)")
        self.bins = bins
        self.workdir = workdir
        self.client_nat, self.gateway_nat = client_nat, gateway_nat
        self.id = f"{os.getpid() % 10000}{int(time.time() * 1000) % 1000}"
        self.namespaces: list[str] = []
        self.procs: dict[str, subprocess.Popen] = {}
        self.notify: list[NotifySocket] = []
        self.names: dict[str, str] = {}
        self._veth = 0
        self.gateway_count = gateways
        self.admin = ""
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ topology

    def ns_name(self, role: str) -> str:
        return f"fzl{self.id}-{role}"

    def _ns(self, role: str) -> str:
        name = self.ns_name(role)
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def _link(self, a: str, addr_a: str | None, b: str, addr_b: str | None) -> tuple[str, str]:
        self._veth += 1
        ia, ib = f"fzl{self.id}v{self._veth}a", f"fzl{self.id}v{self._veth}b"
        sh("ip", "link", "add", ia, "netns", a, "type", "veth", "peer", "name", ib, "netns", b)
        for ns, ifname, address in ((a, ia, addr_a), (b, ib, addr_b)):
            if address:
                sh("ip", "-n", ns, "addr", "add", address, "dev", ifname)
            sh("ip", "-n", ns, "link", "set", ifname, "up")
        return ia, ib

    def ns(self, role: str, *args: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", self.names[role], *args, check=check, timeout=timeout)

    def sysctl(self, role: str, *settings: str) -> None:
        for s in settings:
            self.ns(role, "sysctl", "-qw", s)

    def _build(self) -> None:
        for role in ("core", "portal", "relay1", "relay2", "cnat", *self.client_roles, "gnat", "resource"):
            self.names[role] = self._ns(role)
        for i in range(1, self.gateway_count + 1):
            self.names[f"gw{i}"] = self._ns(f"gw{i}")
        n = self.names
        self.sysctl("core", "net.ipv4.ip_forward=1")
        # The public side: one routed /24 per attachment.
        for role, net in (("portal", 1), ("relay1", 2), ("relay2", 3)):
            self._link(n["core"], f"198.18.{net}.1/24", n[role], f"198.18.{net}.2/24")
            self.ns(role, "ip", "route", "add", "default", "via", f"198.18.{net}.1")
        client_side = self._site("cnat", "client", 10, self.client_nat, self.client_roles)
        gw_hosts = [f"gw{i}" for i in range(1, self.gateway_count + 1)] + ["resource"]
        gateway_side = self._site("gnat", "gateway", 20, self.gateway_nat, gw_hosts)
        # relay-2 is "far": what the sites send towards it waits FAR_DELAY_MS in a TUN device.
        tun = f"fzl{self.id}dl"
        self.start("delay", "core", sys.executable, str(TUNDELAY), tun, str(FAR_DELAY_MS))
        wait_for(lambda: self.ns("core", "ip", "link", "show", tun, check=False).returncode == 0, 10, what="the delay device")
        self.ns("core", "ip", "link", "set", tun, "up")
        self.sysctl("core", f"net.ipv4.conf.{tun}.rp_filter=0", "net.ipv4.conf.all.rp_filter=0")
        self.ns("core", "ip", "route", "add", "198.18.3.0/24", "dev", tun, "table", "100")
        for core_if in (client_side, gateway_side):
            self.ns("core", "ip", "rule", "add", "iif", core_if, "lookup", "100")

    def _site(self, router: str, kind: str, net: int, nat: str, hosts: list[str]) -> str:
        """A site: its router (WAN 198.18.<net>.2 on the core), a LAN bridge, and its hosts. Returns
        the core's interface towards the router."""
        n = self.names
        core_if, wan = self._link(n["core"], f"198.18.{net}.1/24", n[router], f"198.18.{net}.2/24")
        self.sysctl(router, "net.ipv4.ip_forward=1")
        self.ns(router, "ip", "route", "add", "default", "via", f"198.18.{net}.1")
        self.ns(router, "ip", "link", "add", "lan", "type", "bridge")
        self.ns(router, "ip", "link", "set", "lan", "up")
        if nat == "none":
            # Public addresses on the LAN, routed by the core to the router.
            lan = f"198.18.{net + 1}"
            self.ns("core", "ip", "route", "add", f"{lan}.0/24", "via", f"198.18.{net}.2")
        else:
            lan = f"10.{net}.0"
            masquerade = ["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", wan, "-j", "MASQUERADE"]
            if nat == "hard":
                masquerade.append("--random-fully")
            self.ns(router, *masquerade)
            # As home routers do: nothing unsolicited from the WAN, to the router or beyond it.
            self.ns(router, "iptables", "-A", "INPUT", "-i", wan, "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP")
            self.ns(router, "iptables", "-A", "FORWARD", "-i", wan, "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP")
        self.ns(router, "ip", "addr", "add", f"{lan}.1/24", "dev", "lan")
        addresses = {"client": 2, "gw1": 11, "gw2": 12, "gw3": 13, "resource": 100}
        for k in range(2, 51):
            addresses[f"client{k}"] = 20 + k  # .22-.70
        for host in hosts:
            address = f"{lan}.{addresses[host]}"
            router_if, host_if = self._link(n[router], None, n[host], f"{address}/24")
            self.ns(router, "ip", "link", "set", router_if, "master", "lan")
            self.ns(host, "ip", "route", "add", "default", "via", f"{lan}.1")
        if kind == "gateway":
            self.resource_ip = f"{lan}.100"
        return core_if

    # ------------------------------------------------------------------ processes

    def start(self, name: str, role: str, *argv: str, env: dict[str, str] | None = None, stdout=None) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")
        proc = subprocess.Popen(["ip", "netns", "exec", self.names[role], *argv], stdin=subprocess.DEVNULL,
                                stdout=stdout or log, stderr=log, env={**os.environ, **(env or {})})
        log.close()
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        p = self.workdir / f"{name}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc else None
        proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(5)

    def close(self) -> None:
        for name in reversed(list(self.procs)):
            try:
                self.stop(name, timeout=5)
            except Exception:
                pass
        for n in self.notify:
            n.close()
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "del", ns, check=False)
        self.namespaces.clear()

    # ------------------------------------------------------------------ the deployment

    @property
    def portal_url(self) -> str:
        return f"http://{PORTAL}:{PORTAL_PORT}"

    def cli(self, *args: str) -> dict | list | None:
        out = subprocess.run(
            ["ip", "netns", "exec", self.names["portal"], self.bins["fz-portal"], *args, "--portal-url", self.portal_url],
            capture_output=True, text=True, timeout=30, env={**os.environ, "FZ_PORTAL_TOKEN": self.admin})
        if out.returncode != 0:
            raise LabError(f"fz-portal {' '.join(args)}: {out.stderr.strip()}")
        return json.loads(out.stdout) if out.stdout.strip() else None

    def start_portal(self) -> None:
        """Starts fz-portal; the first start prints the admin token, later ones (same database) do not."""
        first = not self.admin
        proc = self.start("portal", "portal", self.bins["fz-portal"], "serve", "--listen", f"{PORTAL}:{PORTAL_PORT}",
                          "--database-url", f"sqlite://{self.workdir / 'portal.sqlite'}", "--log-level", "warning",
                          stdout=subprocess.PIPE if first else None)
        if first:
            line = proc.stdout.readline().decode()
            if "Initial admin token" not in line:
                raise LabError(f"fz-portal did not print its admin token: {line!r}\n{self.log('portal')}")
            self.admin = line.rsplit(" ", 1)[1].strip()
        probe = f"import urllib.request; urllib.request.urlopen('{self.portal_url}/healthz', timeout=1)"
        wait_for(lambda: self.ns("portal", sys.executable, "-c", probe, check=False).returncode == 0, 15, interval=0.1,
                 what="the portal's /healthz")

    def provision(self) -> None:
        self.site = self.cli("site", "create", "office")
        self.resource = self.cli("resource", "create", "--site", self.site["id"], "--address", f"{self.resource_ip}/32",
                                 *[a for f in self.filters for a in ("--filter", f)], "web")
        self.group = group = self.cli("group", "create", "staff")
        actor = self.cli("actor", "create", "alice")
        self.cli("membership", "add", "--group", group["id"], "--actor", actor["id"])
        self.cli("policy", "create", "--group", group["id"], "--resource", self.resource["id"])
        self.site_token = self.cli("token", "create", "--scope", "site", "--subject", self.site["id"])["secret"]
        self.client_token = self.cli("token", "create", "--scope", "client", "--subject", actor["id"])["secret"]
        self.relay_token = self.cli("token", "create", "--scope", "relay")["secret"]

    def start_relays(self) -> None:
        token = self.workdir / "relay.token"
        token.write_text(self.relay_token + "\n")
        token.chmod(0o600)
        for i, (role, address, region) in enumerate((("relay1", RELAY1, "near"), ("relay2", RELAY2, "far")), start=1):
            self.start(f"relay-{i}", role, self.bins["fz-relay"], "--listening-ip", address, "--portal-url", self.portal_url,
                       "--token-file", str(token), "--name", f"relay-{i}", "--region", region,
                       "--allow-peer", "198.18.0.0/15", "--no-tcp")
        for i in (1, 2):
            wait_for(lambda: "joined the portal" in self.log(f"relay-{i}"), 15, interval=0.1, what=f"relay-{i} joining the portal")

    def _notify(self, name: str) -> NotifySocket:
        path = self.workdir / f"{name}.notify"
        path.unlink(missing_ok=True)  # a restarted daemon gets a fresh socket
        n = NotifySocket(path)
        self.notify.append(n)
        return n

    def start_gateways(self, only: list[int] | None = None) -> None:
        waits = []
        for i in only or range(1, self.gateway_count + 1):
            n = self._notify(f"gw-{i}")
            proc = self.start(f"gw-{i}", f"gw{i}", self.bins["fz-gateway"], "--interface", "fz-gw0", "--name", f"gw-{i}",
                              env={"FZ_PORTAL_URL": self.portal_url, "FZ_TOKEN": self.site_token, "NOTIFY_SOCKET": n.path})
            waits.append((i, proc, n))
        for i, proc, n in waits:
            wait_for(lambda: proc.poll() is not None or n.ready(), 20, interval=0.05, what=f"gw-{i}'s READY=1")
            if proc.poll() is not None:
                raise LabError(f"gw-{i} exited {proc.returncode}:\n{self.log(f'gw-{i}')}")

    def serve_on(self, ip: str) -> None:
        """Another address on the resource host's LAN interface, with an HTTP server on it."""
        dev = next(line.split()[1] for line in self.ns("resource", "ip", "-o", "-4", "addr", "show").stdout.splitlines()
                   if f"inet {self.resource_ip}/" in line)
        self.ns("resource", "ip", "addr", "add", f"{ip}/24", "dev", dev)
        self.start(f"http-{ip}", "resource", sys.executable, "-c", HTTP_SERVER, ip, "80")
        self._wait_listening(ip)

    def _wait_listening(self, ip: str) -> None:
        wait_for(lambda: self.ns("resource", sys.executable, "-c",
                                 f"import socket; socket.create_connection(('{ip}', 80), 1)", check=False).returncode == 0,
                 10, what=f"the HTTP server on {ip}")

    def start_resource(self) -> None:
        self.start("http", "resource", sys.executable, "-c", HTTP_SERVER, self.resource_ip, "80")
        self._wait_listening(self.resource_ip)

    def start_client(self) -> None:
        n = self._notify("client")
        self.client_state = self.workdir / "client-state"
        proc = self.start("client", "client", self.bins["fz-client"], "run", "--interface", "fz0", "--state-dir",
                          str(self.client_state), env={"FZ_PORTAL_URL": self.portal_url, "FZ_TOKEN": self.client_token,
                                                       "NOTIFY_SOCKET": n.path})
        wait_for(lambda: proc.poll() is not None or n.ready(), 20, interval=0.05, what="fz-client's READY=1")
        if proc.poll() is not None:
            raise LabError(f"fz-client exited {proc.returncode}:\n{self.log('client')}")

    def start_more_clients(self) -> list[float]:
        """Starts client2..N at once (each its own identity and state directory); returns the
        seconds each took to READY=1."""
        started = time.monotonic()
        waits = []
        for role in self.client_roles[1:]:
            n = self._notify(role)
            proc = self.start(role, role, self.bins["fz-client"], "run", "--interface", "fz0", "--state-dir",
                              str(self.workdir / f"{role}-state"),
                              env={"FZ_PORTAL_URL": self.portal_url, "FZ_TOKEN": self.client_token, "NOTIFY_SOCKET": n.path})
            waits.append((role, proc, n))
        ready: dict[str, float] = {}
        deadline = started + 60
        while len(ready) < len(waits):
            for role, proc, n in waits:
                if role in ready:
                    continue
                if proc.poll() is not None:
                    raise LabError(f"{role} exited {proc.returncode}:\n{self.log(role)}")
                if n.ready():
                    ready[role] = time.monotonic() - started
            if time.monotonic() > deadline:
                raise LabError(f"only {len(ready)} of {len(waits)} clients became ready within 60 s")
            time.sleep(0.05)  # polling the notify sockets with a deadline
        return [ready[r] for r, _, _ in waits]

    def start_all(self) -> None:
        self.start_portal()
        self.provision()
        self.start_resource()
        self.start_relays()
        self.start_gateways()
        self.start_client()

    # ------------------------------------------------------------------ impairments

    def wan_loss(self, probability: float) -> None:
        """Drops `probability` of everything the core forwards (both directions of every WAN link)."""
        self.ns("core", "iptables", "-A", "FORWARD", "-m", "statistic", "--mode", "random", "--probability",
                f"{probability}", "-j", "DROP")

    def roam_client(self, new_wan: str = "198.18.10.3") -> None:
        """The client site's router gets another public address (a new DHCP lease, another
        network): MASQUERADE maps everything from it from now on, and the kernel forgets what it
        had masqueraded to the old address (its conntrack entries go with the address)."""
        if self.client_nat == "none":
            raise LabError("roaming needs a NAT in front of the client")
        wan = next(line.split()[1] for line in self.ns("cnat", "ip", "-o", "-4", "addr", "show").stdout.splitlines()
                   if "198.18.10.2/" in line)
        self.ns("cnat", "ip", "addr", "del", "198.18.10.2/24", "dev", wan)
        self.ns("cnat", "ip", "addr", "add", f"{new_wan}/24", "dev", wan)
        self.ns("cnat", "ip", "route", "replace", "default", "via", "198.18.10.1")

    # ------------------------------------------------------------------ using it

    def curl(self, url: str, timeout: float = 10.0) -> tuple[bool, str, float]:
        """curl from the client's namespace: (ok, body or error, seconds)."""
        start = time.monotonic()
        out = self.ns("client", "curl", "-sS", "--max-time", str(timeout), url, check=False, timeout=timeout + 10)
        took = time.monotonic() - start
        return out.returncode == 0, (out.stdout if out.returncode == 0 else out.stderr.strip()), took

    def status(self, json_output: bool = True) -> dict | str:
        out = self.ns("client", self.bins["fz-client"], "status", *(("--json",) if json_output else ()), "--state-dir",
                      str(self.client_state), check=False)
        if out.returncode != 0:
            raise LabError(f"fz-client status: {out.stderr.strip()}")
        return json.loads(out.stdout) if json_output else out.stdout

    def resource_status(self) -> dict:
        for r in self.status().get("resources", []):
            if r.get("id") == self.resource["id"]:
                return r
        return {}

    def gateway_name(self, gateway_id: str) -> str:
        for g in self.cli("gateway", "list") or []:
            if g.get("id") == gateway_id:
                return g.get("name") or gateway_id
        return gateway_id

    def logs(self, tail: int = 3000) -> str:
        return "\n".join(f"--- {name}\n{self.log(name)[-tail:]}" for name in self.procs)


def demo(bins: Binaries, client_nat: str, gateway_nat: str, keep_logs: Path | None, clients: int = 1) -> int:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fzl") as d:
        workdir = Path(d)
        lab = None
        try:
            lab = Lab(bins, workdir, client_nat=client_nat, gateway_nat=gateway_nat, clients=clients)
            print(f"lab: client NAT {client_nat}, gateway NAT {gateway_nat}; portal {PORTAL}, relays {RELAY1} (near) and "
                  f"{RELAY2} (far, +{FAR_DELAY_MS} ms), 2 gateways, resource {lab.resource_ip}", flush=True)
            lab.start_all()
            if clients > 1:
                ready = lab.start_more_clients()
                print(f"lab: {clients - 1} more clients up, the last ready after {max(ready):.2f} s", flush=True)
            print("lab: fz-portal, 2 fz-relays, 2 fz-gateways and fz-client are up; provisioned with the fz-portal CLI",
                  flush=True)
            url = f"http://{lab.resource_ip}/"
            ok, body, took = lab.curl(url)
            if not ok:
                raise LabError(f"curl {url}: {body}")
            print(f"$ curl {url}\n{body.rstrip()}")
            s = wait_for(lambda: (lambda r: r if r.get("path") else None)(lab.resource_status()), 5, interval=0.1,
                         what="the resource's path in fz-client status")
            print("$ fz-client status")
            print(lab.status(json_output=False).rstrip())
            path = s["path"]
            over = f"relayed ({path.removeprefix('relayed via ')})" if path.startswith("relayed") else "direct"
            print(f"demo: reached {url} via {lab.gateway_name(s['gateway'])} over {over} in {took * 1000:.0f} ms")
            return 0
        except (LabError, subprocess.SubprocessError, OSError) as e:
            if lab is not None and os.environ.get("FZ_LAB_VERBOSE"):
                print(lab.logs(), file=sys.stderr)
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            print(f"demo: FAILED: {reason}")
            return 1
        finally:
            if lab is not None:
                if keep_logs:
                    keep_logs.mkdir(parents=True, exist_ok=True)
                    for f in workdir.glob("*.log"):
                        shutil.copy(f, keep_logs / f.name)
                lab.close()


EXPECTED = {
    # (client, gateway) -> path; Linux conntrack filters address-and-port-dependently, so an
    # endpoint-dependent side (hard) facing any NAT needs the relay.
    (c, g): ("direct" if c == "none" or g == "none" or (c == "easy" and g == "easy") else "relayed")
    for c in ("none", "easy", "hard") for g in ("none", "easy", "hard")
}


def measure(bins: Binaries, client_nat: str, gateway_nat: str) -> dict:
    """One matrix cell: a fresh lab, the daemons up, one fetch timed from the first SYN."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fzl") as d:
        lab = Lab(bins, Path(d), client_nat=client_nat, gateway_nat=gateway_nat)
        try:
            lab.start_all()
            ok, body, took = lab.curl(f"http://{lab.resource_ip}/", timeout=10)
            cell = {"client": client_nat, "gateway": gateway_nat, "path": "none", "relay": None,
                    "connect_ms": round(took * 1000), "fetch": "ok" if ok and "hello from" in body else "failed"}
            if ok:
                s = wait_for(lambda: (lambda r: r if r.get("path") else None)(lab.resource_status()), 5, interval=0.1,
                             what="the path in fz-client status")
                cell["path"] = "relayed" if s["path"].startswith("relayed") else "direct"
                if cell["path"] == "relayed":
                    cell["relay"] = s["path"].removeprefix("relayed via ")
            cell["expected"] = EXPECTED[(client_nat, gateway_nat)]
            return cell
        finally:
            lab.close()


def matrix(bins: Binaries, as_json: bool, write_doc: Path | None) -> int:
    cells = []
    for c in ("none", "easy", "hard"):
        for g in ("none", "easy", "hard"):
            try:
                cell = measure(bins, c, g)
            except (LabError, subprocess.SubprocessError, OSError) as e:
                cell = {"client": c, "gateway": g, "path": "none", "relay": None, "connect_ms": None, "fetch": "failed",
                        "expected": EXPECTED[(c, g)], "error": str(e).splitlines()[0]}
            cells.append(cell)
            if as_json:
                print(json.dumps(cell), flush=True)
            else:
                relay = f" relay={cell['relay']}" if cell["relay"] else ""
                print(f"client={c} gateway={g} path={cell['path']}{relay} connect_ms={cell['connect_ms']} fetch={cell['fetch']}",
                      flush=True)
    if write_doc:
        write_matrix(write_doc, cells)
    good = all(c["fetch"] == "ok" and c["path"] == c["expected"] for c in cells)
    return 0 if good else 1


MATRIX_BEGIN = "<!-- fz-lab matrix: generated by `lab/fz-lab matrix --write-doc docs/connectivity.md`; do not edit -->"
MATRIX_END = "<!-- end of fz-lab matrix -->"


def write_matrix(doc: Path, cells: list[dict]) -> None:
    kernel = os.uname().release
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [MATRIX_BEGIN, "",
             f"Run {when} on Linux {kernel} ({os.cpu_count()} CPUs), debug build, one fresh lab per cell; "
             "connect_ms is the first HTTP fetch through a brand-new tunnel (portal grant, ICE, WireGuard "
             "and TCP handshakes included).", "",
             "| client NAT | gateway NAT | path | relay | connect_ms | fetch | expected |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for c in cells:
        lines.append(f"| {c['client']} | {c['gateway']} | {c['path']} | {c['relay'] or ''} | {c['connect_ms']} | "
                     f"{c['fetch']} | {c['expected']} |")
    lines += ["", MATRIX_END]
    text = doc.read_text()
    block = "\n".join(lines)
    if MATRIX_BEGIN in text and MATRIX_END in text:
        start = text.index(MATRIX_BEGIN)
        end = text.index(MATRIX_END) + len(MATRIX_END)
        text = text[:start] + block + text[end:]
    else:
        text = text.rstrip("\n") + "\n\n## The lab's matrix (real Linux NAT)\n\n" + block + "\n"
    doc.write_text(text)


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="fz-lab", description="The fz lab: the product in network namespaces.")
    parser.add_argument("--bin-dir", help="where fz-portal, fz-relay, fz-gateway and fz-client are (default: swift build's)")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="run the whole product once and fetch a resource through it")
    d.add_argument("--client-nat", default="easy", choices=("none", "easy", "hard"))
    d.add_argument("--gateway-nat", default="easy", choices=("none", "easy", "hard"))
    d.add_argument("--keep-logs", type=Path, help="copy every daemon's log here")
    d.add_argument("--clients", type=int, default=1, help="clients on the client site (1-50); the first one fetches")
    m = sub.add_parser("matrix", help="client NAT x gateway NAT (none, easy, hard): the path and a fetch for each pair")
    m.add_argument("--json", action="store_true", help="one JSON object per pair")
    m.add_argument("--write-doc", type=Path, help="replace the generated table in this file (docs/connectivity.md)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("fz-lab: needs root (network namespaces, TUN devices)", file=sys.stderr)
        return 2
    bin_dir = args.bin_dir or sh("swift", "build", "--show-bin-path", timeout=300).stdout.strip()
    try:
        bins = Binaries(bin_dir)
    except LabError as e:
        print(f"fz-lab: {e}", file=sys.stderr)
        return 2
    # Ctrl-C or SIGTERM: unwind through the finally blocks, which tear the lab down.
    def interrupted(*_):
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, interrupted)
    try:
        if args.command == "matrix":
            return matrix(bins, args.json, args.write_doc)
        return demo(bins, args.client_nat, args.gateway_nat, args.keep_logs, args.clients)
    except KeyboardInterrupt:
        print("demo: FAILED: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
