"""The traefik role's routes with traefik_follow_primary_view (issue 17), run by the
real ansible-playbook on this machine (local connection, every path in a temporary
directory): the role writes hostmesh-routes.json and renders Traefik's file through
the agent's installer; the installer (as hostmesh-routes.path starts it) takes an
offline peer out; a second run and --check --diff then change nothing and leave the
agent's membership alone; a registry change keeps the view; off puts every peer back.
The unit templates render.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
MESH = {"node1": "10.50.0.1", "node2": "10.50.0.2", "node3": "10.50.0.3"}
WHOAMI = {"hosts": ["whoami.lab.test"], "port": 8081, "nodes": ["node1", "node3"],
          "health_path": "/"}


@pytest.fixture
def site(tmp_path):
    conf, agent = tmp_path / "etc-traefik", tmp_path / "agent"
    (conf / "dynamic").mkdir(parents=True)
    (agent / "routing-inbox").mkdir(parents=True, mode=0o700)
    hosts = {name: {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                    "wireguard_mesh_address": address} for name, address in MESH.items()}
    inv = tmp_path / "hosts.yml"
    inv.write_text(json.dumps({"hostmesh_nodes": {"hosts": hosts, "children": {
        "hostmesh_primary": {"hosts": {"node1": {}}}}}}))
    return {"tmp": tmp_path, "conf": conf, "agent": agent, "inv": inv,
            "dynamic": conf / "dynamic" / "hostmesh.yml",
            "source": conf / "hostmesh-routes.json"}


def run(site, on: bool | str, services: dict, *extra: str,
        venv: str = sys.prefix) -> tuple[dict, str]:
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    play = site["tmp"] / "play.yml"
    play.write_text(json.dumps([{
        "hosts": "node2", "gather_facts": False,
        "vars": {"hostmesh_services": services, "traefik_follow_primary_view": on,
                 "traefik_config_dir": str(site["conf"]),
                 "traefik_dynamic_dir": str(site["conf"] / "dynamic"),
                 "traefik_group": group, "traefik_view_agent_user": user,
                 "traefik_view_agent_data_dir": str(site["agent"]),
                 "traefik_view_agent_venv": venv},
        "tasks": [{"name": "routes", "ansible.builtin.import_role": {
            "name": "traefik", "tasks_from": "routes"}}]}]))
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_STDOUT_CALLBACK": "default", "PATH": f"{BIN}:{os.environ['PATH']}",
           "ANSIBLE_COLLECTIONS_PATH": str(ROOT / "collections"),
           "ANSIBLE_STRATEGY": "linear"}
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(site["inv"]), str(play),
                           *extra], capture_output=True, text=True, env=env, timeout=300,
                          check=False, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recap = proc.stdout[proc.stdout.rindex("PLAY RECAP"):]
    counts = dict(part.split("=") for part in recap.split(":", 1)[1].split() if "=" in part)
    return {k: int(v) for k, v in counts.items()}, proc.stdout + proc.stderr


def peers(site, service="whoami-peers") -> list[str]:
    config = json.loads(site["dynamic"].read_text())
    return [s["url"] for s in config["http"]["services"][service]["loadBalancer"]["servers"]]


def agent_view(site, names: list[str]) -> None:
    """What node2's agent and hostmesh-routes.path/.service do on a new view."""
    (site["agent"] / "routing-inbox" / "offline.json").write_text(
        json.dumps({"offline_nodes": names}))
    proc = subprocess.run(
        [sys.executable, "-m", "hostmesh.agent.routing", "install", "--source",
         str(site["source"]), "--inbox", str(site["agent"] / "routing-inbox"),
         "--dynamic-file", str(site["dynamic"])],
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr


def test_the_role_and_the_agent_share_the_routes_without_fighting(site):
    services = {"whoami": WHOAMI}
    counts, out = run(site, True, services)
    assert counts["changed"] == 2, out  # the routes file, then the installer
    assert peers(site) == ["http://10.50.0.1:8000", "http://10.50.0.3:8000"]
    assert json.loads(site["source"].read_text())["node"] == "node2"
    counts, out = run(site, True, services)
    assert counts["changed"] == 0, out
    # node3 goes offline in the primary's view
    agent_view(site, ["node3"])
    assert peers(site) == ["http://10.50.0.1:8000"]
    for extra in ((), ("--check", "--diff")):
        counts, out = run(site, True, services, *extra)
        assert counts["changed"] == 0, out
        assert peers(site) == ["http://10.50.0.1:8000"]
    # a registry change reaches Traefik with the view still applied
    services["solo"] = {"hosts": ["solo.lab.test"], "port": 8082, "nodes": ["node3"],
                        "health_path": "/"}
    counts, out = run(site, True, services, "--check", "--diff")
    assert counts["changed"] == 1 and "solo.lab.test" in out, out
    assert "solo" not in site["dynamic"].read_text()
    counts, out = run(site, True, services)
    assert counts["changed"] == 2, out
    assert peers(site) == ["http://10.50.0.1:8000"]
    assert peers(site, "solo-peers") == ["http://10.50.0.3:8000"]  # never emptied
    # off: the role writes Traefik's file itself again, every peer back
    counts, out = run(site, False, services)
    assert counts["changed"] == 1, out  # one task: the routes file removed, the dynamic file
    assert not site["source"].exists()
    assert peers(site) == ["http://10.50.0.1:8000", "http://10.50.0.3:8000"]
    # the installer, if its path unit is still there, finds nothing to render
    agent_view(site, ["node3"])
    assert peers(site) == ["http://10.50.0.1:8000", "http://10.50.0.3:8000"]
    counts, out = run(site, False, services)
    assert counts["changed"] == 0, out


def test_auto_follows_the_view_where_the_node_agent_is_installed(site):
    services = {"whoami": WHOAMI}
    # no agent on the node (a consumer running Traefik alone): plain routes
    counts, out = run(site, "auto", services, venv=str(site["tmp"] / "no-agent"))
    assert counts["changed"] == 1, out
    assert not site["source"].exists()
    assert peers(site) == ["http://10.50.0.1:8000", "http://10.50.0.3:8000"]
    # the agent's Python is there (site.yml installs it on every node): the view
    counts, out = run(site, "auto", services)
    assert counts["changed"] == 2, out  # the routes file, then the installer
    assert json.loads(site["source"].read_text())["node"] == "node2"
    agent_view(site, ["node3"])
    assert peers(site) == ["http://10.50.0.1:8000"]
    counts, out = run(site, "auto", services)
    assert counts["changed"] == 0, out
    # the agent goes away: the routes file goes, every peer is back
    counts, out = run(site, "auto", services, venv=str(site["tmp"] / "no-agent"))
    assert counts["changed"] == 1, out  # the routes file removed, the dynamic file
    assert not site["source"].exists()
    assert peers(site) == ["http://10.50.0.1:8000", "http://10.50.0.3:8000"]


def test_the_installer_units_render():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(ROOT / "roles/traefik/templates"),
                             undefined=jinja2.StrictUndefined)
    values = {"ansible_managed": "managed", "traefik_view_agent_data_dir": "/var/lib/hostmesh",
              "traefik_view_agent_venv": "/opt/hostmesh/venv",
              "traefik_config_dir": "/etc/traefik", "traefik_dynamic_dir": "/etc/traefik/dynamic"}
    service = env.get_template("hostmesh-routes.service.j2").render(values)
    assert ("ExecStart=/opt/hostmesh/venv/bin/python -m hostmesh.agent.routing install "
            "--source /etc/traefik/hostmesh-routes.json --inbox /var/lib/hostmesh/"
            "routing-inbox --dynamic-file /etc/traefik/dynamic/hostmesh.yml") in service
    assert "ReadWritePaths=/etc/traefik/dynamic\n" in service
    path = env.get_template("hostmesh-routes.path.j2").render(values)
    assert "PathChanged=/var/lib/hostmesh/routing-inbox\n" in path
    assert "Unit=hostmesh-routes.service" in path


@pytest.mark.parametrize(("value", "ok"), [("maybe", False), ("auto", True), ("false", True)])
def test_the_settings_check_refuses_an_unknown_view_setting(tmp_path, value, ok):
    inv = tmp_path / "hosts.yml"
    inv.write_text(json.dumps({"hostmesh_nodes": {"hosts": {"node1": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        "wireguard_mesh_address": "10.50.0.1"}}}}))
    play = tmp_path / "play.yml"
    play.write_text(json.dumps([{
        "hosts": "node1", "gather_facts": False,
        "vars": {"hostmesh_services": {}, "traefik_dynamic_dir": str(tmp_path),
                 "traefik_follow_primary_view": value},
        "tasks": [{"ansible.builtin.import_role": {"name": "traefik", "tasks_from": "settings"}}]}]))
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_COLLECTIONS_PATH": str(ROOT / "collections"), "ANSIBLE_STRATEGY": "linear",
           "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inv), str(play)],
                          capture_output=True, text=True, env=env, timeout=300, check=False,
                          cwd=ROOT)
    assert (proc.returncode == 0) is ok, proc.stdout + proc.stderr
    if not ok:
        assert "traefik_follow_primary_view must be true, false or auto, got maybe" in proc.stdout
