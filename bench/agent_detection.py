"""Detection time of dead nodes and the primary's CPU at 1,000 simulated nodes.

A real `hostmesh agent` primary runs with the agent's default detection
settings (HEALTH_CHECK_INTERVAL 7 s, HEALTH_CHECK_TIMEOUT 2 s, the default
BACKOFF_TABLE). A helper process simulates NODES secondaries on loopback: each
has its own listening port answering `GET /api/health` as its node id, and
sends a heartbeat every HEARTBEAT_INTERVAL (5 s, the secondaries' default) on
a new connection, with the same stats payload a real secondary sends. After a
warm-up, the primary's CPU time (utime + stime from /proc) is measured over a
window; then KILL nodes die at once the slowest way (heartbeats stop, their
port stays open and never answers, as a host gone behind WireGuard), and the
seconds until the primary lists each of them `offline` are timed.

    .venv/bin/python bench/agent_detection.py [--nodes 1000] [--window 60] [--kill 5]

Prints `name: value unit` lines.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _simnodes import health_answer, health_endpoint, raise_fd_limit

HOST = "127.0.0.63"
PRIMARY_HOST = "127.0.0.64"
ADMIN = "bench-admin-token-0123456789abcdef0123456789"
HEARTBEAT_INTERVAL = 5.0
STATS = {"cpu_percent": 3.5, "cpu_count": 2, "memory_percent": 41.2,
         "memory_total_bytes": 2 * 1024**3, "disk_percent": 57.0,
         "disk_total_bytes": 20 * 1024**3, "load_1m": 0.12}


def node_id(i: int) -> str:
    return f"det-{i:05d}"


def key_for(i: int) -> str:
    return hashlib.sha256(f"bench-detect-{i}".encode()).hexdigest()


def simulate(count: int, primary_port: int, ports_out, ready, dead) -> None:
    """Child process: `count` nodes, each a health endpoint plus a heartbeat loop."""
    raise_fd_limit(count * 3 + 256)
    body = json.dumps({"version": "bench", "stats": STATS}).encode()

    async def main():
        for i in range(count):
            answer_body = json.dumps({"status": "healthy", "service": "hostmesh",
                                      "role": "secondary", "node_id": node_id(i)}).encode()
            # a dead host: its port stays open, nothing ever answers
            server = await health_endpoint(HOST, health_answer(answer_body),
                                           silent=lambda i=i: i in dead)
            ports_out.append(server.sockets[0].getsockname()[1])
        ready.set()

        async def heartbeats(i: int):
            await asyncio.sleep(random.uniform(0, HEARTBEAT_INTERVAL))
            head = (f"POST /api/nodes/{node_id(i)}/heartbeat HTTP/1.1\r\n"
                    f"Host: {PRIMARY_HOST}:{primary_port}\r\nX-Node-ID: {node_id(i)}\r\n"
                    f"X-Node-API-Key: {key_for(i)}\r\nContent-Type: application/json\r\n"
                    f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n").encode()
            while i not in dead:
                try:
                    reader, writer = await asyncio.open_connection(PRIMARY_HOST, primary_port)
                    writer.write(head + body)
                    await reader.read()
                    writer.close()
                except OSError:
                    pass
                await asyncio.sleep(HEARTBEAT_INTERVAL)

        await asyncio.gather(*(heartbeats(i) for i in range(count)))
        await asyncio.Event().wait()

    asyncio.run(main())


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def admin_get(port: int, path: str):
    req = urllib.request.Request(f"http://{PRIMARY_HOST}:{port}{path}",
                                 headers={"Authorization": f"Bearer {ADMIN}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--kill", type=int, default=5)
    args = parser.parse_args()
    nodes = max(10, min(args.nodes, 2000))
    kill = max(1, min(args.kill, nodes // 2))
    raise_fd_limit(nodes * 3 + 256)

    tmp = Path(tempfile.mkdtemp(prefix="hostmesh-detect-"))
    with socket.socket() as sock:
        sock.bind((PRIMARY_HOST, 0))
        primary_port = sock.getsockname()[1]
    manager = multiprocessing.Manager()
    ports = manager.list()
    ready = manager.Event()
    dead = manager.dict()
    child = multiprocessing.Process(target=simulate,
                                    args=(nodes, primary_port, ports, ready, dead), daemon=True)
    child.start()
    proc = None
    try:
        if not ready.wait(120):
            print("simulated nodes did not start", file=sys.stderr)
            return 1
        from hostmesh.agent.registry import Registry

        data = tmp / "primary"
        data.mkdir(mode=0o700)
        registry = Registry(data / "hostmesh.db")
        for i, port in enumerate(list(ports)):
            registry.insert_node({"id": node_id(i), "name": node_id(i),
                                  "api_endpoint": f"http://{HOST}:{port}"}, key_for(i))
        registry.close()
        env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
        env.update({"NODE_IS_PRIMARY": "true", "NODE_NAME": "bench-primary",
                    "NODE_ID": "bench-primary", "NODE_API_KEY": "p" * 64,
                    "SERVER_ADDRESS": f"{PRIMARY_HOST}:{primary_port}",
                    "NODE_API_ENDPOINT": f"http://{PRIMARY_HOST}:{primary_port}",
                    "DATA_DIR": str(data), "ADMIN_TOKEN": ADMIN,
                    "ALLOW_LOOPBACK_ENDPOINTS": "true", "PYTHONUNBUFFERED": "1"})
        log = open(tmp / "primary.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen([sys.executable, "-m", "hostmesh.cli", "agent"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                admin_get(primary_port, "/api/nodes/bench-primary")
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    print("primary did not start:\n" + (tmp / "primary.log").read_text(),
                          file=sys.stderr)
                    return 1
                time.sleep(0.2)
        time.sleep(HEARTBEAT_INTERVAL * 3)  # warm-up: every node has heartbeated
        checks_before = (tmp / "primary.log").read_text().count("health check completed")
        cpu0, wall0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(args.window)
        cpu1, wall1 = cpu_seconds(proc.pid), time.monotonic()
        checks = (tmp / "primary.log").read_text().count("health check completed") - checks_before
        listing = admin_get(primary_port, "/api/nodes")
        online = sum(1 for n in listing if n["status"] == "online" and not n["is_primary"])

        victims = random.sample(range(nodes), kill)
        # each victim dies at a random point of its heartbeat cycle
        killed = time.monotonic()
        for i in victims:
            dead[i] = True
        detected: dict[int, float] = {}
        while len(detected) < kill and time.monotonic() - killed < 60:
            for i in victims:
                if i not in detected and \
                        admin_get(primary_port, f"/api/nodes/{node_id(i)}")["status"] == "offline":
                    detected[i] = time.monotonic() - killed
            time.sleep(0.2)
        others = sum(1 for n in admin_get(primary_port, "/api/nodes")
                     if n["status"] != "online" and not n["is_primary"]
                     and int(n["id"][4:]) not in victims)
        per_min = (cpu1 - cpu0) / (wall1 - wall0) * 60
        times = sorted(detected.values())
        print(f"agent_detection_nodes: {nodes} count")
        print(f"agent_detection_nodes_online_before_kill: {online} count")
        print(f"agent_detection_primary_cpu_per_minute: {per_min:.2f} s")
        print(f"agent_detection_primary_cpu_share: {100 * per_min / 60:.1f} %")
        print(f"agent_detection_probes_of_healthy_nodes_per_minute: "
              f"{checks / (wall1 - wall0) * 60:.0f} count")
        print(f"agent_detection_offline_detected: {len(times)}/{kill} count")
        if times:
            print(f"agent_detection_offline_median: {statistics.median(times):.1f} s")
            print(f"agent_detection_offline_max: {times[-1]:.1f} s")
        print(f"agent_detection_false_offline: {others} count")
        return 0 if len(times) == kill else 1
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        child.terminate()
        child.join(10)
        manager.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
