"""Anonymous clients cannot stall the primary, flood its log, dodge its rate limit or
learn which node ids exist."""

from __future__ import annotations

import resource
import socket
import time

from agent_harness import REGISTRATION_TOKEN, node_key, wait_for
from attack_helpers import call

FD_LIMIT = 512


def _limit_fds():
    # what systemd gives a unit without LimitNOFILE is 1024; half of that keeps the
    # test light while the attack is the same
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def _half_open(agent, count: int) -> list[socket.socket]:
    held = []
    for _i in range(count):
        sock = socket.create_connection((agent.host, agent.port), timeout=5)
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")  # never finished
        held.append(sock)
    return held


def _health_latencies(agent, n: int) -> list[float]:
    out = []
    for _i in range(n):
        start = time.perf_counter()
        status, body, _hdrs = call(agent, "GET", "/api/health", timeout=5)
        assert status == 200 and body["status"] == "healthy"
        out.append(time.perf_counter() - start)
    return out


def test_a_thousand_half_open_connections_do_not_stall_health_or_flood_the_log(cluster):
    """Attack: ~1000 connections that never finish their headers, no login needed."""
    primary = cluster.primary(start=False)
    primary.extra["preexec_fn"] = _limit_fds
    primary.start().wait_ready()
    before = primary.log_path.stat().st_size
    held = []
    try:
        held = _half_open(primary, 1000)
        time.sleep(1.0)
        latencies = sorted(_health_latencies(primary, 30))
        assert latencies[-1] < 1.0, latencies[-5:]
        # an authenticated client still gets its work done
        assert primary.admin().list_nodes()[0]["name"] == "primary"
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.5)
    written = primary.log_path.stat().st_size - before
    assert written < 64 * 1024, f"{written} log bytes during the attack"
    assert primary.proc.poll() is None


def test_a_connection_that_never_finishes_its_request_is_closed(cluster):
    primary = cluster.primary(REQUEST_TIMEOUT="1")
    sock = socket.create_connection((primary.host, primary.port), timeout=5)
    try:
        sock.sendall(b"POST /api/nodes/register HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        assert sock.recv(1024) == b""  # closed by the agent
        assert 0.8 < time.monotonic() - started < 4
    finally:
        sock.close()
    # a slow body is cut the same way
    sock = socket.create_connection((primary.host, primary.port), timeout=5)
    try:
        sock.sendall(b"POST /api/nodes/register HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        started = time.monotonic()
        try:
            rest = sock.recv(1024)
        except ConnectionResetError:
            rest = b""
        assert rest == b"" and 0.8 < time.monotonic() - started < 4
    finally:
        sock.close()


def test_x_forwarded_for_does_not_bypass_the_registration_limit(cluster):
    """Attack: change X-Forwarded-For on every attempt (it was trusted from loopback)."""
    primary = cluster.primary(REGISTRATION_RATE_LIMIT="3/60")
    statuses = []
    for i in range(6):
        status, _body, _hdrs = call(primary, "POST", "/api/nodes/register", {
            "name": f"xff{i}", "api_endpoint": "http://127.0.0.99:9", "api_key": node_key("x"),
            "token": "wrong-token-0123456789abcdef"},
            headers={"X-Forwarded-For": f"198.51.100.{i}"})
        statuses.append(status)
    assert statuses[:3] == [401, 401, 401] and statuses[3:] == [429, 429, 429], statuses
    assert "client=198.51.100" not in primary.log()


def test_x_forwarded_for_is_used_from_a_configured_proxy(cluster):
    primary = cluster.primary(REGISTRATION_RATE_LIMIT="1/60", TRUSTED_PROXIES="127.0.0.1")
    for i in range(3):
        status, _body, _hdrs = call(primary, "POST", "/api/nodes/register", {
            "name": f"px{i}", "api_endpoint": "http://127.0.0.99:9", "api_key": node_key("p"),
            "token": "wrong-token-0123456789abcdef"},
            headers={"X-Forwarded-For": f"198.51.100.{i}"})
        # each forwarded client has its own limit (no 429), and is the registration's
        # source: 198.51.100.x is not the mesh address it registers (403)
        assert status == 403


def test_unknown_ids_and_wrong_keys_get_the_same_answer(cluster):
    """Attack: tell which node ids exist from 401 (known id) vs 404 (unknown id)."""
    primary = cluster.primary()
    status, node, _hdrs = call(primary, "POST", "/api/nodes/register", {
        "name": "known", "api_endpoint": "http://127.0.0.99:9", "api_key": node_key("known"),
        "token": REGISTRATION_TOKEN})
    assert status == 201
    wrong = node_key("wrong")
    answers = []
    for node_id in (node["id"], "does-not-exist", primary.node_id()):
        for path in (f"/api/nodes/{node_id}/heartbeat",):
            answers.append(call(primary, "POST", path, {},
                                headers={"X-Node-ID": node_id, "X-Node-API-Key": wrong}))
        answers.append(call(primary, "GET", "/api/system/stats",
                            headers={"X-Node-ID": node_id, "X-Node-API-Key": wrong}))
    heartbeats = [(s, b) for s, b, _hdrs in answers[0::2]]
    stats = [(s, b) for s, b, _hdrs in answers[1::2]]
    assert len({repr(a) for a in heartbeats}) == 1, heartbeats
    assert len({repr(a) for a in stats}) == 1, stats
    assert heartbeats[0][0] == 401
    wait_for(lambda: "unknown_node_or_wrong_node_key" in primary.log(), 5, what="log line")


def test_registration_does_not_tell_which_ids_exist(cluster):
    """Attack: probe ids through the registration's error (a known id wanted its key,
    an unknown one a token)."""
    primary = cluster.primary()
    status, node, _hdrs = call(primary, "POST", "/api/nodes/register", {
        "name": "probed", "api_endpoint": "http://127.0.0.99:9", "api_key": node_key("probed"),
        "token": REGISTRATION_TOKEN})
    assert status == 201
    answers = set()
    for node_id in (node["id"], "not-a-node"):
        for token in ("wrong-token-0123456789abcdef", None):
            body = {"id": node_id, "name": "x", "api_endpoint": "http://127.0.0.99:9",
                    "api_key": node_key("guess")}
            if token:
                body["token"] = token
            status, answer, _hdrs = call(primary, "POST", "/api/nodes/register", body)
            answers.add((status, answer["error"]))
    assert len(answers) == 1, answers
    assert next(iter(answers))[0] == 401
