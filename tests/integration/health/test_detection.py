"""Detection with the default settings: a dead node is offline within 15 s.

The harness shortens every interval for speed; these tests put the agent's
defaults back (HEALTH_CHECK_INTERVAL 7, HEALTH_CHECK_TIMEOUT 2,
HEARTBEAT_INTERVAL 5, the default BACKOFF_TABLE) and freeze a secondary with
SIGSTOP: its port stays open and nothing answers, as with a node whose host
died behind WireGuard (every check ends in a timeout, the slowest case).
"""

from __future__ import annotations

import signal
import time

from agent_harness import nodes_by_name, wait_for

DEFAULTS = {"HEALTH_CHECK_INTERVAL": "7", "HEALTH_CHECK_TIMEOUT": "2"}


def test_frozen_node_is_offline_within_15s_and_back_on_its_next_heartbeat(cluster):
    primary = cluster.primary(**DEFAULTS)
    node = cluster.secondary(primary, "frozen", HEARTBEAT_INTERVAL="5")
    wait_for(lambda: nodes_by_name(primary).get("frozen", {}).get("status") == "online", 10,
             what="frozen online")
    # a heartbeat has just arrived: the worst case starts right after one
    before = nodes_by_name(primary)["frozen"]["last_seen"]
    wait_for(lambda: nodes_by_name(primary)["frozen"]["last_seen"] != before, 8,
             interval=0.02, what="a fresh heartbeat")
    node.proc.send_signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        wait_for(lambda: nodes_by_name(primary)["frozen"]["status"] == "offline", 16,
                 interval=0.1, what="frozen offline")
        detected = time.monotonic() - stopped
        assert detected <= 15.0, detected
        # two checks failed by timeout, none before the heartbeat was 7 s old
        assert nodes_by_name(primary)["frozen"]["consecutive_failures"] == 2
        assert detected >= 7.0, detected
    finally:
        node.proc.send_signal(signal.SIGCONT)
    resumed = time.monotonic()
    wait_for(lambda: nodes_by_name(primary)["frozen"]["status"] == "online", 10,
             interval=0.1, what="frozen online again")
    # its next heartbeat (5 s) or the next check (5 s in the offline row) brings it back
    assert time.monotonic() - resumed < 7.0


def test_a_node_that_heartbeats_is_not_probed(cluster):
    primary = cluster.primary(**DEFAULTS)
    cluster.secondary(primary, "chatty", HEARTBEAT_INTERVAL="2")
    wait_for(lambda: nodes_by_name(primary).get("chatty", {}).get("status") == "online", 10,
             what="chatty online")
    time.sleep(9)  # more than the 7 s check interval
    node = nodes_by_name(primary)["chatty"]
    assert node["status"] == "online" and node["last_health_check"] is None
    assert "health check completed node=chatty" not in primary.log()


def test_a_node_without_heartbeats_is_probed_every_interval(cluster):
    primary = cluster.primary(HEALTH_CHECK_INTERVAL="1", HEALTH_CHECK_TIMEOUT="2")
    cluster.secondary(primary, "quiet", HEARTBEAT_INTERVAL="600")
    wait_for(lambda: primary.log().count("health check completed node=quiet status=online")
             >= 3, 8, what="three checks of a node whose heartbeats are rare")
