"""Heartbeat ingest of a real primary with 1,000 registered nodes; primary RSS.

Starts `hostmesh agent` (primary) on loopback, registers NODES nodes through the
admin API, then sends authenticated heartbeats (X-Node-ID + X-Node-API-Key,
rotating over every node, as real secondaries would) for DURATION seconds with
`wrk` when it is installed (apt-get install wrk), else with a Python
keep-alive load generator (which then is the bottleneck: its figure is a
lower bound). Prints `name: value unit` lines.

    .venv/bin/python bench/agent_heartbeat_ingest.py [--nodes 1000] [--duration 10] [--rounds 2]

The same wrk load against a bare Starlette handler doing one SQLite update
(same uvicorn settings) is measured in alternation, so the figure can be read
against what this machine, at this moment, gives any handler.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ADMIN = "bench-admin-token-0123456789abcdef0123456789"
HOST = "127.0.0.61"

LUA = r"""
local nodes = {}
local i = 0
init = function(args)
  for line in io.lines(args[1]) do
    local id, key = line:match("([^ ]+) ([^ ]+)")
    nodes[#nodes + 1] = {id, key}
  end
  i = math.random(#nodes)
end
request = function()
  i = i % #nodes + 1
  local n = nodes[i]
  return wrk.format("POST", "/api/nodes/" .. n[1] .. "/heartbeat",
    {["X-Node-ID"] = n[1], ["X-Node-API-Key"] = n[2],
     ["Content-Type"] = "application/json"}, "{}")
end
done = function(summary, latency, requests)
  io.write(string.format("WRK requests=%d errors=%d status_errors=%d duration_us=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write +
    summary.errors.timeout, summary.errors.status, summary.duration,
    latency:percentile(50), latency:percentile(99)))
end
"""


BASELINE_APP = r"""
import sqlite3, sys, time
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
db = sqlite3.connect(sys.argv[1] if len(sys.argv) > 1 else "BASE_DB", isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=NORMAL")
db.execute("CREATE TABLE IF NOT EXISTS n (id TEXT PRIMARY KEY, last REAL)")
async def hb(request):
    db.execute("UPDATE n SET last=? WHERE id=?", (time.time(), request.path_params["id"]))
    return JSONResponse({"status": "ok"})
app = Starlette(routes=[Route("/api/nodes/{id}/heartbeat", hb, methods=["POST"])])
"""


def wrk_run(wrk: str, url: str, tmp: Path, args) -> tuple[float, float, float, int]:
    """(req/s, p50 ms, p99 ms, errors) of one wrk run rotating over the nodes file."""
    out = subprocess.run(
        [wrk, f"-t{args.threads}", f"-c{args.connections}", f"-d{int(args.duration)}s",
         "-s", str(tmp / "hb.lua"), url, "--", str(tmp / "nodes.txt")],
        capture_output=True, text=True, check=False).stdout
    m = re.search(r"WRK requests=(\d+) errors=(\d+) status_errors=(\d+) "
                  r"duration_us=(\d+) p50_us=(\d+) p99_us=(\d+)", out)
    if not m:
        raise RuntimeError("wrk gave no summary:\n" + out)
    requests, errors, status_errors, dur_us, p50, p99 = (int(g) for g in m.groups())
    return requests / (dur_us / 1e6), p50 / 1000, p99 / 1000, errors + status_errors


def baseline(wrk: str, tmp: Path, nodes: list, args) -> tuple[float, float, float, int]:
    """The same load against a bare Starlette handler doing one SQLite update."""
    db = tmp / "baseline.db"
    (tmp / "baseline_app.py").write_text(BASELINE_APP.replace("BASE_DB", str(db)))
    import sqlite3

    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE IF NOT EXISTS n (id TEXT PRIMARY KEY, last REAL)")
    conn.executemany("INSERT OR IGNORE INTO n VALUES (?, 0)", [(i,) for i, _ in nodes])
    conn.commit()
    conn.close()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "baseline_app:app", "--host", HOST, "--port", str(port),
         "--http", "h11", "--loop", "asyncio", "--no-access-log", "--log-level", "warning"],
        cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://{HOST}:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        return wrk_run(wrk, url, tmp, args)
    finally:
        proc.terminate()
        proc.wait(10)


def app_cost(nodes: list[tuple[str, str]], tmp: Path, calls: int = 5000) -> tuple[float, float]:
    """Microseconds per heartbeat spent in the agent's ASGI app vs the bare handler,
    called in-process without any network or HTTP parsing (best of 3 batches): what
    the agent's auth and bookkeeping cost, whatever the machine's load does to wrk."""
    import importlib.util

    from hostmesh.agent import config
    from hostmesh.agent.server import build

    cfg = config.finish(config.load({
        "NODE_IS_PRIMARY": "true", "NODE_NAME": "cost", "DATA_DIR": str(tmp / "cost"),
        "ADMIN_TOKEN": ADMIN, "HEALTH_CHECK_INTERVAL": "3600"}))
    api, agent_app = build(cfg)
    for node_id, key in nodes:
        api.registry.insert_node({"id": node_id, "name": node_id,
                                  "api_endpoint": "http://127.0.0.1:9"}, key)
    spec = importlib.util.spec_from_file_location("baseline_app", tmp / "baseline_app.py")
    base = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(base)

    async def call(app, i: int) -> None:
        node_id, key = nodes[i % len(nodes)]
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": f"/api/nodes/{node_id}/heartbeat",
                 "raw_path": b"", "root_path": "", "query_string": b"",
                 "headers": [(b"x-node-id", node_id.encode()), (b"x-node-api-key", key.encode()),
                             (b"content-type", b"application/json"), (b"content-length", b"2")],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
        messages = [{"type": "http.request", "body": b"{}", "more_body": False}]
        sent = []

        async def receive():
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)

        await app(scope, receive, send)
        if sent[0]["status"] != 200:
            raise RuntimeError(f"in-process heartbeat answered {sent[0]['status']}")

    async def measure(app) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for i in range(calls):
                await call(app, i)
            best = min(best, (time.perf_counter() - started) / calls * 1e6)
        return best

    async def both() -> tuple[float, float]:
        return await measure(agent_app), await measure(base.app)

    try:
        return asyncio.run(both())
    finally:
        api.registry.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def key_for(i: int) -> str:
    return hashlib.sha256(f"bench-node-{i}".encode()).hexdigest()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def admin_post(url: str, body: dict) -> None:
    req = urllib.request.Request(url + "/api/nodes", data=json.dumps(body).encode(),
                                 method="POST", headers={"Authorization": f"Bearer {ADMIN}",
                                                         "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 201


async def python_load(url: str, nodes: list[tuple[str, str]], duration: float,
                      connections: int) -> tuple[int, int, list[float]]:
    host, port = url.split("//")[1].split(":")
    latencies: list[float] = []
    errors = 0
    done = 0
    stop_at = time.monotonic() + duration

    async def worker(offset: int):
        nonlocal errors, done
        reader, writer = await asyncio.open_connection(host, int(port))
        i = offset
        while time.monotonic() < stop_at:
            node_id, key = nodes[i % len(nodes)]
            i += connections
            req = (f"POST /api/nodes/{node_id}/heartbeat HTTP/1.1\r\nHost: {host}\r\n"
                   f"X-Node-ID: {node_id}\r\nX-Node-API-Key: {key}\r\n"
                   "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
            start = time.perf_counter()
            writer.write(req.encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"content-length: (\d+)", head.lower()).group(1))
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
            done += 1
        writer.close()

    await asyncio.gather(*(worker(c) for c in range(connections)))
    return done, errors, latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-wrk", action="store_true", help="use the Python load generator")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the bare Starlette + SQLite handler measured for comparison")
    args = parser.parse_args()
    args.nodes = max(1, min(args.nodes, 5000))
    args.duration = max(1.0, min(args.duration, 60.0))
    args.rounds = max(1, min(args.rounds, 5))

    tmp = Path(tempfile.mkdtemp(prefix="hostmesh-bench-"))
    port = free_port()
    url = f"http://{HOST}:{port}"
    env = {"PATH": os.environ.get("PATH", ""), "NODE_IS_PRIMARY": "true",
           "NODE_NAME": "bench-primary", "SERVER_ADDRESS": f"{HOST}:{port}",
           "NODE_API_ENDPOINT": url, "DATA_DIR": str(tmp / "data"), "ADMIN_TOKEN": ADMIN,
           "HEALTH_CHECK_INTERVAL": "3600", "LOG_LEVEL": "WARNING",
           # the bench's nodes are parked on loopback, not on mesh addresses
           "ALLOW_LOOPBACK_ENDPOINTS": "true"}
    log = open(tmp / "primary.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "hostmesh.cli", "agent"], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(url + "/api/health", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    print((tmp / "primary.log").read_text(), file=sys.stderr)
                    return 1
                time.sleep(0.1)
        rss_empty = rss_kib(proc.pid)
        nodes = [(f"bench-{i:05d}", key_for(i)) for i in range(args.nodes)]
        started = time.monotonic()
        # endpoints point at a closed port: the checker is parked (interval 3600 s)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: admin_post(url, {
                "id": n[0], "name": n[0], "api_endpoint": "http://127.0.0.1:9",
                "api_key": n[1]}), nodes))
        print(f"agent_register_{args.nodes}_nodes_via_admin_api: "
              f"{time.monotonic() - started:.2f} s")
        time.sleep(1)
        wrk = shutil.which("wrk")
        if wrk and not args.no_wrk:
            (tmp / "nodes.txt").write_text("".join(f"{i} {k}\n" for i, k in nodes))
            (tmp / "hb.lua").write_text(LUA)
            # agent and baseline alternate, best round of each: a shared machine's
            # load swings would otherwise decide the comparison
            runs, base_runs = [], []
            for _ in range(args.rounds):
                runs.append(wrk_run(wrk, url, tmp, args))
                if not args.no_baseline:
                    base_runs.append(baseline(wrk, tmp, nodes, args))
            rate, p50, p99, _ = max(runs)
            errors = sum(r[3] for r in runs)
            print(f"load generator: wrk, best of {args.rounds} rounds", file=sys.stderr)
            print(f"agent_heartbeat_rounds: {args.rounds} count")
            print(f"agent_heartbeat_ingest_rate: {rate:.0f} req/s")
            print(f"agent_heartbeat_p50_latency: {p50:.2f} ms")
            print(f"agent_heartbeat_p99_latency: {p99:.2f} ms")
            print(f"agent_heartbeat_errors: {errors} count")
            if base_runs:
                b_rate, _, b_p99, _ = max(base_runs)
                print(f"baseline_bare_starlette_sqlite_rate: {b_rate:.0f} req/s")
                print(f"baseline_bare_starlette_sqlite_p99_latency: {b_p99:.2f} ms")
                print(f"agent_heartbeat_rate_vs_baseline: {100 * rate / b_rate:.0f} %")
                agent_us, base_us = app_cost(nodes, tmp)
                print(f"agent_heartbeat_app_cost: {agent_us:.0f} us")
                print(f"baseline_bare_starlette_sqlite_app_cost: {base_us:.0f} us")
        else:
            done, errors, lat = asyncio.run(python_load(url, nodes, args.duration,
                                                        args.connections))
            lat.sort()
            print("load generator: python (wrk not installed): the rate is a lower bound",
                  file=sys.stderr)
            print(f"agent_heartbeat_ingest_rate: {done / args.duration:.0f} req/s")
            print(f"agent_heartbeat_p50_latency: {lat[len(lat) // 2] * 1000:.2f} ms")
            print(f"agent_heartbeat_p99_latency: {lat[int(len(lat) * 0.99)] * 1000:.2f} ms")
            print(f"agent_heartbeat_errors: {errors} count")
        print(f"agent_primary_rss_empty: {rss_empty / 1024:.1f} MiB")
        print(f"agent_primary_rss_{args.nodes}_nodes: {rss_kib(proc.pid) / 1024:.1f} MiB")
        # every node heartbeated at least once? (sanity: the load really hit the registry)
        req = urllib.request.Request(url + "/api/nodes",
                                     headers={"Authorization": f"Bearer {ADMIN}"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            listed = json.loads(resp.read())
        seen = sum(1 for n in listed if not n["is_primary"] and n["last_seen"])
        print(f"agent_nodes_with_heartbeat: {seen} count")
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
