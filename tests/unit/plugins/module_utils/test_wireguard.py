"""Mesh planning, key maths and config rendering of module_utils/_wireguard.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "collections"))

from ansible_collections.hostmesh.cluster.plugins.module_utils import _wireguard as wg

SUBNET = "10.50.0.0/24"


def node(name, address="", endpoint="", port=51821, keepalive=0):
    return {
        "name": name,
        "address": address,
        "endpoint": endpoint,
        "port": port,
        "keepalive": keepalive,
    }


def test_rfc7748_vectors():
    alice = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    bob_pub = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    assert wg.x25519(alice, (9).to_bytes(32, "little")).hex() == (
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    )
    assert wg.x25519(alice, bob_pub).hex() == (
        "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
    )


@pytest.mark.parametrize("bad", ["", "abc", "A" * 44, "!" * 43 + "=", None, 5])
def test_invalid_keys(bad):
    assert not wg.is_valid_key(bad)


def test_allocation_is_lowest_free_in_name_order():
    nodes = [node("node3"), node("node1"), node("node2")]
    assert wg.allocate_addresses(nodes, SUBNET) == {
        "node1": "10.50.0.1",
        "node2": "10.50.0.2",
        "node3": "10.50.0.3",
    }


def test_explicit_address_wins_and_is_skipped_by_allocation():
    nodes = [node("node1"), node("node2", address="10.50.0.1"), node("node3")]
    assert wg.allocate_addresses(nodes, SUBNET) == {
        "node1": "10.50.0.2",
        "node2": "10.50.0.1",
        "node3": "10.50.0.3",
    }


def _state(addresses):
    return {"nodes": {n: {"address": a, "public_key": None} for n, a in addresses.items()}}


def test_adding_a_node_never_renumbers():
    before = {"node2": "10.50.0.2", "node3": "10.50.0.3"}
    nodes = [node("node0"), node("node2"), node("node3")]
    after = wg.allocate_addresses(nodes, SUBNET, _state(before))
    assert after["node2"] == "10.50.0.2" and after["node3"] == "10.50.0.3"
    assert after["node0"] == "10.50.0.1"


def test_removing_a_node_never_renumbers():
    before = {"node1": "10.50.0.1", "node2": "10.50.0.2", "node3": "10.50.0.3"}
    after = wg.allocate_addresses([node("node1"), node("node3")], SUBNET, _state(before))
    assert after == {"node1": "10.50.0.1", "node3": "10.50.0.3"}


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from([f"n{i}" for i in range(12)]), min_size=1, max_size=12, unique=True),
    st.lists(st.sampled_from([f"n{i}" for i in range(12)]), max_size=12, unique=True),
)
def test_allocation_stable_under_membership_changes(first, second):
    state = {
        "nodes": {
            n: {"address": a}
            for n, a in wg.allocate_addresses([node(n) for n in first], SUBNET).items()
        }
    }
    again = wg.allocate_addresses([node(n) for n in second], SUBNET, state)
    assert len(set(again.values())) == len(again)
    for name in set(first) & set(second):
        assert again[name] == state["nodes"][name]["address"]


def test_subnet_exhausted():
    with pytest.raises(ValueError, match="no free address"):
        wg.allocate_addresses([node("a"), node("b"), node("c")], "10.50.0.0/30")


def test_errors_name_host_and_value():
    nodes = [
        node("node1", address="10.50.0.5", endpoint="192.0.2.1"),
        node("node2", address="10.50.0.5", endpoint="192.0.2.1"),
        node("node3", address="10.60.0.1"),
        node("node4", address="banana"),
        node("node5", address="10.50.0.255"),
        node("node6", port=70000),
    ]
    errors = wg.mesh_errors(nodes, SUBNET, {"nodes": {"node7": {"public_key": "nope"}}})
    text = "\n".join(errors)
    assert "node2: wireguard_address 10.50.0.5 is already used by node1" in text
    assert "node2: endpoint 192.0.2.1:51821 is also the endpoint of node1" in text
    assert "node3: wireguard_address 10.60.0.1 is outside wireguard_subnet 10.50.0.0/24" in text
    assert "node4: wireguard_address 'banana' is not an IP address" in text
    assert "node5: wireguard_address 10.50.0.255 is the network or broadcast" in text
    assert "node6: wireguard_port 70000" in text
    assert "node7: recorded public key 'nope'" in text
    assert len(errors) == 7


def test_same_endpoint_different_port_is_fine():
    nodes = [
        node("a", endpoint="192.0.2.1"),
        node("b", endpoint="192.0.2.1", port=51822),
        node("c"),
    ]
    assert wg.mesh_errors(nodes, SUBNET) == []


def test_bad_subnet():
    assert "wireguard_subnet" in wg.mesh_errors([node("a")], "10.50.0.1/24")[0]


def test_plan_and_peers():
    k1, k2 = (wg.public_key(wg.generate_private_key()) for _ in range(2))
    nodes = [
        node("node1", endpoint="192.0.2.1"),
        node("node2"),
        node("node3", endpoint="2001:db8::3"),
    ]
    plan = wg.mesh_plan(nodes, SUBNET, {}, {"node1": k1, "node3": k2})
    assert plan["prefix"] == 24
    assert plan["nodes"]["node2"]["public_key"] is None
    psk = wg.generate_preshared_key()
    peers = wg.peers_for(plan, "node2", keepalive=25, psks={"node1_node2": psk})
    assert [p["name"] for p in peers] == ["node1", "node3"]
    assert peers[0]["endpoint"] == "192.0.2.1:51821" and peers[0]["preshared_key"] == psk
    assert peers[1]["endpoint"] == "[2001:db8::3]:51821" and peers[1]["preshared_key"] is None
    assert peers[0]["persistent_keepalive"] == 25
    # node2 has no key yet: nobody lists it as a peer
    assert [p["name"] for p in wg.peers_for(plan, "node1")] == ["node3"]


def test_recorded_key_is_used_for_nodes_outside_the_run():
    k = wg.public_key(wg.generate_private_key())
    state = {"nodes": {"node1": {"address": "10.50.0.7", "public_key": k}}}
    plan = wg.mesh_plan([node("node1"), node("node2")], SUBNET, state, {})
    assert plan["nodes"]["node1"] == {
        "address": "10.50.0.7",
        "public_key": k,
        "endpoint": "",
        "port": 51821,
    }


def test_render_is_deterministic_and_redactable():
    private = wg.generate_private_key()
    peers = [
        {
            "name": "b",
            "public_key": "B" * 43 + "=",
            "allowed_ips": ["10.50.0.2/32"],
            "preshared_key": "P" * 43 + "=",
            "endpoint": "192.0.2.2:51821",
        },
        {
            "name": "a",
            "public_key": "A" * 43 + "=",
            "allowed_ips": ["10.50.0.3/32"],
            "persistent_keepalive": 25,
        },
    ]
    text = wg.render_config({"address": "10.50.0.1/24", "listen_port": 51821}, peers, private)
    assert text == wg.render_config(
        {"address": "10.50.0.1/24", "listen_port": 51821}, list(reversed(peers)), private
    )
    assert text.index("# a") < text.index("# b")
    assert "PersistentKeepalive = 25" in text and "Endpoint = 192.0.2.2:51821" in text
    redacted = wg.redact_config(text)
    assert private not in redacted and "P" * 43 not in redacted
    assert wg.interface_section(text) == [
        ("address", "10.50.0.1/24"),
        ("listenport", "51821"),
        ("privatekey", private),
    ]


def test_pairs():
    assert wg.psk_pairs(["c", "a", "b"]) == ["a_b", "a_c", "b_c"]
    assert wg.pair_name("z", "a") == "a_z"


def test_explicit_address_may_not_take_a_recorded_one():
    state = _state({"node1": "10.50.0.1", "node2": "10.50.0.2"})
    errors = wg.mesh_errors(
        [node("node1"), node("node2"), node("node3", address="10.50.0.1")], SUBNET, state
    )
    assert errors == [
        (
            "node3: wireguard_address 10.50.0.1 is already used by node1 (allocated earlier, see the "
            "mesh record); pick a free address so node1 is not renumbered"
        )
    ]
    # giving node1 its own recorded address explicitly is fine
    assert wg.mesh_errors([node("node1", address="10.50.0.1"), node("node2")], SUBNET, state) == []
