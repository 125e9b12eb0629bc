"""playbooks/preflight.yml refuses a container connection on a host that is not
a lab host, before any host is contacted, with a message that says what to do.

Real ansible-playbook on throw-away inventories; no container is needed: the
refusal happens on the controller, and a lab host (hostmesh_lab: true) passes
the check and fails only later, when its (absent) container does not answer.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
BIN = ROOT / ".venv" / "bin"


def inventory(tmp_path: Path, node_vars: dict, other_vars: dict | None = None) -> Path:
    # Loopback only: should a check ever let a run through, it contacts nothing else.
    other = other_vars or {"ansible_host": "127.0.0.1", "ansible_user": "admin"}
    hosts = {
        "hostmesh_nodes": {
            "children": {
                "hostmesh_primary": {
                    "hosts": {"prod1": {"ansible_host": "127.0.0.1", **node_vars}}
                },
                "hostmesh_secondary": {"hosts": {"prod2": other}},
            }
        }
    }
    path = tmp_path / "hosts.yml"
    path.write_text(json.dumps(hosts))
    return path


def preflight(inv: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_FORCE_COLOR": "false",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inv), "playbooks/preflight.yml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("connection", ["docker", "community.docker.docker"])
def test_container_connection_on_a_real_host_stops_before_any_host(tmp_path, connection):
    proc = preflight(inventory(tmp_path, {"ansible_connection": connection}))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "prod1 uses a container connection" in out, out
    assert f"ansible_connection: {connection}" in out
    assert "set it to ssh" in out and "inventory/example/hosts.yml" in out
    assert "hostmesh_lab: true" in out
    # Stopped in the controller-side play: no host was contacted.
    assert "TASK [Require every node to answer]" not in out, out
    assert "prod2" not in out.split("PLAY RECAP")[0].split("a real connection and distinct public addresses")[1]


def test_lab_host_may_use_a_container_connection(tmp_path):
    lab = {"ansible_connection": "docker", "hostmesh_lab": True}
    proc = preflight(
        inventory(
            tmp_path,
            {**lab, "ansible_host": "hostmesh-no-such-container1"},
            {**lab, "ansible_host": "hostmesh-no-such-container2"},
        )
    )
    out = proc.stdout + proc.stderr
    assert "uses a container connection" not in out, out
    # It passed the inventory checks and went on to contact the hosts (which do
    # not exist here): the run fails at the ping, not at the connection check.
    assert "TASK [Require every node to answer]" in out, out
    assert proc.returncode != 0


def test_lab_mark_must_be_true(tmp_path):
    proc = preflight(inventory(tmp_path, {"ansible_connection": "docker", "hostmesh_lab": False}))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "prod1 uses a container connection" in out, out
