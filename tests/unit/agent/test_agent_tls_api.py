"""GET /api/tls/certificates[/<set>] and the heartbeat's versions, in-process (issue 15).

A real registry (SQLite), a real bundle in the export directory, the Starlette app.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from hostmesh.tls import bundle

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tls"))
from tls_pairs import pair

sys.path.insert(0, str(Path(__file__).resolve().parent))
# the agent API test's primary/secondary maker and its credentials
from test_agent_api import AUTH, KEY1, REG, make


@pytest.fixture
def world(tmp_path):
    export = tmp_path / "tls-export"
    export.mkdir()
    chain, key = pair(["lab.test", "*.lab.test"])
    bundle.write_file(export / "lab.test.json", bundle.make("lab.test", chain, key))
    api, client = make(tmp_path)
    resp = client.post("/api/nodes/register", json={
        "id": "sec", "name": "node2", "api_endpoint": "http://10.50.0.2:8080", "api_key": KEY1,
        "token": REG, "wireguard_ip": "10.50.0.2"})
    assert resp.status_code == 201, resp.text
    yield {"api": api, "client": client, "chain": chain, "key": key}
    api.registry.close()


NODE = {"X-Node-ID": "sec", "X-Node-API-Key": KEY1}


def test_heartbeat_offers_versions_and_the_node_fetches_the_pair(world, caplog):
    caplog.set_level(logging.DEBUG)
    client = world["client"]
    answer = client.post("/api/nodes/sec/heartbeat", headers=NODE, json={}).json()
    version = bundle.version_of(world["chain"])
    assert answer["tls"] == {"lab.test": version}
    listed = client.get("/api/tls/certificates", headers=NODE)
    assert listed.status_code == 200
    assert listed.json()["sets"]["lab.test"]["version"] == version
    assert "PRIVATE" not in listed.text
    resp = client.get("/api/tls/certificates/lab.test", headers=NODE)
    assert resp.status_code == 200 and resp.headers["cache-control"] == "no-store"
    got = bundle.parse(resp.json(), "lab.test", ["lab.test", "*.lab.test"])
    assert got["key"] == world["key"].decode() and got["version"] == version
    assert "tls pair handed out set=lab.test" in caplog.text
    assert "PRIVATE" not in caplog.text and world["key"].decode()[40:80] not in caplog.text


@pytest.mark.parametrize("headers", [
    {}, {"X-Node-ID": "sec"}, {"X-Node-ID": "sec", "X-Node-API-Key": "2" * 64},
    {"X-Node-ID": "nobody", "X-Node-API-Key": KEY1}, AUTH,
    {**AUTH, "X-Node-ID": "sec"},
])
def test_nothing_without_a_registered_nodes_key(world, headers, caplog):
    client = world["client"]
    for path in ("/api/tls/certificates/lab.test", "/api/tls/certificates",
                 "/api/tls/certificates/nope.test"):
        resp = client.get(path, headers=headers)
        assert resp.status_code == 401, (path, resp.text)
        assert "PRIVATE" not in resp.text and "BEGIN" not in resp.text
    assert "auth rejected" in caplog.text


def test_a_deleted_node_gets_nothing(world):
    client = world["client"]
    assert client.delete("/api/nodes/sec", headers=AUTH).status_code == 204
    resp = client.get("/api/tls/certificates/lab.test", headers=NODE)
    assert resp.status_code == 401 and "PRIVATE" not in resp.text


def test_unknown_sets_and_the_rate_limit(world):
    client = world["client"]
    for bad in ("nope.test", "UPPER", "..", "a" * 300):
        assert client.get(f"/api/tls/certificates/{bad}", headers=NODE).status_code == 404
    codes = [client.get("/api/tls/certificates/lab.test", headers=NODE).status_code
             for _ in range(14)]
    assert 429 in codes and codes.count(200) < 12  # 12 a minute, the 404s counted too
    limited = client.get("/api/tls/certificates/lab.test", headers=NODE)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1


def test_without_an_export_nothing_is_offered(tmp_path):
    api, client = make(tmp_path)
    try:
        client.post("/api/nodes/register", json={
            "id": "sec", "name": "node2", "api_endpoint": "http://10.50.0.2:8080",
            "api_key": KEY1, "token": REG, "wireguard_ip": "10.50.0.2"})
        answer = client.post("/api/nodes/sec/heartbeat", headers=NODE, json={}).json()
        assert "tls" not in answer
        resp = client.get("/api/tls/certificates/lab.test", headers=NODE)
        assert resp.status_code == 404 and "no certificate set" in resp.json()["error"]
    finally:
        api.registry.close()
    api, client = make(tmp_path / "off", TLS_SYNC="false")
    try:
        client.post("/api/nodes/register", json={
            "id": "sec", "name": "node2", "api_endpoint": "http://10.50.0.2:8080",
            "api_key": KEY1, "token": REG, "wireguard_ip": "10.50.0.2"})
        resp = client.get("/api/tls/certificates", headers=NODE)
        assert resp.status_code == 404 and "tls_agent_sync" in resp.json()["error"]
    finally:
        api.registry.close()


def test_a_secondary_has_no_such_endpoint_and_the_document_has_no_example(tmp_path):
    _api, client = make(tmp_path, primary=False)
    assert client.get("/api/tls/certificates/lab.test", headers=NODE).status_code == 404
    api, primary = make(tmp_path / "p")
    try:
        doc = primary.get("/openapi.json").json()
        op = doc["paths"]["/api/tls/certificates/{set}"]["get"]
        assert op["security"] == [{"nodeId": [], "nodeKey": []}]
        assert "example" not in str(doc["components"]["schemas"]["CertificateBundle"])
        assert "tls" in doc["components"]["schemas"]["HeartbeatAnswer"]["properties"]
    finally:
        api.registry.close()
