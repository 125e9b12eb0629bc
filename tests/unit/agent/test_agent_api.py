"""The API in-process (Starlette TestClient): every error path answers JSON, no secret."""

from __future__ import annotations

import warnings

import pytest

with warnings.catch_warnings():
    # Starlette 1.x prefers httpx2 for its TestClient; httpx is what the dev venv has
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from hostmesh.agent import config
from hostmesh.agent.api import AgentAPI, build_app
from hostmesh.agent.registry import Registry

ADMIN = "admin-token-" + "x" * 32
REG = "registration-token-" + "y" * 32
PKEY = "p" * 64
KEY1, KEY2 = "1" * 64, "2" * 64
AUTH = {"Authorization": f"Bearer {ADMIN}"}


def make(tmp_path, primary=True, **extra):
    env = {"NODE_NAME": "node1" if primary else "node2", "DATA_DIR": str(tmp_path),
           "NODE_API_KEY": PKEY, "NODE_ID": "prim" if primary else "sec",
           "ADMIN_TOKEN": ADMIN, "REGISTRATION_TOKEN": REG, "KEY_GRACE_SECONDS": "60",
           "SERVER_ADDRESS": "127.0.0.1:8080", "REGISTRATION_RATE_LIMIT": "1000/60", **extra}
    if primary:
        env["NODE_IS_PRIMARY"] = "true"
    else:
        env["PRIMARY_NODE_URL"] = "http://127.0.0.1:1"
    cfg = config.finish(config.load(env))
    registry = None
    if primary:
        registry = Registry(cfg.database_path)
        registry.upsert_self(cfg.node_id, cfg.node_name, cfg.api_endpoint, cfg.api_key, "t",
                             None, None, {})
    api = AgentAPI(cfg, registry)
    # requests come from node2's mesh address: registrations must come from the address
    # they register
    return api, TestClient(build_app(api), raise_server_exceptions=False,
                           client=("10.50.0.2", 40000))


@pytest.fixture
def primary(tmp_path):
    api, client = make(tmp_path)
    yield client
    api.registry.close()


def register(client, name="node2", key=KEY1, **extra):
    body = {"name": name, "api_endpoint": "http://10.50.0.2:8080", "api_key": key, "token": REG,
            **extra}
    return client.post("/api/nodes/register", json=body)


def no_secret(resp):
    for secret in (ADMIN, REG, PKEY, KEY1, KEY2):
        assert secret not in resp.text
    assert "key_hash" not in resp.text


def test_health(primary):
    resp = primary.get("/api/health")
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "healthy" and body["service"] == "hostmesh"
    assert body["role"] == "primary" and body["node_id"] == "prim" and body["version"]


def test_register_new_then_again(primary):
    resp = register(primary, labels={"zone": "eu"}, wireguard_ip="10.50.0.2", id="sec")
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["id"] == "sec" and body["labels"] == {"zone": "eu"}
    assert body["primary_id"] == "prim" and len(body["primary_key_sha256"][0]) == 64
    no_secret(resp)
    assert register(primary, id="sec").status_code == 200
    resp = register(primary, id="sec", key=KEY2)  # new key without proof
    assert resp.status_code == 401 and "current key" in resp.json()["error"]
    no_secret(resp)


def test_register_errors(primary):
    assert register(primary, token="wrong" * 8).status_code == 401
    resp = primary.post("/api/nodes/register", json={
        "name": "x", "api_endpoint": "http://10.50.0.2:8080", "api_key": KEY1})
    assert resp.status_code == 401
    assert register(primary, name="bad name").status_code == 400
    assert register(primary, key="short").status_code == 400
    assert register(primary, api_endpoint="ftp://x").status_code == 400
    assert register(primary, wireguard_ip="999.1.1.1").status_code == 400
    assert register(primary, labels=["a"]).status_code == 400
    assert register(primary, id="prim").status_code in (401, 409)
    resp = register(primary, name="node1")  # the primary's name
    assert resp.status_code == 409 and "already used" in resp.json()["error"]


@pytest.mark.parametrize(("data", "headers", "status"), [
    (b"{not json", {}, 400), (b"[1,2]", {}, 400), (b"", {}, 400), (b'"x"', {}, 400),
    (b"{}" + b" " * 70000, {}, 413), (b"{}", {"Content-Length": "abc"}, 400),
    (b'{"name": "\\ud800"}', {}, 400), (b"[" * 100000, {}, 413),
])
def test_bad_bodies(primary, data, headers, status):
    resp = primary.post("/api/nodes/register", content=data,
                        headers={"Content-Type": "application/json", **headers})
    assert resp.status_code == status
    assert "error" in resp.json()


def test_deeply_nested_json_is_a_400(tmp_path):
    _, client = make(tmp_path, MAX_BODY_BYTES="1000000")
    resp = client.post("/api/nodes/register", content=b"[" * 200000,
                       headers={"Content-Type": "application/json"})
    assert resp.status_code == 400


def test_heartbeat(primary):
    register(primary, id="sec")
    node = {"X-Node-ID": "sec", "X-Node-API-Key": KEY1}
    resp = primary.post("/api/nodes/sec/heartbeat", headers=node, json={"version": "2"})
    assert resp.status_code == 200 and resp.json()["status"] == "ok"
    assert primary.post("/api/nodes/sec/heartbeat", headers=node).status_code == 200
    bad = {"X-Node-ID": "sec", "X-Node-API-Key": KEY2}
    assert primary.post("/api/nodes/sec/heartbeat", headers=bad).status_code == 401
    other = {"X-Node-ID": "other", "X-Node-API-Key": KEY1}
    assert primary.post("/api/nodes/sec/heartbeat", headers=other).status_code == 401
    assert primary.post("/api/nodes/sec/heartbeat").status_code == 401
    # an unknown id answers exactly like a wrong key
    unknown = primary.post("/api/nodes/nope/heartbeat", headers={"X-Node-API-Key": KEY1})
    wrong = primary.post("/api/nodes/sec/heartbeat", headers={"X-Node-API-Key": KEY2})
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json() == wrong.json()
    # the mesh address may be repeated, never changed, by a heartbeat
    assert primary.post("/api/nodes/sec/heartbeat", headers=node,
                        json={"wireguard_ip": "10.50.0.2"}).status_code == 200
    resp = primary.post("/api/nodes/sec/heartbeat", headers=node,
                        json={"wireguard_ip": "10.50.0.3"})
    assert resp.status_code == 409 and "never by a heartbeat" in resp.json()["error"]
    assert primary.post("/api/nodes/sec/heartbeat", headers=node,
                        json={"public_ip": "x"}).status_code == 400
    # the primary's own key cannot heartbeat for it (it is always online anyway)
    resp = primary.post("/api/nodes/prim/heartbeat",
                        headers={"X-Node-ID": "prim", "X-Node-API-Key": PKEY})
    assert resp.status_code == 200


def test_admin_crud(primary):
    assert primary.get("/api/nodes").status_code == 401
    assert primary.get("/api/nodes", headers={"Authorization": "Bearer nope"}).status_code == 401
    resp = primary.post("/api/nodes", headers=AUTH, json={
        "name": "manual", "api_endpoint": "http://10.50.0.9:8080", "api_key": KEY2})
    assert resp.status_code == 201
    node_id = resp.json()["id"]
    assert primary.post("/api/nodes", headers=AUTH, json={
        "id": node_id, "name": "x2", "api_endpoint": "http://10.50.0.10:8080", "api_key": KEY2}
    ).status_code == 409
    assert primary.post("/api/nodes", headers=AUTH, json={
        "name": "x3", "api_endpoint": "http://169.254.169.254:8080", "api_key": KEY2}
    ).status_code == 400
    resp = primary.put(f"/api/nodes/{node_id}", headers=AUTH,
                       json={"labels": {"role": "db"}, "api_key": KEY1})
    assert resp.status_code == 200 and resp.json()["labels"] == {"role": "db"}
    no_secret(resp)
    assert primary.put(f"/api/nodes/{node_id}", headers=AUTH,
                       json={"name": "node1"}).status_code == 409
    assert primary.put(f"/api/nodes/{node_id}", headers=AUTH,
                       json={"id": "other"}).status_code == 400
    assert primary.put("/api/nodes/prim", headers=AUTH, json={"labels": {}}).status_code == 409
    assert primary.put("/api/nodes/ghost", headers=AUTH, json={}).status_code == 404
    listed = primary.get("/api/nodes", headers=AUTH)
    assert [n["name"] for n in listed.json()] == ["node1", "manual"]
    no_secret(listed)
    assert primary.get(f"/api/nodes/{node_id}", headers=AUTH).json()["name"] == "manual"
    assert primary.get("/api/nodes/..%2f", headers=AUTH).status_code == 404
    assert primary.delete("/api/nodes/prim", headers=AUTH).status_code == 409
    assert primary.delete(f"/api/nodes/{node_id}", headers=AUTH).status_code == 204
    assert primary.delete(f"/api/nodes/{node_id}", headers=AUTH).status_code == 404


def test_invites(primary):
    resp = primary.post("/api/invites", headers=AUTH, json={"ttl_seconds": 60})
    assert resp.status_code == 201
    token = resp.json()["token"]
    assert primary.post("/api/invites", headers=AUTH, json={"ttl_seconds": 0}).status_code == 400
    assert primary.post("/api/invites", headers=AUTH,
                        json={"ttl_seconds": True}).status_code == 400
    assert primary.post("/api/invites", headers=AUTH).status_code == 201
    assert register(primary, name="inv1", token=token).status_code == 201
    assert register(primary, name="inv2", token=token).status_code == 401


def test_stats_auth(primary):
    assert primary.get("/api/system/stats").status_code == 401
    resp = primary.get("/api/system/stats", headers=AUTH)
    assert resp.status_code == 200
    assert {"cpu", "memory", "disk", "load", "uptime_seconds"} <= set(resp.json())
    register(primary, id="sec")
    node = {"X-Node-ID": "sec", "X-Node-API-Key": KEY1}
    assert primary.get("/api/system/stats", headers=node).status_code == 200


def test_unknown_paths_and_methods_are_json(primary):
    resp = primary.get("/nope")
    assert resp.status_code == 404 and "error" in resp.json()
    resp = primary.patch("/api/nodes", headers=AUTH)
    assert resp.status_code == 405 and "error" in resp.json()


def test_rate_limit_answers_retry_after(tmp_path):
    _, client = make(tmp_path, REGISTRATION_RATE_LIMIT="2/60")
    register(client, name="a1")
    register(client, name="a2")
    resp = register(client, name="a3")
    assert resp.status_code == 429 and int(resp.headers["Retry-After"]) >= 1


def test_openapi_document(primary):
    doc = primary.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.0")
    assert {"/api/health", "/api/nodes/register", "/api/nodes", "/api/nodes/{node_id}",
            "/api/nodes/{node_id}/heartbeat", "/api/nodes/{node_id}/check", "/api/invites",
            "/api/system/stats"} <= set(doc["paths"])


def test_secondary_api(tmp_path):
    api, client = make(tmp_path, primary=False)
    body = client.get("/api/health").json()
    assert body["role"] == "secondary" and body["registered"] is False
    resp = client.get("/api/nodes")
    assert resp.status_code == 404 and "primary" in resp.json()["error"]
    assert client.get("/api/system/stats").status_code == 401
    # the primary's key itself is worth nothing to a secondary: only a fresh proof is
    assert client.get("/api/system/stats", headers={"X-Node-API-Key": PKEY}).status_code == 401
    from hostmesh.agent import security

    node_hash = security.sha256_hex(PKEY)  # this secondary's own key (make() uses PKEY)

    def proof(path, node_id="sec", key_hash=node_hash):
        return {security.PROOF_HEADER: security.primary_proof(key_hash, "GET", path, "prim",
                                                              node_id)}

    assert client.get("/api/system/stats", headers=proof("/api/system/stats")).status_code \
        == 401  # no primary pinned yet
    api.primary_id = "prim"
    good = proof("/api/system/stats")
    assert client.get("/api/system/stats", headers=good).status_code == 200
    assert client.get("/api/system/stats", headers=good).status_code == 401  # replayed
    assert client.get("/api/system/stats", headers=proof("/api/health")).status_code == 401
    assert client.get("/api/system/stats",
                      headers=proof("/api/system/stats", node_id="other")).status_code == 401
    assert client.get("/api/system/stats", headers=proof(
        "/api/system/stats", key_hash=security.sha256_hex(KEY1))).status_code == 401
    assert client.get("/api/health", headers=proof("/api/health")).json()[
        "caller_verified"] is True
    assert client.get("/api/health", headers=proof("/api/system/stats")).json()[
        "caller_verified"] is False
    assert set(client.get("/openapi.json").json()["paths"]) == {"/api/health",
                                                                "/api/system/stats"}


def test_heartbeat_fast_path_errors_match_the_app(primary):
    register(primary, id="sec")
    node = {"X-Node-ID": "sec", "X-Node-API-Key": KEY1, "Content-Type": "application/json"}
    for data, status in ((b"{oops", 400), (b"[]", 400), (b"{}" + b" " * 70000, 413),
                         (b"", 200), (b'{"version": "3"}', 200)):
        resp = primary.post("/api/nodes/sec/heartbeat", content=data, headers=node)
        assert resp.status_code == status, (data[:10], resp.text)
        assert resp.headers["content-type"] == "application/json"
        no_secret(resp)
    resp = primary.post("/api/nodes/sec/heartbeat",
                        headers={**node, "Content-Length": "x"}, content=b"{}")
    assert resp.status_code == 400
    resp = primary.post("/api/nodes/sec/heartbeat", headers={"X-Node-API-Key": KEY2})
    assert resp.status_code == 401 and resp.headers["www-authenticate"].startswith("Bearer")
    # not the fast path's business: nested paths and other methods
    assert primary.post("/api/nodes/a/b/heartbeat", headers=node).status_code == 404
    assert primary.get("/api/nodes/sec/heartbeat", headers=node).status_code == 405


def test_log_lines_cannot_be_forged_through_the_path(primary, caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="hostmesh.agent"):
        primary.get("/api/nodes/x%0Aauth%20rejected%20fake=1", headers={"Authorization": "x"})
    lines = [r.getMessage() for r in caplog.records if "auth rejected" in r.getMessage()]
    assert lines and all("\n" not in line and " fake=1" not in line for line in lines)


@pytest.mark.parametrize("name", ["all", "ALL", "ungrouped", "localhost", "LocalHost",
                                  "hostmesh_online", "hostmesh_nodes", "hostmesh_primary",
                                  "hostmesh_label_gpu", "hostmesh_app_whoami", "127.0.0.1",
                                  "web1\n", "web1\n\n"])
def test_reserved_and_malformed_names_are_refused(primary, name):
    resp = register(primary, name=name)
    assert resp.status_code == 400, resp.text
    assert "name" in resp.json()["error"]


def test_names_are_unique_ignoring_case(primary):
    assert register(primary, name="web1", id="w1").status_code == 201
    resp = primary.post("/api/nodes", headers=AUTH, json={
        "name": "WEB1", "api_endpoint": "http://10.50.0.3:8080", "api_key": KEY2})
    assert resp.status_code == 409 and "ignoring case" in resp.json()["error"]


@pytest.mark.parametrize("endpoint", [
    "http://169.254.169.254:8080", "http://[::1]:22", "http://10.50.0.2:22",
    "http://10.50.0.3:8080", "https://10.50.0.2:8080", "http://10.50.0.2:8080/x",
    "http://node2:8080", "http://10.60.0.2:8080"])
def test_endpoints_off_the_mesh_are_refused(primary, endpoint):
    resp = register(primary, api_endpoint=endpoint, wireguard_ip="10.50.0.2")
    assert resp.status_code == 400 and "mesh" in resp.json()["error"], resp.text


def test_registration_must_come_from_its_mesh_address(primary):
    resp = register(primary, api_endpoint="http://10.50.0.7:8080")
    assert resp.status_code == 403 and "must come from that address" in resp.json()["error"]
    resp = register(primary, id="first")
    assert resp.status_code == 201 and resp.json()["wireguard_ip"] == "10.50.0.2"
    # the same address cannot hold a second node (an id claimed ahead of its node)
    resp = register(primary, name="planned", id="planned-id", key=KEY2)
    assert resp.status_code == 409 and "mesh address" in resp.json()["error"]


def test_the_primarys_health_check_proof_is_accepted_by_its_secondary(tmp_path):
    """What HealthChecker sends is exactly what a secondary verifies (method, path, ids)."""
    from hostmesh.agent.health import HealthChecker

    papi, pclient = make(tmp_path / "p")
    assert register(pclient, id="sec", key=KEY1).status_code == 201
    checker = HealthChecker(papi.cfg, papi.registry)
    headers = checker.proof_headers("sec", "http://10.50.0.2:8080")
    sapi, sclient = make(tmp_path / "s", primary=False, NODE_API_KEY=KEY1)
    sapi.primary_id = "prim"
    assert sclient.get("/api/health", headers=headers).json()["caller_verified"] is True
    assert sclient.get("/api/health", headers=headers).json()["caller_verified"] is False
    # made for another node: worthless here
    other = checker.proof_headers("prim", "http://10.50.0.2:8080")
    assert sclient.get("/api/health", headers=other).json()["caller_verified"] is False
    papi.registry.close()
