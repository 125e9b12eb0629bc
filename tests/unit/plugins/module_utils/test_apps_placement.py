"""Placement of `replicas: N` (issue 16): online nodes first, stable, the same for the
apps role's plan and Traefik's routes (plugins/module_utils/_apps_validate.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "collections"))

from ansible_collections.hostmesh.cluster.plugins.filter import apps as apps_filters
from ansible_collections.hostmesh.cluster.plugins.module_utils import _apps_validate as av

NODES = ["node1", "node2", "node3", "node4"]
MESH = {n: f"10.50.0.{i}" for i, n in enumerate(NODES, 1)}
MODULE = ROOT / "plugins" / "modules" / "traefik_config.py"


def app(**kw):
    svc = {"hosts": ["web.lab.test"], "port": 8081, "health_path": "/",
           "container": {"image": "10.231.6.1:5000/hostmesh/web:1"}}
    svc.update(kw)
    return svc


def ranked(name="web"):
    return av.rank(name, sorted(NODES))


def place(count, online=None, current=(), name="web", nodes=NODES):
    return av.place_replicas(name, count, nodes, online, current)


def test_nothing_known_is_the_plain_rendezvous_placement():
    """No record, every node online (or not known): what earlier versions placed, so an
    upgrade moves nothing."""
    for count in (1, 2, 3):
        assert place(count) == (av.rendezvous("web", NODES, count), [])
        assert place(count, online=NODES) == (av.rendezvous("web", NODES, count), [])


def test_a_replica_stays_on_its_online_node():
    # the two nodes the app likes least hold it: they keep it
    held = ranked()[-2:]
    nodes, notes = place(2, online=NODES, current=held)
    assert nodes == [n for n in NODES if n in held] and notes == []
    # a node joining the inventory (and winning the hash) moves nothing either
    nodes, notes = place(2, online=NODES + ["node0"], current=held, nodes=["node0"] + NODES)
    assert set(nodes) == set(held) and notes == []


def test_missing_replicas_go_to_online_nodes_in_rendezvous_order():
    first, second, third, fourth = ranked()
    nodes, notes = place(2, online=[second, third, fourth])
    assert set(nodes) == {second, third} and notes == []
    # scaling up keeps the held replica and adds online nodes in rendezvous order
    nodes, _ = place(3, online=[first, third, fourth], current=[fourth])
    assert set(nodes) == {fourth, first, third}
    assert nodes == [n for n in NODES if n in nodes]  # inventory order


def test_scaling_down_drops_the_replicas_last_in_rendezvous_order():
    first, _second, third, fourth = ranked()
    nodes, notes = place(2, online=NODES, current=[first, third, fourth])
    assert set(nodes) == {first, third} and notes == []


def test_the_replica_of_an_offline_node_moves_and_says_where():
    first, second, third, fourth = ranked()
    nodes, notes = place(2, online=[first, second, fourth], current=[third, fourth])
    assert set(nodes) == {fourth, first}
    assert notes == [(f"app 'web': {third} is not online (the primary's view), its replica "
                     f"moves to {first}")]


def test_a_node_gone_from_the_inventory_loses_its_replica():
    nodes, notes = place(1, online=NODES, current=["node9"])
    assert nodes == av.rendezvous("web", NODES, 1)
    assert notes == [(f"app 'web': node9 is not in the inventory any more, its replica moves "
                     f"to {nodes[0]}")]


def test_too_few_online_nodes_fall_back_to_offline_ones_held_first():
    first, second, _third, fourth = ranked()
    # 3 replicas, 2 online: the offline node that already holds one keeps it ...
    nodes, notes = place(3, online=[first, second], current=[fourth])
    assert set(nodes) == {first, second, fourth}
    assert notes == [(f"app 'web': only 2 of its 3 replicas fit on nodes the primary reports "
                     f"online; {fourth} gets one although not online (bring nodes back or "
                     "lower replicas)")]
    # ... else offline nodes in rendezvous order
    nodes, notes = place(3, online=[fourth])
    assert set(nodes) == {fourth, first, second}
    assert "only 1 of its 3 replicas" in notes[0]
    # nobody online at all (a primary that sees the others down): still placed, never fails
    nodes, notes = place(2, online=[])
    assert set(nodes) == {first, second} and len(notes) == 1


def test_explicit_nodes_are_never_moved():
    reg = {"pinned": app(nodes=["node4", "node2"])}
    out, notes = av.plan_placement(reg, NODES, online=["node1"], placed={"pinned": ["node1"]})
    assert out == reg and notes == []


def test_resolve_placement_uses_the_record_and_the_view_for_every_replicas_entry():
    first, second, third, fourth = ranked()
    reg = {"web": app(replicas=2), "plain": {"hosts": ["p.lab.test"], "port": 9000, "replicas": 1}}
    out, notes = av.plan_placement(reg, NODES, online=[first, second, third],
                                   placed={"web": [fourth, second]})
    assert set(out["web"]["nodes"]) == {second, first} and "replicas" not in out["web"]
    assert out["plain"]["nodes"] == av.place_replicas("plain", 1, NODES, [first, second, third])[0]
    assert len(notes) == 1 and fourth in notes[0]
    assert reg["web"]["replicas"] == 2  # the input is not changed
    # an invalid count is left to the validators: no nodes, no note
    out, notes = av.plan_placement({"web": app(replicas=9)}, NODES, placed={"web": ["node1"]})
    assert "nodes" not in out["web"] and notes == []


@settings(max_examples=300, deadline=None)
@given(
    nodes=st.lists(st.sampled_from([f"n{i}" for i in range(8)]), min_size=1, max_size=8,
                   unique=True),
    data=st.data(),
)
def test_placement_rules_hold_for_any_cluster(nodes, data):
    count = data.draw(st.integers(1, len(nodes)))
    online = data.draw(st.none() | st.lists(st.sampled_from(nodes + ["gone"]), unique=True))
    current = data.draw(st.lists(st.sampled_from(nodes + ["gone"]), unique=True))
    chosen, notes = av.place_replicas("app", count, nodes, online, current)
    up = set(nodes) if online is None else set(online) & set(nodes)
    assert len(chosen) == count and len(set(chosen)) == count
    assert chosen == [n for n in nodes if n in chosen]  # inventory order
    held_up = up & set(current)
    # held replicas on online nodes stay (as many as fit)
    assert len(held_up & set(chosen)) == min(count, len(held_up))
    # offline nodes only when online ones run out
    assert len(set(chosen) - up) == max(0, count - len(up))
    # stable: the result as the next record, same view -> the same nodes, nothing to say
    assert av.place_replicas("app", count, nodes, online, chosen) == (
        chosen, [] if len(up) >= count else notes[-1:])


def test_placement_record_round_trip_and_bad_records():
    reg = {"web": app(replicas=2), "pinned": app(nodes=["node1"], port=9000)}
    plan = apps_filters.apps_plan(reg, NODES)
    record = apps_filters.apps_placement_record(plan, reg)
    assert record == {"hostmesh_apps_placement": 1, "apps": {"web": plan["web"]["nodes"]}}
    assert apps_filters.apps_placement_read(json.dumps(record)) == record["apps"]
    assert apps_filters.apps_placement_read("") == {}
    assert apps_filters.apps_placement_read(None) == {}
    for bad, needle in [
        ("{", "Expecting"),
        ("[]", "not a placement record"),
        ('{"hostmesh_apps_placement": 2, "apps": {}}', "not a placement record"),
        ('{"hostmesh_apps_placement": 1, "apps": []}', "apps must be an object"),
        ('{"hostmesh_apps_placement": 1, "apps": {"web": "node1"}}', "apps.web must be a list"),
        ('{"hostmesh_apps_placement": 1, "apps": {"web": ["node1", "node1"]}}', "distinct"),
    ]:
        with pytest.raises(apps_filters.AnsibleFilterError) as err:
            apps_filters.apps_placement_read(bad, "/state/apps_placement.json")
        assert str(err.value).startswith("/state/apps_placement.json: ")
        assert needle in str(err.value) and "remove it to place every replica afresh" in str(err.value)


def run_module(tmp_path: Path, args: dict) -> dict:
    payload = dict(args, _ansible_check_mode=True, _ansible_diff=False)
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": payload}))
    env = dict(os.environ, PYTHONPATH=str(ROOT / "collections"))
    proc = subprocess.run([sys.executable, str(MODULE), str(args_file)], check=False,
                          capture_output=True, text=True, env=env, timeout=60)
    return json.loads(proc.stdout)


def routed_nodes(config, name):
    """The nodes whose replica node1's routes use (its local backend, its peers)."""
    services = config["http"]["services"]
    peers = [s["url"].split("//")[1].split(":")[0]
             for s in services[f"{name}-peers"]["loadBalancer"]["servers"]]
    by_address = {a: n for n, a in MESH.items()}
    nodes = {by_address[p] for p in peers}
    if f"{name}-local" in services:
        nodes.add("node1")
    return sorted(nodes)


@pytest.mark.parametrize("case", ["stable", "offline", "fallback", "no view", "doubtful",
                                  "pinned"])
def test_routes_and_containers_get_the_same_nodes(tmp_path, case):
    """The traefik_config module (run as Ansible runs it) and the apps role's filter place
    the replicas on the same nodes from the same inputs."""
    first, second, third, fourth = ranked()
    reg = {"web": app(replicas=2)}
    online, placed = {
        "stable": (NODES, {"web": [third, fourth]}),
        "offline": ([first, second, third], {"web": [third, fourth]}),
        "fallback": ([first, second, third], {}),
        "no view": (None, {"web": [second, fourth]}),
        "doubtful": ([third], {"web": [first, second]}),
        "pinned": ([first], {}),
    }[case]
    if case == "pinned":
        reg = {"web": app(nodes=[second, third])}
    if case == "fallback":
        reg = {"web": app(replicas=4)}
    plan = apps_filters.apps_plan(reg, NODES, online=online, placed=placed)
    args = {"path": str(tmp_path / "hostmesh.yml"), "node": "node1", "nodes": MESH,
            "services": reg, "app_placement": placed}
    if online is not None:
        args["online_nodes"] = online
    result = run_module(tmp_path, args)
    assert not result.get("failed"), result
    assert routed_nodes(result["config"], "web") == sorted(plan["web"]["nodes"])
    expected = {
        "stable": [third, fourth],
        "offline": [third, first],
        "fallback": NODES,
        "no view": [second, fourth],
        "doubtful": [first, second],
        "pinned": [second, third],
    }[case]
    assert sorted(plan["web"]["nodes"]) == sorted(expected)
    warned = json.dumps(result.get("warnings", []))
    assert (f"{fourth} is not online (the primary's view), its replica moves to {first}"
            in warned) == (case == "offline")
    assert ("only 3 of its 4 replicas" in warned) == (case == "fallback")
    assert ("its view is not used for placement" in warned) == (case == "doubtful")


def test_the_module_refuses_a_malformed_placement(tmp_path):
    result = run_module(tmp_path, {"path": str(tmp_path / "h.yml"), "node": "node1",
                                   "nodes": MESH, "services": {"web": app(replicas=2)},
                                   "app_placement": {"web": "node1"}})
    assert result["failed"] and "app_placement: apps.web must be a list" in result["msg"]
    assert not (tmp_path / "h.yml").exists()


def test_online_nodes_from_a_node_info_result():
    nodes = [{"name": "node1", "status": "online"}, {"name": "node2", "status": "offline"},
             {"name": "node3", "status": "unreachable"}, {"name": "node4", "status": "online"},
             {"status": "online"}, "junk"]
    assert apps_filters.apps_online_nodes({"changed": False, "nodes": nodes}) == ["node1", "node4"]
    assert apps_filters.apps_online_nodes({"changed": False, "nodes": []}) == []
    # not asked: not known, nothing to say
    assert apps_filters.apps_online_nodes({"skipped": True}) is None
    assert apps_filters.apps_online_nodes(None) is None
    # asked, no answer: not known (the plan counts every node as online)
    assert apps_filters.apps_online_nodes({"failed": False, "msg": "connection refused"}) is None
    assert apps_filters.apps_online_nodes({"unreachable": True, "msg": "ssh: timeout"}) is None


def test_a_move_onto_a_taken_port_is_an_error_naming_both_apps():
    """Placement follows the view: an app moving next to another on the same port stops the
    plan before anything changes (the static validation could not see it)."""
    order = ranked("web")
    reg = {"web": app(replicas=1),
           "other": app(nodes=[order[1]], hosts=["o.lab.test"])}
    assert apps_filters.apps_plan(reg, NODES)["web"]["nodes"] == [order[0]]
    with pytest.raises(apps_filters.AnsibleFilterError) as err:
        apps_filters.apps_plan(reg, NODES, online=order[1:])
    assert f"app 'web': port 8081 on {order[1]} is already taken by 'other'" in str(err.value)
    assert "nothing was changed" in str(err.value)


def test_ports_are_checked_where_the_replicas_are_recorded(tmp_path):
    """A port that would collide only where rendezvous alone would put the replica is no
    error when the record keeps it elsewhere: for the apps role's checks and for Traefik."""
    order = ranked("web")
    reg = {"web": app(replicas=1), "other": app(nodes=[order[0]], hosts=["o.lab.test"])}
    collision = f"app 'web': port 8081 on {order[0]} is already taken by 'other'"
    assert collision in " ".join(apps_filters.apps_errors(reg, NODES))
    placed = {"web": [order[1]]}
    assert apps_filters.apps_errors(reg, NODES, placed=placed) == []
    assert apps_filters.apps_plan(reg, NODES, placed=placed)["web"]["nodes"] == [order[1]]
    args = {"path": str(tmp_path / "hostmesh.yml"), "node": "node1", "nodes": MESH,
            "services": reg}
    result = run_module(tmp_path, dict(args, app_placement=placed))
    assert not result.get("failed"), result
    assert routed_nodes(result["config"], "web") == [order[1]]
    result = run_module(tmp_path, args)
    assert result["failed"] and collision in result["msg"]


@pytest.mark.parametrize(("down", "used"), [(0, True), (1, True), (2, False), (4, False)])
def test_the_view_is_not_used_while_half_the_nodes_or_more_are_down(down, used):
    """The routes' and DNS's guard: a primary that sees half the cluster or more down may be
    the one cut off; its view would move every replica onto it."""
    first, second, third, fourth = ranked()
    online = [n for n in NODES if n not in (first, second, third, fourth)[:down]]
    reg = {"web": app(replicas=2)}
    out, notes = av.plan_placement(reg, NODES, online=online, placed={"web": [first, second]})
    if used:
        assert out["web"]["nodes"] == [n for n in NODES if n in (first, second, third)[down:][:2]]
        assert all("not used" not in n for n in notes)
    else:
        assert set(out["web"]["nodes"]) == {first, second}
        assert len(notes) == 1 and f"reports {down} of the 4 nodes not online" in notes[0]
    # no app with replicas: nothing to say
    assert av.plan_placement({"p": app(nodes=["node1"])}, NODES, online=online)[1] == []
