"""No secret crosses the lab network in clear: a packet capture on the lab bridge.

Runs on the shared site lab (the `site` fixture of conftest.py:
site.yml converged over SSH on drill-node1..3, hostmesh-drill, 10.231.6.0/24).
tcpdump records every frame on the lab network's bridge, as someone on the
path between the controller and the servers would, during the first site.yml
converge (`make demo`'s run, captured by the `site` fixture), and while:

- playbooks/summary.yml asks the primary for its node list (the admin token
  goes to the primary inside Ansible's SSH connection, the call is made on
  the primary against its loopback address);
- the dynamic inventory reads the cluster through its SSH tunnel;
- a secondary's agent restarts (its start-up heartbeat) and the agents run
  for a few heartbeat and health-check periods (node keys, over WireGuard);

then the admin token, the registration token and every node key of the lab's
secret store (and their previous values) must be absent from the capture. A
canary token sent in clear through the same bridge must be present: the
capture would have seen a token sent in clear.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from sitedrill import (
    CANARY,
    LAB,
    TCPDUMP,
    Capture,
    lab_bridge,
    on_node,
    registered,
    wait_for,
)
from sitelab import run_playbook

HEARTBEAT_SECONDS = 15  # inventory/lab/group_vars/hostmesh_nodes/node_agent.yml
def lab_secrets(inventory: Path) -> dict[str, str]:
    """Every value of the lab's secret store (current and previous), by name."""
    out = {}
    for path in sorted((inventory / ".hostmesh" / "secrets").iterdir()):
        text = path.read_text()
        assert not text.startswith("$ANSIBLE_VAULT"), (
            f"{path} is vault-encrypted: run the lab without a vault password"
        )
        if path.name.startswith("wireguard_psk_"):
            continue  # WireGuard preshared keys: not used in the lab, never sent anywhere
        if path.name.startswith("cloudflare_api_token"):
            # goes to the lab's stand-in Cloudflare API, plain HTTP on the gateway;
            # the real one is HTTPS (and the DDNS timer may fire during the capture)
            continue
        for i, value in enumerate(text.split()):
            out[f"{path.name}[{i}]"] = value
    return out


def test_no_secret_in_clear_on_the_lab_network(site, tmp_path):
    if os.geteuid() != 0:
        pytest.fail("capturing on the lab bridge needs root (tcpdump): run the tests as root")
    if not Path(TCPDUMP).exists():
        pytest.fail("tcpdump is missing: run scripts/setup-host.sh (installs it)")
    values = lab_secrets(site.inventory)
    names = {n.split("[")[0] for n in values}
    assert {"admin_token", "registration_token"} <= names, sorted(names)
    assert {f"node_api_key_{n}" for n in LAB.nodes} <= names, sorted(names)

    canary = "canary-" + secrets.token_urlsafe(24)
    capture = Capture(lab_bridge(), tmp_path / "lab.pcap")
    started = time.monotonic()
    try:
        summary, _ = run_playbook(site.inventory, "playbooks/summary.yml")
        assert summary.returncode == 0, summary.stdout[-3000:]
        assert "3 node(s) registered" in summary.stdout

        groups = registered(site.cfg)  # the dynamic inventory, through its SSH tunnel
        assert groups and sorted(groups["hostmesh_online"]) == ["node1", "node2", "node3"], groups

        # a secondary's agent starts again: start-up heartbeat (and registration check)
        on_node("node2", "systemctl", "restart", "hostmesh-agent")
        # the control: a bearer token sent in clear over the same bridge is seen
        req = urllib.request.Request(
            f"http://{LAB.address('node1')}/",
            headers={"Host": "whoami.lab.test", "Authorization": f"Bearer {canary}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                resp.read()
        except urllib.error.HTTPError:
            pass  # any answer will do: the request crossed the bridge
        # a few heartbeat periods of the agents talking over the mesh
        time.sleep(max(0.0, 3 * HEARTBEAT_SECONDS - (time.monotonic() - started)))
        wait_for(
            lambda: (
                sorted((registered(site.cfg) or {}).get("hostmesh_online", []))
                == ["node1", "node2", "node3"]
            ),
            60,
            "node2 online again after its restart",
        )
    finally:
        pcap = capture.stop()
    seconds = time.monotonic() - started

    assert canary.encode() in pcap, (
        "the capture did not see a token sent in clear: it proves nothing"
    )
    leaked = sorted(name for name, value in values.items() if value.encode() in pcap)
    print(f"capture_bytes: {len(pcap)} bytes")
    print(f"capture_seconds: {seconds:.0f} s")
    print(f"capture_secrets_checked: {len(values)} values")
    assert not leaked, f"secrets in clear on the lab network: {leaked}"


def test_no_secret_in_clear_during_the_first_converge(site):
    """`make demo`'s run as the network sees it: site.yml from nothing (secrets
    made, agents registered, keys handed over) captured on the lab bridge by
    the `site` fixture, a clear-text canary sent at its end."""
    if site.first_run_capture is None:
        pytest.fail("the first converge was not captured: run the tests as root with tcpdump")
    pcap = site.first_run_capture.read_bytes()
    values = lab_secrets(site.inventory)
    assert CANARY.encode() in pcap, "the capture did not see a token sent in clear"
    leaked = sorted(name for name, value in values.items() if value.encode() in pcap)
    print(f"first_converge_capture_bytes: {len(pcap)} bytes")
    assert not leaked, f"secrets in clear on the lab network during site.yml: {leaked}"


def test_the_api_does_not_answer_on_public_addresses(site):
    """What makes the capture hold: no agent API on a node's public address."""
    for node in LAB.nodes:
        try:
            urllib.request.urlopen(f"http://{LAB.address(node)}:8080/api/health", timeout=3)
        except OSError:
            continue
        pytest.fail(f"{node}'s agent API answers on its public address {LAB.address(node)}")
    # and it does answer on the mesh, from a peer
    wg = on_node("node1", "ip", "-4", "-o", "addr", "show", "dev", "wg0").split()
    address = wg[wg.index("inet") + 1].split("/")[0]
    health = on_node(
        "node2",
        "python3",
        "-c",
        "import json,urllib.request;print(json.load(urllib.request.urlopen("
        f"'http://{address}:8080/api/health',timeout=3))['status'])",
    )
    assert health == "healthy"
