#!/usr/bin/env python3
"""API calls per no-op DNS converge, through the real SDK against the local Cloudflare server.

Prints `name: value unit` lines. Goal: 0 writes and at most 3 reads per no-op
converge, for 3 nodes x 2 names and for 100 nodes x 2 names.

    .venv/bin/python bench/dns_api_calls.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hostmesh.module_utils._dns_reconcile import Reconciler, Spec, make_client

from tests.cloudflare_server.harness import TEST_TOKEN, TEST_ZONE, CloudflareServer

NAMES = [TEST_ZONE, f"*.{TEST_ZONE}"]


def nodes(n: int) -> dict:
    return {f"node{i}": {"ipv4": f"10.{i // 250}.{i % 250}.1"} for i in range(1, n + 1)}


def counts(cf) -> tuple[int, int]:
    log = [e for e in cf.stats()["log"] if e["kind"] != "trace"]
    writes = sum(1 for e in log if e["method"] != "GET")
    return len(log) - writes, writes


def main() -> int:
    ok = True
    with CloudflareServer(zones=[TEST_ZONE], token=TEST_TOKEN) as cf:
        client = make_client(TEST_TOKEN, cf.base_url, max_retries=0)
        for n, per_page in ((3, 500), (100, 500), (100, 100)):
            cf.wipe()
            spec = Spec(zone=TEST_ZONE, cluster="bench", names=NAMES, nodes=nodes(n))
            Reconciler(client, per_page=per_page).converge(spec)
            first_reads, first_writes = counts(cf)
            cf.reset_stats()
            t0 = time.perf_counter()
            result = Reconciler(client, per_page=per_page).converge(spec)
            dt = time.perf_counter() - t0
            reads, writes = counts(cf)
            tag = f"dns_noop_{n}x2" + ("" if per_page == 500 else f"_per_page_{per_page}")
            print(f"{tag}_reads: {reads} requests")
            print(f"{tag}_writes: {writes} requests")
            print(f"{tag}_seconds: {dt:.3f} s")
            print(f"{tag}_records: {len(result.records)} records")
            print(f"dns_first_{tag[9:]}_reads: {first_reads} requests")
            print(f"dns_first_{tag[9:]}_writes: {first_writes} requests")
            ok = ok and writes == 0 and reads <= 3 and not result.changed
        # For comparison: the SDK's own auto-pagination asks for one more, empty page.
        cf.reset_stats()
        zid = client.zones.list(name=TEST_ZONE).result[0].id
        cf.reset_stats()
        listed = sum(1 for _ in client.dns.records.list(zone_id=zid, per_page=100))
        sdk_reads, _ = counts(cf)
        print(f"sdk_autopaginate_{listed}_records_per_page_100_reads: {sdk_reads} requests")
    print(f"dns_goal_met: {int(ok)} bool")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
