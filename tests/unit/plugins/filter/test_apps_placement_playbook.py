"""Placement with the primary's view, end to end (issue 16).

A real primary and two real secondaries (`hostmesh agent` on 127.8.43.x, real HTTP,
real SQLite); the real `ansible-playbook` runs, as site.yml does, Traefik's routes
(roles/traefik/tasks/routes.yml with the real traefik_config module) and then the apps
role's preflight (the node list asked on the primary with the admin token from the
controller's secret file, the plan, the record on the controller). Every host uses the
local connection; nothing leaves loopback.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "tests" / "integration" / "inventory"))
sys.path.insert(0, str(ROOT / "collections"))
from ansible_collections.hostmesh.cluster.plugins.module_utils._apps_validate import rendezvous
from livecluster import Cluster, ansible_env, run

ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")
NODES = ["node1", "node2", "node3"]
# an app whose two replicas land on node3 when nothing else is known
APP = next(f"web{i}" for i in range(100) if "node3" in rendezvous(f"web{i}", NODES, 2))

PLAYBOOK = """
- name: Traefik's routes (as site.yml runs them, before the apps)
  hosts: hostmesh_nodes
  gather_facts: false
  tasks:
    - name: Render the routes
      ansible.builtin.include_role:
        name: hostmesh.cluster.traefik
        tasks_from: routes.yml

- name: The apps role's plan
  hosts: hostmesh_nodes
  gather_facts: false
  tasks:
    - name: Plan
      ansible.builtin.include_role:
        name: hostmesh.cluster.apps
        tasks_from: preflight.yml
    - name: Show the plan to the test
      ansible.builtin.copy:
        content: "{{ {'plan': _apps_plan, 'here': _apps_plan | dict2items | selectattr('value.nodes', 'contains', inventory_hostname) | map(attribute='key') | list} | to_json }}"
        dest: "{{ out_dir }}/plan-{{ inventory_hostname }}.json"
        mode: "0644"
      delegate_to: localhost
      changed_when: false
      check_mode: false
"""


@pytest.fixture
def lab(tmp_path):
    cluster = Cluster(tmp_path / "cluster", net=43)
    try:
        cluster.start_primary(name="node1", APPS_REPORT="false")
        cluster.start_secondary("node2", 2, APPS_REPORT="false")
        cluster.start_secondary("node3", 3, APPS_REPORT="false")
        cluster.wait_for(lambda n: {"node2", "node3"} <= set(n), what="node2 and node3 registered")
        state = tmp_path / "state"
        (state / "secrets").mkdir(parents=True, mode=0o700)
        token = state / "secrets" / "admin_token"
        token.write_text(cluster.admin_token)
        token.chmod(0o600)
        hosts = {
            name: {
                "wireguard_mesh_address": f"10.50.0.{i}",
                "traefik_config_dir": str(tmp_path / name),
                "traefik_dynamic_dir": str(tmp_path / name / "dynamic"),
            }
            for i, name in enumerate(NODES, 1)
        }
        for name in NODES:
            (tmp_path / name / "dynamic").mkdir(parents=True)
        inventory = {"all": {
            "vars": {
                "ansible_connection": "local",
                "ansible_python_interpreter": sys.executable,
                "hostmesh_state_dir": str(state),
                "apps_primary_api_url": cluster.primary.url,
                "apps_check_images": False,
                "traefik_group": "root",
                "traefik_follow_primary_view": False,
                "out_dir": str(tmp_path),
                "hostmesh_services": {APP: {
                    "hosts": ["web.lab.test"], "port": 8081, "health_path": "/", "replicas": 2,
                    "container": {"image": "10.231.43.1:5000/hostmesh/web:1"}}},
            },
            "children": {"hostmesh_nodes": {"children": {
                "hostmesh_primary": {"hosts": {"node1": hosts["node1"]}},
                "hostmesh_secondary": {"hosts": {"node2": hosts["node2"],
                                                 "node3": hosts["node3"]}},
            }}},
        }}
        (tmp_path / "inventory.yml").write_text(json.dumps(inventory))
        (tmp_path / "playbook.yml").write_text(PLAYBOOK)
        yield cluster, tmp_path
    finally:
        cluster.stop()


def play(tmp_path, *args):
    res = run([ANSIBLE_PLAYBOOK, "-i", str(tmp_path / "inventory.yml"),
               str(tmp_path / "playbook.yml"), *args], ansible_env(), timeout=180)
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-3000:]
    changed = sum(int(n) for n in re.findall(r"changed=(\d+)", res.stdout))
    return res, changed


def plan(tmp_path):
    here = {n: json.loads((tmp_path / f"plan-{n}.json").read_text()) for n in NODES}
    nodes = here["node1"]["plan"][APP]["nodes"]
    assert all(here[n]["plan"][APP]["nodes"] == nodes for n in NODES)
    assert [n for n in NODES if APP in here[n]["here"]] == nodes
    return nodes


def record(tmp_path):
    return json.loads((tmp_path / "state" / "apps_placement.json").read_text())


def routed(tmp_path):
    """Per node, the nodes its Traefik sends the app's requests to (local first, then peers)."""
    by_address = {f"10.50.0.{i}": n for i, n in enumerate(NODES, 1)}
    out = {}
    for node in NODES:
        services = json.loads((tmp_path / node / "dynamic" / "hostmesh.yml").read_text())[
            "http"]["services"]
        peers = {by_address[s["url"].split("//")[1].split(":")[0]]
                 for s in services[f"{APP}-peers"]["loadBalancer"]["servers"]}
        out[node] = sorted(peers | ({node} if f"{APP}-local" in services else set()))
    return out


def test_replicas_follow_the_primarys_view_and_stay(lab):
    cluster, tmp = lab
    # 1. every node online, nothing recorded: the rendezvous placement, routes agree
    res, _ = play(tmp)
    first = plan(tmp)
    assert first == rendezvous(APP, NODES, 2) and "node3" in first
    assert record(tmp) == {"hostmesh_apps_placement": 1, "apps": {APP: first}}
    assert "[WARNING]" not in res.stdout + res.stderr.replace("[WARNING]: Deprecation", "")
    assert all(v == sorted(first) for v in routed(tmp).values())
    assert play(tmp)[1] == 0  # converged: routes and record unchanged
    assert play(tmp, "--check", "--diff")[1] == 0

    # 2. node3 goes offline: its replica moves to the online node left, with a warning
    cluster.agents["node3"].stop()
    cluster.wait_for(lambda n: n["node3"]["status"] != "online", what="node3 offline")
    res, _ = play(tmp, "--check")  # check mode: the same plan, nothing written
    assert plan(tmp) == ["node1", "node2"]
    assert record(tmp)["apps"][APP] == first
    res, _ = play(tmp)
    moved = plan(tmp)
    assert moved == ["node1", "node2"]
    out = res.stdout + res.stderr
    assert f"app '{APP}': node3 is not online (the primary's view), its replica moves to " in out
    assert record(tmp)["apps"][APP] == moved
    # the next run's routes (rendered before the apps, as in site.yml) follow the record
    play(tmp)
    assert all(v == moved for v in routed(tmp).values())
    assert play(tmp)[1] == 0

    # 3. node3 is back: nothing moves back (stable), nothing changes
    cluster.agents["node3"].start()
    cluster.wait_for(lambda n: n["node3"]["status"] == "online", what="node3 online again")
    res, changed = play(tmp, "-vvv")
    assert plan(tmp) == moved and changed == 0
    assert "is not online" not in res.stdout + res.stderr
    # -vvv shows the module's arguments: the token is masked there, and nowhere else
    assert '"token": "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"' in res.stdout
    assert cluster.admin_token not in res.stdout + res.stderr

    # 4. the primary does not answer: a warning, the recorded placement stays
    res, changed = play(tmp, "-e", "apps_primary_api_url=http://127.0.0.1:9")
    out = res.stdout + res.stderr
    assert "the primary's node list could not be read" in out and changed == 0
    assert plan(tmp) == moved
    assert cluster.admin_token not in out


def test_too_few_online_nodes_and_a_doubtful_view(lab):
    cluster, tmp = lab
    three = json.dumps({"hostmesh_services": {APP: {
        "hosts": ["web.lab.test"], "port": 8081, "health_path": "/", "replicas": 3,
        "container": {"image": "10.231.43.1:5000/hostmesh/web:1"}}}})
    play(tmp)
    cluster.agents["node3"].stop()
    cluster.wait_for(lambda n: n["node3"]["status"] != "online", what="node3 offline")
    # 3 replicas, 2 nodes online: node3 still gets one (never a failure), with a warning
    res, _ = play(tmp, "-e", three)
    assert plan(tmp) == NODES
    assert (f"app '{APP}': only 2 of its 3 replicas fit on nodes the primary reports online; "
            "node3 gets one although not online") in res.stdout + res.stderr
    # back to 2 replicas: node3 (offline) is the one dropped
    play(tmp)
    assert plan(tmp) == ["node1", "node2"]
    play(tmp)  # the routes (rendered before the plan) follow the new record
    assert all(v == ["node1", "node2"] for v in routed(tmp).values())
    # node2 down as well: 2 of 3 nodes not online, the primary may be the one cut off;
    # its view is not used, nothing moves
    cluster.agents["node2"].stop()
    cluster.wait_for(lambda n: n["node2"]["status"] != "online", what="node2 offline")
    res, changed = play(tmp)
    assert plan(tmp) == ["node1", "node2"] and changed == 0
    assert ("apps: the primary reports 2 of the 3 nodes not online (node2, node3); with half "
            "or more down it may be the one cut off") in res.stdout + res.stderr
    # no admin token on the controller: a warning, never a failure
    (tmp / "state" / "secrets" / "admin_token").unlink()
    res, changed = play(tmp)
    assert "no admin token" in res.stdout + res.stderr
    assert plan(tmp) == ["node1", "node2"] and changed == 0
