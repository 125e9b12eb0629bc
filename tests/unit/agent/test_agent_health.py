"""The health probe against small asyncio servers, and the checker's scheduling."""

from __future__ import annotations

import asyncio
import time

import pytest

from hostmesh.agent import config
from hostmesh.agent.health import HealthChecker, probe
from hostmesh.agent.registry import Registry
from hostmesh.agent.secondary import retry_delay


async def serve(answer: bytes, delay: float = 0.0, seen: list | None = None):
    async def handle(reader, writer):
        request = await reader.readuntil(b"\r\n\r\n")
        if seen is not None:
            seen.append(request)
        await asyncio.sleep(delay)
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def http(body: bytes, status: str = "200 OK", chunked: bool = False) -> bytes:
    if chunked:
        payload = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
        return (f"HTTP/1.1 {status}\r\nTransfer-Encoding: chunked\r\n\r\n").encode() + payload
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


@pytest.mark.parametrize(("answer", "ok", "reason"), [
    (http(b'{"status":"healthy","node_id":"n1"}'), True, ""),
    (http(b'{"status":"healthy"}'), True, ""),
    (http(b'{"status":"healthy","node_id":"n1"}', chunked=True), True, ""),
    (http(b'{"status":"healthy","node_id":"n2"}'), False, "another node id"),
    (http(b'{"status":"sick"}'), False, "not healthy"),
    (http(b"<html>", "200 OK"), False, "not JSON"),
    (http(b"{}", "503 Service Unavailable"), False, "HTTP 503"),
    (b"garbage", False, "not an HTTP answer"),
])
def test_probe_answers(answer, ok, reason):
    async def main():
        seen = []
        server, url = await serve(answer, seen=seen)
        async with server:
            result = await probe(url, "n1", {"X-Node-ID": "prim", "X-Node-API-Key": "k"}, 2)
        return result, seen

    result, seen = asyncio.run(main())
    assert result.ok is ok and reason in result.reason
    assert b"GET /api/health HTTP/1.1" in seen[0] and b"X-Node-API-Key: k" in seen[0]


def test_probe_timeout_and_refused():
    async def main():
        server, url = await serve(http(b"{}"), delay=2)
        async with server:
            slow = await probe(url, "n1", {}, 0.2)
        refused = await probe(url, "n1", {}, 1)  # server closed now
        bad = await probe("ftp://x", "n1", {}, 1)
        return slow, refused, bad

    slow, refused, bad = asyncio.run(main())
    assert not slow.ok and "timeout" in slow.reason and slow.duration_ms < 1500
    assert not refused.ok and "ConnectionRefused" in refused.reason
    assert not bad.ok


def test_probe_keeps_the_endpoint_path_prefix():
    async def main():
        seen = []
        server, url = await serve(http(b'{"status":"healthy"}'), seen=seen)
        async with server:
            await probe(url + "/agent/", "n1", {}, 2)
        return seen

    assert b"GET /agent/api/health " in asyncio.run(main())[0]


def test_checker_schedules_by_backoff(tmp_path):
    cfg = config.load({"NODE_IS_PRIMARY": "true", "NODE_NAME": "p", "NODE_ID": "p",
                       "NODE_API_KEY": "k" * 40, "DATA_DIR": str(tmp_path),
                       "SERVER_ADDRESS": "127.0.0.1:8080",
                       "BACKOFF_TABLE": "0:10:online,3:100:offline"})
    registry = Registry(cfg.database_path)
    registry.upsert_self("p", "p", "http://127.0.0.1:1", "k" * 40, "t", None, None, {})
    registry.insert_node({"id": "a", "name": "a", "api_endpoint": "http://127.0.0.1:1"}, "x" * 40)
    checker = HealthChecker(cfg, registry)
    now = time.time()
    # registered just now: that is its last sign of life, checked 10 s later
    assert checker.due(now) == [] and [t[0] for t in checker.due(now + 10)] == ["a"]
    registry.db.execute("UPDATE nodes SET last_health_check=?, consecutive_failures=2",
                        (now - 11,))
    assert [t[0] for t in checker.due(now)] == ["a"]
    registry.db.execute("UPDATE nodes SET consecutive_failures=3")
    assert checker.due(now) == []  # offline row: every 100 s
    assert [t[0] for t in checker.due(now + 90)] == ["a"]
    checker.in_flight.add("a")
    assert checker.due(now + 90) == []
    assert checker.tick == 1.0
    registry.close()


def test_retry_delay_is_capped_and_grows():
    delays = [retry_delay(n, 1, 30) for n in range(1, 40)]
    assert 0.9 <= delays[0] <= 1.1 and 1.8 <= delays[1] <= 2.2
    assert max(delays) <= 30 and delays[-1] >= 27


def test_checker_never_probes_an_endpoint_off_the_mesh(tmp_path):
    """A record from before the endpoint rules (or written around them) is not probed."""
    cfg = config.load({"NODE_IS_PRIMARY": "true", "NODE_NAME": "p", "NODE_ID": "p",
                       "NODE_API_KEY": "k" * 40, "DATA_DIR": str(tmp_path),
                       "NODE_WIREGUARD_IP": "10.50.0.1"})
    registry = Registry(cfg.database_path)
    registry.insert_node({"id": "old", "name": "old",
                          "api_endpoint": "http://169.254.169.254:80"}, "x" * 40)

    async def main():
        return await HealthChecker(cfg, registry).check("old", "old",
                                                        "http://169.254.169.254:80")

    result = asyncio.run(main())
    assert result["ok"] is False and "not checked" in result["reason"]
    assert result["duration_ms"] == 0.0
    registry.close()
