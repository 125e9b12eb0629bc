"""Node stats in heartbeats (issue 17): what a secondary sends, what the primary keeps."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from hostmesh.agent.registry import MIGRATIONS, Registry
from hostmesh.agent.stats import (
    HEARTBEAT_STATS,
    StatsInvalid,
    SystemStats,
    check_heartbeat_stats,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from old_schema import database_at
from test_agent_api import ADMIN, KEY1, KEY2, make, register

GOOD = {"cpu_percent": 3.5, "cpu_count": 2, "memory_percent": 41.25,
        "memory_total_bytes": 2 * 1024**3, "disk_percent": 57.0, "load_1m": 0.1}


def test_this_machine_s_stats_pass_the_primary_s_checks():
    stats = SystemStats()
    stats.heartbeat()
    sent = stats.heartbeat()
    assert set(sent) == set(HEARTBEAT_STATS)
    assert check_heartbeat_stats(sent) == {k: (v if HEARTBEAT_STATS[k][0] else round(v, 2))
                                           for k, v in sent.items()}
    assert 0 <= sent["cpu_percent"] <= 100 and sent["memory_total_bytes"] > 0


def test_unknown_keys_are_dropped_and_none_stays_none():
    assert check_heartbeat_stats({**GOOD, "gpu": 1, "note": "x" * 10000}) == GOOD
    assert check_heartbeat_stats(None) is None
    assert check_heartbeat_stats({}) == {}


@pytest.mark.parametrize(("stats", "field"), [
    ([1, 2], "stats"), ("busy", "stats"),
    ({"cpu_percent": 101}, "cpu_percent"), ({"cpu_percent": -1}, "cpu_percent"),
    ({"cpu_percent": math.nan}, "cpu_percent"), ({"cpu_percent": math.inf}, "cpu_percent"),
    ({"cpu_percent": "3"}, "cpu_percent"), ({"cpu_percent": True}, "cpu_percent"),
    ({"cpu_count": 2.5}, "cpu_count"), ({"cpu_count": 0}, "cpu_count"),
    ({"disk_total_bytes": 2**70}, "disk_total_bytes"), ({"load_1m": None}, "load_1m"),
])
def test_bad_stats_name_the_field(stats, field):
    with pytest.raises(StatsInvalid, match=field):
        check_heartbeat_stats(stats)


def test_heartbeat_stats_reach_the_node_list_and_nothing_else(tmp_path):
    api, client = make(tmp_path)
    try:
        assert register(client).status_code == 201
        node2 = client.get("/api/nodes", headers={"Authorization": f"Bearer {ADMIN}"}).json()
        sec = next(n for n in node2 if n["name"] == "node2")
        assert sec["stats"] is None and sec["stats_at"] is None
        headers = {"X-Node-ID": sec["id"], "X-Node-API-Key": KEY1}
        resp = client.post(f"/api/nodes/{sec['id']}/heartbeat", headers=headers,
                           json={"stats": {**GOOD, "extra": "dropped"}})
        assert resp.status_code == 200
        listed = {n["name"]: n for n in client.get(
            "/api/nodes", headers={"Authorization": f"Bearer {ADMIN}"}).json()}
        assert listed["node2"]["stats"] == GOOD and listed["node2"]["stats_at"]
        assert listed["node1"]["stats"] is None  # another node's record is untouched
        seen = listed["node2"]["last_seen"]
        # bad stats: 400 naming the field, and nothing recorded (not even liveness)
        bad = client.post(f"/api/nodes/{sec['id']}/heartbeat", headers=headers,
                          json={"stats": {"memory_percent": 1e9}})
        assert bad.status_code == 400 and "stats.memory_percent" in bad.json()["error"]
        after = api.registry.get_node(sec["id"])
        assert after["stats"] == GOOD and after["last_seen"] == seen
        # a wrong key changes nothing either
        wrong = client.post(f"/api/nodes/{sec['id']}/heartbeat",
                            headers={"X-Node-ID": sec["id"], "X-Node-API-Key": KEY2},
                            json={"stats": {"cpu_percent": 99.0}})
        assert wrong.status_code == 401
        assert api.registry.get_node(sec["id"])["stats"] == GOOD
    finally:
        api.registry.close()


def test_migration_to_stats_keeps_existing_nodes(tmp_path):
    path = tmp_path / "old.db"
    db = database_at(path, 3)
    db.execute("INSERT INTO nodes (id, name, api_endpoint, key_hash, created_at, updated_at, "
               "labels) VALUES ('old', 'old', 'http://10.50.0.9:8080', 'h', 1, 1, '{\"a\":\"b\"}')")
    db.close()
    registry = Registry(path)
    try:
        assert registry.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        node = registry.get_node("old")
        assert node["name"] == "old" and node["labels"] == {"a": "b"}
        assert node["stats"] is None and node["stats_at"] is None
        registry.heartbeat("old", {"stats": GOOD})
        assert registry.get_node("old")["stats"] == GOOD
    finally:
        registry.close()
