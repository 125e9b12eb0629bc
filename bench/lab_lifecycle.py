#!/usr/bin/env python3
"""Lab lifecycle timings: image cache check, cold image build, lab up/down.

Prints `name: value unit` lines. The cold build goes into a separate image
(hostmesh-bench-node) so the lab's own image is never rebuilt under running
tests; set BENCH_IMAGE_BUILD=0 to skip it (it takes about a minute). The lab
runs on the foundation's own network (hostmesh-found, 10.231.9.0/24); `up`
counts until every node takes SSH logins with its recorded host key. Then
molecule's default scenario is created (with prepare) and destroyed
(BENCH_MOLECULE=0 skips it).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("lab", ROOT / "scripts" / "lab.py")
lab = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("lab", lab)
_spec.loader.exec_module(lab)


def timed(fn, *args, **kwargs) -> float:
    started = time.monotonic()
    fn(*args, **kwargs)
    return time.monotonic() - started


def main() -> int:
    print(f"lab_image_cached_check: {timed(lab.ensure_image, quiet=True):.2f} s")
    size = subprocess.run(["docker", "image", "inspect", "-f", "{{.Size}}", lab.IMAGE],
                          capture_output=True, text=True, check=True).stdout.strip()
    print(f"lab_image_size: {int(size) / 1e6:.0f} MB")
    if os.environ.get("BENCH_IMAGE_BUILD", "1") != "0":
        repo = "hostmesh-bench-node"
        try:
            took = timed(lab.ensure_image, force=True, quiet=True, repo=repo)
            print(f"lab_image_build_cold: {took:.1f} s")
        finally:
            subprocess.run(["docker", "rmi", "-f", f"{repo}:latest", lab.image_tag(repo=repo)],
                           capture_output=True, check=False)

    the_lab = lab.Lab(prefix="hostmesh-found-", network="hostmesh-found",
                      subnet="10.231.9.0/24", nodes=["node1", "node2", "node3"])
    the_lab.down()
    with tempfile.TemporaryDirectory(prefix="hostmesh-bench-ssh-") as ssh_dir:
        try:
            print(f"lab_up_3_nodes: {timed(the_lab.up, ssh_dir=ssh_dir):.2f} s")
            print(f"lab_up_again: {timed(the_lab.up, ssh_dir=ssh_dir):.2f} s")
        finally:
            print(f"lab_down_3_nodes: {timed(the_lab.down):.2f} s")

    if os.environ.get("BENCH_MOLECULE", "1") != "0":
        env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}

        def molecule(action: str) -> None:
            subprocess.run(["molecule", action, "-s", "default"], cwd=ROOT, env=env,
                           capture_output=True, check=True)

        try:
            print(f"molecule_default_create: {timed(molecule, 'create'):.1f} s")
        finally:
            print(f"molecule_default_destroy: {timed(molecule, 'destroy'):.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
