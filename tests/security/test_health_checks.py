"""Health checks carry nothing reusable; they go only to a node's own mesh endpoint;
a secondary pins its primary."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from agent_harness import REGISTRATION_TOKEN, Agent, free_port, node_key, wait_for
from attack_helpers import call, mesh_primary

from hostmesh.agent import security


def _listener(host: str, node_id_box: list):
    """A fake node's /api/health that records what the primary sends it."""
    captured: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            captured.append(dict(self.headers.items()))
            body = json.dumps({"status": "healthy", "node_id": node_id_box[0]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer((host, free_port(host)), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, captured


def test_a_captured_health_check_opens_nothing_on_another_node(cluster):
    """Attack: register a node whose endpoint is my listener, ask for a health check,
    and replay what the primary sent against a real secondary."""
    primary = cluster.primary()
    victim = cluster.secondary(primary, "victim")
    wait_for(lambda: "auto-registration successful" in victim.log(), 10, what="victim")
    primary_key = (primary.data_dir / "node_api_key").read_text().strip()

    box = [""]
    server, captured = _listener("127.0.0.77", box)
    try:
        host, port = server.server_address
        status, node, _hdrs = call(primary, "POST", "/api/nodes/register", {
            "name": "evil", "api_endpoint": f"http://{host}:{port}",
            "api_key": node_key("evil"), "token": REGISTRATION_TOKEN})
        assert status == 201, node
        box[0] = node["id"]
        primary.admin().check_node(node["id"])
        wait_for(lambda: captured, 5, what="the health check reaching the listener")
    finally:
        server.shutdown()
        server.server_close()

    sent = captured[0]
    assert primary_key not in json.dumps(sent), "the primary sent its own key"
    assert not {"X-Node-API-Key", "X-Node-Id", "Authorization"} & set(sent)
    replay = {k: v for k, v in sent.items() if k.lower() not in ("host", "connection")}
    for path in ("/api/system/stats", "/api/health"):
        status, body, _hdrs = call(victim, "GET", path, headers=replay)
        if path == "/api/system/stats":
            assert status == 401, body
        else:
            assert body.get("caller_verified") is not True
    # nor does the primary's key itself, the thing the old health checks leaked
    status, _body, _hdrs = call(victim, "GET", "/api/system/stats",
                                headers={"X-Node-ID": primary.node_id(), "X-Node-API-Key": primary_key})
    assert status == 401


def test_endpoints_that_are_not_the_nodes_mesh_address_are_refused(cluster):
    """Attack: make the primary send requests to internal addresses on demand."""
    primary = mesh_primary(cluster)
    port = primary.port
    for endpoint in ("http://169.254.169.254/latest/meta-data", "http://[::1]:22",
                     f"http://127.0.0.1:{port}", "http://127.50.0.9:22",
                     f"http://10.0.0.1:{port}", f"https://127.50.0.9:{port}",
                     f"http://localhost:{port}"):
        status, body, _hdrs = call(primary, "POST", "/api/nodes/register", {
            "name": "ssrf", "api_endpoint": endpoint, "wireguard_ip": "127.50.0.9",
            "api_key": node_key("ssrf"), "token": REGISTRATION_TOKEN}, source="127.50.0.9")
        assert status == 400, (endpoint, status, body)
        assert "mesh" in body["error"] and "wireguard_ip" in body["error"]
    # the admin cannot point a node elsewhere either
    status, body, _hdrs = call(primary, "POST", "/api/nodes", {
        "name": "ssrf2", "api_endpoint": "http://169.254.169.254:80",
        "api_key": node_key("ssrf2")}, headers={"Authorization": f"Bearer {primary.env['ADMIN_TOKEN']}"})
    assert status == 400, body
    assert {n["name"] for n in primary.admin().list_nodes()} == {"primary"}
    # the node's own mesh address and the agent port: accepted
    status, body, _hdrs = call(primary, "POST", "/api/nodes/register", {
        "name": "fine", "api_endpoint": f"http://127.50.0.9:{port}",
        "api_key": node_key("fine"), "token": REGISTRATION_TOKEN}, source="127.50.0.9")
    assert status == 201 and body["wireguard_ip"] == "127.50.0.9", body


def test_a_secondary_refuses_another_primary_at_the_same_address(cluster):
    """Attack: answer a secondary's registration as a different primary, then use that
    primary's key (or proofs) on the secondary."""
    primary = cluster.primary()
    node = cluster.secondary(primary, "pinned", HEARTBEAT_INTERVAL="0.3",
                             STARTUP_HEARTBEAT_DELAY="0.2")
    wait_for(lambda: "startup heartbeat sent" in node.log(), 10, what="registered")
    primary.stop()
    # an impostor takes the primary's address: another key, another id, another registry
    impostor = Agent("impostor", primary.host, primary.port, cluster.root / "impostor",
                     {**primary.env, "DATA_DIR": str(cluster.root / "impostor")},
                     cluster.root / "impostor.log")
    cluster.agents.append(impostor)
    impostor.start().wait_ready()
    # the node's next heartbeat is refused by the impostor (it does not know the node),
    # so the node registers again - and refuses the impostor's answer
    wait_for(lambda: "auto-registration refused" in node.log(), 10, what="refusal")
    assert "not as the pinned" in node.log() or "differs from the one pinned" in node.log()
    assert call(node, "GET", "/api/health")[1]["registered"] is False

    impostor_key = (impostor.data_dir / "node_api_key").read_text().strip()
    status, _body, _hdrs = call(node, "GET", "/api/system/stats", headers={"X-Node-API-Key": impostor_key})
    assert status == 401
    # the impostor learnt this node's key hash when it registered: still no use to it
    proof = security.primary_proof(security.sha256_hex(node.env["NODE_API_KEY"]), "GET",
                                   "/api/system/stats", impostor.node_id(), node.node_id())
    status, _body, _hdrs = call(node, "GET", "/api/system/stats",
                                headers={security.PROOF_HEADER: proof})
    assert status == 401
    pinned = json.loads((node.data_dir / "primary.json").read_text())
    assert pinned["primary_id"] == primary.node_id()
    time.sleep(0.1)
