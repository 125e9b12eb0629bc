#!/usr/bin/env python3
"""Seconds from `site.yml` start to verified HTTPS through every node of a fresh 3-node lab.

Its own lab (tlsbench-node1..3 on hostmesh-tlsbench, 10.231.15.0/24), over SSH
like every lab: the Cloudflare stand-in with its DNS and pebble on the lab
gateway (scripts/lab_gateway.py), `site.yml` (its tls play issues: the lab
group_vars turn TLS on), then HTTPS through every node verified against
pebble's root. Prints `name: value unit` lines:

- tls_site_converge_seconds: site.yml from scratch, the order included;
- tls_site_seconds_to_verified_https: site.yml start to verified HTTPS through
  every node;
- tls_site_orders: ACME orders for the three nodes (goal 1);
- tls_site_dns_writes: Cloudflare API writes of the issuer (goal 2).

    flock /tmp/hostmesh-heavy.lock .venv/bin/python bench/tls_site.py
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import lab_acme
from lab import Lab
from sitelab import run_playbook, site_lab, start_acme

LAB = Lab(prefix="tlsbench-", network="hostmesh-tlsbench", subnet="10.231.15.0/24")
HOST = "whoami.lab.test"


def verified(address: str, root: str) -> bool:
    ctx = ssl.create_default_context(cadata=root)
    try:
        with socket.create_connection((address, 443), timeout=3) as raw, \
                ctx.wrap_socket(raw, server_hostname=HOST) as tls:
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
            return tls.recv(12).startswith(b"HTTP/1.1 200")
    except (OSError, ssl.SSLError):
        return False


def main() -> int:
    with site_lab(LAB, "hm-tls-bench-") as dest:
        try:
            root = start_acme(LAB, dest)
            t0 = time.monotonic()
            run_playbook(dest, "site.yml")
            t1 = time.monotonic()
            deadline = t1 + 60
            while not all(verified(LAB.address(n), root) for n in LAB.nodes):
                if time.monotonic() > deadline:
                    raise SystemExit("tls_site: HTTPS does not verify through every node "
                                     "after 60 s")
                time.sleep(0.2)
            t3 = time.monotonic()
            status = json.loads(subprocess.run(
                ["docker", "exec", LAB.container(LAB.nodes[0]), "cat",
                 "/var/lib/hostmesh-acme/status.json"],
                capture_output=True, text=True, check=True, timeout=30).stdout)
        finally:
            lab_acme.stop(dest / ".hostmesh")
    st = status["sets"]["lab.test"]
    print(f"tls_site_converge_seconds: {t1 - t0:.1f} s")
    print(f"tls_site_seconds_to_verified_https: {t3 - t0:.1f} s")
    print(f"tls_site_orders: {st['orders']} orders")
    print(f"tls_site_dns_writes: {st.get('dns_writes_last_order', 0)} writes")
    return 0 if st["orders"] == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
