"""fz-client run/status as a user meets them before anything is connected: bad settings exit 2
naming the flag or variable, a refused token exits 1 naming the refusal, and `status` without a
running client exits 1 saying so. Needs no root (nothing gets as far as the TUN device)."""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import client_bin  # noqa: F401  (fixtures)
from test_portal import Portal, portal_bin  # noqa: F401  (fixtures)


def _run(binary: str, *args: str, env: dict[str, str] | None = None, timeout: float = 20.0):
    base = {k: v for k, v in os.environ.items() if k not in ("FZ_TOKEN", "FZ_PORTAL_URL", "CREDENTIALS_DIRECTORY")}
    return subprocess.run([binary, *args], capture_output=True, text=True, env={**base, **(env or {})}, timeout=timeout)


@pytest.mark.parametrize("args,env,names", [
    ((), {"FZ_TOKEN": "t"}, "FZ_PORTAL_URL"),
    (("--portal-url", "ftp://x"), {"FZ_TOKEN": "t"}, "--portal-url"),
    ((), {"FZ_PORTAL_URL": "http://127.0.0.1:1"}, "FZ_TOKEN"),
    (("--portal-url", "http://127.0.0.1:1", "--token-file", "/nonexistent/token"), {}, "--token-file"),
    (("--mtu", "500"), {"FZ_TOKEN": "t", "FZ_PORTAL_URL": "http://127.0.0.1:1"}, "--mtu"),
    (("--interface", "a-name-longer-than-15"), {"FZ_TOKEN": "t", "FZ_PORTAL_URL": "http://127.0.0.1:1"}, "--interface"),
    (("--state-dir", "/" + "d" * 120), {"FZ_TOKEN": "t", "FZ_PORTAL_URL": "http://127.0.0.1:1"}, "--state-dir"),
    (("--log-level", "loud"), {"FZ_TOKEN": "t", "FZ_PORTAL_URL": "http://127.0.0.1:1"}, "--log-level"),
    (("--no-such-flag",), {"FZ_TOKEN": "t", "FZ_PORTAL_URL": "http://127.0.0.1:1"}, "--no-such-flag"),
])
def test_bad_settings_exit_2_naming_the_flag(client_bin, args, env, names):
    r = _run(client_bin, "run", *args, env=env)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert names in r.stderr, r.stderr


def test_status_without_a_running_client_exits_1(client_bin, tmp_path):
    r = _run(client_bin, "status", "--state-dir", str(tmp_path))
    assert r.returncode == 1, r
    assert "not running" in r.stderr, r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the daemon creates its TUN device before it joins the portal")
def test_a_refused_token_exits_1_naming_the_refusal(client_bin, portal_bin, tmp_path):
    p = Portal(portal_bin, tmp_path / "portal.sqlite")
    try:
        p.read_admin_token()
        r = _run(client_bin, "run", "--interface", f"fzc{os.getpid() % 10000}", "--state-dir", str(tmp_path / "state"),
                 env={"FZ_TOKEN": "fz_not_a_token", "FZ_PORTAL_URL": p.url}, timeout=30)
        assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
        assert "refused" in r.stderr and "401" in r.stderr, r.stderr[-2000:]
        # The key was kept: the state directory holds it, 0600.
        assert oct((tmp_path / "state" / "private.key").stat().st_mode & 0o777) == "0o600"
    finally:
        p.stop()
