"""Latency of a request forwarded to a peer's mesh entrypoint vs a local one.

Real Traefik processes on loopback (bench/traefik_harness.py): node1 serves
whoami locally, node2 forwards it to node1/node3's mesh entrypoint. The client
keeps its connection; Traefik dials the peer per request (the default), then,
for comparison, with pooled connections to peers (`_keepalive` figures).
Sequential requests. Prints `name: value unit` lines.

    .venv/bin/python bench/traefik_latency.py [--requests 1000]
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from traefik_harness import HOST, WEB_PORT, Cluster, percentile


def measure(address: str, count: int) -> list[float]:
    conn = http.client.HTTPConnection(address, WEB_PORT, timeout=5)
    samples = []
    for _ in range(count + 50):
        t0 = time.perf_counter()
        conn.request("GET", "/", headers={"Host": HOST})
        resp = conn.getresponse()
        resp.read()
        samples.append(time.perf_counter() - t0)
        if resp.status != 200:
            raise RuntimeError(f"{address}: HTTP {resp.status}")
    conn.close()
    return samples[50:]  # drop the warm-up


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    # Default: a fresh connection to the peer per forwarded request
    # (traefik_mesh_keepalive: false); then with pooled connections to compare.
    for suffix, keepalive in (("", False), ("_keepalive", True)):
        with tempfile.TemporaryDirectory(prefix="hostmesh-bench-") as tmp:
            cluster = Cluster(Path(tmp), mesh_keepalive=keepalive)
            try:
                cluster.start()
                local = measure(cluster.addresses["node1"], args.requests)
                forwarded = measure(cluster.addresses["node2"], args.requests)
            finally:
                cluster.stop()
        for name, samples in (("local", local), ("forwarded", forwarded)):
            print(
                f"traefik_latency{suffix}_{name}_median: {statistics.median(samples) * 1000:.3f} ms"
            )
            print(f"traefik_latency{suffix}_{name}_p99: {percentile(samples, 99) * 1000:.3f} ms")
        median_ratio = statistics.median(forwarded) / statistics.median(local)
        p99_ratio = percentile(forwarded, 99) / percentile(local, 99)
        print(f"traefik_latency{suffix}_forwarded_over_local_median: {median_ratio:.2f} x")
        print(f"traefik_latency{suffix}_forwarded_over_local_p99: {p99_ratio:.2f} x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
