"""Helpers of tests/security: attacks on real agents started by the agent harness.

Each test in this directory is one attack of issue 13, run against real
`hostmesh agent` processes on loopback; each failed against the agent before
the fix. Helpers here speak raw HTTP so a test can choose its source address
(127.50.0.x stands for a mesh address: MESH_SUBNET=127.50.0.0/24) and send
whatever a hostile client would.
"""

from __future__ import annotations

import http.client
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration" / "agent"))
from agent_harness import Cluster


def new_cluster(root: Path) -> Cluster:
    """Agents under `root` (tests/integration/agent/agent_harness.py)."""
    return Cluster(root)


# a mesh made of loopback addresses, so a test can send from "its" mesh address
MESH = "127.50.0.0/24"


def mesh_primary(cluster, **env):
    """A primary whose mesh is 127.50.0.0/24 and that accepts no other endpoint."""
    return cluster.primary(MESH_SUBNET=MESH, ALLOW_LOOPBACK_ENDPOINTS="false", **env)


def call(agent, method: str, path: str, body=None, headers=None, source: str | None = None,
         timeout: float = 10.0) -> tuple[int, dict, dict]:
    """One HTTP request to `agent` from `source` (an address on lo); (status, json, headers)."""
    conn = http.client.HTTPConnection(agent.host, agent.port, timeout=timeout,
                                      source_address=(source, 0) if source else None)
    try:
        data = None if body is None else json.dumps(body).encode()
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        conn.request(method, path, body=data, headers=all_headers)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            payload = json.loads(raw) if raw else {}
        except ValueError:
            payload = {"raw": raw.decode("latin-1")}
        return resp.status, payload, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()
