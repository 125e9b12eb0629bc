"""hostmesh.cluster.firewall on the whole site lab: what answers, from where.

Runs on the shared site lab (the `site` fixture of conftest.py:
site.yml converged on drill-node1..3, hostmesh-drill, 10.231.6.0/24) with the
firewall on, and scans every node with TCP connects (molecule/firewall/scan.py:
open = accepted, closed = refused, filtered = dropped):

- from the lab gateway (this host, 10.231.6.1) to each node's public address:
  only SSH, web and websecure answer; the agent, Traefik's mesh and API ports,
  6379 (no TCP service is declared in the lab) and a closed port are dropped;
- from a peer over wg0: the agent answers (an HTTP health check through it),
  and so do Traefik's mesh and API entrypoints; the rest is still dropped;
- from a peer to the public address: the agent port is dropped, so it is the
  interface that opens it, not the source;
- a restarted node comes back with its firewall (loaded at boot) and serves.

Scans go only to the lab's own containers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from sitedrill import (
    LAB,
    docker,
    get,
    on_node,
    wait_for,
    wait_until_restored,
)
from sitelab import changed_tasks, recap, run_playbook

SCAN = ROOT / "molecule" / "firewall" / "scan.py"
CLOSED = 47613  # nothing listens there and nothing opens it
PORTS = [22, 80, 443, 8000, 8080, 8090, 6379, CLOSED]
# Answers from outside the mesh: sshd, Traefik's web and websecure.
PUBLIC = {"22": "open", "80": "open", "443": "open"}
# Over wg0 also the agent, Traefik's mesh entrypoint and its API/metrics.
MESH = {**PUBLIC, "8000": "open", "8080": "open", "8090": "open"}


def expect(answering: dict[str, str]) -> dict[str, str]:
    return {str(p): answering.get(str(p), "filtered") for p in PORTS}


def scan_from_gateway(address: str, ports=PORTS) -> dict[str, str]:
    proc = subprocess.run(
        [sys.executable, str(SCAN), address, *map(str, ports)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(proc.stdout)


def scan_from_node(node: str, address: str, ports=PORTS) -> dict[str, str]:
    proc = subprocess.run(
        ["docker", "exec", "-i", LAB.container(node), "python3", "-", address, *map(str, ports)],
        input=SCAN.read_text(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(proc.stdout)


def mesh_address(node: str) -> str:
    out = on_node(node, "ip", "-4", "-o", "addr", "show", "dev", "wg0")
    return out.split()[3].split("/")[0]


def peer_of(node: str) -> str:
    nodes = list(LAB.nodes)
    return nodes[(nodes.index(node) + 1) % len(nodes)]


@pytest.fixture(scope="module")
def firewalled(site):
    """The site lab with the firewall on (whether or not the lab inventory
    enables it), applied over the lab's own connection with its safety net."""
    first, _ = run_playbook(site.inventory, "playbooks/firewall.yml", "-e", "firewall_enabled=true")
    again, _ = run_playbook(site.inventory, "playbooks/firewall.yml", "-e", "firewall_enabled=true")
    check, _ = run_playbook(
        site.inventory, "playbooks/firewall.yml", "-e", "firewall_enabled=true", "--check", "--diff"
    )
    return site, first, again, check


def test_firewall_is_idempotent_and_check_mode_reports_nothing(firewalled):
    _, first, again, check = firewalled
    counts = recap(first.stdout)
    assert set(counts) == set(LAB.nodes)
    assert all(c.get("failed", 0) == 0 for c in counts.values())
    for proc in (again, check):
        changed = {h: c["changed"] for h, c in recap(proc.stdout).items() if c.get("changed")}
        assert changed == {}, changed_tasks(proc.stdout)
    for node in LAB.nodes:
        table = on_node(node, "nft", "list", "table", "inet", "hostmesh")
        assert "policy drop" in table and "hostmesh.cluster.firewall" in table, (node, table)
        assert on_node(node, "systemctl", "is-enabled", "hostmesh-firewall.service") == "enabled"


@pytest.mark.parametrize("node", LAB.nodes)
def test_only_ssh_and_web_answer_from_the_lab_gateway(firewalled, node):
    assert scan_from_gateway(LAB.address(node)) == expect(PUBLIC)


@pytest.mark.parametrize("node", LAB.nodes)
def test_agent_and_traefik_internals_answer_a_peer_over_the_mesh(firewalled, node):
    peer = peer_of(node)
    address = mesh_address(node)
    assert scan_from_node(peer, address) == expect(MESH)
    health = docker(
        "exec", LAB.container(peer), "curl", "-sf", "-m", "5", f"http://{address}:8080/api/health"
    ).stdout
    assert json.loads(health)["status"] == "healthy"


@pytest.mark.parametrize("node", LAB.nodes)
def test_agent_port_is_dropped_on_the_public_side_even_for_a_peer(firewalled, node):
    assert scan_from_node(peer_of(node), LAB.address(node)) == expect(PUBLIC)


def test_firewall_is_back_after_a_node_restart(firewalled):
    docker("restart", LAB.container("node3"))
    assert LAB.wait_systemd("node3", 180) in ("running", "degraded")
    # Traefik binds 80/443 a moment after systemd counts it started; every other
    # port must already be filtered by the ruleset loaded at boot.
    wait_for(lambda: scan_from_gateway(LAB.address("node3")) == expect(PUBLIC), 30,
             "only SSH and web answering node3's public address")
    wait_for(lambda: get("node3")[0] == 200, 90, "node3 serving again")
    wait_until_restored()
    wait_for(
        lambda: scan_from_node("node1", mesh_address("node3"), [8080]) == {"8080": "open"},
        60,
        "node3's agent over the mesh",
    )
