#!/usr/bin/env python3
"""The cluster's one ACME issuer on loopback: orders, DNS writes and seconds to verified HTTPS.

A real pebble (resolving DNS-01 through the Cloudflare stand-in's DNS), the
issuer, and three real Traefiks (bench/traefik_harness.py layout on
127.15.1.11-13) that get the certificate through hostmesh.tls.deploy. Prints
`name: value unit` lines:

- tls_orders_per_certificate, tls_dns_writes_per_certificate: one order of
  ``lab.test`` + ``*.lab.test`` for three nodes (goal: 1 order, 2 writes);
- tls_orders_for_a_fourth_node: a node added later takes the current certificate
  (goal: 0);
- tls_issue_seconds: from the first ACME request to the certificate on disk;
- tls_verified_https_seconds: from the start of the pass to verified HTTPS
  (pebble's root, SNI whoami.lab.test) on every node;
- tls_renewal_switch_seconds: a renewal, from the new pair's hand-over to every
  node serving the new certificate (Traefik never restarts).

The full-lab figure (site.yml start to verified HTTPS through every lab node)
is not measured yet: see docs/status/15.md.

    .venv/bin/python bench/tls_issue.py
"""

from __future__ import annotations

import socket
import ssl
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))

from lab_acme import Pebble
from traefik_harness import HOST, WEB_PORT, Backend, Node

from hostmesh.tls import deploy
from hostmesh.tls.issuer import CertSet, Issuer, IssuerConfig
from tests.cloudflare_server.harness import CloudflareServer

TOKEN = "bench-tls-token-0123456789abcdef"
ADDRESSES = {f"node{i}": f"127.15.1.{10 + i}" for i in (1, 2, 3, 4)}
SERVICES = {"whoami": {"hosts": [HOST], "port": 18081, "nodes": ["node1", "node3"],
                       "health_path": "/"}}


def served_serial(address: str, root: str) -> str | None:
    from cryptography import x509

    ctx = ssl.create_default_context(cadata=root)
    try:
        with socket.create_connection((address, WEB_PORT + 363), timeout=3) as raw, \
                ctx.wrap_socket(raw, server_hostname=HOST) as tls:
            return format(x509.load_der_x509_certificate(
                tls.getpeercert(binary_form=True)).serial_number, "x")
    except (OSError, ssl.SSLError):
        return None


def wait_all(nodes: list[str], serial: str, root: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(served_serial(ADDRESSES[n], root) == serial for n in nodes):
            return
        time.sleep(0.05)
    raise SystemExit(f"tls_issue: not every node serves {serial} after {timeout} s")


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="hm-bench-tls-"))
    with CloudflareServer(zones=("lab.test",), token=TOKEN, dns=True) as cf, \
            Pebble(work / "ca", dns_server=f"127.0.0.1:{cf.dns_port}") as peb:
        backends = [Backend(ADDRESSES[n], n) for n in ("node1", "node3")]
        nodes = {n: Node(work, n, ADDRESSES[n]) for n in ADDRESSES}
        mesh = {n: ADDRESSES[n] for n in ("node1", "node2", "node3")}
        try:
            for b in backends:
                b.start()
            for name in ("node1", "node2", "node3"):
                nodes[name].write_dynamic(SERVICES, mesh)
                nodes[name].start()
            cfg = IssuerConfig(directory_url=peb.directory_url, zone="lab.test", cluster="bench",
                               sets=[CertSet.from_domains(["lab.test", "*.lab.test"])],
                               api_token=TOKEN, api_base_url=cf.base_url,
                               state_dir=work / "issuer", ca_bundle=peb.ca_bundle,
                               propagation_seconds=0)
            root = peb.root_pem()
            cf.reset_stats()
            t0 = time.monotonic()
            status = Issuer(cfg).run_once()
            t_issued = time.monotonic()
            st = status["sets"]["lab.test"]
            sources = deploy.from_issuer(cfg.state_dir, ["lab.test"])
            for name in ("node1", "node2", "node3"):
                deploy.install(sources, nodes[name].dir / "tls", nodes[name].dynamic)
            wait_all(["node1", "node2", "node3"], st["serial"], root)
            t_verified = time.monotonic()
            writes = len(cf.writes())
            # a fourth node joins: it takes the current certificate, no order
            nodes["node4"].write_dynamic(SERVICES, dict(mesh, node4=ADDRESSES["node4"]))
            nodes["node4"].start()
            Issuer(cfg).run_once()
            deploy.install(sources, nodes["node4"].dir / "tls", nodes["node4"].dynamic)
            wait_all(["node4"], st["serial"], root)
            orders_after = Issuer(cfg).status()["sets"]["lab.test"]["orders"]
            # a renewal: hand-over to every node serving the new certificate
            renewed = Issuer(cfg, clock=lambda: st["renew_at"] + 1).run_once()["sets"]["lab.test"]
            sources = deploy.from_issuer(cfg.state_dir, ["lab.test"])
            t_switch = time.monotonic()
            for node in nodes.values():
                deploy.install(sources, node.dir / "tls", node.dynamic)
            wait_all(list(nodes), renewed["serial"], root)
            t_switched = time.monotonic()
        finally:
            for node in nodes.values():
                node.stop()
            for b in backends:
                b.stop()
    print(f"tls_orders_per_certificate: {st['orders']} orders")
    print(f"tls_dns_writes_per_certificate: {writes} writes")
    print(f"tls_orders_for_a_fourth_node: {orders_after - st['orders']} orders")
    print(f"tls_issue_seconds: {t_issued - t0:.2f} s")
    print(f"tls_verified_https_seconds: {t_verified - t0:.2f} s")
    print(f"tls_renewal_switch_seconds: {t_switched - t_switch:.2f} s")
    ok = st["orders"] == 1 and writes == 2 and orders_after == st["orders"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
