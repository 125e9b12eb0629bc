#!/usr/bin/env python3
"""Bench: `ansible-inventory --list` through hostmesh.cluster.nodes vs. a static YAML file.

A real primary (`hostmesh agent` on 127.8.5.1, loopback only) gets N nodes
registered through its admin API (POST /api/nodes). Then the median wall time of
`ansible-inventory --list` is measured for:

  static  the same N hosts, groups and host variables in a static YAML inventory
          (generated from the plugin's own output, so both carry the same data)
  cold    the plugin with a cache configured but empty: GET /api/nodes + cache write
  warm    the plugin with a warm cache (no request to the primary)
  nocache the plugin without any cache (GET /api/nodes every run)

and the ratios dynamic / static (goal: <= 1.2). Prints `name: value unit` lines.

    .venv/bin/python bench/inventory_nodes.py [--nodes 1000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration" / "inventory"))

from livecluster import (
    ANSIBLE_INVENTORY,
    Cluster,
    ansible_env,
    plain,
    write_cfg,
)


def timed_list(source: Path, env: dict[str, str], *extra: str) -> tuple[float, str]:
    started = time.perf_counter()
    res = subprocess.run(
        [ANSIBLE_INVENTORY, "-i", str(source), "--list", *extra],
        env=env,
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if res.returncode != 0 or "[WARNING]: Failed to parse" in res.stderr:
        raise SystemExit(f"ansible-inventory failed on {source}:\n{res.stderr[-3000:]}")
    return elapsed, res.stdout


def static_inventory(listing: dict) -> dict:
    """Turn `ansible-inventory --list` output into an equivalent YAML inventory."""
    hostvars = listing["_meta"]["hostvars"]
    groups: dict = {}
    for name, entry in listing.items():
        if name in ("_meta", "all"):
            continue
        group: dict = {}
        if entry.get("hosts"):
            group["hosts"] = {h: None for h in entry["hosts"]}
        if entry.get("children"):
            group["children"] = {c: None for c in entry["children"]}
        groups[name] = group
    all_hosts = {h: hostvars.get(h) or None for h in hostvars}
    return {"all": {"hosts": all_hosts, "children": groups}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="hostmesh-bench-inv-"))
    # health checks every hour: the bench measures the inventory, not the checker
    cluster = Cluster(
        root / "cluster",
        net=5,
        extra_env={
            "HEALTH_CHECK_INTERVAL": "3600",
            "BACKOFF_TABLE": "",
            "REGISTRATION_RATE_LIMIT": "100000/1",
            "LOG_LEVEL": "WARNING",
        },
    )
    try:
        cluster.start_primary()
        started = time.perf_counter()
        statuses = ("online", "offline", "unreachable")
        for i in range(args.nodes - 1):  # the primary lists itself
            cluster.api(
                "POST",
                "/api/nodes",
                {
                    "name": f"bench-node-{i:04d}",
                    "api_endpoint": f"http://127.8.6.{i % 250 + 1}:{i // 250 + 1}",  # loopback only
                    "api_key": secrets.token_hex(32),
                    "wireguard_ip": f"10.50.{i // 250}.{i % 250 + 1}",
                    "labels": {"zone": f"z{i % 4}", "tier": statuses[i % 3]},
                    "version": "0.1.0",
                },
            )
        register_s = time.perf_counter() - started
        count = len(cluster.api("GET", "/api/nodes"))
        print(f"inventory_registered_nodes: {count} nodes")
        print(f"inventory_register_rate: {(count - 1) / register_s:.0f} nodes/s")

        req = urllib.request.Request(
            cluster.primary.url + "/api/nodes",
            headers={"Authorization": f"Bearer {cluster.admin_token}"},
        )
        fetch = []
        for _attempt in range(args.runs):
            t0 = time.perf_counter()
            with urllib.request.urlopen(req, timeout=30) as resp:
                resp.read()
            fetch.append(time.perf_counter() - t0)
        print(f"inventory_api_nodes_get: {statistics.median(fetch) * 1000:.1f} ms")

        env = ansible_env(cluster.admin_token)
        cache_dir = root / "cache"
        nocache = write_cfg(root / "nocache.hostmesh.yml", cluster.primary.url)
        cached = write_cfg(
            root / "cached.hostmesh.yml",
            cluster.primary.url,
            cache=True,
            cache_plugin="ansible.builtin.jsonfile",
            cache_connection=str(cache_dir),
            cache_timeout=3600,
        )

        out = timed_list(nocache, env)[1]
        listing = plain(json.loads(out))
        assert len(listing["_meta"]["hostvars"]) == count, "plugin lost hosts"
        static = root / "static.yml"
        static.write_text(json.dumps(static_inventory(listing)))  # JSON is YAML
        out = timed_list(static, env)[1]
        assert plain(json.loads(out))["_meta"]["hostvars"] == listing["_meta"]["hostvars"]

        times: dict[str, list[float]] = {"static": [], "cold": [], "warm": [], "nocache": []}
        for _attempt in range(args.runs):  # interleaved, so machine load hits all alike
            times["static"].append(timed_list(static, env)[0])
            shutil.rmtree(cache_dir, ignore_errors=True)
            times["cold"].append(timed_list(cached, env)[0])
            times["warm"].append(timed_list(cached, env)[0])
            times["nocache"].append(timed_list(nocache, env)[0])
        med = {k: statistics.median(v) for k, v in times.items()}
        for key in ("static", "cold", "warm", "nocache"):
            print(f"inventory_list_{key}_{count}: {med[key]:.3f} s")
        for key in ("cold", "warm", "nocache"):
            print(f"inventory_ratio_{key}_vs_static: {med[key] / med['static']:.2f} x")
        return 0
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
