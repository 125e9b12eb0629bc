"""Apps in heartbeats (issue 16): what a node may report, what the primary keeps and serves.

Real `hostmesh agent` processes on 127.0.0.x (real HTTP, real SQLite). The agents read
their apps from the report file that the root-run `hostmesh apps-report` writes
(APPS_REPORT_FILE): here a file of the test (missing: no Docker; fresh, stale, malformed),
or they do not report (APPS_REPORT=false); the reporter against a real Docker Engine is
in test_agent_apps_docker.py.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
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
    MAX_REPORT_FILE_BYTES,
    AppsInvalid,
    AppsReader,
    DockerUnavailable,
    ReportUnusable,
    check_heartbeat_apps,
    read_apps,
    read_report,
    report,
    report_once,
    write_report,
)
from hostmesh.agent.registry import MIGRATIONS, Registry

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "integration" / "agent"))
from agent_harness import ADMIN_TOKEN, Cluster, node_key, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parent))
from old_schema import database_at

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
    # the reporter writes [] then, and the agent reports []
    out = tmp_path / "apps.json"
    assert report_once(str(stale), str(out), 5) is None
    assert json.loads(out.read_text()) == {"apps": [], "interval": 5}
    assert AppsReader(str(out)).read() == []
    assert AppsReader(str(out), enabled=False).read() is None


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
    # the reporter writes the problem instead of apps; the agent sends nothing and says why
    _one_answer_server(path.with_suffix(".2"), answer)
    out = tmp_path / f"apps-{len(answer)}.json"
    assert message.split()[0] in report_once(str(path.with_suffix(".2")), str(out), 5)
    assert json.loads(out.read_text())["apps"] is None
    reader = AppsReader(str(out), log=logging.getLogger("hostmesh.test"))
    with caplog.at_level(logging.WARNING, "hostmesh.test"):
        assert reader.read() is None  # no report: the primary keeps the last one
        assert reader.read() is None
    assert "apps not reported" in caplog.text and message.split()[0] in caplog.text
    assert caplog.text.count("apps not reported") == 1  # once, not every heartbeat


# -- the report file: written atomically by root, read by the agent ---------------------


def test_the_report_file_is_written_atomically_for_the_agent_s_group(tmp_path):
    directory = tmp_path / "run"
    directory.mkdir(mode=0o750)
    os.chown(directory, -1, 65534)  # the agent's group (here: nogroup)
    out = directory / "apps.json"
    write_report(str(out), 5, [WEB])
    st = out.stat()
    assert (st.st_mode & 0o777, st.st_gid) == (0o640, 65534)
    assert json.loads(out.read_text()) == {"apps": [WEB], "interval": 5}
    inode = st.st_ino
    write_report(str(out), 5, [DB, WEB])  # replaced by a rename: a reader never sees half
    assert out.stat().st_ino != inode and read_report(str(out)) == [DB, WEB]
    assert sorted(os.listdir(directory)) == ["apps.json"]  # no temporary file left
    write_report(str(out), 5, None, "Docker at /run/docker.sock answered HTTP 500")
    assert json.loads(out.read_text())["problem"].endswith("HTTP 500")
    with pytest.raises(FileNotFoundError):
        write_report(str(tmp_path / "missing" / "apps.json"), 5, [])


def _write(path: Path, body, age: float = 0.0) -> Path:
    """Write a report file as it is given, `age` seconds old (atomically: an agent may be
    reading it)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(body if isinstance(body, str) else json.dumps(body))
    if age:
        then = time.time() - age
        os.utime(tmp, (then, then))
    tmp.replace(path)
    return path


@pytest.mark.parametrize(("body", "kind", "words"), [
    ("{not json", "malformed", "not JSON"),
    ([WEB], "malformed", "not an object"),
    ({"apps": [WEB]}, "malformed", "interval"),
    ({"apps": [WEB], "interval": True}, "malformed", "interval"),
    ({"apps": [WEB], "interval": 0}, "malformed", "interval"),
    ({"apps": [{**WEB, "state": "pwned"}], "interval": 5}, "malformed", "apps[0].state"),
    ({"apps": [WEB, WEB], "interval": 5}, "malformed", "listed twice"),
    ({"apps": {"web": WEB}, "interval": 5}, "malformed", "apps:"),
    ({"apps": [dict(WEB, container=f"c{i}") for i in range(MAX_APPS + 1)], "interval": 5},
     "malformed", f"at most {MAX_APPS}"),
    ("x" * (MAX_REPORT_FILE_BYTES + 1), "malformed", "larger than"),
    ({"apps": None, "interval": 5, "problem": "Docker at /run/docker.sock answered HTTP 500"},
     "reporter:", "HTTP 500"),
])
def test_a_bad_report_file_is_not_sent_and_says_why(tmp_path, body, kind, words):
    path = _write(tmp_path / "apps.json", body)
    with pytest.raises(ReportUnusable) as exc:
        read_report(str(path))
    assert exc.value.kind.startswith(kind) and words in str(exc.value)
    assert AppsReader(str(path)).read() is None


def test_missing_stale_and_fresh_report_files(tmp_path, caplog):
    path = tmp_path / "apps.json"
    log = logging.getLogger("hostmesh.test")
    reader = AppsReader(str(path), log=log)
    with caplog.at_level(logging.INFO, "hostmesh.test"):
        assert reader.read() == []  # no file: no Docker here, no apps
        _write(path, {"apps": [WEB], "interval": 5})
        assert reader.read() == [WEB]
        # three intervals old: the reporter stopped; nothing is sent, said once
        _write(path, {"apps": [WEB], "interval": 5}, age=16)
        assert reader.read() is None and reader.read() is None
        with pytest.raises(ReportUnusable, match="hostmesh-apps-report.service"):
            read_report(str(path))
        _write(path, {"apps": [WEB], "interval": 5}, age=14)
        assert reader.read() == [WEB]  # fresh again
        _write(path, "{", age=0)
        assert reader.read() is None and reader.read() is None
        path.unlink()
        assert reader.read() == []
    assert caplog.text.count("apps not reported") == 2  # the stale one, the malformed one
    assert "written 16 s ago (every 5 s expected)" in caplog.text
    assert caplog.text.count("apps reported again") == 2


def test_an_unreadable_report_file_or_not_a_file_is_not_sent(tmp_path):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(ReportUnusable, match="not a regular file"):
        read_report(str(fifo))  # and does not hang waiting for a writer
    code = ("import sys; from hostmesh.agent.apps import read_report, ReportUnusable\n"
            "try: read_report(sys.argv[1])\n"
            "except ReportUnusable as exc: print(exc.kind, exc); sys.exit(3)\n")
    # pytest's directories are 0700: another user reaches a directory of its own in /tmp
    with tempfile.TemporaryDirectory(prefix="hostmesh-apps-") as directory:
        os.chmod(directory, 0o755)
        path = _write(Path(directory) / "apps.json", {"apps": [WEB], "interval": 5})
        path.chmod(0o640)
        # a user outside the file's group (the agent's user must be in it)
        out = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
             "-c", code, str(path)], capture_output=True, text=True, check=False,
            env={"PYTHONPATH": str(Path(__file__).resolve().parents[3] / "src")})
    assert out.returncode == 3, out.stderr
    assert out.stdout.startswith("permission permission denied on") and "group" in out.stdout


def test_a_report_file_read_stays_within_a_heartbeat_body(tmp_path):
    apps = [dict(WEB, container=f"c{i}", image="r/" + "i" * 500) for i in range(MAX_APPS)]
    path = _write(tmp_path / "apps.json", {"apps": apps, "interval": 5})
    got = read_report(str(path))
    assert 0 < len(got) < MAX_APPS and len(json.dumps(got)) <= MAX_REPORT_BYTES


# -- the primary, with real agents ---------------------------------------------------


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    c.close()


def _by_name(primary) -> dict[str, dict]:
    return {n["name"]: n for n in primary.admin().list_nodes()}


def test_agents_report_apps_and_the_primary_serves_them(cluster, tmp_path):
    absent = str(tmp_path / "no-report" / "apps.json")
    primary = cluster.primary(APPS_REPORT_FILE=absent, HEARTBEAT_INTERVAL="0.2")
    # node2 runs no Docker (no report file): it reports [] (no apps), node3 does not
    # report at all
    cluster.secondary(primary, "node2", APPS_REPORT_FILE=absent)
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
    primary = cluster.primary(APPS_REPORT_FILE=str(tmp_path / "none.json"))
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


def test_a_secondary_sends_its_report_file_and_nothing_while_it_is_stale(cluster, tmp_path):
    report_file = tmp_path / "node2-run" / "apps.json"
    report_file.parent.mkdir()
    primary = cluster.primary(APPS_REPORT_FILE=str(tmp_path / "none.json"))
    node2 = cluster.secondary(primary, "node2", APPS_REPORT_FILE=str(report_file),
                              HEARTBEAT_INTERVAL="0.2", STARTUP_HEARTBEAT_DELAY="0.2")
    write_report(str(report_file), 1, [WEB])
    wait_for(lambda: _by_name(primary).get("node2", {}).get("apps") == [WEB], 20,
             what="node2's report from its file")
    # the reporter stops: the file gets stale; node2 keeps heartbeating without apps, and
    # the primary keeps the last report (its time too)
    _write(report_file, {"apps": [WEB, DB], "interval": 1}, age=10)
    time.sleep(0.5)
    before = _by_name(primary)["node2"]
    wait_for(lambda: _by_name(primary)["node2"]["last_seen"] > before["last_seen"], 10,
             what="a heartbeat after the report got stale")
    after = _by_name(primary)["node2"]
    assert after["apps"] == [WEB] and after["apps_at"] == before["apps_at"]
    # malformed: the same; then a fresh report, and no file (no Docker): []
    _write(report_file, '{"apps": "everything", "interval": 1}')
    time.sleep(0.5)
    assert _by_name(primary)["node2"]["apps"] == [WEB]
    write_report(str(report_file), 1, [DB])
    wait_for(lambda: _by_name(primary)["node2"]["apps"] == [DB], 10, what="the fresh report")
    report_file.unlink()
    wait_for(lambda: _by_name(primary)["node2"]["apps"] == [], 10, what="no file: no apps")
    log = node2.log()
    assert log.count("apps not reported") == 2, log  # once stale, once malformed
    assert "hostmesh-apps-report.service" in log and "apps reported again" in log


def test_apps_report_can_be_turned_off_and_the_file_must_be_a_path(tmp_path):
    from hostmesh.agent import config

    base = {"NODE_IS_PRIMARY": "true", "SERVER_ADDRESS": "127.0.0.1:8080",
            "DATA_DIR": str(tmp_path)}
    cfg = config.load(base)
    assert cfg.apps_report is True and cfg.apps_report_file == "/run/hostmesh-apps/apps.json"
    assert not hasattr(cfg, "apps_docker_socket")  # the agent has no way to Docker's socket
    cfg = config.load({**base, "APPS_REPORT": "false", "APPS_REPORT_FILE": "/run/x/a.json"})
    assert cfg.apps_report is False and cfg.apps_report_file == "/run/x/a.json"
    for bad in ("apps.json", "unix:///run/docker.sock", "/run/x/", "/a\0b"):
        with pytest.raises(config.ConfigError, match="APPS_REPORT_FILE"):
            config.load({**base, "APPS_REPORT_FILE": bad})
    with pytest.raises(config.ConfigError, match="APPS_REPORT"):
        config.load({**base, "APPS_REPORT": "maybe"})


def test_migration_to_apps_keeps_existing_nodes(tmp_path):
    path = tmp_path / "v4.db"
    db = database_at(path, 4)
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
