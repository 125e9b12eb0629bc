"""Full health sweep of 1,000 live secondaries by the primary's health checker.

A helper process serves NODES lightweight `/api/health` endpoints on loopback
(one listening port each, answering as its node id). The primary's own
HealthChecker and Registry (real SQLite in a temp dir, the same code the agent
runs) register them and time complete sweeps: every node probed over HTTP,
every result stored and logged. Prints `name: value unit` lines.

    .venv/bin/python bench/agent_health_sweep.py [--nodes 1000] [--sweeps 3]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

from _simnodes import health_answer, health_endpoint, raise_fd_limit

HOST = "127.0.0.62"


def serve_endpoints(count: int, ports_out, ready) -> None:
    """Child process: `count` listening sockets answering GET /api/health."""
    raise_fd_limit(count * 2 + 256)

    async def main():
        servers = []
        for i in range(count):
            body = (f'{{"status":"healthy","service":"hostmesh","role":"secondary",'
                    f'"node_id":"sweep-{i:05d}","version":"bench"}}').encode()
            server = await health_endpoint(HOST, health_answer(body))
            servers.append(server)
            ports_out.append(server.sockets[0].getsockname()[1])
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


async def run(nodes: int, sweeps: int, concurrency: int, tmp: Path, ports: list[int]) -> None:
    from hostmesh.agent import config as config_mod
    from hostmesh.agent.health import HealthChecker
    from hostmesh.agent.registry import Registry

    env = {"NODE_IS_PRIMARY": "true", "NODE_NAME": "bench-primary",
           "SERVER_ADDRESS": f"{HOST}:1", "NODE_API_KEY": "k" * 64, "NODE_ID": "bench-primary",
           "DATA_DIR": str(tmp), "HEALTH_CHECK_CONCURRENCY": str(concurrency),
           "HEALTH_CHECK_TIMEOUT": "5",
           # the endpoints are loopback ports (the real checker refuses anything
           # but a mesh address otherwise, and would probe nothing)
           "ALLOW_LOOPBACK_ENDPOINTS": "true"}
    cfg = config_mod.load(env)
    registry = Registry(cfg.database_path)
    registry.upsert_self(cfg.node_id, cfg.node_name, cfg.api_endpoint, cfg.api_key, "bench",
                         None, None, {})
    for i, port in enumerate(ports):
        registry.insert_node({"id": f"sweep-{i:05d}", "name": f"sweep-{i:05d}",
                              "api_endpoint": f"http://{HOST}:{port}"}, "x" * 64)
    checker = HealthChecker(cfg, registry)
    durations = []
    for _ in range(sweeps):
        # make every node due, as at the 30 s mark of the default table
        registry.db.execute("UPDATE nodes SET last_health_check=NULL, last_seen=NULL")
        started = time.perf_counter()
        checked = await checker.sweep()
        durations.append(time.perf_counter() - started)
        assert checked == nodes, checked
    online = registry.db.execute(
        "SELECT count(*) FROM nodes WHERE is_primary=0 AND status='online' "
        "AND consecutive_failures=0").fetchone()[0]
    registry.close()
    print(f"agent_health_sweep_{nodes}_nodes_best: {min(durations):.2f} s")
    print(f"agent_health_sweep_{nodes}_nodes_median: {sorted(durations)[len(durations) // 2]:.2f} s")
    print(f"agent_health_sweep_nodes_online: {online} count")
    print(f"agent_health_sweep_concurrency: {concurrency} checks")
    if online != nodes:  # a sweep that probed nothing must not pass for a fast one
        raise SystemExit(f"only {online} of {nodes} nodes online after the sweeps")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--sweeps", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    nodes = max(1, min(args.nodes, 2000))
    sweeps = max(1, min(args.sweeps, 10))
    raise_fd_limit(nodes * 2 + 256)
    with socket.socket() as probe:  # fail early if the address is not usable
        probe.bind((HOST, 0))

    manager = multiprocessing.Manager()
    ports = manager.list()
    ready = manager.Event()
    child = multiprocessing.Process(target=serve_endpoints, args=(nodes, ports, ready),
                                    daemon=True)
    child.start()
    tmp = Path(tempfile.mkdtemp(prefix="hostmesh-sweep-"))
    # the checker logs one line per node, as in production; keep it off the terminal
    handler = logging.FileHandler(tmp / "checker.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    try:
        if not ready.wait(60):
            print("endpoint process did not start", file=sys.stderr)
            return 1
        asyncio.run(run(nodes, sweeps, args.concurrency, tmp, list(ports)))
        lines = (tmp / "checker.log").read_text().count("health check completed")
        print(f"agent_health_sweep_log_lines: {lines} count")
    finally:
        child.terminate()
        child.join(10)
        manager.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
