"""Apps in heartbeats (issue 16): what a node may report, what the primary keeps and serves.

Real `hostmesh agent` processes on 127.0.0.x (real HTTP, real SQLite). The nodes here
run without Docker (APPS_DOCKER_SOCKET points at a path with no socket), or do not
report (APPS_REPORT=false); the reading of a real Docker Engine is in
test_agent_apps_docker.py.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import sys
import threading
from pathlib import Path

import pytest
from hostmesh.module_utils._agent_client import (
    AgentClient,
    AuthRejected,
    Credentials,
    HostmeshAPIError,
    NotFound,
)

from hostmesh.agent.apps import (
    MAX_APPS,
    MAX_REPORT_BYTES,
    AppsInvalid,
    AppsReader,
    DockerUnavailable,
    check_heartbeat_apps,
    read_apps,
    report,
)
from hostmesh.agent.registry import MIGRATIONS, Registry

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "integration" / "agent"))
from agent_harness import ADMIN_TOKEN, Cluster, node_key, wait_for

WEB = {"name": "web", "container": "hostmesh-web", "image": "10.231.1.1:5000/team/web:2",
       "state": "running", "health": "healthy"}
DB = {"name": "db", "container": "hostmesh-db", "image": "postgres@sha256:" + "a" * 64,
      "state": "exited", "health": "none"}


# -- the primary's checks ------------------------------------------------------------


def test_good_reports_pass_sorted_and_unknown_keys_are_dropped():
    assert check_heartbeat_apps([WEB, DB]) == [DB, WEB]
    assert check_heartbeat_apps([{**WEB, "env": ["SECRET=x"], "labels": {"a": "b"}}]) == [WEB]
    no_health = {k: v for k, v in WEB.items() if k != "health"}
    assert check_heartbeat_apps([no_health]) == [{**WEB, "health": "none"}]
    assert check_heartbeat_apps([{**WEB, "image": None}]) == [{**WEB, "image": None}]
    assert check_heartbeat_apps([]) == []
    assert check_heartbeat_apps(None) is None


@pytest.mark.parametrize(("apps", "field"), [
    ({"web": WEB}, "apps:"), ("web", "apps:"), ([WEB] * 2, "listed twice"),
    ([dict(WEB, container=f"c{i}") for i in range(MAX_APPS + 1)], f"at most {MAX_APPS}"),
    (["web"], r"apps\[0\]:"), ([{**WEB, **{f"k{i}": i for i in range(16)}}], "16 keys"),
    ([{**WEB, "name": "bad name"}], r"apps\[0\].name"),
    ([{**WEB, "name": "web\n"}], r"apps\[0\].name"),
    ([{**WEB, "name": "x" * 64}], r"apps\[0\].name"),
    ([{**WEB, "name": None}], r"apps\[0\].name"),
    ([DB, {**WEB, "container": "/hostmesh-web"}], r"apps\[1\].container"),
    ([{**WEB, "container": "c" * 129}], r"apps\[0\].container"),
    ([{k: v for k, v in WEB.items() if k != "container"}], r"apps\[0\].container"),
    ([{**WEB, "image": "a b"}], r"apps\[0\].image"),
    ([{**WEB, "image": "i" * 513}], r"apps\[0\].image"),
    ([{**WEB, "image": 7}], r"apps\[0\].image"),
    ([{**WEB, "state": "Up 3 minutes"}], r"apps\[0\].state"),
    ([{k: v for k, v in WEB.items() if k != "state"}], r"apps\[0\].state"),
    ([{**WEB, "health": "fine"}], r"apps\[0\].health"),
])
def test_bad_reports_name_the_item_and_field(apps, field):
    with pytest.raises(AppsInvalid, match=field):
        check_heartbeat_apps(apps)


def test_docker_list_becomes_reports_without_odd_containers():
    containers = [
        {"Names": ["/hostmesh-web"], "Image": "reg/web:2", "State": "running",
         "Status": "Up 3 minutes (healthy)", "Labels": {"hostmesh.app": "web", "x": "y"}},
        {"Names": ["/hostmesh-db"], "Image": "db:1", "State": "running",
         "Status": "Up 2 seconds (health: starting)", "Labels": {"hostmesh.app": "db"}},
        {"Names": ["/hostmesh-api"], "Image": "api:1", "State": "running",
         "Status": "Up 1 hour", "Health": {"Status": "unhealthy"},
         "Labels": {"hostmesh.app": "api"}},
        {"Names": ["/odd"], "Image": "x", "State": "running", "Labels": {"hostmesh.app": "b d"}},
        {"Names": ["/odd2"], "Image": "x", "State": "weird", "Labels": {"hostmesh.app": "x"}},
        "not a container",
    ]
    assert report(containers) == [
        {"name": "api", "container": "hostmesh-api", "image": "api:1", "state": "running",
         "health": "unhealthy"},
        {"name": "db", "container": "hostmesh-db", "image": "db:1", "state": "running",
         "health": "starting"},
        {"name": "web", "container": "hostmesh-web", "image": "reg/web:2", "state": "running",
         "health": "healthy"},
    ]
    assert check_heartbeat_apps(report(containers)) == report(containers)


def test_a_report_stays_within_a_heartbeat_body():
    # 100 containers with 500-character image names would not fit in 64 KiB
    containers = [{"Names": [f"/hostmesh-a{i}"], "Image": "r/" + "i" * 500, "State": "running",
                   "Labels": {"hostmesh.app": f"a{i}"}} for i in range(300)]
    apps = report(containers)
    assert 0 < len(apps) < MAX_APPS
    assert len(json.dumps(apps)) <= MAX_REPORT_BYTES
    assert check_heartbeat_apps(apps) == apps
    small = [{"Names": [f"/c{i}"], "Image": "x", "State": "exited",
              "Labels": {"hostmesh.app": "a"}} for i in range(300)]
    assert len(report(small)) == MAX_APPS


# -- reading when Docker is not there or does not answer as Docker ------------------------


def test_no_docker_means_no_apps_without_an_error(tmp_path):
    assert read_apps(str(tmp_path / "docker.sock")) == []
    # a socket file left behind by a stopped dockerd: nobody listens
    stale = tmp_path / "stale.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(stale))
    sock.close()
    assert read_apps(str(stale)) == []
    assert AppsReader(str(stale)).read() == []
    assert AppsReader(str(stale), enabled=False).read() is None


def _one_answer_server(path: Path, answer: bytes) -> threading.Thread:
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(4)

    def serve():
        with server:
            conn, _ = server.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(("answer", "message"), [
    (b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 2\r\n\r\n{}", "HTTP 500"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "other than JSON"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", "other than a container list"),
    (b"garbage", "did not answer"),
])
def test_a_socket_that_is_not_docker_is_a_clear_error_and_no_report(tmp_path, answer,
                                                                     message, caplog):
    path = tmp_path / f"not-docker-{len(answer)}.sock"
    thread = _one_answer_server(path, answer)
    with pytest.raises(DockerUnavailable, match=message):
        read_apps(str(path))
    thread.join(5)
    _one_answer_server(path.with_suffix(".2"), answer)
    import logging

    reader = AppsReader(str(path.with_suffix(".2")), log=logging.getLogger("hostmesh.test"))
    with caplog.at_level(logging.WARNING, "hostmesh.test"):
        assert reader.read() is None  # no report: the primary keeps the last one
    assert "apps not reported" in caplog.text and message.split()[0] in caplog.text


# -- the primary, with real agents ---------------------------------------------------


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    c.close()


def _by_name(primary) -> dict[str, dict]:
    return {n["name"]: n for n in primary.admin().list_nodes()}


def test_agents_report_apps_and_the_primary_serves_them(cluster, tmp_path):
    absent = str(tmp_path / "no-docker.sock")
    primary = cluster.primary(APPS_DOCKER_SOCKET=absent, HEARTBEAT_INTERVAL="0.2")
    # node2 runs no Docker: it reports [] (no apps), node3 does not report at all
    cluster.secondary(primary, "node2", APPS_DOCKER_SOCKET=absent)
    cluster.secondary(primary, "node3", APPS_REPORT="false")
    nodes = wait_for(lambda: (n := _by_name(primary)) and n.get("node2", {}).get("apps_at")
                     and n.get("node3", {}).get("last_seen") and n["primary"]["apps_at"]
                     and n, 20, what="node2's report, node3's heartbeat, the primary's own")
    assert nodes["primary"]["apps"] == [] and nodes["node2"]["apps"] == []
    assert nodes["node3"]["apps"] is None and nodes["node3"]["apps_at"] is None

    # node2 (its own key, real HTTP) reports two containers: stored on its record only
    node2 = nodes["node2"]
    as_node2 = AgentClient(primary.url, Credentials(node_id=node2["id"],
                                                    node_api_key=node_key("node2")))
    as_node2.heartbeat(node2["id"], {"apps": [WEB, {**DB, "env": ["PASSWORD=hunter2"]}]})
    nodes = _by_name(primary)
    assert nodes["node2"]["apps"] == [DB, WEB]
    assert nodes["primary"]["apps"] == [] and nodes["node3"]["apps"] is None

    admin = primary.admin()
    status, view = admin.request("GET", "/api/apps")
    assert status == 200
    assert view["apps"] == [
        {"name": "db", "running": 0, "replicas": [
            {"node": "node2", "node_id": node2["id"], "node_status": "online",
             "container": "hostmesh-db", "image": DB["image"], "state": "exited",
             "health": "none", "reported_at": nodes["node2"]["apps_at"]}]},
        {"name": "web", "running": 1, "replicas": [
            {"node": "node2", "node_id": node2["id"], "node_status": "online",
             "container": "hostmesh-web", "image": WEB["image"], "state": "running",
             "health": "healthy", "reported_at": nodes["node2"]["apps_at"]}]},
    ]
    by_node = {n["name"]: n for n in view["nodes"]}
    assert by_node["node2"]["apps"] == ["db", "web"] and by_node["primary"]["apps"] == []
    assert by_node["node3"]["apps"] is None and by_node["primary"]["is_primary"] is True
    raw = json.dumps(view)
    assert "hunter2" not in raw and "PASSWORD" not in raw and "env" not in raw
    for secret in (ADMIN_TOKEN, node_key("node2"), node_key("node3")):
        assert secret not in raw

    # the admin only; a node's key opens nothing here; a secondary points at the primary
    with pytest.raises(AuthRejected):
        as_node2.request("GET", "/api/apps")
    with pytest.raises(AuthRejected):
        AgentClient(primary.url).request("GET", "/api/apps")
    sec = next(a for a in cluster.agents if a.name == "node2")
    with pytest.raises(NotFound, match="secondary"):
        AgentClient(sec.url, Credentials(admin_token=ADMIN_TOKEN)).request("GET", "/api/apps")

    # the OpenAPI document describes the endpoint and the report
    status, doc = AgentClient(primary.url).request("GET", "/openapi.json")
    assert doc["paths"]["/api/apps"]["get"]["security"] == [{"adminBearer": []}]
    assert set(doc["components"]["schemas"]["App"]["properties"]) == {
        "name", "container", "image", "state", "health"}
    assert "apps" in doc["components"]["schemas"]["HeartbeatInput"]["properties"]


def test_a_hostile_node_s_bad_report_is_refused_and_changes_nothing(cluster, tmp_path):
    primary = cluster.primary(APPS_DOCKER_SOCKET=str(tmp_path / "none.sock"))
    cluster.secondary(primary, "node2", APPS_REPORT="false")
    cluster.secondary(primary, "node3", APPS_REPORT="false")
    nodes = wait_for(lambda: (n := _by_name(primary)) and {"node2", "node3"} <= set(n) and n,
                     20, what="node2 and node3 registered")
    ids = {name: nodes[name]["id"] for name in ("node2", "node3")}
    as_node2 = AgentClient(primary.url, Credentials(node_id=ids["node2"],
                                                    node_api_key=node_key("node2")))
    as_node2.heartbeat(ids["node2"], {"apps": [WEB]})
    before = _by_name(primary)["node2"]

    for bad in ([{**WEB, "state": "pwned"}], [WEB, WEB], {"web": WEB},
                [dict(WEB, container=f"c{i}") for i in range(MAX_APPS + 1)],
                [{**WEB, "name": "../../etc"}]):
        with pytest.raises(HostmeshAPIError) as exc:
            as_node2.heartbeat(ids["node2"], {"apps": bad, "version": "9.9"})
        assert exc.value.status == 400 and "apps" in str(exc.value)
        after = _by_name(primary)["node2"]
        # nothing recorded: not the apps, not the version, not even the sign of life
        assert after["apps"] == [WEB] and after["apps_at"] == before["apps_at"]
        assert after["version"] == before["version"]
        assert after["last_seen"] == before["last_seen"]

    # node2's key cannot report for node3 (path or header)
    with pytest.raises(AuthRejected):
        as_node2.heartbeat(ids["node3"], {"apps": [DB]})
    with pytest.raises(AuthRejected):
        as_node2.request("POST", f"/api/nodes/{ids['node3']}/heartbeat", {"apps": [DB]},
                         headers={"X-Node-ID": ids["node3"]})
    # a report never reaches the primary's own record either
    with pytest.raises(AuthRejected):
        as_node2.heartbeat(_by_name(primary)["primary"]["id"], {"apps": [DB]})
    nodes = _by_name(primary)
    assert nodes["node3"]["apps"] is None and nodes["primary"]["apps"] == []
    # a heartbeat without apps (or with null) keeps the last report
    as_node2.heartbeat(ids["node2"], {"version": "1.0"})
    as_node2.heartbeat(ids["node2"], {"apps": None})
    assert _by_name(primary)["node2"]["apps"] == [WEB]
    as_node2.heartbeat(ids["node2"], {"apps": []})
    assert _by_name(primary)["node2"]["apps"] == []


def test_apps_report_can_be_turned_off_and_the_socket_must_be_a_path(tmp_path):
    from hostmesh.agent import config

    base = {"NODE_IS_PRIMARY": "true", "SERVER_ADDRESS": "127.0.0.1:8080",
            "DATA_DIR": str(tmp_path)}
    cfg = config.load(base)
    assert cfg.apps_report is True and cfg.apps_docker_socket == "/run/docker.sock"
    cfg = config.load({**base, "APPS_REPORT": "false",
                       "APPS_DOCKER_SOCKET": "unix:///var/run/docker.sock"})
    assert cfg.apps_report is False and cfg.apps_docker_socket == "/var/run/docker.sock"
    for bad in ("docker.sock", "tcp://127.0.0.1:2375", "/" + "x" * 200):
        with pytest.raises(config.ConfigError, match="APPS_DOCKER_SOCKET"):
            config.load({**base, "APPS_DOCKER_SOCKET": bad})
    with pytest.raises(config.ConfigError, match="APPS_REPORT"):
        config.load({**base, "APPS_REPORT": "maybe"})


def test_migration_to_apps_keeps_existing_nodes(tmp_path):
    path = tmp_path / "v4.db"
    db = sqlite3.connect(path, isolation_level=None)
    for version, script in enumerate(MIGRATIONS[:4], 1):
        for statement in script.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(f"PRAGMA user_version={version}")
    db.execute("INSERT INTO nodes (id, name, api_endpoint, key_hash, created_at, updated_at, "
               "labels, stats, stats_at) VALUES ('old', 'old', 'http://10.50.0.9:8080', 'h', "
               "1, 1, '{\"a\":\"b\"}', '{\"cpu_percent\":1.0}', 2)")
    db.close()
    registry = Registry(path)
    try:
        assert registry.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        node = registry.get_node("old")
        assert node["name"] == "old" and node["labels"] == {"a": "b"}
        assert node["stats"] == {"cpu_percent": 1.0}
        assert node["apps"] is None and node["apps_at"] is None
        registry.heartbeat("old", {"apps": [WEB]})
        assert registry.get_node("old")["apps"] == [WEB]
        assert registry.get_node("old")["apps_at"]
    finally:
        registry.close()
