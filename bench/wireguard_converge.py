"""Converge time of the 3-node WireGuard mesh: from scratch and a no-op rerun.

Starts fresh containers wg-node1..3 (network hostmesh-mol-wireguard,
10.231.2.0/24, the molecule `wireguard` scenario's: do not run both at once),
runs `ansible-playbook playbooks/wireguard.yml` against them twice, checks that
the rerun changed nothing and that node1 pings node3 over the mesh, removes the
containers. Prints `name: value unit` lines.

    .venv/bin/python bench/wireguard_converge.py [--rounds 1] [--keep]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from lab import Lab

NODES = ["node1", "node2", "node3"]
RECAP = re.compile(
    r"^(\S+)\s+:\s+ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE
)


def write_inventory(lab: Lab, inv: Path) -> None:
    hosts = {
        n: {"ansible_host": lab.address(n), "wireguard_endpoint": lab.address(n)} for n in NODES
    }
    inventory = {
        "hostmesh_nodes": {
            "children": {
                "hostmesh_primary": {"hosts": {"node1": hosts["node1"]}},
                "hostmesh_secondary": {"hosts": {n: hosts[n] for n in NODES[1:]}},
            },
            "vars": {
                # over SSH as the lab user, host keys checked, as on real servers
                **lab.ssh(inv / ".hostmesh" / "ssh").inventory_vars(),
                "ansible_python_interpreter": "/usr/bin/python3",
                "wireguard_preshared_keys": True,
            },
        }
    }
    (inv / "hosts.yml").write_text(json.dumps(inventory, indent=2))


def converge(inv: Path) -> tuple[float, int]:
    """Run the playbook; return (seconds, total changed)."""
    start = time.perf_counter()
    proc = subprocess.run(
        [
            str(Path(sys.executable).with_name("ansible-playbook")),
            "-i",
            str(inv / "hosts.yml"),
            str(ROOT / "playbooks" / "wireguard.yml"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(
            f"converge failed (rc {proc.returncode}):\n{proc.stdout[-4000:]}{proc.stderr[-2000:]}"
        )
    changed = sum(int(m[1]) for m in RECAP.findall(proc.stdout))
    return elapsed, changed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rounds", type=int, default=1, help="no-op reruns to time (median printed)"
    )
    parser.add_argument("--keep", action="store_true", help="leave the containers running")
    args = parser.parse_args()
    lab = Lab(prefix="wg-", network="hostmesh-mol-wireguard", subnet="10.231.2.0/24", nodes=NODES)
    lab.down()
    try:
        with tempfile.TemporaryDirectory(prefix="wg-bench-") as tmp:
            inv = Path(tmp)
            lab.up(ssh_dir=inv / ".hostmesh" / "ssh")
            write_inventory(lab, inv)
            scratch, changed = converge(inv)
            if changed == 0:
                sys.exit("the first converge changed nothing: the lab was not fresh")
            noops = []
            for _ in range(max(1, args.rounds)):
                seconds, changed = converge(inv)
                if changed:
                    sys.exit(f"the rerun changed {changed} things: not idempotent")
                noops.append(seconds)
            address = json.loads((inv / ".hostmesh" / "wireguard.json").read_text())["nodes"][
                "node3"
            ]["address"]
            subprocess.run(
                ["docker", "exec", lab.container("node1"), "ping", "-c", "3", "-w", "10", address],
                check=True,
                capture_output=True,
            )
    finally:
        if not args.keep:
            lab.down()
    noops.sort()
    print(f"wireguard_converge_scratch: {scratch:.1f} s")
    print(f"wireguard_converge_noop: {noops[len(noops) // 2]:.1f} s")
    print(f"wireguard_nodes: {len(NODES)} nodes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
