"""HTTPS for every public name on the site lab: one ACME order, the same certificate everywhere.

The lab's ACME CA is Debian's pebble on the lab gateway (scripts/lab_acme.py),
validating DNS-01 through the lab Cloudflare stand-in's DNS on the gateway
(:53, from the records the issuer wrote through the v4 API). playbooks/tls.yml
runs hostmesh.cluster.tls on the converged site lab; every node then answers
https://whoami.lab.test verified against pebble's root. The cluster is left
serving (TLS is additive; pebble is stopped at the end).
"""

from __future__ import annotations

import json
import ssl
import sys
import time

import pytest
from sitedrill import LAB, ROOT, SERVICE_HOST, on_node

sys.path.insert(0, str(ROOT / "scripts"))
import lab_acme
import lab_cloudflare
from sitelab import changed_tasks, recap, run_playbook

NODES = ["node1", "node2", "node3"]


def https(address: str, root: str) -> tuple[int, str, str]:
    """(status, body, served serial) for GET https://whoami.lab.test/ through ``address``."""
    return lab_acme.https_get(address, 443, SERVICE_HOST, cadata=root)


@pytest.fixture(scope="module")
def tls_site(site):
    state = site.inventory / ".hostmesh"
    gateway = lab_cloudflare.gateway_listen(LAB.subnet).split(":")[0]
    # the stand-in again, now also answering DNS on the gateway (records kept in its state file)
    lab_cloudflare.stop(state)
    lab_cloudflare.start(state, f"{gateway}:8787", ["lab.test"], f"{gateway}:53")
    lab_acme.start(state, gateway, f"{gateway}:53")
    extra = json.dumps({
        "tls_enabled": True, "tls_acme_enabled": True,
        "tls_acme_directory_url": f"https://{gateway}:14000/dir",
        "tls_acme_ca_bundle": str(state / "acme-ca" / "listener-ca.pem"),
        "tls_acme_propagation_seconds": 0,
    })
    try:
        started = time.monotonic()
        first, _ = run_playbook(site.inventory, "playbooks/tls.yml", "-e", extra, check=False)
        yield {"state": state, "extra": extra, "first": first, "started": started,
               "root": (state / "acme-root.pem").read_text()}
    finally:
        lab_acme.stop(state)


def test_every_node_serves_the_one_certificate_verified(tls_site):
    first = tls_site["first"]
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-2000:]
    served = {}
    deadline = time.monotonic() + 30
    for node in NODES:
        while True:
            try:
                code, body, serial = https(LAB.address(node), tls_site["root"])
                break
            except (OSError, ssl.SSLError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        assert code == 200 and body.startswith(("node1", "node3")), (node, code, body)
        served[node] = serial
    print(f"tls_site_seconds_to_verified_https: {time.monotonic() - tls_site['started']:.1f} s")
    status = json.loads(on_node("node1", "cat", "/var/lib/hostmesh-acme/status.json"))
    st = status["sets"]["lab.test"]
    assert st["orders"] == 1, st  # one order for three nodes
    assert set(served.values()) == {st["serial"]}, served


def test_secrets_stay_where_they_belong(tls_site):
    out = tls_site["first"].stdout + tls_site["first"].stderr
    key = on_node("node1", "sh", "-c", "cat /var/lib/hostmesh-acme/certs/lab.test/current/privkey.pem")
    token = (tls_site["state"] / "secrets" / "cloudflare_api_token").read_text().strip()
    assert key.splitlines()[1] not in out and token not in out
    assert on_node("node1", "stat", "-c", "%a %U", "/etc/hostmesh-acme/token") == "600 root"
    for node in ("node2", "node3"):
        assert on_node(node, "sh", "-c", "test -e /etc/hostmesh-acme/token && echo yes || echo no") \
            == "no"
        keys = on_node(node, "sh", "-c", "stat -c '%a %U' /etc/traefik/tls/*.key")
        assert keys == "600 traefik"
        dynamic = on_node(node, "cat", "/etc/traefik/dynamic/hostmesh-tls.yml")
        assert "PRIVATE KEY" not in dynamic and "certFile" in dynamic


def test_second_run_changes_nothing_and_orders_nothing(tls_site):
    second, _ = run_playbook(tls_site["state"].parent, "playbooks/tls.yml", "-e",
                             tls_site["extra"], check=False)
    assert second.returncode == 0, second.stdout[-4000:]
    assert all(c["changed"] == 0 for c in recap(second.stdout).values()), \
        changed_tasks(second.stdout)
    check, _ = run_playbook(tls_site["state"].parent, "playbooks/tls.yml", "-e",
                            tls_site["extra"], "--check", "--diff", check=False)
    assert check.returncode == 0, check.stdout[-4000:]
    assert all(c["changed"] == 0 for c in recap(check.stdout).values()), \
        changed_tasks(check.stdout)
    status = json.loads(on_node("node1", "cat", "/var/lib/hostmesh-acme/status.json"))
    assert status["sets"]["lab.test"]["orders"] == 1
