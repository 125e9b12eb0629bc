"""Three real Traefiks on loopback with one ACME issuer: what the loopback TLS
tests share. pebble (resolving through the Cloudflare stand-in's DNS), whoami
backends on node1 and node3, a Traefik per node with the hostmesh layout
(bench/traefik_harness.py), and the issuer's settings for lab.test + *.lab.test."""

from __future__ import annotations

import ssl
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from hostmesh.tls.issuer import CertSet, IssuerConfig
from tests.cloudflare_server.harness import CloudflareServer

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))
import lab_acme
from lab_acme import Pebble
from traefik_harness import HOST, WEB_PORT, Backend, Node

HTTPS_PORT = WEB_PORT + 363  # the harness's websecure entrypoint
TOKEN = "tls-edit-token-0123456789abcdef"
SERVICES = {"whoami": {"hosts": [HOST], "port": 18081, "nodes": ["node1", "node3"],
                       "health_path": "/"}}


def https_get(address: str, root_pem: str, host: str = HOST) -> tuple[int, str, str]:
    """(status, body, serial of the served certificate); verification on, SNI = host."""
    return lab_acme.https_get(address, HTTPS_PORT, host, cadata=root_pem)


@contextmanager
def traefik_world(work: Path, addresses: dict[str, str], **pebble_args):
    """Yields {cf, pebble, nodes, cfg, work}; everything stops afterwards."""
    with CloudflareServer(zones=("lab.test",), token=TOKEN, dns=True) as cf, \
            Pebble(work / "ca", dns_server=f"127.0.0.1:{cf.dns_port}", **pebble_args) as peb:
        backends = [Backend(addresses[n], n) for n in ("node1", "node3")]
        nodes = {n: Node(work, n, a) for n, a in addresses.items()}
        try:
            for b in backends:
                b.start()
            for node in nodes.values():
                node.write_dynamic(SERVICES, addresses)
                node.start()
            cfg = IssuerConfig(directory_url=peb.directory_url, zone="lab.test", cluster="lab",
                               sets=[CertSet.from_domains(["lab.test", "*.lab.test"])],
                               api_token=TOKEN, api_base_url=cf.base_url,
                               state_dir=work / "issuer", ca_bundle=peb.ca_bundle,
                               propagation_seconds=0)
            yield {"cf": cf, "pebble": peb, "nodes": nodes, "cfg": cfg, "work": work}
        finally:
            for node in nodes.values():
                node.stop()
            for b in backends:
                b.stop()


class HttpsLoad:
    """HTTPS through every address, a thread each, a new verified connection per
    request, while the block runs: `results` (node, served serial or what failed)
    and `seen` (serial -> node -> when that node first served it)."""

    def __init__(self, addresses: dict[str, str], root_pem: str):
        self.results: list[tuple[str, str]] = []
        self.seen: dict[str, dict[str, float]] = {}
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n, a, root_pem), daemon=True)
                         for n, a in addresses.items()]

    def _run(self, name: str, address: str, root_pem: str) -> None:
        while not self._stop.is_set():
            try:
                code, _body, serial = https_get(address, root_pem)
                self.results.append((name, serial if code == 200 else f"HTTP {code}"))
                if code == 200:
                    self.seen.setdefault(serial, {}).setdefault(name, time.time())
            except (OSError, ssl.SSLError) as exc:
                self.results.append((name, f"error {type(exc).__name__}: {exc}"))
            time.sleep(0.02)

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)
