"""Renewals reach the secondaries through the agents, without Ansible (issue 15, Missing 1).

Loopback only, every part real: pebble resolving through the Cloudflare stand-in's
DNS, the issuer run as the real `hostmesh acme renew` command, a real primary agent
(SQLite, HTTP) serving what the issuer left for it, two real secondary agents
heartbeating every second, a real Traefik on one secondary under continuous HTTPS
load (verified against pebble's root), and the root-run installer
(`python -m hostmesh.tls.node install`) on the other secondary's inbox, as its
systemd path unit starts it, trusting pebble's root as the tls role makes it
(`--trusted-roots`): it refuses a pair the agent account made itself.
"""

from __future__ import annotations

import json
import os
import ssl
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from hostmesh.tls import bundle, deploy
from tests.cloudflare_server.harness import CloudflareServer

sys.path.insert(0, str(Path(__file__).parent))
from tls_hostile import self_signed

ROOT = Path(__file__).resolve().parents[3]
for sub in ("scripts", "bench", "tests/integration/agent"):
    sys.path.insert(0, str(ROOT / sub))
import lab_acme
from agent_harness import Cluster, wait_for
from lab_acme import Pebble
from traefik_harness import HOST, WEB_PORT, Backend, Node

HTTPS_PORT = WEB_PORT + 363  # the harness's websecure entrypoint
TOKEN = "tls-sync-token-0123456789abcdef"
ADDRESS = "127.15.5.12"  # node2's Traefik
SERVICES = {"whoami": {"hosts": [HOST], "port": 18081, "nodes": ["node2"],
                       "health_path": "/"}}
HEARTBEAT = 1.0
SETS = ["--set", "lab.test=lab.test,*.lab.test"]


def renew(world, *extra: str) -> subprocess.CompletedProcess:
    """The real issuer command, as hostmesh-acme.service runs it on the primary."""
    w = world
    cmd = [sys.executable, "-m", "hostmesh.cli", "acme", "renew",
           "--directory-url", w["pebble"].directory_url, "--ca-bundle", w["pebble"].ca_bundle,
           "--zone", "lab.test", "--cluster", "lab", "--certs", "lab.test,*.lab.test",
           "--state-dir", str(w["work"] / "issuer"), "--token-file", str(w["token"]),
           "--api-base-url", w["cf"].base_url, "--propagation-seconds", "0",
           "--deploy-tls-dir", str(w["work"] / "primary-tls"),
           "--deploy-dynamic-dir", str(w["work"] / "primary-dynamic"),
           "--export-dir", str(w["export"]), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    w["issuer_log"].append(proc.stderr)
    assert proc.returncode == 0, proc.stderr
    return proc


def current_version(world) -> str:
    return json.loads((world["export"] / "lab.test.json").read_text())["version"]


def served(root_pem: str) -> str | None:
    """The serial node2's Traefik serves, verified; None while it serves something else
    (its own default certificate before the first pair)."""
    try:
        return lab_acme.https_get(ADDRESS, HTTPS_PORT, HOST, cadata=root_pem)[2]
    except (OSError, ssl.SSLError):
        return None


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    work = tmp_path_factory.mktemp("tls-sync")
    token = work / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    (work / "primary-dynamic").mkdir()
    cluster = Cluster(work / "agents")
    export = cluster.root / "primary" / "tls-export"
    export.mkdir(parents=True, mode=0o700)
    with CloudflareServer(zones=("lab.test",), token=TOKEN, dns=True) as cf, \
            Pebble(work / "ca", dns_server=f"127.0.0.1:{cf.dns_port}") as peb:
        backend = Backend(ADDRESS, "node2")
        traefik = Node(work, "node2", ADDRESS)
        world = {"cf": cf, "pebble": peb, "work": work, "token": token, "export": export,
                 "traefik": traefik, "cluster": cluster, "issuer_log": []}
        try:
            backend.start()
            traefik.write_dynamic(SERVICES, {"node2": ADDRESS})
            traefik.start()
            renew(world)
            primary = cluster.primary()
            direct = cluster.secondary(
                primary, "node2", HEARTBEAT_INTERVAL=str(HEARTBEAT),
                STARTUP_HEARTBEAT_DELAY="0.2", TLS_INSTALL_TLS_DIR=str(traefik.dir / "tls"),
                TLS_INSTALL_DYNAMIC_DIR=str(traefik.dynamic))
            inbox = cluster.root / "node3" / "tls-inbox"  # made later, by the test
            queued = cluster.secondary(primary, "node3", HEARTBEAT_INTERVAL=str(HEARTBEAT),
                                       STARTUP_HEARTBEAT_DELAY="0.2")
            world.update(primary=primary, direct=direct, queued=queued, inbox=inbox)
            yield world
        finally:
            cluster.close()
            traefik.stop()
            backend.stop()


def install_inbox(world) -> subprocess.CompletedProcess:
    """What hostmesh-tls-install.service runs (as root) when the inbox changes."""
    node3 = world["work"] / "node3-traefik"
    (node3 / "dynamic").mkdir(parents=True, exist_ok=True)
    roots = world["work"] / "trusted-roots.pem"  # what the tls role writes: pebble's root
    roots.write_text(world["pebble"].root_pem())
    return subprocess.run(
        [sys.executable, "-m", "hostmesh.tls.node", "install", "--inbox", str(world["inbox"]),
         "--tls-dir", str(node3 / "tls"), "--dynamic-dir", str(node3 / "dynamic"), *SETS,
         "--trusted-roots", str(roots)],
        capture_output=True, text=True, timeout=60, check=False)


def test_secondaries_take_the_current_certificate_at_their_first_heartbeats(world):
    version = current_version(world)
    root = world["pebble"].root_pem()
    wait_for(lambda: deploy.installed(world["traefik"].dir / "tls", world["traefik"].dynamic)
             .get("lab.test") is not None, 20, what="node2's agent installs the pair")
    pair = deploy.installed(world["traefik"].dir / "tls", world["traefik"].dynamic)["lab.test"]
    assert pair.serial == version
    assert stat.S_IMODE(pair.key.stat().st_mode) == 0o600
    serial = bundle.inspect(pair.cert.read_bytes())["serial"]
    wait_for(lambda: served(root) == serial, 15, what="node2's Traefik serves it")
    # node3 has no inbox yet (the tls role has not set up its installer): it fetches
    # nothing; once the directory is there it does, without an agent restart
    node3_id = world["queued"].node_id()
    time.sleep(3 * HEARTBEAT)
    assert not [ln for ln in world["primary"].log().splitlines()
                if "tls pair handed out" in ln and node3_id in ln]
    world["inbox"].mkdir(mode=0o700)
    inbox_file = world["inbox"] / "lab.test.json"
    wait_for(inbox_file.exists, 20, what="node3's agent fills its inbox")
    assert stat.S_IMODE(inbox_file.stat().st_mode) == 0o600
    proc = install_inbox(world)
    assert proc.returncode == 0, proc.stderr
    node3 = world["work"] / "node3-traefik"
    assert deploy.installed(node3 / "tls", node3 / "dynamic")["lab.test"].serial == version
    # a compromised agent account drops its own pair for the right names, ending in 100
    # years (security review F1): refused, nothing written, the issued pair keeps serving
    before = sorted(p.name for p in (node3 / "tls").iterdir())
    bundle.write_file(inbox_file, bundle.make("lab.test", *self_signed(36500)))
    proc = install_inbox(world)
    assert proc.returncode == 1 and "refused" in proc.stderr and "400 days" in proc.stderr
    bundle.write_file(inbox_file, bundle.make("lab.test", *self_signed(90)))
    proc = install_inbox(world)
    assert proc.returncode == 1 and "self-signed certificate" in proc.stderr, proc.stderr
    assert sorted(p.name for p in (node3 / "tls").iterdir()) == before
    assert deploy.installed(node3 / "tls", node3 / "dynamic")["lab.test"].serial == version


def test_a_forced_renewal_reaches_the_secondary_within_a_heartbeat_under_load(world):
    root = world["pebble"].root_pem()
    old_version = current_version(world)
    old_serial = served(root)
    assert old_serial
    pid = world["traefik"].proc.pid
    results: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                code, _body, serial = lab_acme.https_get(ADDRESS, HTTPS_PORT, HOST, cadata=root)
                results.append(serial if code == 200 else f"HTTP {code}")
            except (OSError, ssl.SSLError) as exc:
                results.append(f"error {type(exc).__name__}: {exc}")
            time.sleep(0.02)

    thread = threading.Thread(target=hammer, daemon=True)
    thread.start()
    try:
        time.sleep(1)
        renew(world, "--force")
        # from the moment the issuer left the new pair for the primary's agent
        renewed = (world["export"] / "lab.test.json").stat().st_mtime
        new_version = current_version(world)
        assert new_version != old_version
        new_serial = json.loads((world["export"] / "lab.test.json").read_text())["serial"]
        wait_for(lambda: served(root) == new_serial, 15, interval=0.05,
                 what="node2's Traefik serves the renewed certificate")
        seconds = time.time() - renewed
        time.sleep(1)
    finally:
        stop.set()
        thread.join(10)
    print(f"tls_agent_sync_seconds: {seconds:.2f} s")
    failures = [r for r in results if r not in (old_serial, new_serial)]
    assert not failures, failures[:5]
    assert {old_serial, new_serial} <= set(results) and len(results) > 30
    # a heartbeat every second: the switch comes within about two of them
    assert seconds < 2 * HEARTBEAT + 3
    assert world["traefik"].proc.pid == pid and world["traefik"].proc.poll() is None
    # the inbox node got the new version too; its installer takes it, then nothing to do
    inbox_file = world["inbox"] / "lab.test.json"
    wait_for(lambda: json.loads(inbox_file.read_text())["version"] == new_version, 10,
             what="node3's inbox holds the new version")
    assert install_inbox(world).returncode == 0
    node3 = world["work"] / "node3-traefik"
    assert deploy.installed(node3 / "tls", node3 / "dynamic")["lab.test"].serial == new_version
    again = install_inbox(world)
    assert again.returncode == 0 and "installed" not in again.stderr
    # the agents fetched once per version: one hand-out per node and version in the log
    handed = [ln for ln in world["primary"].log().splitlines() if "tls pair handed out" in ln]
    assert sum(new_version in ln for ln in handed) == 2, handed


def get(world, path: str, headers: dict) -> tuple[int, str]:
    req = urllib.request.Request(world["primary"].url + path, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_only_a_registered_nodes_key_gets_the_pair(world):
    agent = world["queued"]
    node_id = agent.node_id()
    key = agent.env["NODE_API_KEY"]
    path = "/api/tls/certificates/lab.test"
    status, body = get(world, path, {"X-Node-ID": node_id, "X-Node-API-Key": key})
    assert status == 200 and "PRIVATE KEY" in body
    from agent_harness import ADMIN_TOKEN

    for headers in ({}, {"X-Node-ID": node_id}, {"X-Node-ID": node_id, "X-Node-API-Key": "k" * 64},
                    {"Authorization": f"Bearer {ADMIN_TOKEN}"},
                    {"X-Node-ID": "no-such-node", "X-Node-API-Key": key}):
        status, body = get(world, path, headers)
        assert status == 401 and "PRIVATE" not in body, (headers, status)
    # a deleted node gets nothing (stopped first: it would register again)
    agent.stop()
    world["primary"].admin().delete_node(node_id)
    status, body = get(world, path, {"X-Node-ID": node_id, "X-Node-API-Key": key})
    assert status == 401 and "PRIVATE" not in body


def test_no_key_or_token_in_any_log(world):
    key = json.loads((world["export"] / "lab.test.json").read_text())["key"]
    body = "".join(key.splitlines()[1:-1])
    logs = {"issuer": "\n".join(world["issuer_log"]),
            **{a.name: a.log() for a in world["cluster"].agents}}
    for name, text in logs.items():
        assert text, name
        for secret in ("PRIVATE KEY", body[:40], body[-40:], TOKEN):
            assert secret not in text, (name, secret[:12])
    assert "tls certificate delivered set=lab.test" in logs["node2"]
    assert stat.S_IMODE(os.stat(world["export"] / "lab.test.json").st_mode) == 0o600
