#!/usr/bin/env python3
"""Timings of hostmesh.cluster.node_agent on three lab containers.

    .venv/bin/python bench/node_agent_converge.py

Uses agent-node1..3 on hostmesh-mol-node-agent (10.231.3.0/24; do not run
while the molecule `node_agent` scenario or tests/integration/node_agent
hold that lab), removes them at the end. Prints `name: value unit` lines:
first converge (wheelhouse build included), no-op converge, fresh
registration of two secondaries until `online`, and a full key rotation
with the number of non-online observations seen by a 0.5 s watcher.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from lab import Lab

BIN = Path(sys.executable).parent
NODES = ["node1", "node2", "node3"]


def playbook(inv: Path, book: str) -> float:
    env = {**os.environ, "ANSIBLE_STRATEGY": "hostmesh.cluster.linear"}
    start = time.monotonic()
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(inv), book],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        sys.exit(f"{book} failed:\n{proc.stdout[-3000:]}")
    return time.monotonic() - start


def nodes(url: str, secrets: Path) -> list[dict]:
    tokens = [(secrets / "admin_token").read_text().strip()]
    if (secrets / "admin_token.previous").exists():
        tokens += (secrets / "admin_token.previous").read_text().split()
    for token in tokens:
        req = urllib.request.Request(
            url + "/api/nodes", headers={"Authorization": f"Bearer {token}"}
        )
        try:
            with urllib.request.urlopen(req, timeout=2) as resp:
                return json.load(resp)
        except urllib.error.HTTPError as exc:
            if exc.code != 401:
                raise
    raise RuntimeError("no admin token accepted")


def admin(url: str, secrets: Path, method: str, path: str) -> None:
    token = (secrets / "admin_token").read_text().strip()
    req = urllib.request.Request(
        url + path, method=method, headers={"Authorization": f"Bearer {token}"}
    )
    urllib.request.urlopen(req, timeout=5).close()


def main() -> int:
    lab = Lab(
        prefix="agent-", network="hostmesh-mol-node-agent", subnet="10.231.3.0/24", nodes=NODES
    )
    lab.down()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-node-agent-") as tmp:
            inv = Path(tmp) / "inventory"
            inv.mkdir()
            lab.up(ssh_dir=inv / ".hostmesh" / "ssh")
            host = {
                # no WireGuard here: the lab network stands for the mesh
                n: {"ansible_host": lab.address(n), "hostmesh_public_ip": lab.address(n),
                    "node_agent_address": lab.address(n)}
                for n in NODES
            }
            (inv / "hosts.yml").write_text(
                yaml.safe_dump(
                    {
                        "hostmesh_nodes": {
                            "vars": {
                                # over SSH as the lab user, host keys checked
                                **lab.ssh(inv / ".hostmesh" / "ssh").inventory_vars(),
                                "ansible_python_interpreter": "/usr/bin/python3",
                                "hostmesh_api_url": f"http://{lab.address('node1')}:8080",
                                "node_agent_mesh_subnet": lab.subnet,
                                "node_agent_env": {
                                    "HEALTH_CHECK_INTERVAL": "5",
                                    "HEARTBEAT_INTERVAL": "10",
                                },
                            },
                            "children": {
                                "hostmesh_primary": {"hosts": {"node1": host["node1"]}},
                                "hostmesh_secondary": {"hosts": {n: host[n] for n in NODES[1:]}},
                            },
                        }
                    }
                )
            )
            secrets = inv / ".hostmesh" / "secrets"
            url = f"http://{lab.address('node1')}:8080"

            print(f"node_agent_first_converge: {playbook(inv, 'playbooks/node_agent.yml'):.1f} s")
            print(f"node_agent_noop_converge: {playbook(inv, 'playbooks/node_agent.yml'):.1f} s")

            # fresh auto-registration: stop, forget, start, poll
            for n in NODES[1:]:
                subprocess.run(
                    ["docker", "exec", lab.container(n), "systemctl", "stop", "hostmesh-agent"],
                    check=True,
                )
            for node in nodes(url, secrets):
                if not node["is_primary"]:
                    admin(url, secrets, "DELETE", f"/api/nodes/{node['id']}")
            start = time.monotonic()
            for n in NODES[1:]:
                subprocess.run(
                    ["docker", "exec", lab.container(n), "systemctl", "start", "hostmesh-agent"],
                    check=True,
                )
            while True:
                online = {n["name"] for n in nodes(url, secrets) if n["status"] == "online"}
                if set(NODES) <= online or time.monotonic() - start > 60:
                    break
                time.sleep(0.1)
            print(f"node_agent_start_to_online: {time.monotonic() - start:.2f} s")

            seen, errors, stop = [], [], threading.Event()

            def watch():
                while not stop.is_set():
                    try:
                        seen.extend(
                            n["name"] for n in nodes(url, secrets) if n["status"] != "online"
                        )
                    except Exception as exc:  # noqa: BLE001 - the primary restarts meanwhile
                        errors.append(exc)
                    time.sleep(0.5)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            print(f"node_agent_rotate_keys: {playbook(inv, 'playbooks/rotate_keys.yml'):.1f} s")
            stop.set()
            watcher.join()
            print(f"node_agent_rotate_not_online: {len(seen)} observations")
            print(f"node_agent_rotate_primary_unanswered: {len(errors)} polls")
    finally:
        lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
