"""The SSH tunnel of hostmesh.cluster.nodes (plugin_utils/_ssh_tunnel.py).

The command line it builds and the arguments it refuses; then its behaviour
against a stand-in `ssh` (a small script put first on PATH) that fails the
way the real one does (host key changed, login refused, host down) or
forwards the local port to a real HTTP server. The same plugin against a real
sshd is tests/integration/inventory/test_nodes_tunnel.py.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import sys
import threading

import pytest
from ansible.errors import AnsibleError
from ansible.inventory.data import InventoryData
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import inventory_loader
from ansible_collections.hostmesh.cluster.plugins.plugin_utils._ssh_tunnel import (
    ApiSilent,
    SshFailed,
    TunnelError,
    build_command,
    parse_args,
    ssh_tunnel,
)


def test_command_line_options_come_first_and_check_host_keys():
    cmd = build_command("node1.example.org", local_port=40000, remote_host="127.0.0.1",
                        remote_port=8080, user="admin", port=2222,
                        args=["-i", "/k", "-o", "UserKnownHostsFile=/kh"], connect_timeout=4.2)
    assert cmd[:2] == ["ssh", "-N"]
    opts = [cmd[i + 1] for i, a in enumerate(cmd) if a == "-o"]
    for wanted in ("BatchMode=yes", "ExitOnForwardFailure=yes", "StrictHostKeyChecking=yes",
                   "ConnectTimeout=5", "ControlPath=none"):
        assert wanted in opts
    # ssh keeps the first value of an option: ours precede the user's
    assert opts.index("StrictHostKeyChecking=yes") < opts.index("UserKnownHostsFile=/kh")
    assert cmd[cmd.index("-L") + 1] == "127.0.0.1:40000:127.0.0.1:8080"
    assert cmd[cmd.index("-p") + 1] == "2222" and cmd[cmd.index("-l") + 1] == "admin"
    assert cmd[-2:] == ["--", "node1.example.org"]
    v6 = build_command("h", local_port=1, remote_host="::1", remote_port=8080)
    assert v6[v6.index("-L") + 1] == "127.0.0.1:1:[::1]:8080"
    assert "-p" not in v6 and "-l" not in v6
    with pytest.raises(TunnelError, match="not a host name"):
        build_command("-oProxyCommand=x", local_port=1, remote_host="127.0.0.1", remote_port=1)


@pytest.mark.parametrize(
    "args",
    ["-o StrictHostKeyChecking=no", "-oStrictHostKeyChecking=off",
     ["-o", "stricthostkeychecking accept-new"], "-i k -f", "-W host:22", "-Cf",
     "-4oStrictHostKeyChecking=no"],
)
def test_arguments_that_weaken_or_detach_are_refused(args):
    with pytest.raises(TunnelError, match="StrictHostKeyChecking|must not contain"):
        parse_args(args)


def test_arguments_are_split_like_a_shell():
    assert parse_args("-i '/a b/key' -o UserKnownHostsFile=/kh -o StrictHostKeyChecking=yes") == [
        "-i", "/a b/key", "-o", "UserKnownHostsFile=/kh", "-o", "StrictHostKeyChecking=yes"]
    assert parse_args(None) == [] and parse_args(["-4"]) == ["-4"]
    # values are not flags: a key file named "-f" or a jump host "fhost" is fine
    assert parse_args(["-i", "-f", "-J", "fhost", "-C"]) == ["-i", "-f", "-J", "fhost", "-C"]
    with pytest.raises(TunnelError, match="split"):
        parse_args("-i 'unclosed")


# --------------------------------------------------------- a stand-in ssh
FAKE_SSH = """\
#!{python}
import os, socket, sys, threading
mode = {mode!r}
args = sys.argv[1:]
with open({log!r}, "a") as fh:
    fh.write(" ".join(args) + "\\n")
if mode in ("hostkey", "denied", "down"):
    sys.stderr.write({{
        "hostkey": "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\\n"
                   "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\\n"
                   "Host key verification failed.\\n",
        "denied": "admin@node1: Permission denied (publickey).\\n",
        "down": "ssh: connect to host node1 port 22: Connection refused\\n",
    }}[mode])
    sys.exit(255)
spec = args[args.index("-L") + 1]
_, lport, rhost, rport = spec.rsplit(":", 3)
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(lport)))
srv.listen(8)
with open({pids!r}, "a") as fh:
    fh.write(str(os.getpid()) + "\\n")
def pipe(a, b):
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
while True:
    conn, _ = srv.accept()
    if mode == "silent":  # like ssh when nothing listens on the far side
        sys.stderr.write("channel 2: open failed: connect failed: Connection refused\\n")
        sys.stderr.flush()
        conn.close()
        continue
    up = socket.create_connection((rhost, int(rport)))
    threading.Thread(target=pipe, args=(conn, up), daemon=True).start()
    threading.Thread(target=pipe, args=(up, conn), daemon=True).start()
"""


@pytest.fixture
def fake_ssh(tmp_path, monkeypatch):
    def make(mode):
        bindir = tmp_path / f"bin-{mode}"
        bindir.mkdir()
        ssh = bindir / "ssh"
        ssh.write_text(FAKE_SSH.format(python=sys.executable, mode=mode,
                                       log=str(tmp_path / "argv.log"),
                                       pids=str(tmp_path / "pids")))
        ssh.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
        return tmp_path
    return make


@pytest.fixture
def api_server():
    """A real HTTP server answering /api/health and /api/nodes like a primary."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = {"/api/health": {"status": "healthy", "service": "hostmesh"},
                    "/api/nodes": [{"id": "i1", "name": "node1", "is_primary": True,
                                    "status": "online", "wireguard_ip": "10.50.0.1"}]}
            if self.path not in body:
                self.send_response(404)
                self.end_headers()
                return
            if self.path == "/api/nodes" and self.headers.get("Authorization") != "Bearer tok":
                self.send_response(401)
                self.end_headers()
                return
            data = json.dumps(body[self.path]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()


def health(port):
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"GET /api/health HTTP/1.0\r\n\r\n")
        if b"200 OK" not in sock.recv(4096):
            raise OSError("no health")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purpose; the tunnel reaps its child
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split()[2] != "Z"


@pytest.mark.parametrize(
    "mode,words,unreachable",
    [("hostkey", "Host key verification failed", False),
     ("denied", "Permission denied (publickey)", False),
     ("down", "Connection refused", True)],
)
def test_ssh_failures_say_what_ssh_said(fake_ssh, mode, words, unreachable):
    fake_ssh(mode)
    with pytest.raises(SshFailed) as info, ssh_tunnel(
        "node1", remote_host="127.0.0.1", remote_port=8080, probe=health, timeout=2
    ):
        pytest.fail("the block must not run")
    assert str(info.value).startswith("ssh failed: ")
    assert words in str(info.value)
    assert "@@@@" not in str(info.value)
    assert info.value.unreachable is unreachable


def test_api_silent_through_a_working_tunnel(fake_ssh):
    tmp = fake_ssh("silent")
    with pytest.raises(ApiSilent, match="does not answer through the tunnel") as info, ssh_tunnel(
        "node1", remote_host="127.0.0.1", remote_port=8080, probe=health, timeout=1
    ):
        pytest.fail("the block must not run")
    assert "open failed" in str(info.value)
    pid = int((tmp / "pids").read_text().split()[0])
    assert not alive(pid), "the tunnel was left running"


def test_tunnel_forwards_then_always_closes(fake_ssh, api_server):
    tmp = fake_ssh("forward")
    with ssh_tunnel("node1", user="admin", port=2222, remote_host="127.0.0.1",
                    remote_port=api_server, probe=health, timeout=5,
                    ssh_args="-i /key -o UserKnownHostsFile=/kh") as port:
        health(port)
        pid = int((tmp / "pids").read_text().split()[0])
        assert alive(pid)
    assert not alive(pid), "the tunnel outlived its block"
    argv = (tmp / "argv.log").read_text()
    assert f"-L 127.0.0.1:{port}:127.0.0.1:{api_server}" in argv
    assert "-l admin" in argv and "-p 2222" in argv and "-i /key" in argv
    # closed on an exception inside the block too
    with pytest.raises(RuntimeError), ssh_tunnel(
        "node1", remote_host="127.0.0.1", remote_port=api_server, probe=health, timeout=5
    ):
        raise RuntimeError("boom")
    pids = [int(p) for p in (tmp / "pids").read_text().split()]
    assert len(pids) == 2 and not any(alive(p) for p in pids)


def parse_inventory(tmp_path, **options):
    cfg = {"plugin": "hostmesh.cluster.nodes", "token": "tok", "timeout": 2, **options}
    path = tmp_path / "t.hostmesh.yml"
    path.write_text(json.dumps(cfg))
    inventory = InventoryData()
    inventory_loader.get("hostmesh.cluster.nodes").parse(inventory, DataLoader(), str(path),
                                                         cache=False)
    return inventory


def test_inventory_plugin_through_the_tunnel(fake_ssh, api_server, tmp_path):
    fake_ssh("forward")
    inv = parse_inventory(tmp_path, ssh_host="node1", url=f"http://127.0.0.1:{api_server}")
    assert "node1" in inv.hosts
    assert inv.get_host("node1").vars["hostmesh_wireguard_ip"] == "10.50.0.1"


@pytest.mark.parametrize(
    "mode,options,message",
    [("hostkey", {}, "ssh failed: .*Host key verification failed"),
     ("denied", {}, r"ssh failed: .*Permission denied \(publickey\)"),
     ("silent", {}, "the primary's API does not answer through the tunnel"),
     ("forward", {"url": "https://127.0.0.1:8443"}, "plain http address"),
     ("forward", {"ssh_args": "-o StrictHostKeyChecking=no"}, "always checks")],
    ids=["host-key-changed", "login-refused", "api-silent", "https-url", "no-host-key-check"],
)
def test_inventory_plugin_tunnel_errors(fake_ssh, tmp_path, mode, options, message):
    fake_ssh(mode)
    with pytest.raises(AnsibleError, match=message) as info:
        parse_inventory(tmp_path, ssh_host="node1", **options)
    assert "tok" not in str(info.value).replace("token", "")


def test_inventory_plugin_needs_a_way_to_the_primary(tmp_path):
    with pytest.raises(AnsibleError, match="url option is required without ssh_host"):
        parse_inventory(tmp_path)

