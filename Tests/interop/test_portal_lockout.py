"""fz-portal as a careless admin or a second operator would run it: a second `serve` on the same
SQLite file, a listen port that is taken, and the way back in after losing every admin token.

Every process is stopped by its PID; every wait is bounded.
"""

from __future__ import annotations

import socket
import sqlite3
import subprocess

from conftest import kill_process
from test_portal import Portal, cli, portal_bin, tmpdb  # noqa: F401 (fixtures)


def usable_admin_tokens(db) -> int:
    with sqlite3.connect(db) as c:
        return c.execute("SELECT COUNT(*) FROM tokens WHERE scope = 'admin' AND revoked_at IS NULL").fetchone()[0]


def test_a_second_portal_on_the_same_database_exits_naming_the_lock(portal_bin, tmpdb):
    first = Portal(portal_bin, tmpdb)
    try:
        first.read_admin_token()
        second = subprocess.run(
            [portal_bin, "serve", "--listen", "127.0.0.1:0", "--database-url", f"sqlite://{tmpdb}"],
            capture_output=True, text=True, timeout=30)
        assert second.returncode != 0, second.stdout + second.stderr
        assert "--database-url" in second.stderr and f"{tmpdb}.lock" in second.stderr, second.stderr
        assert first.ready(), "the first portal keeps serving"
    finally:
        first.stop()
    # The lock goes with the process: the database can be served again.
    again = Portal(portal_bin, tmpdb)
    again.stop()


def test_a_taken_port_prints_and_stores_no_admin_token(portal_bin, tmpdb):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.Popen(
            [portal_bin, "serve", "--listen", f"127.0.0.1:{port}", "--database-url", f"sqlite://{tmpdb}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            out, err = proc.communicate(timeout=30)
        finally:
            kill_process(proc)
    assert proc.returncode != 0, out + err
    assert "admin token" not in out, out
    assert usable_admin_tokens(tmpdb) == 0
    # The next start that binds prints the token as a first start does.
    p = Portal(portal_bin, tmpdb)
    try:
        assert p.read_admin_token().startswith("fz_")
    finally:
        p.stop()


def test_admin_token_recovers_access_and_the_last_token_cannot_be_revoked(portal_bin, tmpdb):
    p = Portal(portal_bin, tmpdb)
    try:
        p.read_admin_token()
        tokens = cli(portal_bin, p, "token", "list")
        refused = cli(portal_bin, p, "token", "revoke", tokens[0]["id"], check=False)
        assert refused.returncode != 0 and "last admin token" in refused.stderr, refused.stderr

        # Lost the secret: mint one on the host, straight into the database, while it serves.
        minted = subprocess.run([portal_bin, "admin-token", "--database-url", f"sqlite://{tmpdb}"],
                                capture_output=True, text=True, timeout=30)
        assert minted.returncode == 0, minted.stderr
        secret = minted.stdout.strip()
        assert secret.startswith("fz_")
        assert cli(portal_bin, p, "site", "list", token=secret) == []
        assert usable_admin_tokens(tmpdb) == 2
    finally:
        p.stop()
    missing = subprocess.run([portal_bin, "admin-token", "--database-url", f"sqlite://{tmpdb}.nope"],
                             capture_output=True, text=True, timeout=30)
    assert missing.returncode != 0 and "--database-url" in missing.stderr, missing.stderr
