"""Routing follows the primary's view (issue 17): the heartbeat answer's
offline_nodes, its checks on the receiving side, and the agent's view file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from hostmesh.agent import config, routing
from hostmesh.agent.routing import (
    MAX_OFFLINE,
    PrimaryView,
    RoutingInvalid,
    RoutingView,
    check_offline_nodes,
    offline_view,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_agent_api import ADMIN, KEY1, make, register


# -- the field's checks (a secondary receiving it) ---------------------------------------
def test_good_lists_are_sorted_names():
    assert check_offline_nodes([]) == []
    assert check_offline_nodes(["node3", "node-2", "n.4_x"]) == ["n.4_x", "node-2", "node3"]
    assert len(check_offline_nodes([f"n{i}" for i in range(MAX_OFFLINE)])) == MAX_OFFLINE


@pytest.mark.parametrize(("value", "needle"), [
    (None, "must be a list"), ("node3", "must be a list"), ({"node3": 1}, "must be a list"),
    ([f"n{i}" for i in range(MAX_OFFLINE + 1)], "at most 256"),
    ([3], "node name"), ([None], "node name"), ([""], "node name"), (["a/b"], "node name"),
    (["../x"], "node name"), (["x" * 64], "node name"), (["node3\n"], "node name"),
    ([["node3"]], "node name"), (["node3", "NODE3"], "twice"),
])
def test_bad_lists_are_refused_with_the_reason(value, needle):
    with pytest.raises(RoutingInvalid, match=needle):
        check_offline_nodes(value)


# -- the primary's view -------------------------------------------------------------------
def test_the_view_lists_down_nodes_but_never_the_primary():
    rows = [("node1", "online", 1), ("node2", "online", 0), ("node3", "offline", 0),
            ("node4", "unreachable", 0), ("node5", "online", 0)]
    assert offline_view(rows) == (["node3", "node4"], None)
    assert offline_view([("node1", "offline", 1), ("node2", "online", 0),
                         ("node3", "online", 0)]) == ([], None)


def test_half_the_cluster_down_sends_nothing():
    names, held = offline_view([("node1", "online", 1), ("node2", "online", 0),
                                ("node3", "offline", 0), ("node4", "offline", 0)])
    assert names == [] and held.startswith("half_cluster_offline offline=2 nodes=4")
    assert offline_view([("node1", "online", 1), ("node2", "offline", 0)])[0] == []


def test_too_many_down_nodes_sends_nothing():
    rows = [("p", "online", 1)] + [(f"up{i}", "online", 0) for i in range(400)] + \
        [(f"down{i}", "offline", 0) for i in range(MAX_OFFLINE + 1)]
    names, held = offline_view(rows)
    assert names == [] and held.startswith("too_many_offline")


def _cluster(tmp_path):
    """A primary (node1), node2 registered over HTTP, node3-node5 in the registry."""
    api, client = make(tmp_path)
    assert register(client).status_code == 201
    for i in (3, 4, 5):
        api.registry.insert_node({"id": f"n{i}", "name": f"node{i}",
                                  "api_endpoint": f"http://10.50.0.{i}:8080"}, str(i) * 64)
    return api, client


def _down(api, *names):
    for name in names:
        api.registry.db.execute("UPDATE nodes SET status='offline' WHERE name=?", (name,))


def test_heartbeat_answers_carry_the_primary_s_view(tmp_path):
    api, client = _cluster(tmp_path)
    try:
        node2 = api.registry.id_by_name("node2")
        headers = {"X-Node-ID": node2, "X-Node-API-Key": KEY1}

        def answer():
            api.routing_view._at = -1e18  # past the half-second cache
            resp = client.post(f"/api/nodes/{node2}/heartbeat", headers=headers, json={})
            assert resp.status_code == 200
            return resp.json()

        assert answer()["offline_nodes"] == []
        _down(api, "node3")
        assert answer()["offline_nodes"] == ["node3"]
        _down(api, "node4")  # 2 of 5
        assert answer()["offline_nodes"] == ["node3", "node4"]
        _down(api, "node5")  # 3 of 5: the primary may be the partitioned one
        assert answer()["offline_nodes"] == []
        # a wrong key gets no view
        wrong = client.post(f"/api/nodes/{node2}/heartbeat",
                            headers={"X-Node-ID": node2, "X-Node-API-Key": "9" * 64}, json={})
        assert wrong.status_code == 401 and "offline_nodes" not in wrong.json()
        assert client.get("/api/health").status_code == 200
        assert ADMIN not in json.dumps(answer())
    finally:
        api.registry.close()


def test_the_primary_reads_the_registry_at_most_every_ttl(tmp_path):
    api, _client = _cluster(tmp_path)
    try:
        now = [100.0]
        view = PrimaryView(api.registry, ttl=0.5, clock=lambda: now[0])
        assert view.offline_nodes() == []
        _down(api, "node3")
        now[0] += 0.4
        assert view.offline_nodes() == []  # cached
        now[0] += 0.2
        assert view.offline_nodes() == ["node3"]
    finally:
        api.registry.close()


# -- the agent's view file ----------------------------------------------------------------
def settings(tmp_path, mode="auto", ttl=10.0):
    return routing.RoutingSettings(mode, tmp_path / "routing-inbox", ttl)


def read(tmp_path):
    return json.loads((tmp_path / "routing-inbox" / "offline.json").read_text())


def test_nothing_is_written_until_the_traefik_role_made_the_inbox(tmp_path):
    view = RoutingView(settings(tmp_path))
    view.offer({"offline_nodes": ["node3"]})
    assert not (tmp_path / "routing-inbox").exists()
    (tmp_path / "routing-inbox").mkdir(mode=0o700)
    view.offer({"offline_nodes": ["node3"]})  # no restart needed
    assert read(tmp_path) == {"offline_nodes": ["node3"]}
    assert oct((tmp_path / "routing-inbox" / "offline.json").stat().st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in (tmp_path / "routing-inbox").iterdir()) == [
        ".staging", "offline.json"]
    assert list((tmp_path / "routing-inbox" / ".staging").iterdir()) == []


def test_routing_view_false_never_writes(tmp_path):
    (tmp_path / "routing-inbox").mkdir()
    RoutingView(settings(tmp_path, "false")).offer({"offline_nodes": ["node3"]})
    assert not (tmp_path / "routing-inbox" / "offline.json").exists()


def test_a_bad_field_is_refused_and_the_last_view_kept(tmp_path, caplog):
    (tmp_path / "routing-inbox").mkdir()
    view = RoutingView(settings(tmp_path))
    view.offer({"offline_nodes": ["node3"]})
    for bad in ("node4", ["../../etc/passwd"], [f"n{i}" for i in range(MAX_OFFLINE + 1)],
                ["node4", "node4"], [{"name": "node4"}]):
        view.offer({"offline_nodes": bad})
    assert read(tmp_path) == {"offline_nodes": ["node3"]}
    assert caplog.text.count("routing view refused") == 5
    view.offer({"status": "ok"})  # an older primary without the field: no change
    assert read(tmp_path) == {"offline_nodes": ["node3"]}


def test_a_stale_view_expires_to_every_peer(tmp_path):
    (tmp_path / "routing-inbox").mkdir()
    now = [0.0]
    view = RoutingView(settings(tmp_path, ttl=20.0), clock=lambda: now[0])
    view.offer({"offline_nodes": ["node3"]})
    now[0] = 19.0
    view.expire()
    assert read(tmp_path) == {"offline_nodes": ["node3"]}
    now[0] = 21.0
    view.expire()
    assert read(tmp_path) == {"offline_nodes": []}
    view.offer({"offline_nodes": ["node3"]})
    assert read(tmp_path) == {"offline_nodes": ["node3"]}
    # answers without a usable view (an older primary, a bad field) do not renew it
    now[0] = 30.0
    view.offer({"status": "ok"})
    view.offer({"offline_nodes": "node3"})
    assert read(tmp_path) == {"offline_nodes": ["node3"]}
    now[0] = 42.0
    view.offer({"status": "ok"})
    assert read(tmp_path) == {"offline_nodes": []}


def test_unchanged_views_do_not_touch_the_file(tmp_path):
    (tmp_path / "routing-inbox").mkdir()
    view = RoutingView(settings(tmp_path))
    view.offer({"offline_nodes": ["node3"]})
    path = tmp_path / "routing-inbox" / "offline.json"
    mtime = path.stat().st_mtime_ns
    view.offer({"offline_nodes": ["node3"]})
    assert path.stat().st_mtime_ns == mtime
    path.unlink()  # someone removed it: written again
    view.offer({"offline_nodes": ["node3"]})
    assert read(tmp_path) == {"offline_nodes": ["node3"]}


@pytest.mark.parametrize(("env", "needle"), [
    ({"ROUTING_VIEW": "maybe"}, "ROUTING_VIEW"),
    ({"ROUTING_INBOX_DIR": "relative/dir"}, "absolute"),
    ({"ROUTING_VIEW_TTL": "soon"}, "seconds"),
    ({"ROUTING_VIEW_TTL": "0"}, "more than 0"),
])
def test_bad_settings_stop_the_agent_with_the_reason(tmp_path, env, needle):
    base = {"NODE_NAME": "node2", "DATA_DIR": str(tmp_path), "SERVER_ADDRESS": "127.0.0.1:8080",
            "PRIMARY_NODE_URL": "http://127.0.0.1:1", **env}
    with pytest.raises(config.ConfigError, match=needle):
        config.load(base)


def test_default_settings(tmp_path):
    cfg = config.load({"NODE_NAME": "node2", "DATA_DIR": str(tmp_path),
                       "SERVER_ADDRESS": "127.0.0.1:8080", "PRIMARY_NODE_URL": "http://127.0.0.1:1", "HEARTBEAT_INTERVAL": "5"})
    assert cfg.routing.mode == "auto"
    assert cfg.routing.inbox_dir == tmp_path / "routing-inbox"
    assert cfg.routing.ttl == 20.0
    assert not cfg.routing.enabled()
