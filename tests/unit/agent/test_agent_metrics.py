"""GET /metrics (issue 17): Prometheus text, only with the metrics or admin token, no secret."""

from __future__ import annotations

import sys
from pathlib import Path

from hostmesh.agent import security

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_agent_api import ADMIN, KEY1, PKEY, REG, make, register

METRICS = "metrics-token-" + "m" * 40
SCRAPE = {"Authorization": f"Bearer {METRICS}"}


def test_metrics_need_the_metrics_or_admin_token(tmp_path):
    api, client = make(tmp_path, METRICS_TOKEN_SHA256=security.sha256_hex(METRICS))
    try:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code \
            == 401
        # a node's key is no metrics token
        assert client.get("/metrics", headers={"Authorization": f"Bearer {KEY1}"}).status_code\
            == 401
        assert client.get("/metrics", headers=SCRAPE).status_code == 200
        assert client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"}) \
            .status_code == 200
    finally:
        api.registry.close()


def test_primary_metrics_show_each_node_and_no_secret(tmp_path):
    api, client = make(tmp_path, METRICS_TOKEN_SHA256=security.sha256_hex(METRICS))
    try:
        node = register(client).json()
        headers = {"X-Node-ID": node["id"], "X-Node-API-Key": KEY1}
        client.post(f"/api/nodes/{node['id']}/heartbeat", headers=headers,
                    json={"stats": {"cpu_percent": 12.5, "disk_percent": 40.0}})
        api.registry.db.execute("UPDATE nodes SET status='offline', consecutive_failures=2 "
                                "WHERE id=?", (node["id"],))
        api.metrics.observe_check(False, 2000.0)
        resp = client.get("/metrics", headers=SCRAPE)
        text = resp.text
        assert resp.headers["content-type"].startswith("text/plain")
        assert 'hostmesh_node_status{node="node2",status="offline"} 1.0' in text
        assert 'hostmesh_node_status{node="node2",status="online"} 0.0' in text
        assert 'hostmesh_node_status{node="node1",status="online"} 1.0' in text
        assert 'hostmesh_nodes{status="offline"} 1.0' in text
        assert 'hostmesh_node_consecutive_failures{node="node2"} 2.0' in text
        assert 'hostmesh_node_cpu_percent{node="node2"} 12.5' in text
        assert 'hostmesh_node_heartbeat_age_seconds{node="node2"}' in text
        assert 'hostmesh_health_checks_total{result="failed"} 1.0' in text
        assert 'hostmesh_health_check_duration_seconds_bucket{le="2.0"} 1.0' in text
        assert 'hostmesh_heartbeats_total 1.0' in text
        assert 'hostmesh_dns_changes_total{action="withdraw"} 0.0' in text
        assert 'hostmesh_agent_info{node="node1",role="primary",version=' in text
        for secret in (ADMIN, REG, PKEY, KEY1, METRICS, security.sha256_hex(KEY1),
                       security.sha256_hex(PKEY), security.sha256_hex(METRICS)):
            assert secret not in text
        # a deleted node leaves the per-node series
        api.registry.delete_node(node["id"])
        assert 'node="node2"' not in client.get("/metrics", headers=SCRAPE).text
    finally:
        api.registry.close()


def test_secondary_metrics(tmp_path):
    _api, client = make(tmp_path, primary=False,
                        METRICS_TOKEN_SHA256=security.sha256_hex(METRICS))
    assert client.get("/metrics").status_code == 401
    text = client.get("/metrics", headers=SCRAPE).text
    assert 'hostmesh_agent_info{node="node2",role="secondary"' in text
    assert "hostmesh_node_status" not in text  # the health view is the primary's
