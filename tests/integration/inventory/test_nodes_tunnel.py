"""hostmesh.cluster.nodes through an SSH tunnel to a real sshd.

A throwaway OpenSSH server on 127.0.0.1 (its own host key, a throwaway user
key, a known_hosts file written by the test, nothing of the machine's own SSH
set-up touched) stands for the primary's sshd; a real `hostmesh agent`
primary on 127.8.2.1 stands for the agent. The real
`ansible-inventory` reads the cluster with `ssh_host` set: the request must
go through sshd (its log shows the forward), the token must never show, the
tunnel must be gone afterwards, and each way it can fail (host key changed,
login refused, nothing answering behind the tunnel) must say so.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from livecluster import (
    ANSIBLE_INVENTORY,
    Cluster,
    ansible_env,
    free_port,
    group_hosts,
    inventory_list,
    run,
    write_cfg,
)

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hostmesh-test",
                    "-f", str(path)], check=True)
    return (path.with_suffix(".pub")).read_text().strip()


class Sshd:
    """sshd -D on 127.0.0.1:<port>, configured entirely from files under `root`."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(mode=0o700)
        self.port = free_port("127.0.0.1")
        self.host_pub = keygen(root / "host_ed25519")
        self.user_pub = keygen(root / "id_ed25519")
        (root / "authorized_keys").write_text(self.user_pub + "\n")
        (root / "authorized_keys").chmod(0o600)
        self.log = root / "sshd.log"
        (root / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\n"
            f"HostKey {root / 'host_ed25519'}\nPidFile {root / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {root / 'authorized_keys'}\n"
            "StrictModes no\nUsePAM no\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
            "AllowTcpForwarding local\nAllowAgentForwarding no\nX11Forwarding no\n"
            "LogLevel DEBUG1\n"
        )
        self.known_hosts = root / "known_hosts"
        self.trust(self.host_pub)
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(root / "sshd_config")],
            stdout=subprocess.DEVNULL, stderr=self.log.open("wb"), start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while "Server listening" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sshd did not start: {self.log.read_text()}")
            time.sleep(0.05)

    def trust(self, host_pub: str) -> None:
        key = " ".join(host_pub.split()[:2])
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {key}\n")

    def ssh_args(self, key: Path | None = None) -> str:
        return (f"-i {key or self.root / 'id_ed25519'} -o IdentitiesOnly=yes "
                f"-o UserKnownHostsFile={self.known_hosts} -o GlobalKnownHostsFile=/dev/null "
                "-F /dev/null")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def sshd(tmp_path):
    if not Path(SSHD).exists():
        pytest.fail("sshd is missing: run scripts/setup-host.sh (installs openssh-server)")
    server = Sshd(tmp_path / "sshd")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path / "cluster", net=2)
    try:
        c.start_primary(NODE_WIREGUARD_IP="10.50.0.1")
        yield c
    finally:
        c.stop()


def tunnel_cfg(tmp_path, sshd, cluster, url=None, **options):
    settings = {"ssh_host": "127.0.0.1", "ssh_port": sshd.port, "ssh_user": getpass.getuser(),
                "ssh_args": sshd.ssh_args(), "timeout": 3, **options}
    return write_cfg(tmp_path / "t.hostmesh.yml", url or cluster.primary.url, **settings)


def tunnels_left(sshd) -> list[str]:
    """Command lines of ssh clients still holding a tunnel to this sshd."""
    left = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = [a.decode(errors="replace") for a in argv]
        if text and text[0].endswith("ssh") and "-N" in text and str(sshd.port) in text:
            left.append(" ".join(text))
    return left


def test_inventory_through_the_tunnel(tmp_path, sshd, cluster):
    cfg = tunnel_cfg(tmp_path, sshd, cluster)
    env = ansible_env(cluster.admin_token)
    started = time.monotonic()
    data = inventory_list(cfg, env)
    elapsed = time.monotonic() - started
    assert group_hosts(data, "hostmesh_online") == ["primary"]
    assert group_hosts(data, "hostmesh_primary") == ["primary"]
    assert data["_meta"]["hostvars"]["primary"]["hostmesh_wireguard_ip"] == "10.50.0.1"
    log = sshd.log.read_text(errors="replace")
    # the request went through sshd, to the agent's address as the "primary" sees it
    assert f"target {cluster.primary.address} port {cluster.primary.port}" in log, log[-3000:]
    assert not tunnels_left(sshd), "the tunnel outlived ansible-inventory"
    print(f"inventory_through_ssh_tunnel: {elapsed:.2f} s")

    res = run([ANSIBLE_INVENTORY, "-i", str(cfg), "--list", "-vvv"], env)
    assert cluster.admin_token not in res.stdout + res.stderr


def failing(cfg, env):
    res = run([ANSIBLE_INVENTORY, "-i", str(cfg), "--list"],
              {**env, "ANSIBLE_INVENTORY_UNPARSED_FAILED": "1",
               "ANSIBLE_INVENTORY_ENABLED": "hostmesh.cluster.nodes"})
    assert res.returncode != 0, res.stdout[-2000:]
    return res.stderr


def test_host_key_changed_stops(tmp_path, sshd, cluster):
    sshd.trust(keygen(tmp_path / "other_host_key"))  # known_hosts now names another key
    err = failing(tunnel_cfg(tmp_path, sshd, cluster), ansible_env(cluster.admin_token))
    assert "ssh failed: " in err and "Host key verification failed" in err, err
    assert cluster.admin_token not in err
    assert not tunnels_left(sshd)


def test_login_refused_stops(tmp_path, sshd, cluster):
    stranger = tmp_path / "stranger"
    keygen(stranger)
    cfg = tunnel_cfg(tmp_path, sshd, cluster, ssh_args=sshd.ssh_args(key=stranger))
    err = failing(cfg, ansible_env(cluster.admin_token))
    assert "ssh failed: " in err and "Permission denied (publickey)" in err, err
    assert not tunnels_left(sshd)


def test_api_that_does_not_answer_through_the_tunnel(tmp_path, sshd, cluster):
    closed = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    cfg = tunnel_cfg(tmp_path, sshd, cluster, url=closed, timeout=2)
    started = time.monotonic()
    err = failing(cfg, ansible_env(cluster.admin_token))
    assert "the primary's API does not answer through the tunnel" in err, err
    assert time.monotonic() - started < 30, "an API that does not answer must not hang the run"
    assert not tunnels_left(sshd)
