"""Container apps on the site lab (issue 16): hostmesh.cluster.apps in site.yml.

Runs on the shared site lab (the `site` fixture: drill-node1..3, converged once
by the real site.yml). The lab's gateway runs Debian's docker-registry with the
demo image built on the controller (scripts/lab_gateway.py); the nodes run
Debian's Docker Engine and pull from it.

- The lab's whoami is a container app: from the lab registry, on node1 and
  node3 only, answering through every node; no systemd demo unit anywhere; the
  agents report it (the dynamic inventory's hostmesh_app_whoami group).
- The apps drill (scripts/apps_drill.py) with a second app `hello`: deploy,
  rerun changed=0, roll 1 -> 2 under load through every node, scale 2 -> 3 -> 2
  under load, a rollout whose health check fails stops at the first node with
  the other still on version 2, removal; 0 failed requests in each phase.
  whoami's containers are not touched by any of it.
- An app from a registry with basic auth (the password in no output, -vvv
  included); removing it keeps its named volume, `apps_purge` deletes it.
- A bad app (unknown node, more replicas than nodes, an image the registry
  does not have, a port another app takes on the same node) stops site.yml in
  its up-front checks, naming the app, before any play that changes a node.
The module leaves the cluster as it found it (hello removed).
"""

from __future__ import annotations

import secrets
import time

import apps_drill
import lab_registry
import pytest
import yaml
from sitedrill import LAB, RUNS_WHOAMI, docker, get, inventory_groups, on_node, wait_for
from sitelab import changed_count, run_playbook


def whoami_containers() -> dict[str, str]:
    """node -> `image id` of its whoami container ('' when it has none, or no
    Docker Engine: a node without apps does not get one)."""
    return {n: docker("exec", LAB.container(n), "docker", "ps", "--filter",
                      "label=hostmesh.app=whoami", "--format", "{{.Image}} {{.ID}}",
                      check=False).stdout.strip() for n in LAB.nodes}


def test_whoami_is_a_container_from_the_lab_registry(site):
    image = f"{apps_drill.registry(LAB)}/{lab_registry.REPOSITORY}:1"
    running = whoami_containers()
    assert {n for n, c in running.items() if c} == RUNS_WHOAMI, running
    assert all(c.split()[0] == image for c in running.values() if c), running
    for node in LAB.nodes:
        # the systemd demo of earlier versions is gone
        assert on_node(node, "sh", "-c", "systemctl cat hostmesh-whoami.service >/dev/null 2>&1"
                       " && echo unit || echo none") == "none", node
        status, body = get(node)
        assert status == 200 and body in RUNS_WHOAMI, (node, status, body)
        if node in RUNS_WHOAMI:
            assert body == node  # served by its own replica


def test_agents_report_whoami_to_the_primary(site):
    # a report is as fresh as the node's last heartbeat (5 s) plus the reporter's 5 s
    groups = wait_for(
        lambda: (g := inventory_groups(site.cfg)).get("hostmesh_app_whoami") and g,
        60, "the hostmesh_app_whoami group in the dynamic inventory")
    assert sorted(groups["hostmesh_app_whoami"]) == sorted(RUNS_WHOAMI)


def test_apps_roll_out_scale_stop_and_go_without_a_failed_request(site):
    before = whoami_containers()
    apps_drill.push_images(LAB)
    figures = apps_drill.scenario(LAB, site.inventory)  # each check fails the test
    for name, (value, unit) in figures.items():
        print(f"{name}: {value:.1f} {unit}" if isinstance(value, float) else
              f"{name}: {value} {unit}")
    for phase in ("rollout", "scale_up", "scale_down", "bad_rollout"):
        assert figures[f"apps_{phase}_failed_requests"][0] == 0, phase
    assert figures["apps_noop_changed_tasks"][0] == 0
    assert whoami_containers() == before  # the other app was never touched


BAD_APPS = {
    "unknown node": ({"nodes": ["node9"]}, "node9"),
    "more replicas than nodes": ({"replicas": 5}, "replicas"),
    "image not in the registry": ({"image": "nope"}, "is not in its registry"),
    "port of another app": ({"port": 8081, "nodes": ["node1"]}, "8081"),
}


@pytest.mark.parametrize("case", list(BAD_APPS))
def test_bad_app_stops_site_yml_before_any_node_changes(site, case):
    settings, says = BAD_APPS[case]
    registry = apps_drill.services(LAB, settings.get("image", "1"))
    hello = registry["hello"]
    if "nodes" in settings:
        hello.pop("replicas")
        hello["nodes"] = settings["nodes"]
    hello.update({k: v for k, v in settings.items() if k in ("replicas", "port")})
    extra = site.inventory.parent / "bad-app.yml"
    extra.write_text(yaml.safe_dump({"hostmesh_services": registry}))
    proc, _ = run_playbook(site.inventory, "site.yml", "-e", f"@{extra}", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "'hello'" in out and says in out, out[-3000:]
    # stopped by the up-front checks: no play that changes a node began
    assert "PLAY [Close every port" not in out, out[-3000:]
    assert changed_count(proc.stdout) == 0


def test_private_registry_and_volumes_kept_until_purged(site, tmp_path):
    """An app from a registry with basic auth (apps_registries; the password never
    in the output, -vvv included); removing it keeps its volume, apps_purge deletes it."""
    private = apps_drill.registry(LAB).rsplit(":", 1)[0] + ":5001"
    password = secrets.token_urlsafe(18)
    state = site.inventory / ".hostmesh"
    (state / "private-registry.htpasswd").write_text(
        lab_registry.htpasswd_line("lab", password) + "\n")
    lab_registry.start(state, private, name="private-registry",
                       htpasswd=state / "private-registry.htpasswd")
    try:
        lab_registry.push_demo(private, "1", credentials=("lab", password))
        vault = {"hosts": ["vault.lab.test"], "port": 8083, "nodes": ["node1"],
                 "health_path": "/", "container": {"image": f"{private}/hostmesh/whoami:1",
                                                   "port": 8080, "volumes": ["data:/data"]}}

        def apps(with_vault: bool, *args: str, purge=()):
            extra = tmp_path / f"vault-{time.monotonic_ns()}.yml"
            extra.write_text(yaml.safe_dump({
                "hostmesh_services": {**apps_drill.LAB_SERVICES,
                                      **({"vault": vault} if with_vault else {})},
                "apps_registries": {private: {"username": "lab", "password": password}},
                "apps_purge": list(purge)}))
            proc, _ = run_playbook(site.inventory, "playbooks/apps.yml", "-e", f"@{extra}", *args)
            return proc

        def volumes() -> list[str]:
            return on_node("node1", "docker", "volume", "ls", "-q").split()

        deployed = apps(True, "-vvv")
        assert password not in deployed.stdout + deployed.stderr
        assert on_node("node1", "docker", "ps", "--filter", "label=hostmesh.app=vault",
                       "--format", "{{.Image}}") == f"{private}/hostmesh/whoami:1"
        status, body = apps_drill.get_host(LAB.address("node2"), "vault.lab.test")[::2]
        assert (status, body) == (200, "node1")
        assert "hostmesh-vault-data" in volumes()

        apps(False)
        assert on_node("node1", "docker", "ps", "-a", "--filter", "label=hostmesh.app=vault",
                       "--format", "{{.Names}}") == ""
        assert apps_drill.get_host(LAB.address("node2"), "vault.lab.test")[0] == 404
        assert "hostmesh-vault-data" in volumes()  # kept: not in apps_purge

        apps(True)
        apps(False, purge=["vault"])
        assert "hostmesh-vault-data" not in volumes()
    finally:
        lab_registry.stop(state, name="private-registry")
