"""HTTPS for every public name on the site lab: one ACME order, the same certificate
everywhere, a cheap no-op, and HTTP redirected to HTTPS when the redirect is on.

site.yml runs hostmesh.cluster.tls (inventory/lab turns it on) against the lab's ACME
CA, Debian's pebble on the lab gateway (scripts/lab_gateway.py, started with the lab),
which validates DNS-01 through the lab Cloudflare stand-in's DNS on the gateway (:53,
from the records the issuer wrote through the v4 API). Every node then answers
https://whoami.lab.test verified against pebble's root (<state>/acme-root.pem).
The lab keeps HTTP on :80 (traefik_web_redirect_to_https: false, for the routing
drills); the redirect test turns it on with playbooks/traefik.yml and puts it back.
"""

from __future__ import annotations

import http.client
import json
import ssl
import sys
import time

import pytest
from sitedrill import LAB, ROOT, SERVICE_HOST, on_node

sys.path.insert(0, str(ROOT / "scripts"))
import lab_acme
from sitelab import changed_tasks, recap, run_playbook

NODES = ["node1", "node2", "node3"]


def https(address: str, root: str) -> tuple[int, str, str]:
    """(status, body, served serial) for GET https://whoami.lab.test/ through ``address``."""
    return lab_acme.https_get(address, 443, SERVICE_HOST, cadata=root)


def https_soon(address: str, root: str, seconds: float = 30) -> tuple[int, str, str]:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return https(address, root)
        except (OSError, ssl.SSLError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def http_get(address: str) -> tuple[int, str]:
    """(status, Location) for GET http://whoami.lab.test/ through ``address``:80."""
    conn = http.client.HTTPConnection(address, 80, timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": SERVICE_HOST})
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.getheader("Location") or ""
    finally:
        conn.close()


def headers(stdout: str) -> list[str]:
    return [ln for ln in stdout.splitlines() if ln.startswith("TASK [")]


def changed(proc) -> int:
    return sum(c.get("changed", 0) for c in recap(proc.stdout).values())


@pytest.fixture(scope="module")
def tls_site(site):
    state = site.inventory / ".hostmesh"
    return {"state": state, "root": (state / "acme-root.pem").read_text()}


def test_every_node_serves_the_one_certificate_verified(tls_site):
    served = {}
    for node in NODES:
        code, _body, serial = https_soon(LAB.address(node), tls_site["root"])
        assert code == 200, (node, code)
        served[node] = serial
    status = json.loads(on_node("node1", "cat", "/var/lib/hostmesh-acme/status.json"))
    st = status["sets"]["lab.test"]
    assert st["orders"] == 1, st  # one order for three nodes
    assert set(served.values()) == {st["serial"]}, served


def test_secrets_stay_where_they_belong(site, tls_site):
    out = site.first_run.stdout + site.first_run.stderr
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


def test_a_rerun_changes_nothing_orders_nothing_in_a_few_tasks(tls_site):
    rerun, seconds = run_playbook(tls_site["state"].parent, "playbooks/tls.yml", check=False)
    assert rerun.returncode == 0, rerun.stdout[-4000:]
    assert changed(rerun) == 0, changed_tasks(rerun.stdout)
    # one probe per node, nothing written, nothing included
    print(f"tls_site_noop_task_headers: {len(headers(rerun.stdout))} headers")
    print(f"tls_site_noop_seconds: {seconds:.1f} s")
    assert "included:" not in rerun.stdout, headers(rerun.stdout)
    assert len(headers(rerun.stdout)) <= 10, headers(rerun.stdout)
    check, _ = run_playbook(tls_site["state"].parent, "playbooks/tls.yml", "--check", "--diff",
                            check=False)
    assert check.returncode == 0, check.stdout[-4000:]
    assert changed(check) == 0, changed_tasks(check.stdout)
    for proc in (rerun, check):
        assert "PRIVATE KEY" not in proc.stdout + proc.stderr
    status = json.loads(on_node("node1", "cat", "/var/lib/hostmesh-acme/status.json"))
    assert status["sets"]["lab.test"]["orders"] == 1


def test_http_redirects_to_https_when_on_and_back(tls_site):
    inventory, root = tls_site["state"].parent, tls_site["root"]
    on, _ = run_playbook(inventory, "playbooks/traefik.yml", "-e",
                         "traefik_web_redirect_to_https=true", check=False)
    try:
        assert on.returncode == 0, on.stdout[-4000:]
        for node in NODES:
            address = LAB.address(node)
            deadline = time.monotonic() + 30
            while (got := http_get(address))[0] not in (301, 308) and time.monotonic() < deadline:
                time.sleep(0.5)  # Traefik restarted with the new static config
            assert got == (301, f"https://{SERVICE_HOST}/") or got == (308, f"https://{SERVICE_HOST}/"), \
                (node, got)
            # following it: verified against the lab's root, through the same node
            code, _body, _serial = https_soon(address, root)
            assert code == 200, (node, code)
    finally:
        off, _ = run_playbook(inventory, "playbooks/traefik.yml", check=False)
    assert off.returncode == 0, off.stdout[-4000:]
    for node in NODES:
        deadline = time.monotonic() + 30
        while (got := http_get(LAB.address(node)))[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert got[0] == 200, (node, got)  # the other site tests speak HTTP on :80
    again, _ = run_playbook(inventory, "playbooks/traefik.yml", check=False)
    assert again.returncode == 0 and changed(again) == 0, changed_tasks(again.stdout)
