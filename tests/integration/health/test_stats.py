"""A real secondary's CPU, memory and disk reach the primary's node list."""

from __future__ import annotations

from agent_harness import nodes_by_name, wait_for


def test_secondary_stats_in_the_node_list(cluster):
    primary = cluster.primary()
    cluster.secondary(primary, "stats1", HEARTBEAT_INTERVAL="0.5")
    node = wait_for(lambda: (nodes_by_name(primary).get("stats1") or {}).get("stats"), 10,
                    what="stats of stats1")
    assert {"cpu_percent", "memory_percent", "memory_total_bytes", "disk_percent",
            "disk_total_bytes", "load_1m"} <= set(node)
    assert 0 <= node["cpu_percent"] <= 100 and node["memory_total_bytes"] > 0
    assert 0 < node["disk_percent"] <= 100
    # the primary writes its own figures on its row (every HEARTBEAT_INTERVAL)
    own = nodes_by_name(primary)["primary"]["stats"]
    assert own and 0 <= own["cpu_percent"] <= 100 and own["memory_total_bytes"] > 0
