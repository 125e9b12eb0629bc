"""A whole-site lab for benchmarks and failure drills.

Builds on scripts/lab.py: starts a `Lab` and writes an inventory for it that
is the embedded lab inventory (inventory/lab/group_vars) with this lab's
addresses, so site.yml runs on it unchanged, over SSH: the lab's key pair and
known_hosts sit in the inventory's state dir (`ssh_dir(inventory)`):

    lab.up(ssh_dir=ssh_dir(tmp / "inventory"))
    inventory = write_inventory(lab, tmp / "inventory")
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab_cloudflare
from lab import Lab

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"


def write_inventory(lab: Lab, dest: Path) -> Path:
    """Write `dest/hosts.yml` + `dest/group_vars` for `lab`; return `dest`.

    The first node is the primary, the others secondaries, as in inventory/lab.
    Also starts the lab's Cloudflare API on the lab network's gateway, where
    the lab group_vars point the ddns role (stop it with stop_local_cloudflare).
    """
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(
        ROOT / "inventory" / "lab" / "group_vars", dest / "group_vars", dirs_exist_ok=True
    )

    def host(node: str) -> dict:
        address = lab.address(node)
        return {
            "ansible_host": address,
            "hostmesh_public_ip": address,
            "wireguard_endpoint": address,
        }

    primary, *secondaries = lab.nodes
    inventory = {
        "hostmesh_nodes": {
            "children": {
                "hostmesh_primary": {"hosts": {primary: host(primary)}},
                "hostmesh_secondary": {"hosts": {n: host(n) for n in secondaries}},
            }
        }
    }
    # JSON is YAML: no PyYAML needed before the venv exists.
    (dest / "hosts.yml").write_text(json.dumps(inventory, indent=2) + "\n")
    lab_cloudflare.start(dest / ".hostmesh", lab_cloudflare.gateway_listen(lab.subnet), ["lab.test"])
    return dest


def ssh_dir(inventory: Path) -> Path:
    """Where the lab's SSH key and known_hosts live for `inventory`
    (`hostmesh_lab_ssh_dir` in inventory/lab/group_vars)."""
    return inventory / ".hostmesh" / "ssh"


def ansible_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    env["ANSIBLE_FORCE_COLOR"] = "false"
    env.update(extra)
    return env


def run_playbook(
    inventory: Path, playbook: str, *args: str, env: dict | None = None, check: bool = True
) -> tuple[subprocess.CompletedProcess, float]:
    """Run ansible-playbook from the repo root; return (process, seconds)."""
    cmd = [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), playbook, *args]
    started = time.monotonic()
    proc = subprocess.run(
        cmd, check=False, cwd=ROOT, env=env or ansible_env(), capture_output=True, text=True
    )
    elapsed = time.monotonic() - started
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
        )
    return proc, elapsed


def recap(stdout: str) -> dict[str, dict[str, int]]:
    """Parse PLAY RECAP lines: host -> {ok, changed, unreachable, failed, ...}."""
    hosts: dict[str, dict[str, int]] = {}
    in_recap = False
    for line in stdout.splitlines():
        if line.startswith("PLAY RECAP"):
            in_recap = True
            continue
        if in_recap and ":" in line and "=" in line:
            name, _, rest = line.partition(":")
            counts = {}
            for field in rest.split():
                key, _, value = field.partition("=")
                if value.isdigit():
                    counts[key] = int(value)
            hosts[name.strip()] = counts
    return hosts


def changed_tasks(stdout: str) -> list[str]:
    """`task name [host]` for every task that reported a change."""
    found, task = [], ""
    for line in stdout.splitlines():
        if line.startswith("TASK ["):
            task = line[len("TASK [") : line.rfind("]")]
        elif line.startswith("changed: ["):
            found.append(f"{task} [{line[len('changed: [') :].split(']')[0]}]")
    return found


def stop_local_cloudflare(inventory: Path) -> None:
    """Stop the lab's local Cloudflare API server that write_inventory started."""
    lab_cloudflare.stop(inventory / ".hostmesh")
