"""Node identity is the primary's: names, mesh addresses and ids cannot be taken over
by a token holder, and nothing a node registers can break the inventory."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
from agent_harness import ADMIN_TOKEN, REGISTRATION_TOKEN, node_key
from attack_helpers import call, mesh_primary

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "inventory"))
from livecluster import ANSIBLE_INVENTORY, ansible_env, run, write_cfg


def register(primary, name, address, *, source=None, node_id=None, key=None, **extra):
    body = {"name": name, "api_endpoint": f"http://{address}:{primary.port}",
            "api_key": key or node_key(name), "token": REGISTRATION_TOKEN, **extra}
    if node_id:
        body["id"] = node_id
    return call(primary, "POST", "/api/nodes/register", body, source=source or address)


@pytest.mark.parametrize("name", ["all", "ungrouped", "hostmesh_online", "hostmesh_nodes",
                                  "hostmesh_label_gpu", "hostmesh_app_web", "localhost",
                                  "LOCALHOST", "All"])
def test_reserved_names_are_refused_and_the_inventory_keeps_working(cluster, tmp_path, name):
    """Attack: a node named like a group (or localhost) breaks or hijacks the inventory."""
    primary = mesh_primary(cluster)
    status, body, _hdrs = register(primary, name, "127.50.0.5")
    assert status == 400, body
    assert "reserved" in body["error"]
    cfg = write_cfg(tmp_path / "c.hostmesh.yml", primary.url)
    res = run([ANSIBLE_INVENTORY, "-i", str(cfg), "--list"], ansible_env(ADMIN_TOKEN))
    assert res.returncode == 0, res.stderr
    assert "Failed to parse" not in res.stderr


def test_a_heartbeat_cannot_move_a_node_to_another_address(cluster):
    """Attack: claim another node's mesh address (it becomes ansible_host) by heartbeat."""
    primary = mesh_primary(cluster)
    status, a, _hdrs = register(primary, "node-a", "127.50.0.11")
    assert status == 201, a
    status, b, _hdrs = register(primary, "node-b", "127.50.0.12")
    assert status == 201, b
    headers = {"X-Node-ID": a["id"], "X-Node-API-Key": node_key("node-a")}
    for claim in ("127.50.0.12", "127.50.0.200", "10.9.9.9"):
        status, body, _hdrs = call(primary, "POST", f"/api/nodes/{a['id']}/heartbeat",
                                   {"wireguard_ip": claim}, headers=headers)
        assert status == 409, body
        assert "never by a heartbeat" in body["error"]
    assert primary.admin().get_node(a["id"])["wireguard_ip"] == "127.50.0.11"
    status, _body, _hdrs = call(primary, "POST", f"/api/nodes/{a['id']}/heartbeat",
                                {"wireguard_ip": "127.50.0.11"}, headers=headers)
    assert status == 200
    # nor by registering again: that must come from the address it claims
    status, body, _hdrs = register(primary, "node-a", "127.50.0.12", source="127.50.0.11",
                                   node_id=a["id"])
    assert status == 403, body


def test_names_differing_only_in_case_cannot_coexist(cluster):
    primary = mesh_primary(cluster)
    assert register(primary, "web1", "127.50.0.21")[0] == 201
    for twin in ("WEB1", "Web1"):
        status, body, _hdrs = register(primary, twin, "127.50.0.22")
        assert status == 409 and "ignoring case" in body["error"], body
    names = [n["name"] for n in primary.admin().list_nodes()]
    assert sorted(names) == ["primary", "web1"]


def test_a_trailing_newline_does_not_make_a_second_name(cluster):
    """Attack: `web1\\n` beside `web1` (patterns ending in `$` accept a trailing newline)."""
    primary = mesh_primary(cluster)
    for name in ("web1\n", "web2\n"):
        status, body, _hdrs = register(primary, name, "127.50.0.31")
        assert status == 400, body
    status, body, _hdrs = register(primary, "web3", "127.50.0.31", node_id="id3\n")
    assert status == 400, body
    status, body, _hdrs = register(primary, "web3", "127.50.0.31", labels={"zone\n": "eu"})
    assert status == 400, body
    assert [n["name"] for n in primary.admin().list_nodes()] == ["primary"]
    assert "\nweb" not in primary.log()


def test_a_planned_nodes_id_cannot_be_claimed_ahead_of_it(cluster):
    """Attack: node ids are predictable (to_uuid(cluster/hostname)); a token holder takes
    the id of a node that has not joined yet, locking the real node out."""
    primary = mesh_primary(cluster)
    planned = str(uuid.uuid5(uuid.NAMESPACE_URL, "hostmesh/node9"))
    # the attacker is a member of the mesh at 127.50.0.66 (and registered there)
    assert register(primary, "attacker", "127.50.0.66")[0] == 201
    # ... it cannot register another address than its own ...
    status, body, _hdrs = register(primary, "node9", "127.50.0.9", source="127.50.0.66",
                                   node_id=planned, key=node_key("stolen"))
    assert status == 403, body
    # ... nor hold a second node at its own address
    status, body, _hdrs = register(primary, "node9", "127.50.0.66", node_id=planned,
                                   key=node_key("stolen"))
    assert status == 409 and "mesh address" in body["error"], body
    # the real node joins from its own mesh address with its id and key
    status, body, _hdrs = register(primary, "node9", "127.50.0.9", node_id=planned)
    assert status == 201 and body["id"] == planned, body


def test_a_node_cannot_rename_itself_to_a_planned_name(cluster):
    """Attack: re-register one's own id (proving one's own key) under the name of a node
    that has not joined yet, locking it out by name."""
    primary = mesh_primary(cluster)
    status, own, _hdrs = register(primary, "attacker", "127.50.0.66")
    assert status == 201
    status, body, _hdrs = register(primary, "node9", "127.50.0.66", node_id=own["id"],
                                   key=node_key("attacker"))
    assert status == 409 and "renamed by an admin" in body["error"], body
    status, body, _hdrs = register(primary, "node9", "127.50.0.9")
    assert status == 201, body
