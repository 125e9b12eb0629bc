"""`/api/health` of a real primary while 2,000 half-open connections are held.

An anonymous client opens HALF_OPEN connections to the primary that never
finish their request headers (what stalled the agent before issue 13), holds
them, and a legitimate client meanwhile asks `/api/health` (a fresh
connection per request, as a monitoring probe would). Two runs:
- `unit`: the file descriptor limit of the shipped systemd unit
  (LimitNOFILE=65536);
- `fd1024`: a hard limit of 1,024 descriptors, below the attack, so the
  agent's connection cap and eviction of the oldest half-open connection are
  what keep it answering.
Goal: p99 < 100 ms and no legitimate request dropped. Also printed: the bytes
the agent logged during the attack and how many of the held connections the
agent had closed by the end (REQUEST_TIMEOUT or eviction).

    .venv/bin/python bench/agent_halfopen.py [--half-open 2000] [--requests 300]
"""

from __future__ import annotations

import argparse
import http.client
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration" / "agent"))
from agent_harness import Cluster


def _client_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))


def _agent_limit(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    return apply


def _possible(limit: int) -> int:
    """`limit`, or this machine's hard limit when that is lower (containers)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return limit if hard == resource.RLIM_INFINITY else min(limit, hard)


def _half_open(host: str, port: int, count: int) -> list[socket.socket]:
    held = []
    for _ in range(count):
        sock = socket.socket()
        sock.settimeout(5)
        sock.connect((host, port))
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # never finished
        held.append(sock)
    return held


def _closed_by_server(held: list[socket.socket]) -> int:
    closed = 0
    for sock in held:
        sock.setblocking(False)
        try:
            closed += sock.recv(1) == b""
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    return closed


def _health(host: str, port: int, requests: int) -> tuple[list[float], int]:
    latencies, failed = [], 0
    for _ in range(requests):
        start = time.perf_counter()
        try:
            conn = http.client.HTTPConnection(host, port, timeout=5)
            conn.request("GET", "/api/health")
            resp = conn.getresponse()
            ok = resp.status == 200 and b'"healthy"' in resp.read()
            conn.close()
        except OSError:
            ok = False
        latencies.append(time.perf_counter() - start)
        failed += not ok
    return latencies, failed


def scenario(name: str, fd_limit: int, half_open: int, requests: int) -> None:
    with tempfile.TemporaryDirectory(prefix="hostmesh-halfopen-") as tmp:
        cluster = Cluster(Path(tmp))
        try:
            primary = cluster.primary(start=False, LOG_LEVEL="INFO")
            primary.extra["preexec_fn"] = _agent_limit(fd_limit)
            primary.start().wait_ready()
            before = primary.log_path.stat().st_size
            started = time.perf_counter()
            held = _half_open(primary.host, primary.port, half_open)
            opened_s = time.perf_counter() - started
            time.sleep(0.5)
            latencies, failed = _health(primary.host, primary.port, requests)
            closed = _closed_by_server(held)
            for sock in held:
                sock.close()
            time.sleep(0.3)
            log_bytes = primary.log_path.stat().st_size - before
            alive = primary.proc.poll() is None
        finally:
            cluster.close()
    ordered = sorted(latencies)
    p50 = ordered[len(ordered) // 2] * 1000
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000
    print(f"agent_halfopen_{name}_fd_limit: {fd_limit} descriptors")
    print(f"agent_halfopen_{name}_held: {half_open} connections")
    print(f"agent_halfopen_{name}_open_time: {opened_s:.2f} s")
    print(f"agent_halfopen_{name}_health_p50: {p50:.1f} ms")
    print(f"agent_halfopen_{name}_health_p99: {p99:.1f} ms")
    print(f"agent_halfopen_{name}_health_max: {ordered[-1] * 1000:.1f} ms")
    print(f"agent_halfopen_{name}_health_failed: {failed} requests")
    print(f"agent_halfopen_{name}_closed_by_agent: {closed} connections")
    print(f"agent_halfopen_{name}_log_bytes: {log_bytes} bytes")
    print(f"agent_halfopen_{name}_agent_alive: {int(alive)} bool")
    print(f"agent_halfopen_{name}_p99_goal_met: {int(p99 < 100 and failed == 0)} bool")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--half-open", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    _client_fd_limit(args.half_open + 512)
    scenario("unit", _possible(65536), args.half_open, args.requests)
    scenario("fd1024", 1024, args.half_open, args.requests)
    return 0


if __name__ == "__main__":
    sys.exit(main())
