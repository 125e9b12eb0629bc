"""traefik_config's view_source (issue 17) and the agent's installer that renders
Traefik's dynamic file from it: the module run as Ansible runs it (a subprocess with
its JSON arguments), the installer as its systemd unit runs it (python -m)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "collections"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ansible_collections.hostmesh.cluster.plugins.module_utils._traefik_validate import (
    validate_dynamic_config,
)
from test_traefik_config import MESH, run_module

from hostmesh.agent import routing

SERVICES = {
    "whoami": {"hosts": ["whoami.lab.test"], "port": 8081, "nodes": ["node1", "node3"],
               "health_path": "/"},
    "solo": {"hosts": ["solo.lab.test"], "port": 8082, "nodes": ["node3"], "health_path": "/"},
    "db": {"protocol": "tcp", "entry_port": 15432, "port": 5432, "nodes": ["node1", "node3"]},
}


def args(path, node="node2", **kw):
    return dict(path=str(path), node=node, nodes=MESH, services=SERVICES, **kw)


def install(tmp_path, offline=None, raw=None):
    inbox = tmp_path / "inbox"
    inbox.mkdir(exist_ok=True)
    if raw is not None:
        (inbox / "offline.json").write_text(raw)
    elif offline is not None:
        (inbox / "offline.json").write_text(json.dumps({"offline_nodes": offline}))
    proc = subprocess.run(
        [sys.executable, "-m", "hostmesh.agent.routing", "install", "--source",
         str(tmp_path / "hostmesh-routes.json"), "--inbox", str(inbox), "--dynamic-file",
         str(tmp_path / "dynamic" / "hostmesh.yml")],
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc


def dynamic(tmp_path) -> dict:
    return json.loads((tmp_path / "dynamic" / "hostmesh.yml").read_text())


def peers(config, service="whoami-peers", proto="http", key="url"):
    return [s[key] for s in config[proto]["services"][service]["loadBalancer"]["servers"]]


@pytest.fixture
def routes(tmp_path):
    (tmp_path / "dynamic").mkdir()
    first = run_module(tmp_path, args(tmp_path / "hostmesh-routes.json", view_source=True),
                       diff=True)
    assert first["changed"] is True, first
    return first


def test_with_nothing_offline_the_installer_writes_what_the_role_writes_without_the_view(
        tmp_path, routes):
    install(tmp_path)
    plain = tmp_path / "plain"
    plain.mkdir()
    direct = run_module(plain, args(plain / "hostmesh.yml"))
    assert direct["changed"] is True
    # turning the feature on changes nothing Traefik loads, byte for byte
    assert (tmp_path / "dynamic" / "hostmesh.yml").read_text() == \
        (plain / "hostmesh.yml").read_text()
    source = json.loads((tmp_path / "hostmesh-routes.json").read_text())
    assert source["hostmesh_routes"] == 1 and source["node"] == "node2"
    assert source["nodes"] == MESH and source["config"] == routes["config"]


def test_an_offline_peer_leaves_every_pool_and_a_second_render_changes_nothing(
        tmp_path, routes):
    install(tmp_path, ["node3"])
    config = dynamic(tmp_path)
    assert peers(config) == ["http://10.50.0.1:8000"]
    assert peers(config, "db", "tcp", "address") == ["10.50.0.1:5432"]
    # solo runs only on node3: never emptied, Traefik's own probes decide
    assert peers(config, "solo-peers") == ["http://10.50.0.3:8000"]
    assert validate_dynamic_config(config) == []
    # Ansible's side compares the routes file: second run and --check --diff: no change
    mtime = (tmp_path / "hostmesh-routes.json").stat().st_mtime_ns
    again = run_module(tmp_path, args(tmp_path / "hostmesh-routes.json", view_source=True))
    assert again["changed"] is False
    check = run_module(tmp_path, args(tmp_path / "hostmesh-routes.json", view_source=True),
                       check=True, diff=True)
    assert check["changed"] is False
    assert check["diff"]["before"] == check["diff"]["after"]
    assert (tmp_path / "hostmesh-routes.json").stat().st_mtime_ns == mtime
    # and the runtime membership Traefik loads is untouched by those runs
    assert peers(dynamic(tmp_path)) == ["http://10.50.0.1:8000"]
    # back online: every peer again, byte for byte the unfiltered render
    install(tmp_path, [])
    assert dynamic(tmp_path) == routes["config"]


def test_every_peer_offline_keeps_them_all(tmp_path, routes):
    proc = install(tmp_path, ["node1", "node3"])
    assert dynamic(tmp_path) == routes["config"]
    assert "routing kept service=http/whoami-peers nodes=node1,node3" in proc.stderr


def test_the_node_never_drops_itself_and_unknown_names_are_ignored(tmp_path, routes):
    install(tmp_path, ["node2", "node9"])
    assert dynamic(tmp_path) == routes["config"]


@pytest.mark.parametrize("raw", [
    '{"offline_nodes": "node3"}',
    '{"offline_nodes": ["node3", "node3"]}',
    '{"offline_nodes": ["../etc"]}',
    '{"offline_nodes": [3]}',
    '["node3"]',
    "not json",
    json.dumps({"offline_nodes": [f"n{i}" for i in range(routing.MAX_OFFLINE + 1)]}),
    json.dumps({"offline_nodes": ["node3"], "pad": "x" * 70000}),
])
def test_a_bad_view_file_counts_as_nothing_offline(tmp_path, routes, raw):
    proc = install(tmp_path, raw=raw)
    assert dynamic(tmp_path) == routes["config"]
    assert "routing view ignored" in proc.stderr


def test_no_routes_file_means_the_feature_is_off_and_nothing_is_written(tmp_path):
    (tmp_path / "dynamic").mkdir()
    proc = install(tmp_path, ["node3"])
    assert not (tmp_path / "dynamic" / "hostmesh.yml").exists()
    assert "feature is off" in proc.stderr


def test_the_installer_keeps_the_files_mode_and_writes_only_on_change(tmp_path, routes):
    target = tmp_path / "dynamic" / "hostmesh.yml"
    install(tmp_path)
    target.chmod(0o640)
    mtime = target.stat().st_mtime_ns
    install(tmp_path, [])
    assert target.stat().st_mtime_ns == mtime
    install(tmp_path, ["node3"])
    assert oct(target.stat().st_mode & 0o777) == "0o640"
    assert sorted(p.name for p in target.parent.iterdir()) == ["hostmesh.yml"]


def test_view_source_needs_the_registry(tmp_path):
    result = run_module(tmp_path, {"path": str(tmp_path / "r.json"), "view_source": True,
                                   "config": {"http": {}}})
    assert result.get("failed") and "view_source needs services" in result["msg"]
    assert not (tmp_path / "r.json").exists()
