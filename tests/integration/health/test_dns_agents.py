"""The issue's drill on loopback: real agent processes, the default detection
settings and DNS hysteresis, the local Cloudflare API.

A primary with DNS_WITHDRAWAL and three secondaries (default HEARTBEAT_INTERVAL
5 s, HEALTH_CHECK_INTERVAL 7 s, HEALTH_CHECK_TIMEOUT 2 s, DNS_WITHDRAW_AFTER
and DNS_RESTORE_AFTER 10 s, DNS_MIN_CHANGE_INTERVAL 30 s). A secondary is
frozen with SIGSTOP (its port stays open, nothing answers): offline within
15 s, its records gone within 45 s; resumed: records back within 60 s.
Two of four frozen (half the cluster): nothing is withdrawn.
"""

from __future__ import annotations

import signal
import time

from agent_harness import nodes_by_name, wait_for

from tests.cloudflare_server.harness import TEST_TOKEN, TEST_ZONE

NAMES = [TEST_ZONE, f"*.{TEST_ZONE}"]
NODES = {"primary": "203.0.113.1", "n1": "203.0.113.11", "n2": "203.0.113.12",
         "n3": "203.0.113.13"}


def owners(cf) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in cf.records():
        out[r["comment"]] = out.get(r["comment"], 0) + 1
    return out


def start(cluster, cf, tmp_path):
    token = tmp_path / "cf-token"
    token.write_text(TEST_TOKEN)
    token.chmod(0o600)
    for node, ip in NODES.items():
        cf.seed([{"type": "A", "name": n, "content": ip, "ttl": 300,
                  "comment": f"hostmesh:hostmesh:{node}"} for n in NAMES])
    primary = cluster.primary(HEALTH_CHECK_INTERVAL="7", HEALTH_CHECK_TIMEOUT="2",
                              DNS_WITHDRAWAL="true", DNS_ZONE=TEST_ZONE,
                              DNS_API_TOKEN_FILE=str(token), DNS_API_BASE_URL=cf.base_url)
    nodes = {name: cluster.secondary(primary, name, HEARTBEAT_INTERVAL="5")
             for name in ("n1", "n2", "n3")}
    wait_for(lambda: all(nodes_by_name(primary).get(n, {}).get("status") == "online"
                         for n in nodes), 15, what="three secondaries online")
    return primary, nodes


def test_stopped_node_leaves_dns_and_comes_back(cluster, cf, tmp_path):
    primary, nodes = start(cluster, cf, tmp_path)
    nodes["n3"].proc.send_signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        wait_for(lambda: nodes_by_name(primary)["n3"]["status"] == "offline", 16,
                 interval=0.2, what="n3 offline")
        offline_after = time.monotonic() - stopped
        wait_for(lambda: "hostmesh:hostmesh:n3" not in owners(cf), 45 - offline_after,
                 interval=0.2, what="n3's records withdrawn")
        withdrawn_after = time.monotonic() - stopped
        assert owners(cf) == {f"hostmesh:hostmesh:{n}": 2 for n in ("primary", "n1", "n2")}
    finally:
        nodes["n3"].proc.send_signal(signal.SIGCONT)
    resumed = time.monotonic()
    wait_for(lambda: owners(cf).get("hostmesh:hostmesh:n3") == 2, 60, interval=0.2,
             what="n3's records restored")
    restored_after = time.monotonic() - resumed
    print(f"offline after {offline_after:.1f} s, withdrawn after {withdrawn_after:.1f} s, "
          f"restored {restored_after:.1f} s after resume")
    assert offline_after <= 15 and withdrawn_after <= 45 and restored_after <= 60
    log = primary.log()
    assert "dns records withdrawn node=n3 reason=offline_for_" in log
    assert "dns records restored node=n3 reason=online_for_" in log
    assert TEST_TOKEN not in log


def test_half_the_cluster_stopped_withdraws_nothing(cluster, cf, tmp_path):
    primary, nodes = start(cluster, cf, tmp_path)
    before = owners(cf)
    for name in ("n2", "n3"):
        nodes[name].proc.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: all(nodes_by_name(primary)[n]["status"] == "offline"
                             for n in ("n2", "n3")), 16, interval=0.2, what="two offline")
        time.sleep(25)  # longer than the withdrawal hold plus a few passes
        assert owners(cf) == before
        assert cf.writes() == []
        assert "guard=half_cluster_offline" in primary.log()
    finally:
        for name in ("n2", "n3"):
            nodes[name].proc.send_signal(signal.SIGCONT)
