"""Failover window of hostmesh's Traefik routing, on real Traefik processes.

Three Traefik "nodes" on loopback addresses (bench/traefik_harness.py) with the
dynamic config the traefik_config module renders; whoami runs on node1 and
node3. A bounded request loop hits node1 while node1's backend is killed, then
restarted. Prints `name: value unit` lines.

    .venv/bin/python bench/traefik_failover.py [--duration 20] [--rate 50]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from traefik_harness import Cluster, get


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of requests")
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second")
    parser.add_argument("--interval", default="2s", help="health-check interval")
    parser.add_argument("--kill-at", type=float, default=3.0, help="kill node1's backend at (s)")
    parser.add_argument("--restart-at", type=float, default=12.0, help="restart it at (s)")
    parser.add_argument(
        "--no-status-failover",
        action="store_true",
        help="health checks only (no failover.errors), to compare",
    )
    args = parser.parse_args()
    status = () if args.no_status_failover else ("502-504",)
    prefix = "traefik_failover_hc_only" if args.no_status_failover else "traefik_failover"

    with tempfile.TemporaryDirectory(prefix="hostmesh-bench-") as tmp:
        cluster = Cluster(Path(tmp), interval=args.interval, failover_status=status)
        try:
            cluster.start()
            url = cluster.nodes["node1"].url()
            results = []  # (t, status, body); requests are sent open-loop at --rate
            start = time.monotonic()
            killed_at = restarted_at = None

            def one(_i):
                status, body = get(url, timeout=5)
                results.append((time.monotonic() - start, status, body.strip()))

            with ThreadPoolExecutor(max_workers=32) as pool:
                n = 0
                while True:
                    now = time.monotonic() - start
                    if now >= args.duration:
                        break
                    if killed_at is None and now >= args.kill_at:
                        cluster.backends["node1"].stop()
                        killed_at = time.monotonic() - start
                    if restarted_at is None and now >= args.restart_at:
                        cluster.backends["node1"].start()
                        restarted_at = time.monotonic() - start
                    pool.submit(one, n)
                    n += 1
                    delay = start + n / args.rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
            results.sort()
        finally:
            cluster.stop()

    failed = [r for r in results if r[1] != 200]
    window = [r for r in results if killed_at <= r[0] < restarted_at]
    # Seconds from the kill until every later request (before the restart) was
    # answered by the peer: the last failed or local answer marks the end.
    last_local = max((r[0] for r in window if r[1] != 200 or r[2] != "node3"), default=killed_at)
    to_peer = last_local - killed_at
    after = [r for r in results if r[0] >= restarted_at]
    first_local = next((r[0] for r in after if r[2] == "node1"), None)
    print(f"{prefix}_requests: {len(results)} requests")
    print(f"{prefix}_rate: {len(results) / args.duration:.1f} req/s")
    print(f"{prefix}_failed: {len(failed)} requests")
    print(f"{prefix}_seconds_to_peer: {to_peer:.3f} s")
    print(f"{prefix}_served_by_peer: {sum(1 for r in window if r[2] == 'node3')} requests")
    if first_local is None:
        print("traefik_failover_seconds_back_to_local: never s")
    else:
        print(f"{prefix}_seconds_back_to_local: {first_local - restarted_at:.3f} s")
    for t, status, body in failed[:5]:
        print(f"# failed at {t:.3f}s: {status} {body[:100]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
