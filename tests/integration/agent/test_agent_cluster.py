"""A real primary and real secondaries talking HTTP on 127.0.0.x."""

from __future__ import annotations

import time

from agent_harness import (
    REGISTRATION_TOKEN,
    nodes_by_name,
    wait_for,
)

# Scaled-down copy of the backoff table (docs/api.md): same failure counts, intervals in tenths.
BACKOFF = "0:0.2:online,3:0.3:offline,6:0.4:offline,11:0.5:unreachable,21:0.6:unreachable"


def expected_status(failures: int) -> str:
    if failures <= 2:
        return "online"
    if failures <= 10:
        return "offline"
    return "unreachable"


def test_three_secondaries_register_and_are_online_within_3s(cluster):
    primary = cluster.primary()
    started = time.monotonic()
    secondaries = [cluster.secondary(primary, f"node{i}") for i in (1, 2, 3)]

    def all_online():
        nodes = nodes_by_name(primary)
        return all(nodes.get(s.name, {}).get("status") == "online" for s in secondaries) \
            and nodes
    nodes = wait_for(all_online, 3.0, what="3 secondaries online")
    elapsed = time.monotonic() - started
    assert elapsed < 3.0

    assert nodes["primary"]["is_primary"] is True and nodes["primary"]["status"] == "online"
    for s in secondaries:
        node = nodes[s.name]
        assert node["is_primary"] is False
        assert node["api_endpoint"] == s.url
        assert node["id"] == s.node_id()
        assert "api_key" not in node and "key_hash" not in node
    # every secondary logs its registration, then its startup heartbeat 2 s after start
    for s in secondaries:
        wait_for(lambda s=s: "startup heartbeat sent" in s.log(), 5, what="startup heartbeat")
        log = s.log()
        assert f"attempting auto-registration primary_url={primary.url} attempt=1" in log
        assert "auto-registration successful" in log
    # the primary checks them and logs it in key=value form
    wait_for(lambda: "health check completed node=node1 status=online duration_ms=" in
             primary.log(), 5, what="health check log line")


def test_stopped_secondary_walks_the_backoff_table_then_recovers(cluster):
    primary = cluster.primary(BACKOFF_TABLE=BACKOFF, HEALTH_CHECK_TIMEOUT="0.5")
    node = cluster.secondary(primary, "walker")
    wait_for(lambda: nodes_by_name(primary).get("walker", {}).get("status") == "online", 5,
             what="walker online")
    node.stop()

    seen: list[tuple[int, str]] = []

    def walked_to_unreachable():
        n = nodes_by_name(primary)["walker"]
        seen.append((n["consecutive_failures"], n["status"]))
        return n["consecutive_failures"] >= 12

    wait_for(walked_to_unreachable, 30, interval=0.02, what="12 consecutive failures")
    for failures, status in seen:
        assert status == expected_status(failures), (failures, status, seen)
    statuses = [s for _, s in seen]
    # the walk is online -> offline -> unreachable, never backwards
    order = {"online": 0, "offline": 1, "unreachable": 2}
    assert [order[s] for s in statuses] == sorted(order[s] for s in statuses)
    assert {"offline", "unreachable"} <= set(statuses)
    assert "health check completed node=walker status=unreachable" in primary.log()

    before = node.log().count("startup heartbeat sent")
    restarted = time.monotonic()
    node.start()
    wait_for(lambda: nodes_by_name(primary)["walker"]["status"] == "online", 3.0,
             what="walker online again")
    assert time.monotonic() - restarted < 3.0
    wait_for(lambda: node.log().count("startup heartbeat sent") == before + 1, 5,
             what="startup heartbeat after the restart")
    assert nodes_by_name(primary)["walker"]["consecutive_failures"] == 0


def test_backoff_spacing_follows_the_table(cluster):
    # big gaps between rows so the spacing is measurable: 0.2 s online, 1.5 s offline
    primary = cluster.primary(BACKOFF_TABLE="0:0.2:online,3:1.5:offline",
                              HEALTH_CHECK_TIMEOUT="0.3")
    node = cluster.secondary(primary, "spacer")
    wait_for(lambda: nodes_by_name(primary).get("spacer", {}).get("status") == "online", 5,
             what="spacer online")
    node.stop()
    wait_for(lambda: nodes_by_name(primary)["spacer"]["consecutive_failures"] >= 3, 5,
             what="3 failures")
    t3 = time.monotonic()
    wait_for(lambda: nodes_by_name(primary)["spacer"]["consecutive_failures"] >= 4, 5,
             what="4th failure")
    # the 4th check waits a full offline interval (1.5 s), not the online one
    assert time.monotonic() - t3 > 1.0


def test_wrong_key_is_rejected_and_logged_without_the_key(cluster):
    from hostmesh.module_utils._agent_client import AgentClient, AuthRejected, Credentials

    primary = cluster.primary()
    node = cluster.secondary(primary, "victim")
    wait_for(lambda: "victim" in nodes_by_name(primary), 5, what="victim registered")
    wrong = "W" * 40
    client = AgentClient(primary.url, Credentials(node_id=node.node_id(), node_api_key=wrong))
    try:
        client.heartbeat(node.node_id())
        raise AssertionError("heartbeat with a wrong key was accepted")
    except AuthRejected as exc:
        assert exc.status == 401
        assert wrong not in str(exc)
    bad_admin = "B" * 40
    try:
        AgentClient(primary.url, Credentials(admin_token=bad_admin)).list_nodes()
        raise AssertionError("wrong admin token accepted")
    except AuthRejected as exc:
        assert exc.status == 401
    log = primary.log()
    assert f"auth rejected method=POST path=/api/nodes/{node.node_id()}/heartbeat" in log
    assert "reason=unknown_node_or_wrong_node_key" in log and "reason=wrong_admin_token" in log
    for secret in (wrong, bad_admin, node.env["NODE_API_KEY"], REGISTRATION_TOKEN,
                   primary.env["ADMIN_TOKEN"]):
        assert secret not in log
        assert secret not in node.log()


def _register(primary, name, token, key=None, node_id=None, headers=None):
    from agent_harness import node_key
    from hostmesh.module_utils._agent_client import AgentClient

    body = {"name": name, "api_endpoint": "http://127.0.0.99:9", "api_key": key or node_key(name)}
    if token is not None:
        body["token"] = token
    if node_id:
        body["id"] = node_id
    return AgentClient(primary.url).request("POST", "/api/nodes/register", body, headers=headers)


def test_invites_are_one_time_and_expire(cluster):
    import pytest
    from hostmesh.module_utils._agent_client import AuthRejected

    primary = cluster.primary()
    invite = primary.admin().create_invite()
    assert set(invite) == {"id", "token", "expires_at"}
    status, answer = _register(primary, "invited1", invite["token"])
    assert status == 201 and answer["name"] == "invited1"
    with pytest.raises(AuthRejected):
        _register(primary, "invited2", invite["token"])  # reused
    short = primary.admin().create_invite(ttl_seconds=1)
    time.sleep(1.3)
    with pytest.raises(AuthRejected):
        _register(primary, "invited3", short["token"])  # expired
    names = set(nodes_by_name(primary))
    assert "invited1" in names and not {"invited2", "invited3"} & names
    assert invite["token"] not in primary.log() and short["token"] not in primary.log()

    # a secondary started with an invite registers, and restarts later without needing
    # the (now used) invite again: it proves its key instead
    third = primary.admin().create_invite()
    node = cluster.secondary(primary, "byinvite", REGISTRATION_TOKEN=third["token"])
    wait_for(lambda: "byinvite" in nodes_by_name(primary), 5, what="invite registration")
    node.stop()
    node.start()
    wait_for(lambda: node.log().count("auto-registration successful") == 2, 5,
             what="re-registration after restart")


def test_reregistration_must_prove_the_current_key(cluster):
    import pytest
    from agent_harness import node_key
    from hostmesh.module_utils._agent_client import AgentClient, AuthRejected, Conflict, Credentials

    primary = cluster.primary(KEY_GRACE_SECONDS="1")
    key1, key2 = node_key("k1"), node_key("k2")
    status, node = _register(primary, "owned", REGISTRATION_TOKEN, key=key1)
    assert status == 201
    node_id = node["id"]

    def heartbeat_ok(key):
        try:
            AgentClient(primary.url, Credentials(node_id=node_id, node_api_key=key)) \
                .heartbeat(node_id)
            return True
        except AuthRejected:
            return False

    # token alone, new key, no proof: rejected, the stored key unchanged
    with pytest.raises(AuthRejected):
        _register(primary, "owned", REGISTRATION_TOKEN, key=key2, node_id=node_id)
    with pytest.raises(AuthRejected):
        _register(primary, "hijacked", REGISTRATION_TOKEN, key=key2, node_id=node_id)
    assert heartbeat_ok(key1) and not heartbeat_ok(key2)
    assert primary.admin().get_node(node_id)["name"] == "owned"

    # same key again: 200 re-registered
    status, _ = _register(primary, "owned", REGISTRATION_TOKEN, key=key1, node_id=node_id)
    assert status == 200
    # another id cannot take the name
    with pytest.raises(Conflict):
        _register(primary, "owned", REGISTRATION_TOKEN, key=key2)
    # proving key1 in the header rotates to key2; key1 stays valid for the grace period
    status, _ = _register(primary, "owned", None, key=key2, node_id=node_id,
                          headers={"X-Node-ID": node_id, "X-Node-API-Key": key1})
    assert status == 200
    assert heartbeat_ok(key2) and heartbeat_ok(key1)
    time.sleep(1.2)
    assert heartbeat_ok(key2) and not heartbeat_ok(key1)


def test_admin_key_rotation_keeps_the_node_online(cluster):
    from agent_harness import node_key

    primary = cluster.primary(KEY_GRACE_SECONDS="30")
    node = cluster.secondary(primary, "rotor", HEARTBEAT_INTERVAL="0.3")
    wait_for(lambda: "startup heartbeat sent" in node.log(), 5, what="startup heartbeat")
    node_id = node.node_id()
    primary.admin().update_node(node_id, {"api_key": node_key("rotor-new")})
    time.sleep(1)  # heartbeats with the old key still pass during the grace period
    assert "heartbeat failed" not in node.log()
    node.stop()
    node.env["NODE_API_KEY"] = node_key("rotor-new")
    node.start()
    wait_for(lambda: node.log().count("startup heartbeat sent") == 2, 5,
             what="restart with the new key")
    assert "auto-registration failed" not in node.log()
    assert nodes_by_name(primary)["rotor"]["status"] == "online"


def _fake_secondary(host: str, port: int, node_id: str):
    """A bare /api/health endpoint answering as `node_id` (no agent, no heartbeats)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"status": "healthy", "node_id": node_id}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_manual_check_bypasses_backoff(cluster):
    from agent_harness import free_port, node_key

    primary = cluster.primary(BACKOFF_TABLE="0:0.2:online,1:3600:offline",
                              HEALTH_CHECK_TIMEOUT="0.3")
    port = free_port("127.0.0.90")
    admin = primary.admin()
    node = admin.create_node({"name": "manual", "api_endpoint": f"http://127.0.0.90:{port}",
                              "api_key": node_key("manual")})
    assert node["status"] == "online"
    wait_for(lambda: admin.get_node(node["id"])["status"] == "offline", 5, what="offline")
    server = _fake_secondary("127.0.0.90", port, node["id"])
    try:
        time.sleep(0.5)
        # the table says "next check in an hour": nothing changes by itself
        assert admin.get_node(node["id"])["status"] == "offline"
        result = admin.check_node(node["id"])
        assert result["check"]["ok"] is True
        assert result["node"]["status"] == "online"
        assert result["node"]["consecutive_failures"] == 0
    finally:
        server.shutdown()
        server.server_close()
    assert admin.check_node(primary.node_id())["node"]["status"] == "online"


def test_secondary_verifies_the_primary_proof(cluster):
    import urllib.error
    import urllib.request

    from hostmesh.agent import security

    primary = cluster.primary()
    node = cluster.secondary(primary, "verifier")
    wait_for(lambda: "auto-registration successful" in node.log(), 5, what="registered")
    primary_key = (primary.data_dir / "node_api_key").read_text().strip()

    def stats(headers):
        req = urllib.request.Request(node.url + "/api/system/stats", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    # the primary's key itself opens nothing on a secondary (it is never sent anyway)
    assert stats({"X-Node-API-Key": primary_key}) == 401
    assert stats({"X-Node-ID": primary.node_id(), "X-Node-API-Key": primary_key}) == 401
    # a fresh proof made with this node's key hash by the pinned primary id does, once
    proof = {security.PROOF_HEADER: security.primary_proof(
        security.sha256_hex(node.env["NODE_API_KEY"]), "GET", "/api/system/stats",
        primary.node_id(), node.node_id())}
    assert stats(proof) == 200
    assert stats(proof) == 401  # replayed
    assert stats({"X-Node-API-Key": "x" * 40}) == 401
    assert (node.data_dir / "primary.json").stat().st_mode & 0o777 == 0o600


def test_bad_configuration_exits_with_a_clear_message(cluster, tmp_path):
    import subprocess

    from agent_harness import HOSTMESH

    env = {**cluster.base_env(), "NODE_NAME": "lost", "DATA_DIR": str(tmp_path / "d"),
           "NODE_API_ENDPOINT": "http://127.0.0.1:1"}
    # no mesh address and no SERVER_ADDRESS: nothing safe to listen on (issue 12)
    result = subprocess.run(HOSTMESH, check=False, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "no mesh address to listen on" in result.stderr
    assert "set NODE_WIREGUARD_IP" in result.stderr and "SERVER_ADDRESS" in result.stderr
    env["NODE_WIREGUARD_IP"] = "10.50.0.9"
    result = subprocess.run(HOSTMESH, check=False, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "PRIMARY_NODE_URL is not set" in result.stderr
    # a secondary never reaches its primary over a public address
    result = subprocess.run(HOSTMESH, check=False, capture_output=True, text=True, timeout=30,
                            env={**env, "PRIMARY_NODE_URL": "http://203.0.113.10:8080"})
    assert result.returncode == 2
    assert "over the mesh" in result.stderr and "MESH_SUBNET=10.50.0.0/24" in result.stderr
    # every address only on purpose
    result = subprocess.run(HOSTMESH, check=False, capture_output=True, text=True, timeout=30,
                            env={**env, "NODE_IS_PRIMARY": "true", "SERVER_ADDRESS": "0.0.0.0:8080"})
    assert result.returncode == 2 and "ALLOW_PUBLIC_API=true" in result.stderr
    env_file = tmp_path / "agent.env"
    env_file.write_text("NODE_IS_PRIMARY=true\nBACKOFF_TABLE=1:30:online\n")
    result = subprocess.run(HOSTMESH + ["--env-file", str(env_file)], check=False, env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "BACKOFF_TABLE" in result.stderr
    assert not (tmp_path / "d").exists()  # nothing written on bad config


def test_secondary_outlives_the_primary(cluster):
    # the secondary starts first: it keeps retrying (capped backoff) until the primary is up
    primary = cluster.primary(start=False)
    node = cluster.secondary(primary, "patient", HEARTBEAT_INTERVAL="0.3",
                             STARTUP_HEARTBEAT_DELAY="0.5")
    wait_for(lambda: "attempt=4" in node.log(), 10, what="4 registration attempts")
    assert "auto-registration failed attempt=1 reason=" in node.log()
    primary.start().wait_ready()
    wait_for(lambda: "startup heartbeat sent" in node.log(), 5, what="registered + heartbeat")
    # primary down: heartbeats fail and say why; primary back (same data): they pass again
    primary.stop()
    wait_for(lambda: "heartbeat failed reason=" in node.log(), 5, what="heartbeat failure")
    primary.start().wait_ready()
    first = nodes_by_name(primary)["patient"]["last_seen"]
    wait_for(lambda: nodes_by_name(primary)["patient"]["last_seen"] != first, 5,
             what="heartbeats after the primary's restart")
    assert nodes_by_name(primary)["patient"]["status"] == "online"
    for secret in (node.env["NODE_API_KEY"], REGISTRATION_TOKEN):
        assert secret not in node.log() and secret not in primary.log()


def test_secondary_rotates_its_own_key_with_the_previous_one(cluster):
    from agent_harness import node_key
    from hostmesh.module_utils._agent_client import AgentClient, AuthRejected, Credentials

    primary = cluster.primary(KEY_GRACE_SECONDS="1")
    node = cluster.secondary(primary, "selfrot", STARTUP_HEARTBEAT_DELAY="0.2")
    wait_for(lambda: "startup heartbeat sent" in node.log(), 5, what="registered")
    node.stop()
    old, new = node.env["NODE_API_KEY"], node_key("selfrot-new")
    # a new key alone is refused (the token does not let anyone change a node's key) ...
    node.env["NODE_API_KEY"] = new
    node.start()
    wait_for(lambda: "current key" in node.log(), 5, what="refused rotation")
    node.stop()
    # ... with the previous key as proof it is accepted
    node.env["NODE_API_KEY_PREVIOUS"] = old
    node.start()
    wait_for(lambda: node.log().count("startup heartbeat sent") == 2, 5, what="rotated")
    time.sleep(1.2)  # past the grace period: only the new key works
    node_id = node.node_id()
    AgentClient(primary.url, Credentials(node_id=node_id, node_api_key=new)).heartbeat(node_id)
    try:
        AgentClient(primary.url, Credentials(node_id=node_id, node_api_key=old)) \
            .heartbeat(node_id)
        raise AssertionError("the old key still works after the grace period")
    except AuthRejected:
        pass
    assert old not in node.log() and new not in node.log() and new not in primary.log()


def test_labels_set_by_an_admin_survive_a_restart(cluster):
    primary = cluster.primary()
    plain = cluster.secondary(primary, "plain", STARTUP_HEARTBEAT_DELAY="0.2")
    labelled = cluster.secondary(primary, "labelled", NODE_LABELS="zone=eu,gpu",
                                 NODE_WIREGUARD_IP="10.50.0.7", STARTUP_HEARTBEAT_DELAY="0.2")
    wait_for(lambda: "startup heartbeat sent" in plain.log()
             and "startup heartbeat sent" in labelled.log(), 5, what="both registered")
    nodes = nodes_by_name(primary)
    assert nodes["labelled"]["labels"] == {"zone": "eu", "gpu": "true"}
    assert nodes["labelled"]["wireguard_ip"] == "10.50.0.7"
    primary.admin().update_node(nodes["plain"]["id"], {"labels": {"role": "db"}})
    plain.stop()
    plain.start()
    wait_for(lambda: plain.log().count("startup heartbeat sent") == 2, 5, what="restarted")
    assert nodes_by_name(primary)["plain"]["labels"] == {"role": "db"}
