"""hostmesh.cluster.nodes: app groups and app host variables (issue 16).

A real primary and two real secondaries (`hostmesh agent` on 127.8.7.x, real HTTP,
real SQLite); the secondaries' app reports are sent with their own keys over HTTP as
their heartbeats carry them (their agents run with APPS_REPORT=false so that their own
heartbeats leave those reports alone; reading Docker is tested in
tests/unit/agent/test_agent_apps_docker.py). The inventory is read with the real
`ansible-inventory` and `ansible` commands.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from ansible_collections.hostmesh.cluster.plugins.inventory.nodes import normalize_apps

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "tests" / "integration" / "inventory"))
from livecluster import (
    ANSIBLE,
    ANSIBLE_INVENTORY,
    Cluster,
    ansible_env,
    group_hosts,
    inventory_list,
    run,
    write_cfg,
)

WEB2 = {"name": "web", "container": "hostmesh-web", "image": "reg:5000/web:2",
        "state": "running", "health": "healthy"}
ODD2 = {"name": "my-app.v2", "container": "hostmesh-my-app.v2", "image": "reg:5000/odd:1",
        "state": "exited", "health": "none"}
WEB3 = {**WEB2, "health": "unhealthy"}


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path / "cluster", net=7)
    try:
        c.start_primary(NODE_WIREGUARD_IP="10.50.0.1",
                        APPS_REPORT_FILE=str(tmp_path / "no-apps.json"))
        c.start_secondary("node2", 2, NODE_WIREGUARD_IP="10.50.0.2", APPS_REPORT="false")
        c.start_secondary("node3", 3, NODE_WIREGUARD_IP="10.50.0.3", APPS_REPORT="false")
        c.wait_for(lambda n: {"node2", "node3"} <= set(n) and n["primary"]["apps_at"],
                   what="node2 and node3 registered, the primary's own apps recorded")
        for name, apps in (("node2", [WEB2, ODD2]), ("node3", [WEB3])):
            c.heartbeat_as(name, {"apps": apps})
        yield c
    finally:
        c.stop()


def test_app_groups_and_host_vars(cluster, tmp_path):
    env = ansible_env(cluster.admin_token)
    cfg = write_cfg(tmp_path / "apps.hostmesh.yml", cluster.primary.url)
    data = inventory_list(cfg, env)
    assert group_hosts(data, "hostmesh_app_web") == ["node2", "node3"]
    # characters a group name cannot hold become _; the exited replica is in the group too
    assert group_hosts(data, "hostmesh_app_my_app_v2") == ["node2"]
    assert not [g for g in data if g.startswith("hostmesh_app_") and
                g not in ("hostmesh_app_web", "hostmesh_app_my_app_v2")]
    hostvars = data["_meta"]["hostvars"]
    assert hostvars["node2"]["hostmesh_apps"] == [ODD2, WEB2]
    assert hostvars["node3"]["hostmesh_apps"] == [WEB3]
    assert hostvars["primary"]["hostmesh_apps"] == []  # no Docker there: no apps
    assert hostvars["node2"]["hostmesh_apps_at"] and hostvars["primary"]["hostmesh_apps_at"]
    assert cluster.admin_token not in json.dumps(data)

    # the groups work as host patterns, and the variables in templates
    res = run([ANSIBLE, "-i", str(cfg), "hostmesh_app_web", "--list-hosts"], env)
    assert res.returncode == 0, res.stderr
    assert sorted(line.strip() for line in res.stdout.splitlines()[1:]) == ["node2", "node3"]
    res = run([ANSIBLE, "-i", str(cfg), "node3", "-c", "local", "-m", "ansible.builtin.debug",
               "-a", "msg={{ hostmesh_apps | map(attribute='health') | join(',') }}"], env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert '"msg": "unhealthy"' in res.stdout

    # another prefix
    cfg2 = write_cfg(tmp_path / "prefix.hostmesh.yml", cluster.primary.url,
                     app_group_prefix="runs_")
    data = inventory_list(cfg2, env)
    assert group_hosts(data, "runs_web") == ["node2", "node3"]
    assert "hostmesh_app_web" not in data


def test_a_new_report_moves_the_hosts_between_groups(cluster, tmp_path):
    env = ansible_env(cluster.admin_token)
    cfg = write_cfg(tmp_path / "apps.hostmesh.yml", cluster.primary.url)
    cluster.heartbeat_as("node3", {"apps": []})
    data = inventory_list(cfg, env)
    assert group_hosts(data, "hostmesh_app_web") == ["node2"]
    assert data["_meta"]["hostvars"]["node3"]["hostmesh_apps"] == []


@pytest.mark.parametrize(("apps", "kept"), [
    (None, []), ("web", []), ({"web": WEB2}, []), ([WEB2, "x", 3, None], [WEB2]),
    ([{**WEB2, "name": "bad name"}, {**WEB2, "name": "../x"}, {"state": "running"}], []),
    ([{**WEB2, "env": ["A=secret"], "image": 7}], [{**WEB2, "image": None}]),
])
def test_whatever_a_primary_sends_hostmesh_apps_is_a_list_of_known_keys(apps, kept):
    assert normalize_apps(apps) == kept



def test_a_node_cannot_report_itself_into_the_inventorys_own_groups(cluster, tmp_path):
    """Apps are what a node says it runs: an app named after a group the plugin makes never
    puts the node in that group, and the prefix may not be empty. (A group can never take a
    host's name: a host whose name starts with the prefix is skipped.)"""
    env = ansible_env(cluster.admin_token)
    cluster.heartbeat_as("node2", {"apps": [
        {**WEB2, "name": "primary", "container": "hostmesh-primary"},
        {**WEB2, "name": "online", "container": "hostmesh-online"}]})

    def listed(prefix: str):
        cfg = write_cfg(tmp_path / f"p{len(prefix)}.hostmesh.yml", cluster.primary.url,
                        app_group_prefix=prefix)
        return run([ANSIBLE_INVENTORY, "-i", str(cfg), "--list"], env)

    res = listed("hostmesh_")
    assert res.returncode == 0, res.stderr
    assert group_hosts(json.loads(res.stdout), "hostmesh_primary") == ["primary"]
    for taken in ("hostmesh_primary", "hostmesh_online"):
        assert f"group '{taken}', made from what it reports: that name is taken" in res.stderr
    for prefix in ("", "a-b"):
        res = listed(prefix)
        assert "app_group_prefix" in res.stderr and "must be a non-empty prefix" in res.stderr
