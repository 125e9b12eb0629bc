"""Drills of the hostmesh.cluster.wireguard role on three real containers
(wgdrill-node1..3 on hostmesh-wgdrill, 10.231.12.0/24, real wireguard-go),
driven over SSH as the lab user with become and host key checking on, as on
real servers (`docker exec` only looks at a node from its console).

The steps run in order against one lab: a 2-node mesh, adding node3 under a
continuous ping, --limit, -vvv secrecy, key rotation, bad input, removal.
Its own lab, so it can run beside the molecule `wireguard` scenario.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "scripts"))

from lab import Lab

ANSIBLE_PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))
PLAYBOOK = str(ROOT / "playbooks" / "wireguard.yml")
NODES = ["node1", "node2", "node3"]
RECAP = re.compile(
    r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE
)


def dexec(lab: Lab, node: str, *cmd: str, check: bool = True) -> str:
    proc = subprocess.run(  # noqa: PLW1510 (return code checked below)
        ["docker", "exec", lab.container(node), *cmd], capture_output=True, text=True, timeout=60
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{node}: {' '.join(cmd)} -> {proc.returncode}: {proc.stderr}")
    return proc.stdout


class Mesh:
    """A temporary inventory for the lab and helpers to converge it."""

    def __init__(self, lab: Lab, inv: Path) -> None:
        self.lab = lab
        self.inv = inv
        self.state = inv / ".hostmesh"

    def write_inventory(self, nodes: list[str], hostvars: dict | None = None) -> None:
        hostvars = hostvars or {}

        def host(n):
            return {
                "ansible_host": self.lab.address(n),
                "wireguard_endpoint": self.lab.address(n),
                **hostvars.get(n, {}),
            }

        inventory = {
            "hostmesh_nodes": {
                "children": {
                    "hostmesh_primary": {"hosts": {n: host(n) for n in nodes[:1]}},
                    "hostmesh_secondary": {"hosts": {n: host(n) for n in nodes[1:]}},
                }
            }
        }
        (self.inv / "hosts.yml").write_text(json.dumps(inventory, indent=2))
        gv = self.inv / "group_vars" / "hostmesh_nodes"
        gv.mkdir(parents=True, exist_ok=True)
        (gv / "main.json").write_text(
            json.dumps(
                {
                    **self.lab.ssh(self.state / "ssh").inventory_vars(),
                    "ansible_python_interpreter": "/usr/bin/python3",
                    "wireguard_preshared_keys": True,
                }
            )
        )

    def converge(
        self, *args: str, expect_rc: int = 0, playbook: str = PLAYBOOK
    ) -> tuple[str, dict]:
        proc = subprocess.run(  # noqa: PLW1510 (return code checked below)
            [ANSIBLE_PLAYBOOK, "-i", str(self.inv / "hosts.yml"), playbook, *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            env={
                "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin:/usr/sbin:/sbin",
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_FORCE_COLOR": "0",
                "HOME": str(Path.home()),
            },
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode == expect_rc, out[-6000:]
        recap = {
            m[0]: {
                "ok": int(m[1]),
                "changed": int(m[2]),
                "unreachable": int(m[3]),
                "failed": int(m[4]),
            }
            for m in RECAP.findall(proc.stdout)
        }
        return out, recap

    def record(self) -> dict:
        return json.loads((self.state / "wireguard.json").read_text())

    def address(self, node: str) -> str:
        return self.record()["nodes"][node]["address"]

    def peers(self, node: str) -> set[str]:
        return set(dexec(self.lab, node, "wg", "show", "wg0", "peers").split())

    def pubkey(self, node: str) -> str:
        return dexec(self.lab, node, "wg", "show", "wg0", "public-key").strip()

    def conf_hash(self, node: str) -> str:
        return dexec(self.lab, node, "sha256sum", "/etc/wireguard/wg0.conf").split()[0]

    def ping(self, src: str, dst: str) -> None:
        dexec(self.lab, src, "ping", "-c", "3", "-i", "0.2", "-w", "10", self.address(dst))

    def full_matrix(self, nodes: list[str]) -> None:
        for src in nodes:
            for dst in nodes:
                if src != dst:
                    self.ping(src, dst)
            handshakes = dexec(self.lab, src, "wg", "show", "wg0", "latest-handshakes").split("\n")
            stamps = [int(line.split()[1]) for line in handshakes if line.strip()]
            assert len(stamps) == len(nodes) - 1 and all(s > 0 for s in stamps), (src, handshakes)


def no_changes(recap: dict) -> bool:
    return all(r["changed"] == 0 and r["failed"] == 0 for r in recap.values())


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    lab = Lab(prefix="wgdrill-", network="hostmesh-wgdrill", subnet="10.231.12.0/24",
              nodes=NODES)
    lab.down()
    inventory = tmp_path_factory.mktemp("wg-inventory")
    lab.up(ssh_dir=inventory / ".hostmesh" / "ssh")
    try:
        yield Mesh(lab, inventory)
    finally:
        lab.down()


def test_two_node_mesh(mesh):
    mesh.write_inventory(["node1", "node2"])
    _, recap = mesh.converge()
    assert recap["node1"]["changed"] > 0
    mesh.full_matrix(["node1", "node2"])
    assert mesh.record()["nodes"].keys() == {"node1", "node2"}


def test_two_node_mesh_idempotency(mesh):
    _, recap = mesh.converge()
    assert no_changes(recap), recap
    out, recap = mesh.converge("--check", "--diff")
    assert no_changes(recap), out[-3000:]


def test_add_node3_under_continuous_ping(mesh):
    lab = mesh.lab
    target = mesh.address("node2")
    pids = {n: dexec(lab, n, "pidof", "wireguard-go").strip() for n in ("node1", "node2")}
    ping = subprocess.Popen(
        [
            "docker",
            "exec",
            lab.container("node1"),
            "sh",
            "-c",
            f"echo $$ > /tmp/wg-drill-ping.pid; exec ping -n -i 0.05 -w 600 {target}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    started = time.monotonic()
    try:
        mesh.write_inventory(NODES)
        _, recap = mesh.converge()
        # ping -i 0.05 runs a little under 20/s on a busy host: leave room for 200
        time.sleep(max(0.0, 13.0 - (time.monotonic() - started)))
    finally:
        dexec(lab, "node1", "sh", "-c", "kill -INT $(cat /tmp/wg-drill-ping.pid)", check=False)
        output, _ = ping.communicate(timeout=30)
    stats = re.search(r"(\d+) packets transmitted, (\d+) received", output)
    assert stats, output[-2000:]
    sent, received = int(stats[1]), int(stats[2])
    assert sent >= 200 and received == sent, f"{sent} sent, {received} received"
    assert recap["node3"]["changed"] > 0
    # node1 and node2 took the new peer with wg syncconf: their interfaces were not restarted
    assert {n: dexec(lab, n, "pidof", "wireguard-go").strip() for n in pids} == pids
    mesh.full_matrix(NODES)


def test_add_node3_idempotency(mesh):
    _, recap = mesh.converge()
    assert no_changes(recap), recap


def test_limit_keeps_every_peer(mesh):
    keys = {n: mesh.pubkey(n) for n in NODES}
    # a later play reads every node's wireguard_mesh_address, as node_agent/traefik do
    playbook = mesh.inv / "limit.yml"
    playbook.write_text(
        f"- ansible.builtin.import_playbook: {PLAYBOOK}\n"
        "- name: Read the mesh addresses\n"
        "  hosts: hostmesh_nodes\n"
        "  gather_facts: false\n"
        "  tasks:\n"
        "    - name: Show them\n"
        "      ansible.builtin.debug:\n"
        "        msg: \"MESH={{ groups['hostmesh_nodes'] | sort"
        " | map('extract', hostvars, 'wireguard_mesh_address') | join(',') }}\"\n"
    )
    out, recap = mesh.converge("--limit", "node2", playbook=str(playbook))
    assert set(recap) == {"node2"} and no_changes(recap), out[-3000:]
    assert mesh.peers("node2") == {keys["node1"], keys["node3"]}
    expected = ",".join(mesh.address(n) for n in NODES)
    assert f"MESH={expected}" in out


def test_limit_without_record_reads_keys_by_delegation(mesh):
    before = mesh.conf_hash("node2")
    (mesh.state / "wireguard.json").unlink()
    out, recap = mesh.converge("--limit", "node2")
    assert recap["node2"]["failed"] == 0, out[-3000:]
    assert mesh.conf_hash("node2") == before
    assert mesh.record()["nodes"].keys() == set(NODES)
    assert all(mesh.record()["nodes"][n]["public_key"] == mesh.pubkey(n) for n in NODES)


def test_private_keys_never_in_verbose_output(mesh):
    out, recap = mesh.converge("-vvv", "--diff")
    assert no_changes(recap)
    secrets = [dexec(mesh.lab, n, "cat", "/etc/wireguard/wg0.key").strip() for n in NODES]
    secrets += [p.read_text().strip() for p in (mesh.state / "secrets").glob("wireguard_psk_*")]
    assert len(secrets) == 6
    assert all(len(s) == 44 for s in secrets)
    leaked = [s[:6] + "..." for s in secrets if s in out]
    assert not leaked, f"secrets in -vvv output: {leaked}"
    # and the verbose run did show module results (the check above is not vacuous)
    assert "public_key" in out


def test_rotate_one_key_updates_every_peer(mesh):
    old = mesh.pubkey("node2")
    _, _recap = mesh.converge("-e", '{"wireguard_rotate_hosts": ["node2"]}')
    new = mesh.pubkey("node2")
    assert new != old
    for n in ("node1", "node3"):
        assert new in mesh.peers(n) and old not in mesh.peers(n)
    mesh.full_matrix(NODES)


def test_bad_input_fails_before_anything_changes(mesh):
    hashes = {n: mesh.conf_hash(n) for n in NODES}
    record = (mesh.state / "wireguard.json").read_text()
    clash = mesh.address("node1")
    mesh.write_inventory(
        NODES,
        {
            "node3": {"wireguard_address": clash},
            "node2": {"wireguard_endpoint": mesh.lab.address("node1")},
        },
    )
    out, _ = mesh.converge(expect_rc=2)
    assert f"node3: wireguard_address {clash} is already used by node1 (allocated earlier" in out
    assert f"node2: endpoint {mesh.lab.address('node1')}:51821 is also the endpoint of node1" in out
    assert {n: mesh.conf_hash(n) for n in NODES} == hashes
    assert (mesh.state / "wireguard.json").read_text() == record
    mesh.write_inventory(NODES)


def test_remove_node3(mesh):
    key3 = mesh.pubkey("node3")
    mesh.write_inventory(["node1", "node2"])
    _, _recap = mesh.converge()
    for n in ("node1", "node2"):
        assert key3 not in mesh.peers(n) and len(mesh.peers(n)) == 1
    assert "node3" not in mesh.record()["nodes"]
    mesh.full_matrix(["node1", "node2"])


def test_remove_node3_idempotency(mesh):
    _, recap = mesh.converge()
    assert no_changes(recap), recap
