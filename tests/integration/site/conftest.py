"""The `site` fixture: one converged site lab for the whole test session
(see sitedrill.py). HOSTMESH_KEEP_LAB=1 leaves it running after the session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sitedrill import CANARY, LAB, TCPDUMP, Capture, Site, lab_bridge, send_in_clear
from sitelab import run_playbook, ssh_dir, stop_local_cloudflare, write_inventory


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Site:
    LAB.down()
    dest = tmp_path_factory.mktemp("drill") / "inventory"
    LAB.up(ssh_dir=ssh_dir(dest))
    inventory = write_inventory(LAB, dest)
    state = inventory / ".hostmesh"
    # The first converge is captured on the lab bridge (test_site_capture.py
    # looks for secrets in it): `make demo`'s run, as the network sees it.
    capture = None
    if os.geteuid() == 0 and Path(TCPDUMP).exists():
        capture = Capture(lab_bridge(), dest.parent / "first-converge.pcap")
    try:
        try:
            first, _ = run_playbook(inventory, "site.yml", check=False)
            if capture is not None:
                send_in_clear(CANARY)  # the control: the capture sees clear text
        finally:
            if capture is not None:
                capture.stop()
        assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-2000:]
        cfg = inventory.parent / "drill.hostmesh.yml"
        # The token stays in the lab's secret store; the config only points at it.
        cfg.write_text(
            "plugin: hostmesh.cluster.nodes\n"
            # the API listens on the mesh and loopback only: an SSH tunnel to the primary
            f"ssh_host: {LAB.address('node1')}\n"
            "ssh_user: admin\n"
            f"ssh_args: -i {ssh_dir(inventory)}/id_ed25519 -o IdentitiesOnly=yes"
            f" -o UserKnownHostsFile={ssh_dir(inventory)}/known_hosts\n"
            f"token: \"{{{{ lookup('ansible.builtin.file', '{state}/secrets/admin_token') }}}}\"\n"
            # over SSH to the nodes' public addresses, with the lab's key and known_hosts
            "ansible_host_source: public_ip\n"
            "compose:\n"
            "  ansible_user: \"'admin'\"\n"
            '  ansible_become: "true"\n'
            f"  ansible_ssh_private_key_file: \"'{ssh_dir(inventory)}/id_ed25519'\"\n"
            f"  ansible_ssh_common_args: \"'-o UserKnownHostsFile={ssh_dir(inventory)}/known_hosts"
            " -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes'\"\n"
        )
        yield Site(inventory, first, cfg, capture.path if capture else None)
    finally:
        stop_local_cloudflare(inventory)
        # HOSTMESH_KEEP_LAB=1 leaves the drill's containers running to look at
        # after a failure; the next run removes them first.
        if not os.environ.get("HOSTMESH_KEEP_LAB"):
            LAB.down()
