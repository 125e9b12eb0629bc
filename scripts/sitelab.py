"""A whole-site lab for benchmarks and failure drills.

Builds on scripts/lab.py: starts a `Lab` and writes an inventory for it that
is the embedded lab inventory (inventory/lab/group_vars) with this lab's
addresses, so site.yml runs on it unchanged, over SSH: the lab's key pair and
known_hosts sit in the inventory's state dir (`ssh_dir(inventory)`):

    lab.up(ssh_dir=ssh_dir(tmp / "inventory"))
    inventory = write_inventory(lab, tmp / "inventory")

or all of that, and the clean-up, with `site_lab(lab, prefix)`. A lab script
checks with a `Drill` (its name in every failure, commands in its containers).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab_gateway
from lab import Lab, ensure_image

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"


def write_inventory(lab: Lab, dest: Path, nodes: list[str] | None = None) -> Path:
    """Write `dest/hosts.yml` + `dest/group_vars` for `lab` (or only its `nodes`,
    e.g. to add one later); return `dest`.

    The first node is the primary, the others secondaries, as in inventory/lab.
    Also starts the lab's gateway services (scripts/lab_gateway.py: Cloudflare
    API + DNS, ACME CA, image registry with the demo app) where the lab
    group_vars point the roles; stop them with stop_local_cloudflare.
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

    primary, *secondaries = nodes or lab.nodes
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
    lab_gateway.start(dest / ".hostmesh", lab.subnet)
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


def changed_count(stdout: str) -> int:
    """How many task results reported a change, summed over the PLAY RECAP's hosts."""
    return sum(r.get("changed", 0) for r in recap(stdout).values())


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
    """Stop the lab's gateway services (Cloudflare API, ACME CA, registry) that
    write_inventory started."""
    lab_gateway.stop(inventory / ".hostmesh")


def start_acme(lab: Lab, inventory: Path) -> str:
    """The lab's ACME CA (pebble) on the gateway, validating DNS-01 through the
    lab's Cloudflare API, which also answers DNS there (port 53): started by
    write_inventory, left running when it runs; return the CA's root
    certificate (PEM)."""
    state = inventory / ".hostmesh"
    lab_gateway.start(state, lab.subnet)
    return (state / "acme-root.pem").read_text()


@contextmanager
def site_lab(lab: Lab, prefix: str) -> Iterator[Path]:
    """A fresh `lab` and its inventory (in a temporary directory named `prefix`...),
    with the lab's Cloudflare API started (write_inventory); yields the inventory.

    Afterwards the API stops and the lab is removed (HOSTMESH_KEEP_LAB=1 keeps it),
    also when starting the lab failed half way."""
    ensure_image(quiet=True)
    lab.down()
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        inventory = Path(tmp) / "inventory"
        try:
            lab.up(ssh_dir=ssh_dir(inventory))
            write_inventory(lab, inventory)
            yield inventory
        finally:
            stop_local_cloudflare(inventory)
            if not os.environ.get("HOSTMESH_KEEP_LAB"):
                lab.down()


class Drill:
    """What a lab script checks with: a failed check or a wait that times out ends
    the script (SystemExit) with a message that starts with its `name`;
    `node_exec` runs a command in a node's container of `lab`."""

    def __init__(self, name: str, lab: Lab, interval: float = 0.3):
        self.name, self.lab, self.interval = name, lab, interval

    def check(self, condition, what: str) -> None:
        if not condition:
            raise SystemExit(f"{self.name}: {what}")

    def node_exec(self, node: str, *cmd: str) -> str:
        """`cmd`'s stdout in `node`'s container, stripped; its exit status is not checked."""
        return subprocess.run(["docker", "exec", self.lab.container(node), *cmd],
                              capture_output=True, text=True, check=False,
                              timeout=300).stdout.strip()

    def wait(self, predicate, timeout: float, what: str, interval: float | None = None):
        """`predicate()`'s first true value, asked every `interval` s (the drill's
        by default) for `timeout` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(self.interval if interval is None else interval)
        raise SystemExit(f"{self.name}: timed out after {timeout} s waiting for {what}")
