"""site.yml end to end on a 3-node lab, then failure drills.

Runs on the shared site lab (the `site` fixture of conftest.py: drill-node1..3
on hostmesh-drill, 10.231.6.0/24, converged once by the real site.yml); the
tests run in file order against it, each drill restoring the cluster before
the next:

- converge, second run changed=0, --check --diff changed=0;
- the dynamic inventory from the primary lists every node online, and
  `ansible hostmesh_online -m ping` reaches them through it;
- whoami.lab.test answered through each node by a node that runs it;
- a killed secondary goes offline in the dynamic inventory while requests
  keep succeeding; started again it is online and serving;
- the primary's agent restarted: Traefik on every node served throughout;
- the primary's host rebooted: no registration lost, every node online again;
- a node cut from the mesh is routed around;
- a node whose SSH host key changed stops the run before anything changes,
  with a message that says what to do.

The controller drives the nodes over SSH (user `admin`, become), with host
key checking on: the key pair and known_hosts are in the drill inventory's
state dir, the host keys read from each container's console by scripts/lab.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import time

from sitedrill import (
    DETECTION_SECONDS,
    LAB,
    ROOT,
    RUNS_WHOAMI,
    VENV_BIN,
    Hammer,
    ansible_env,
    docker,
    forwarding_state,
    get,
    inventory_groups,
    node_status,
    on_node,
    registered,
    start_node,
    wait_for,
    wait_until_restored,
)
from sitelab import changed_tasks, recap, run_playbook


def test_site_converges_every_node(site):
    counts = recap(site.first_run.stdout)
    assert set(counts) >= {"node1", "node2", "node3"}
    assert all(c.get("failed", 0) == 0 and c.get("unreachable", 0) == 0 for c in counts.values())
    assert "3 node(s) registered" in site.first_run.stdout


def test_second_run_changes_nothing(site):
    proc, _ = run_playbook(site.inventory, "site.yml")
    changed = {h: c["changed"] for h, c in recap(proc.stdout).items() if c.get("changed")}
    assert changed == {}, changed_tasks(proc.stdout)


def test_check_diff_reports_nothing(site):
    proc, _ = run_playbook(site.inventory, "site.yml", "--check", "--diff")
    changed = {h: c["changed"] for h, c in recap(proc.stdout).items() if c.get("changed")}
    assert changed == {}, changed_tasks(proc.stdout)


def test_dynamic_inventory_lists_every_node_online(site):
    groups = inventory_groups(site.cfg)
    assert sorted(groups["hostmesh_online"]) == ["node1", "node2", "node3"]
    assert groups["hostmesh_primary"] == ["node1"]
    proc = subprocess.run(
        check=False,
        args=[
            str(VENV_BIN / "ansible"),
            "-i",
            str(site.cfg),
            "hostmesh_online",
            "-m",
            "ansible.builtin.ping",
        ],
        cwd=ROOT,
        env=ansible_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == 3


def test_every_node_serves_the_service(site):
    for node in LAB.nodes:
        status, body = get(node)
        assert status == 200, (node, body)
        if node in RUNS_WHOAMI:
            assert body == node  # served locally
        else:
            assert body in RUNS_WHOAMI  # forwarded over the mesh to a node that runs it


def test_killed_secondary_goes_offline_while_traffic_continues(site):
    docker("kill", LAB.container("node3"))
    try:
        with Hammer(["node1", "node2"]) as hammer:
            wait_for(
                lambda: node_status(site.cfg, "node3") == "offline",
                DETECTION_SECONDS,
                "node3 offline in the dynamic inventory",
            )
            time.sleep(3)
        assert hammer.results and not hammer.failures, (
            hammer.failures[:5],
            forwarding_state("node2"),
        )
        # Once node3 is known down, node2 only forwards to node1.
        tail = [body for node, _, body in hammer.results[-20:] if node == "node2"]
        assert tail and set(tail) == {"node1"}
    finally:
        start_node("node3")
    wait_for(lambda: node_status(site.cfg, "node3") == "online", 60, "node3 online again")
    wait_until_restored()


def test_primary_agent_restart_never_touches_traffic(site):
    """The primary is the control plane only: restarting it costs no request."""
    before = inventory_groups(site.cfg)
    with Hammer(["node1", "node2", "node3"], limit_seconds=120) as hammer:
        on_node("node1", "systemctl", "restart", "hostmesh-agent.service")
        groups = wait_for(lambda: registered(site.cfg), 90, "the primary answering again")
        time.sleep(2)
    assert hammer.results and not hammer.failures, hammer.failures[:5]
    assert sorted(groups["hostmesh_online"]) == sorted(before["hostmesh_online"])


def test_primary_host_reboot_keeps_every_registration(site):
    """A whole primary host rebooting: its database and the statuses come back."""
    docker("restart", LAB.container("node1"))
    assert LAB.wait_systemd("node1", 180) in ("running", "degraded")
    groups = wait_for(lambda: registered(site.cfg), 90, "the primary answering again")
    assert groups["hostmesh_primary"] + sorted(groups["hostmesh_secondary"]) == [
        "node1",
        "node2",
        "node3",
    ]
    wait_for(
        lambda: (
            sorted(inventory_groups(site.cfg).get("hostmesh_online", []))
            == ["node1", "node2", "node3"]
        ),
        60,
        "every node online again",
    )
    wait_until_restored()


def test_node_cut_from_mesh_is_routed_around(site):
    on_node("node3", "systemctl", "stop", "wg-quick@wg0.service")
    try:
        time.sleep(6)  # a few of Traefik's 2 s health checks
        with Hammer(["node2"], limit_seconds=10) as hammer:
            time.sleep(5)
        assert hammer.results and not hammer.failures, (
            hammer.failures[:5],
            forwarding_state("node2"),
        )
        assert {body for _, _, body in hammer.results} == {"node1"}
    finally:
        on_node("node3", "systemctl", "start", "wg-quick@wg0.service")
    wait_until_restored()


def test_no_secret_in_the_site_output(site):
    secrets_dir = site.inventory / ".hostmesh" / "secrets"
    values = [
        p.read_text().strip()
        for p in secrets_dir.iterdir()
        if p.is_file() and not p.read_text().startswith("$ANSIBLE_VAULT")
    ]
    assert values
    leaked = [v[:4] + "..." for v in values if v and v in site.first_run.stdout]
    assert leaked == []
    for f in secrets_dir.iterdir():
        assert oct(f.stat().st_mode & 0o777) == "0o600", f
    assert os.stat(secrets_dir).st_mode & 0o077 == 0


# What the roles install on a node: a run that stopped in preflight leaves it as it was.
WATCHED = ["/etc/hostmesh", "/etc/wireguard", "/etc/traefik", "/etc/systemd/system", "/opt"]


def files_changed_since(node: str, marker: str) -> list[str]:
    out = docker(
        "exec",
        LAB.container(node),
        "find",
        *WATCHED,
        "-xdev",
        "-newer",
        marker,
        "-type",
        "f",
        check=False,
    ).stdout
    return [line for line in out.splitlines() if line.strip()]


def test_changed_host_key_stops_the_run_before_any_change(site, tmp_path):
    """node3's SSH host key is replaced (as if the server were reinstalled or
    someone sat between us and it): site.yml stops in preflight on every node,
    over Mitogen and over plain SSH, and says what to do."""
    container = LAB.container("node3")
    keys = "/etc/ssh/ssh_host_*_key*"
    docker(
        "exec", container, "sh", "-c", f"mkdir -p /root/hostkeys && cp -a {keys} /root/hostkeys/"
    )
    try:
        docker(
            "exec",
            container,
            "sh",
            "-c",
            f"rm -f {keys} && ssh-keygen -A && systemctl restart ssh.service",
        )
        marker = "/run/hostmesh-drill-marker"
        for node in LAB.nodes:
            on_node(node, "touch", marker)
        record = site.inventory / ".hostmesh" / "wireguard.json"
        record_before = record.read_bytes()
        plain = ansible_env(
            HOSTMESH_MITOGEN="0",
            ANSIBLE_STRATEGY="ansible.builtin.linear",
            # no SSH master from an earlier run may carry the old session over
            ANSIBLE_SSH_CONTROL_PATH_DIR=str(tmp_path / "cp"),
        )
        for label, env in (("mitogen", None), ("plain ssh", plain)):
            proc, _ = run_playbook(site.inventory, "site.yml", env=env, check=False)
            out = proc.stdout + proc.stderr
            assert proc.returncode != 0, (label, out[-3000:])
            assert "node3 (10.231.6.13) offered an SSH host key that does not match" in out, (
                label,
                out[-3000:],
            )
            assert "ssh-keygen -R 10.231.6.13 -f " in out, out[-3000:]
            assert "nothing was changed" in out
            counts = recap(proc.stdout)
            assert all(c.get("changed", 0) == 0 for c in counts.values()), (label, counts)
            # Stopped in preflight: after the guard, no task ran on any host.
            after = out.split("PLAY [Check every role's settings]", 1)[1]
            assert re.search(r"^(ok|changed|skipping|fatal): \[", after, re.MULTILINE) is None, (
                label,
                after[:3000],
            )
        for node in LAB.nodes:
            assert files_changed_since(node, marker) == [], node
        assert record.read_bytes() == record_before
    finally:
        docker(
            "exec",
            container,
            "sh",
            "-c",
            f"rm -f {keys} && cp -a /root/hostkeys/. /etc/ssh/ && systemctl restart ssh.service",
        )
    # The recorded key again: the run goes through and changes nothing.
    proc, _ = run_playbook(site.inventory, "site.yml")
    changed = {h: c["changed"] for h, c in recap(proc.stdout).items() if c.get("changed")}
    assert changed == {}, changed_tasks(proc.stdout)
