"""plugins/module_utils/_apps_validate.py: container apps in the registry (placement, bad input)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "collections"))

from ansible_collections.hostmesh.cluster.plugins.module_utils import _apps_validate as av
from ansible_collections.hostmesh.cluster.plugins.module_utils._traefik_build import (
    build_dynamic_config,
    validate_registry,
)

NODES = ["node1", "node2", "node3"]
MESH = {"node1": "10.50.0.1", "node2": "10.50.0.2", "node3": "10.50.0.3"}


def app(**kw):
    svc = {"hosts": ["whoami.lab.test"], "port": 8081, "health_path": "/",
           "container": {"image": "10.231.6.1:5000/hostmesh/whoami:1"}}
    svc.update(kw)
    return svc


def test_replicas_are_stable_and_nested():
    two = av.rendezvous("whoami", NODES, 2)
    three = av.rendezvous("whoami", NODES, 3)
    assert len(two) == 2 and set(two) < set(three) == set(NODES)
    assert av.rendezvous("whoami", list(reversed(NODES)), 2) == [n for n in reversed(NODES)
                                                                 if n in two]
    # A fourth node moves at most the one replica it wins.
    four = av.rendezvous("whoami", NODES + ["node4"], 2)
    assert len(set(four) & set(two)) >= 1
    # One replica per app lands on different nodes for different names (a spread).
    assert len({av.rendezvous(f"app{i}", NODES, 1)[0] for i in range(20)}) == 3


def test_resolve_placement_fills_nodes_and_keeps_others():
    reg = {"a": app(replicas=2), "b": app(nodes=["node2"], port=9000, hosts=["b.lab.test"])}
    out = av.resolve_placement(reg, NODES)
    assert out["a"]["nodes"] == av.rendezvous("a", NODES, 2) and "replicas" not in out["a"]
    assert out["b"] == reg["b"]
    assert reg["a"]["replicas"] == 2  # the input is not changed


@pytest.mark.parametrize(
    ("svc", "needle"),
    [
        (app(replicas=4), "replicas 4 is more than the 3 nodes"),
        (app(replicas=0), "replicas must be a positive integer"),
        (app(replicas=2, nodes=["node1"]), "either nodes or replicas"),
        (app(), "set nodes: [...] or replicas: N"),
        (app(nodes=["node1"], container={"image": "Bad Image!"}), "is not an image reference"),
        (app(nodes=["node1"], container={"image": "x", "cmd": "y"}), "unknown keys cmd"),
        (app(nodes=["node1"], container={"image": "x", "volumes": ["data"]}), "SOURCE:TARGET"),
        (app(nodes=["node1"], container={"image": "x", "volumes": ["d:rel"]}), "absolute path"),
        (app(nodes=["node1"], container={"image": "x", "restart_policy": "sometimes"}),
         "restart_policy must be one of"),
        (app(nodes=["node1"], container={"image": "x", "env": {"1A": "v"}}), "not a variable"),
        (app(nodes=["node1"], container={"image": "x", "healthcheck": {"interval": "5s"}}),
         "healthcheck must be a mapping with test"),
        (app(nodes=["node1"], port=8000), "used by the cluster itself"),
    ],
)
def test_bad_app_names_the_app(svc, needle):
    errors = av.validate_apps({"whoami": svc}, NODES, reserved_ports={8000, 8080})
    assert any(needle in e and "'whoami'" in e for e in errors), errors


def test_env_values_never_in_errors():
    errors = av.validate_apps(
        {"w": app(nodes=["node1"], container={"image": "x", "env": {"TOKEN": ["s3cr3t"]}})}, NODES
    )
    assert errors and not any("s3cr3t" in e for e in errors)


def test_port_taken_by_another_app_on_a_shared_node():
    reg = {"a": app(nodes=["node1", "node2"]),
           "b": app(nodes=["node2"], hosts=["b.lab.test"])}
    errors = av.validate_apps(reg, NODES)
    assert errors == [("app 'b': port 8081 on node2 is already taken by 'a'; give "
                      "hostmesh_services.b.port another port")]
    reg["b"]["nodes"] = ["node3"]
    assert av.validate_apps(reg, NODES) == []


def test_unknown_node_is_a_registry_error_naming_the_app():
    errors, _ = validate_registry({"whoami": app(nodes=["node9"])}, MESH)
    assert any("'whoami'" in e and "node9" in e for e in errors)


def test_good_images_parse():
    assert av.parse_image("10.231.6.1:5000/hostmesh/whoami:1") == (
        "10.231.6.1:5000", "hostmesh/whoami", "1", None)
    assert av.parse_image("team/app") == (None, "team/app", None, None)
    assert av.parse_image("localhost/app:2") == ("localhost", "app", "2", None)
    digest = "sha256:" + "a" * 64
    assert av.parse_image(f"reg.example.org/app@{digest}")[3] == digest


def test_traefik_routes_follow_replicas():
    reg = {"whoami": app(replicas=2)}
    placed = av.rendezvous("whoami", NODES, 2)
    assert validate_registry(reg, MESH)[0] == []
    unplaced = next(n for n in NODES if n not in placed)
    config = build_dynamic_config(reg, unplaced, MESH)
    servers = config["http"]["services"]["whoami-peers"]["loadBalancer"]["servers"]
    assert [s["url"] for s in servers] == [f"http://{MESH[n]}:8000" for n in placed]
    assert "whoami-local" in build_dynamic_config(reg, placed[0], MESH)["http"]["services"]


def test_app_plan_defaults():
    plan = av.app_plan({"whoami": app(nodes=["node1", "node3"]), "plain": {"port": 1}}, NODES)
    assert list(plan) == ["whoami"]
    ctr = plan["whoami"]["container"]
    assert plan["whoami"]["nodes"] == ["node1", "node3"]
    assert (ctr["port"], ctr["restart_policy"], ctr["env"], ctr["volumes"]) == (
        8081, "unless-stopped", {}, [])
