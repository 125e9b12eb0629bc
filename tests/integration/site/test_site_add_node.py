"""A node added later (playbooks/add_node.yml) on a lab of its own.

addnode-node1..3 on hostmesh-addnode (10.231.8.0/24): site.yml converges node1
(primary) and node3 (whoami runs on both, HTTPS from the lab's pebble), then
node2 joins the inventory and `add_node.yml -e node=node2` runs:
- node2 serves https://whoami.lab.test verified against the lab CA's root, with
  the certificate the other nodes serve, and the issuer made no new order;
- node2 forwards whoami to the nodes that run it and runs no replica (no app
  is placed there, so it gets no Docker Engine);
- add_node.yml's own last play checked that no service of node1 or node3
  restarted; a second run changes nothing.
"""

from __future__ import annotations

import http.client
import json
import os

import lab_acme
import pytest
from lab import Lab
from sitedrill import SERVICE_HOST, docker
from sitelab import (
    changed_tasks,
    recap,
    run_playbook,
    ssh_dir,
    stop_local_cloudflare,
    write_inventory,
)

LAB = Lab(prefix="addnode-", network="hostmesh-addnode", subnet="10.231.8.0/24")


def on(node: str, *cmd: str) -> str:
    return docker("exec", LAB.container(node), *cmd).stdout.strip()


def orders() -> int:
    status = json.loads(on("node1", "cat", "/var/lib/hostmesh-acme/status.json"))
    return status["sets"]["lab.test"]["orders"]


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    LAB.down()
    dest = tmp_path_factory.mktemp("addnode") / "inventory"
    try:
        LAB.up(ssh_dir=ssh_dir(dest))
        write_inventory(LAB, dest, nodes=["node1", "node3"])
        run_playbook(dest, "site.yml")
        before = {"orders": orders(),
                  "serial": lab_acme.https_get(LAB.address("node1"), 443, SERVICE_HOST,
                                               cadata=(dest / ".hostmesh/acme-root.pem")
                                               .read_text())[2]}
        write_inventory(LAB, dest)  # node2 joins the inventory as a secondary
        added, seconds = run_playbook(dest, "playbooks/add_node.yml", "-e", "node=node2")
        print(f"add_node_seconds: {seconds:.1f} s")
        yield {"inventory": dest, "before": before, "added": added}
    finally:
        stop_local_cloudflare(dest)
        if not os.environ.get("HOSTMESH_KEEP_LAB"):
            LAB.down()


def test_new_node_serves_the_current_certificate_without_an_order(grown):
    root = (grown["inventory"] / ".hostmesh/acme-root.pem").read_text()
    for node in LAB.nodes:
        status, body, serial = lab_acme.https_get(LAB.address(node), 443, SERVICE_HOST,
                                                  cadata=root)
        assert status == 200 and body in ("node1", "node3"), (node, status, body)
        assert serial == grown["before"]["serial"], node
    assert grown["before"]["orders"] == 1
    assert orders() == 1  # the new node took the current certificate


def test_new_node_forwards_and_runs_no_replica(grown):
    conn = http.client.HTTPConnection(LAB.address("node2"), 80, timeout=5)
    conn.request("GET", "/", headers={"Host": SERVICE_HOST})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.read().decode().strip() in ("node1", "node3")
    conn.close()
    # no app is placed on node2: Docker Engine stays off there
    assert on("node2", "sh", "-c", "systemctl is-active docker || true") != "active"
    # the primary lists it (add_node.yml's summary)
    assert "node2  online  secondary" in grown["added"].stdout


def test_nothing_restarted_elsewhere_and_a_rerun_changes_nothing(grown):
    out = grown["added"].stdout
    assert "Require the same start times as before" in out
    assert all(c.get("failed", 0) == 0 for c in recap(out).values())
    again, _ = run_playbook(grown["inventory"], "playbooks/add_node.yml", "-e", "node=node2")
    changed = {h: c["changed"] for h, c in recap(again.stdout).items() if c.get("changed")}
    assert changed == {}, changed_tasks(again.stdout)

