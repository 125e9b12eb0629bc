"""scripts/lab.py against the real Docker engine: up, idempotent up, down.

Uses its own containers and network (hostmesh-found-*, 10.231.9.0/24; see
CONTRIBUTING.md) so it never touches the demo lab or a molecule scenario.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location("lab", ROOT / "scripts" / "lab.py")
lab = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("lab", lab)
_spec.loader.exec_module(lab)

NETWORK = "hostmesh-found"
SUBNET = "10.231.9.0/24"


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True,
                          timeout=120).stdout.strip()


def snapshot() -> tuple[set[str], set[str], set[str]]:
    return (set(docker("ps", "-a", "--format", "{{.Names}}").split()),
            set(docker("network", "ls", "--format", "{{.Name}}").split()),
            set(docker("volume", "ls", "-q").split()))


@pytest.fixture
def two_nodes():
    the_lab = lab.Lab(prefix="hostmesh-found-", network=NETWORK, subnet=SUBNET,
                      nodes=["node1", "node2"])
    the_lab.down()  # a previous run killed half-way
    yield the_lab
    the_lab.down()


def test_up_is_idempotent_and_down_leaves_nothing(two_nodes):
    ours = set(two_nodes.containers)
    before = snapshot()

    two_nodes.up()
    ids = {c: docker("inspect", "-f", "{{.Id}}", c) for c in two_nodes.containers}
    for row in two_nodes.status():
        assert row["state"] == "running"
        assert row["systemd"] in ("running", "degraded")
    # Fixed addresses, hostnames = inventory names, the nodes reach each other.
    assert docker("inspect", "-f",
                  "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                  "hostmesh-found-node2") == "10.231.9.12"
    assert docker("exec", "hostmesh-found-node1", "hostname") == "node1"
    docker("exec", "hostmesh-found-node1", "ping", "-c1", "-W2", "10.231.9.12")
    # systemd is PID 1 and WireGuard's userspace device is usable.
    assert docker("exec", "hostmesh-found-node1", "cat", "/proc/1/comm") == "systemd"
    docker("exec", "hostmesh-found-node1", "test", "-c", "/dev/net/tun")

    two_nodes.up()  # again: the same containers, not new ones
    assert {c: docker("inspect", "-f", "{{.Id}}", c) for c in two_nodes.containers} == ids

    two_nodes.down()
    after = snapshot()
    assert after == before, "lab down must leave containers, networks, volumes as before"
    assert not ours & after[0]
    two_nodes.down()  # again: nothing to do, no error


def test_network_with_another_subnet_is_refused(two_nodes):
    docker("network", "create", "--subnet", "10.231.19.0/24", NETWORK)
    try:
        with pytest.raises(lab.LabError, match="expected 10.231.9.0/24"):
            two_nodes.up()
        assert not set(two_nodes.containers) & snapshot()[0], "nothing may start"
    finally:
        docker("network", "rm", NETWORK)


def ssh(access, address: str, *command: str, user: str = "admin") -> subprocess.CompletedProcess:
    cmd = access.ssh_command(address, *command)
    cmd[cmd.index(f"admin@{address}")] = f"{user}@{address}"
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def test_ssh_own_host_keys_recorded_from_the_console(two_nodes, tmp_path):
    # The image ships no host keys (they would be shared by every container).
    assert "ssh_host_" not in docker("run", "--rm", lab.IMAGE, "ls", "/etc/ssh")

    ssh_dir = tmp_path / "ssh"
    two_nodes.up(ssh_dir=ssh_dir)
    access = lab.LabSsh(ssh_dir)
    assert ssh_dir.stat().st_mode & 0o777 == 0o700
    assert access.key.stat().st_mode & 0o777 == 0o600
    keys = {
        c: docker("exec", c, "cat", "/etc/ssh/ssh_host_ed25519_key.pub").split()[1]
        for c in two_nodes.containers
    }
    assert len(set(keys.values())) == 2, "each container has its own host key"
    known = access.known_hosts.read_text().splitlines()
    for node in two_nodes.nodes:
        assert f"{two_nodes.address(node)} ssh-ed25519 {keys[two_nodes.container(node)]}" in known

    addr = two_nodes.address("node1")
    proc = ssh(access, addr, "sudo", "-n", "id", "-un")
    assert (proc.returncode, proc.stdout.strip()) == (0, "root"), proc.stderr
    assert ssh(access, addr, "id", "-un").stdout.strip() == "admin"
    root = ssh(access, addr, "true", user="root")
    assert root.returncode == 255 and "Permission denied" in root.stderr

    # A restart keeps the container's keys; up() again changes nothing.
    docker("restart", "hostmesh-found-node1")
    two_nodes.up(ssh_dir=ssh_dir)
    assert access.known_hosts.read_text().splitlines() == known

    # A changed host key is refused ...
    docker(
        "exec",
        "hostmesh-found-node1",
        "sh",
        "-c",
        "rm -f /etc/ssh/ssh_host_* && ssh-keygen -A && systemctl restart ssh.service",
    )
    changed = ssh(access, addr, "true")
    assert changed.returncode == 255
    assert "Host key verification failed" in changed.stderr, changed.stderr
    # ... until the lab reads the new one from the console.
    two_nodes.up(ssh_dir=ssh_dir)
    assert ssh(access, addr, "true").returncode == 0
    assert access.known_hosts.read_text().splitlines() != known
