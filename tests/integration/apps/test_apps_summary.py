"""The end-of-run summary (playbooks/summary.yml) says which node runs what (issue 16).

A real primary and real secondaries (`hostmesh agent` on 127.8.9.x, real HTTP, real
SQLite), their app reports sent with their own keys as their heartbeats carry them,
and the real `ansible-playbook playbooks/summary.yml` run with the primary as a local
host (the play asks the API on the primary itself, as it does over SSH). Loopback only.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests" / "integration" / "inventory"))
from livecluster import BIN, Cluster, ansible_env, run

WEB = {"name": "whoami", "container": "hostmesh-whoami", "image": "reg:5000/whoami:2",
       "state": "running", "health": "healthy"}
DB = {"name": "db", "container": "hostmesh-db", "image": "reg:5000/db:1", "state": "exited",
      "health": "none"}


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path / "cluster", net=9)
    try:
        c.start_primary(NODE_WIREGUARD_IP="10.50.0.1",
                        APPS_REPORT_FILE=str(tmp_path / "no-report.json"))
        for index, name in ((2, "node2"), (3, "node3"), (4, "node4")):
            c.start_secondary(name, index, NODE_WIREGUARD_IP=f"10.50.0.{index}",
                              APPS_REPORT="false")
        c.wait_for(lambda n: {"node2", "node3", "node4"} <= set(n) and n["primary"]["apps_at"],
                   what="three secondaries registered, the primary's own apps recorded")
        for name, apps in (("node2", [WEB, DB]), ("node3", [WEB])):
            c.heartbeat_as(name, {"apps": apps})
        yield c
    finally:
        c.stop()


def test_summary_says_which_node_runs_what(cluster, tmp_path):
    inventory = tmp_path / "inventory"
    secrets = inventory / ".hostmesh" / "secrets"
    secrets.mkdir(parents=True, mode=0o700)
    (inventory / ".hostmesh").chmod(0o700)
    (secrets / "admin_token").write_text(cluster.admin_token)
    (secrets / "admin_token").chmod(0o600)
    (inventory / "hosts.yml").write_text(
        "hostmesh_nodes:\n"
        "  children:\n"
        "    hostmesh_primary:\n"
        "      hosts:\n"
        "        primary:\n"
        "          ansible_connection: local\n"
        f"          ansible_python_interpreter: {BIN / 'python'}\n"
        f"          hostmesh_api_url: {cluster.primary.url}\n")
    env = ansible_env(None, HOSTMESH_MITOGEN="0")
    res = run([str(BIN / "ansible-playbook"), "-i", str(inventory / "hosts.yml"),
               str(ROOT / "playbooks" / "summary.yml")], env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout
    assert "4 node(s) registered on primary" in out
    assert "what runs where (as each node last reported its app containers):" in out
    lines = dict(re.findall(r'"(node\d|primary)((?: runs |: ).*?)"', out))
    assert lines == {"node2": " runs db (exited), whoami (running, healthy)",
                     "node3": " runs whoami (running, healthy)",
                     "node4": ": apps not reported",
                     "primary": ": no app"}, out
    assert cluster.admin_token not in out + res.stderr
    assert re.search(r"ok=\d+\s+changed=0\s+unreachable=0\s+failed=0", out)
