"""plugins/filter/apps.py: the apps role's routes during a rollout and its view of a node."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "collections"))

from ansible.errors import AnsibleFilterError
from ansible_collections.hostmesh.cluster.plugins.filter import apps as f

NODES = ["node1", "node2", "node3"]
APP = {"hosts": ["a.lab.test"], "port": 8082, "nodes": ["node1", "node3"],
       "container": {"image": "10.0.0.1:5000/a:1"}}
PLAIN = {"hosts": ["p.lab.test"], "port": 8081, "nodes": ["node2"]}


def test_routes_follow_ready_replicas_and_drain():
    reg = {"a": APP, "p": PLAIN}
    routed = [["a"], [], ["a"]]
    assert f.apps_routing(reg, NODES, routed)["a"]["nodes"] == ["node1", "node3"]
    drained = f.apps_routing(reg, NODES, routed, "node1", ["a"])
    assert drained["a"]["nodes"] == ["node3"]
    assert drained["p"] == PLAIN  # not an app: untouched
    # No ready replica: no route at all (not an empty, invalid node list).
    assert "a" not in f.apps_routing(reg, NODES, [[], [], []])
    with pytest.raises(AnsibleFilterError):
        f.apps_routing(reg, NODES, [["a"]])


def test_routes_of_replicas_apps():
    reg = {"a": {k: v for k, v in APP.items() if k != "nodes"} | {"replicas": 2}}
    assert f.apps_routing(reg, NODES, [["a"], ["a"], ["a"]])["a"]["nodes"] == NODES
    assert "replicas" not in f.apps_routing(reg, NODES, [["a"], [], []])["a"]


def test_containers_of_a_node():
    info = [
        {"Labels": {"hostmesh.app": "a"}, "State": "running"},
        {"Labels": {"hostmesh.app": "b"}, "State": "exited"},
        {"Labels": {"other": "x"}, "State": "running"},
        {"Labels": None, "State": "running"},
    ]
    assert f.apps_containers(info) == {"a": True, "b": False}
    assert f.apps_containers(None) == {}


def test_image_ref_and_plan():
    assert f.apps_image_ref("10.0.0.1:5000/hostmesh/whoami:2") == {
        "registry": "10.0.0.1:5000", "path": "hostmesh/whoami", "reference": "2"}
    assert f.apps_image_ref("whoami")["reference"] == "latest"
    with pytest.raises(AnsibleFilterError):
        f.apps_image_ref("Not An Image")
    app = dict(APP, container={"image": "x", "env": {"N": 3}, "volumes": ["data:/d", "/srv:/s:ro"]})
    plan = f.apps_plan({"a": app, "p": PLAIN}, NODES)
    assert list(plan) == ["a"]
    ctr = plan["a"]["container"]
    assert ctr["env"] == {"N": "3"}
    assert ctr["mounts"] == ["hostmesh-a-data:/d", "/srv:/s:ro"]
    assert ctr["named_volumes"] == ["hostmesh-a-data"]
    assert f.apps_errors({"a": dict(APP, replicas=5)}, NODES) != []
