"""scripts/lab_cloudflare.py: the lab tooling, not the ddns role, runs the lab's Cloudflare."""

from __future__ import annotations

import json
import socket
import stat
import urllib.request
from pathlib import Path

import pytest
from _scripts import load_script

lc = load_script("lab_cloudflare")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def zones(listen: str, token: str) -> list[str]:
    req = urllib.request.Request(f"http://{listen}/client/v4/zones",
                                 headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return [z["name"] for z in json.loads(resp.read())["result"]]


def test_start_makes_the_token_serves_the_zone_and_stops(tmp_path):
    state = tmp_path / ".hostmesh"
    listen = f"127.0.0.1:{free_port()}"
    try:
        assert lc.start(state, listen, ["lab.test"]) == "started"
        token_file = state / "secrets" / "cloudflare_api_token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert len(token) >= 32
        assert zones(listen, token) == ["lab.test"]
        # idempotent: the same server, the same token
        assert lc.start(state, listen, ["lab.test"]) == "running"
        assert token_file.read_text().strip() == token
    finally:
        assert lc.stop(state) == "stopped"
    assert lc.stop(state) == "not running"
    with pytest.raises(OSError):
        zones(listen, "x")


def running(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting for its parent to reap it does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def test_start_right_after_stop(tmp_path):
    """The TLS site test restarts the server with DNS on: stop returns only once the
    old process is gone, or the start finds it still answering and refuses (as it
    must for another lab's server)."""
    state = tmp_path / ".hostmesh"
    listen = f"127.0.0.1:{free_port()}"
    try:
        for _ in range(3):
            assert lc.start(state, listen, ["lab.test"]) == "started"
            pid = int((state / "cloudflare-api.pid").read_text())
            assert lc.stop(state) == "stopped"
            assert not running(pid), "stop returned while the server still ran"
    finally:
        lc.stop(state)


@pytest.mark.parametrize("listen", ["lab.test:8787", "10.231.1.1", "10.231.1.1:0"])
def test_bad_listen_is_refused_before_anything_changes(tmp_path, listen):
    with pytest.raises(SystemExit, match="--listen must be IP:PORT"):
        lc.start(tmp_path / "state", listen, ["lab.test"])
    assert not (tmp_path / "state").exists()


def test_the_gateway_of_a_lab_subnet():
    assert lc.gateway_listen("10.231.1.0/24") == "10.231.1.1:8787"
    assert lc.gateway_listen("10.231.5.0/24", 9000) == "10.231.5.1:9000"
