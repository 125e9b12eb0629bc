"""hostmesh.cluster.node_agent from the built collection tarball only, on
three real containers (tarball-node1..3 on hostmesh-tarball, 10.231.13.0/24:
its own lab, so it can run beside the molecule `node_agent` scenario).

A clean directory installs nothing but the tarball (`ansible-galaxy
collection install`), then: bad inventories fail before any change, naming
the host; a converge (at -vvv, which must not show any generated secret)
brings the three agents up with both secondaries online; a second converge
changes nothing. The nodes are driven over SSH as the lab user with become
and host key checking on, as real servers are.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "scripts"))

from lab import Lab

BIN = Path(sys.executable).parent
NODES = ["node1", "node2", "node3"]
RECAP = re.compile(
    r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE
)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(
        prefix="tarball-", network="hostmesh-tarball", subnet="10.231.13.0/24", nodes=NODES
    )
    lab.down()
    lab.ssh_dir = tmp_path_factory.mktemp("agent-ssh")
    lab.up(ssh_dir=lab.ssh_dir)
    try:
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A clean project dir holding only the installed collection tarball."""

    def run(cmd, cwd):
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            pytest.fail(f"{' '.join(cmd)}: {proc.stdout[-2000:]} {proc.stderr[-2000:]}")

    tmp = tmp_path_factory.mktemp("tarball")
    galaxy = str(BIN / "ansible-galaxy")
    run(
        [galaxy, "collection", "build", "--force", "--output-path", str(tmp / "dist"), str(ROOT)],
        ROOT,
    )
    tarball = next((tmp / "dist").glob("hostmesh-cluster-*.tar.gz"))
    proj = tmp / "project"
    proj.mkdir()
    run(
        [galaxy, "collection", "install", "--force", "-p", str(proj / "collections"), str(tarball)],
        proj,
    )
    (proj / "ansible.cfg").write_text(
        "[defaults]\ncollections_path = ./collections\ninventory = inventory\n"
        "host_key_checking = True\nforks = 10\n"
        "strategy = hostmesh.cluster.linear\n[connection]\npipelining = True\n"
    )
    (proj / "site.yml").write_text(
        "- name: Agents\n  hosts: hostmesh_nodes\n  gather_facts: false\n"
        "  roles:\n    - role: hostmesh.cluster.node_agent\n"
    )
    return proj


def write_inventory(proj: Path, lab: Lab, primaries, secondaries, extra=None):
    def host(n):
        # no WireGuard here: the lab network stands for the mesh (the API is on the mesh only)
        return {"ansible_host": lab.address(n), "hostmesh_public_ip": lab.address(n),
                "node_agent_address": lab.address(n)}

    inv = {
        "hostmesh_nodes": {
            "vars": {
                **lab.ssh(lab.ssh_dir).inventory_vars(),
                "ansible_python_interpreter": "/usr/bin/python3",
                "node_agent_env": {"HEALTH_CHECK_INTERVAL": "5", "HEARTBEAT_INTERVAL": "10"},
                "node_agent_mesh_subnet": lab.subnet,
                **(extra or {}),
            },
            "children": {
                "hostmesh_primary": {"hosts": {n: host(n) for n in primaries}},
                "hostmesh_secondary": {"hosts": {n: host(n) for n in secondaries}},
            },
        }
    }
    (proj / "inventory").mkdir(exist_ok=True)
    (proj / "inventory" / "hosts.yml").write_text(yaml.safe_dump(inv))


def converge(proj: Path, *args: str):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-vvv", "site.yml", *args],
        cwd=proj,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    recap = {m[0]: tuple(int(x) for x in m[1:]) for m in RECAP.findall(proc.stdout)}
    return proc, recap


def untouched(lab: Lab) -> bool:
    return all(
        subprocess.run(
            ["docker", "exec", lab.container(n), "test", "-e", "/etc/hostmesh"], check=False
        ).returncode
        != 0
        for n in NODES
    )


@pytest.mark.parametrize(
    "primaries,secondaries,extra,expected",
    [
        (["node1", "node2"], ["node3"], {}, "exactly one host in group hostmesh_primary, found 2"),
        ([], NODES, {}, "found 0"),
        (
            ["node1"],
            ["node2", "node3"],
            {"node_agent_primary_url": "http://10.231.13.99:8080"},
            "node2 cannot reach the primary at http://10.231.13.99:8080",
        ),
    ],
    ids=["two-primaries", "no-primary", "unreachable-primary"],
)
def test_bad_inventory_fails_before_any_change(
    lab, project, primaries, secondaries, extra, expected
):
    write_inventory(project, lab, primaries, secondaries, extra)
    proc, _ = converge(project)
    assert proc.returncode != 0
    assert expected in proc.stdout, proc.stdout[-3000:]
    assert untouched(lab), "a node was changed although the inventory was rejected"
    assert not (project / "inventory" / ".hostmesh" / "secrets").exists()


def test_tarball_only_install_converges_and_is_idempotent(lab, project):
    write_inventory(project, lab, ["node1"], ["node2", "node3"])
    proc, _ = converge(project)
    assert proc.returncode == 0, proc.stdout[-4000:]
    # the role ran from the installed tarball, not from the checkout
    assert (
        f"{project}/collections/ansible_collections/hostmesh/cluster/roles/node_agent"
        in proc.stdout
    )
    assert str(ROOT / "roles") not in proc.stdout
    # every secret generated by this first converge is absent from its -vvv log
    secrets = {
        p.name: p.read_text().strip()
        for p in (project / "inventory" / ".hostmesh" / "secrets").iterdir()
    }
    assert sorted(secrets) == [
        "admin_token", "metrics_token_node1", "metrics_token_node2", "metrics_token_node3",
        "node_api_key_node1", "node_api_key_node2", "node_api_key_node3", "registration_token",
    ]
    leaked = [name for name, value in secrets.items() if value in proc.stdout + proc.stderr]
    assert not leaked, f"secrets in the -vvv output: {leaked}"
    proc2, recap2 = converge(project)
    assert proc2.returncode == 0, proc2.stdout[-4000:]
    assert all(r[1] == 0 for r in recap2.values()), f"second converge changed: {recap2}"

    token = (project / "inventory" / ".hostmesh" / "secrets" / "admin_token").read_text().strip()
    req = urllib.request.Request(
        f"http://{lab.address('node1')}:8080/api/nodes",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        nodes = {n["name"]: n for n in json.load(resp)}
    assert {n: nodes[n]["status"] for n in NODES} == {n: "online" for n in NODES}
    assert nodes["node1"]["is_primary"] and not nodes["node2"]["is_primary"]
