"""hostmesh.module_utils._agent_client against a small local HTTP server: typed errors, no secret in messages."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from hostmesh.module_utils._agent_client import (
    AgentClient,
    AuthRejected,
    BadResponse,
    Conflict,
    Credentials,
    HostmeshAPIError,
    NotFound,
    PrimaryUnreachable,
    RateLimited,
)

SECRET = "s3cret-token-" + "z" * 30


class Handler(BaseHTTPRequestHandler):
    routes: ClassVar[dict] = {}
    seen: ClassVar[list] = []

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.seen.append((self.command, self.path, headers, body))
        status, payload = self.routes.get((self.command, self.path), (404, {"error": "nope"}))
        if 300 <= status < 400:
            self.send_response(status)
            self.send_header("Location", payload)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Handler.routes = {}
    Handler.seen = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_admin_headers_and_list(server):
    _, url = server
    Handler.routes[("GET", "/api/nodes")] = (200, [{"id": "a", "name": "n1"}])
    client = AgentClient(url, Credentials(admin_token=SECRET))
    assert client.list_nodes() == [{"id": "a", "name": "n1"}]
    assert client.find_node("n1")["id"] == "a" and client.find_node("zz") is None
    assert Handler.seen[0][2]["authorization"] == f"Bearer {SECRET}"


def test_wrapped_node_list_is_accepted(server):
    _, url = server
    Handler.routes[("GET", "/api/nodes")] = (200, {"nodes": [{"id": "a"}]})
    assert AgentClient(url).list_nodes() == [{"id": "a"}]


def test_node_headers_and_heartbeat(server):
    _, url = server
    Handler.routes[("POST", "/api/nodes/n%2F1/heartbeat")] = (200, {"status": "ok"})
    client = AgentClient(url, Credentials(node_id="n/1", node_api_key=SECRET))
    assert client.heartbeat("n/1") == {"status": "ok"}
    headers = Handler.seen[0][2]
    assert headers["x-node-id"] == "n/1" and headers["x-node-api-key"] == SECRET


@pytest.mark.parametrize(("status", "error"), [
    (401, AuthRejected), (403, AuthRejected), (404, NotFound), (409, Conflict),
    (429, RateLimited), (500, HostmeshAPIError), (400, HostmeshAPIError)])
def test_typed_errors_without_secrets(server, status, error):
    _, url = server
    Handler.routes[("GET", "/api/nodes")] = (status, {"error": "reason from server"})
    with pytest.raises(error) as exc:
        AgentClient(url, Credentials(admin_token=SECRET)).list_nodes()
    assert exc.value.status == status
    assert SECRET not in str(exc.value) and SECRET not in exc.value.url
    if status not in (429,):
        assert "reason from server" in str(exc.value)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_never_followed(server, status):
    _srv, url = server
    Handler.routes[("GET", "/api/nodes")] = (status, url + "/elsewhere?user=a:b")
    Handler.routes[("GET", "/elsewhere")] = (200, [])
    with pytest.raises(HostmeshAPIError, match=f"redirect \\(HTTP {status}\\)") as err:
        AgentClient(url, Credentials(admin_token=SECRET)).list_nodes()
    assert SECRET not in str(err.value) and "user=" not in str(err.value)
    assert [path for _m, path, _h, _b in Handler.seen] == ["/api/nodes"]


def test_register_returns_status(server):
    _, url = server
    Handler.routes[("POST", "/api/nodes/register")] = (201, {"id": "x"})
    assert AgentClient(url).register({"name": "n"}) == (201, {"id": "x"})
    assert json.loads(Handler.seen[0][3]) == {"name": "n"}


def test_non_json_and_wrong_shapes(server):
    _, url = server
    Handler.routes[("GET", "/api/health")] = (200, b"<html>hi</html>")
    Handler.routes[("GET", "/api/nodes")] = (200, {"not": "a list"})
    client = AgentClient(url)
    with pytest.raises(BadResponse, match="not JSON"):
        client.health()
    with pytest.raises(BadResponse, match="expected a JSON list"):
        client.list_nodes()


def test_unreachable_and_bad_url():
    with pytest.raises(PrimaryUnreachable, match="cannot reach"):
        AgentClient("http://127.0.0.1:1", timeout=1).health()
    with pytest.raises(HostmeshAPIError, match="invalid API URL"):
        AgentClient("127.0.0.1:8080")


@pytest.mark.parametrize("status_line", ["200 OK", "429 Too Many Requests"])
def test_answer_cut_short_is_unreachable_not_a_traceback(status_line):
    """An agent killed while answering: the body ends before its Content-Length."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))

    def answer_half():
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(f"HTTP/1.1 {status_line}\r\nContent-Length: 73\r\n\r\n{{".encode())

    thread = threading.Thread(target=answer_half, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        with pytest.raises(PrimaryUnreachable, match="cannot reach"):
            AgentClient(url, timeout=5).register({"name": "n"})
    finally:
        thread.join(5)
        listener.close()


def test_against_a_real_agent_app(tmp_path):
    """The client and the agent agree on the protocol (in-process app, real HTTP)."""
    import asyncio
    import socket
    import time

    import uvicorn

    from hostmesh.agent import config
    from hostmesh.agent.api import AgentAPI, build_app
    from hostmesh.agent.registry import Registry

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = config.finish(config.load({
        "NODE_IS_PRIMARY": "true", "NODE_NAME": "p", "DATA_DIR": str(tmp_path),
        "SERVER_ADDRESS": f"127.0.0.1:{port}", "ADMIN_TOKEN": SECRET,
        "REGISTRATION_TOKEN": "r" * 40, "HEALTH_CHECK_INTERVAL": "3600",
        "ALLOW_LOOPBACK_ENDPOINTS": "true"}))
    registry = Registry(cfg.database_path)
    registry.upsert_self(cfg.node_id, "p", cfg.api_endpoint, cfg.api_key, "t", None, None, {})
    server = uvicorn.Server(uvicorn.Config(build_app(AgentAPI(cfg, registry)), host="127.0.0.1",
                                           port=port, log_config=None, http="h11",
                                           loop="asyncio"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.02)
        url = f"http://127.0.0.1:{port}"
        admin = AgentClient(url, Credentials(admin_token=SECRET))
        status, node = AgentClient(url).register({
            "name": "n2", "api_endpoint": "http://127.0.0.2:8080", "api_key": "k" * 40,
            "token": "r" * 40})
        assert status == 201
        node_client = AgentClient(url, Credentials(node_id=node["id"], node_api_key="k" * 40))
        assert node_client.heartbeat(node["id"])["status"] == "ok"
        assert node_client.system_stats()["memory"]["total_bytes"] > 0
        assert admin.get_node(node["id"])["name"] == "n2"
        assert admin.update_node(node["id"], {"labels": {"a": "b"}})["labels"] == {"a": "b"}
        assert admin.create_invite(ttl_seconds=60)["token"]
        assert admin.create_node({"name": "n3", "api_endpoint": "http://127.0.0.3:8080",
                                  "api_key": "m" * 40})["name"] == "n3"
        admin.delete_node(node["id"])
        with pytest.raises(NotFound):
            admin.get_node(node["id"])
        with pytest.raises(Conflict):
            admin.create_node({"name": "n3", "api_endpoint": "http://127.0.0.4:1",
                               "api_key": "m" * 40})
        assert admin.health()["role"] == "primary"
    finally:
        server.should_exit = True
        thread.join(10)
        registry.close()
