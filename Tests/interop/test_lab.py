"""The product behind real Linux NAT: `lab/fzlab.py` builds the lab (portal, two relays, two
gateways behind one NAT router, a client behind another; `../shared/reference/design.md`) and these
tests run the daemons in it, as `scripts/demo.sh` does.

    swift build                                  # the four daemons, or FZ_*_BIN beside fz-gateway
    sudo python3 -m pytest -q Tests/interop/test_lab.py

The expected paths (Linux conntrack filters address-and-port-dependently): direct when either side
has no NAT or both map endpoint-independently (MASQUERADE), relayed when an endpoint-dependent side
(--random-fully) faces a NAT.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest

from test_wireguard import gateway_bin

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lab"))
import fzlab  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces and TUN")


@pytest.fixture
def lab_factory():
    labs: list[fzlab.Lab] = []
    dirs: list[tempfile.TemporaryDirectory] = []

    def make(client_nat: str, gateway_nat: str) -> fzlab.Lab:
        d = tempfile.TemporaryDirectory(prefix="fzl")
        dirs.append(d)
        lab = fzlab.Lab(fzlab.Binaries(os.path.dirname(gateway_bin())), Path(d.name), client_nat=client_nat,
                        gateway_nat=gateway_nat)
        labs.append(lab)
        return lab

    yield make
    for lab in labs:
        lab.close()
        assert not [n for n in fzlab.sh("ip", "netns", "list").stdout.split() if n.startswith(f"fzl{lab.id}-")]
    for d in dirs:
        d.cleanup()


def _fetch(lab: fzlab.Lab, within: float) -> float:
    start = time.monotonic()
    while True:
        ok, body, _ = lab.curl(f"http://{lab.resource_ip}/", timeout=3)
        if ok and "hello from the resource" in body:
            return time.monotonic() - start
        assert time.monotonic() - start < within, f"{body}\n{lab.logs()}"


@pytest.mark.parametrize("client_nat,gateway_nat,expected", [
    ("easy", "easy", "direct"),
    ("none", "hard", "direct"),
    ("hard", "easy", "relayed"),
    ("hard", "hard", "relayed"),
])
def test_the_path_through_real_nat(lab_factory, client_nat, gateway_nat, expected):
    lab = lab_factory(client_nat, gateway_nat)
    lab.start_all()
    took = _fetch(lab, within=10)
    s = fzlab.wait_for(lambda: (lambda r: r if r.get("path") else None)(lab.resource_status()), 5, what="a path in status")
    print(f"client={client_nat} gateway={gateway_nat} path={s['path']} first_fetch_ms={took * 1000:.0f}")
    assert s["path"].startswith(expected), (s, lab.logs())
    if expected == "relayed":
        # The near relay (the far one is 30 ms further from both sites).
        assert s["path"] == "relayed via relay-1", s
    assert took < 2, f"the first fetch took {took:.2f}s"


def test_kill_9_of_the_serving_gateway_moves_the_client_to_the_other(lab_factory):
    lab = lab_factory("easy", "easy")
    lab.start_all()
    _fetch(lab, within=10)
    serving = lab.gateway_name(lab.resource_status()["gateway"])
    lab.stop(serving, signal.SIGKILL)
    cut = time.monotonic()
    took = _fetch(lab, within=15)
    now = lab.resource_status()
    other = lab.gateway_name(now["gateway"])
    print(f"kill -9 {serving}: reached again through {other} after {time.monotonic() - cut:.2f}s")
    assert other != serving and other.startswith("gw-"), now
    assert took < 5, f"recovery took {took:.2f}s\n{lab.logs()}"
