"""site.yml on a fresh 3-node lab over SSH: from scratch, no-op rerun, and a calibration.

Every run goes over SSH as the lab user with become and host key checking on,
as on real servers. Prints `name: value unit` lines:
  site_scratch_seconds, site_noop_seconds   (default strategy: Mitogen over SSH)
  site_noop_changed_tasks                   (must be 0)
  site_noop_plain_ssh_seconds               (the same no-op run, Mitogen off: for reference)
  calibration_60_tasks_seconds              (60 trivial idempotent tasks, plain linear
                                             strategy over pipelined SSH, Mitogen off)
  site_noop_over_calibration_ratio          (site_noop / calibration; goal <= 0.5)
and, on stderr, the task profile's top 5 tasks of each site.yml run.

Uses its own lab (bench-node1..3 on 10.231.7.0/24) and removes it afterwards.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from lab import Lab, ensure_image
from sitelab import (
    ansible_env,
    recap,
    run_playbook,
    ssh_dir,
    stop_local_cloudflare,
    write_inventory,
)

PROFILE = {
    "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
    "PROFILE_TASKS_TASK_OUTPUT_LIMIT": "5",
    "PROFILE_TASKS_SORT_ORDER": "descending",
}
PROFILE_LINE = re.compile(r"^(?P<task>.+?) -+ (?P<secs>[0-9.]+)s$")


def calibration_playbook(path: Path) -> Path:
    """60 trivial idempotent tasks: 20 file, 20 copy, 20 service."""
    tasks = []
    for i in range(20):
        tasks.append(f"""    - name: Calibration directory {i}
      ansible.builtin.file:
        path: /var/tmp/calibration/d{i}
        state: directory
        mode: "0755"
""")
        tasks.append(f"""    - name: Calibration file {i}
      ansible.builtin.copy:
        dest: /var/tmp/calibration/f{i}
        content: "calibration {i}\\n"
        mode: "0644"
""")
        tasks.append(f"""    - name: Calibration service {i}
      ansible.builtin.service:
        name: dbus
        state: started
""")
    path.write_text(
        "---\n- name: Calibration\n  hosts: hostmesh_nodes\n  gather_facts: false\n"
        "  tasks:\n    - name: Calibration root\n      ansible.builtin.file:\n"
        "        path: /var/tmp/calibration\n        state: directory\n"
        '        mode: "0755"\n' + "".join(tasks)
    )
    return path


def top_tasks(stdout: str, label: str) -> None:
    rows = [m for m in map(PROFILE_LINE.match, stdout.splitlines()) if m]
    for m in rows[-5:]:
        print(f"[{label}] {float(m['secs']):7.2f}s  {m['task'].strip()}", file=sys.stderr)


def measure(inventory: Path, tmp: Path, rounds: int) -> dict[str, float]:
    """site.yml from scratch, then `rounds` pairs of (no-op rerun with Mitogen,
    the calibration's no-op run over plain SSH), interleaved so that both
    sides of the ratio see the same machine load; then one no-op over plain
    SSH for reference. Medians are returned."""
    env = ansible_env(**PROFILE)
    proc, scratch = run_playbook(inventory, "site.yml", env=env)
    top_tasks(proc.stdout, "scratch")
    plain = ansible_env(ANSIBLE_STRATEGY="ansible.builtin.linear", HOSTMESH_MITOGEN="0")
    playbook = calibration_playbook(tmp / "calibration.yml")
    run_playbook(inventory, str(playbook), env=plain)  # creates its files: later runs are no-ops
    noops, calibrations, changed = [], [], 0
    for _ in range(rounds):
        proc, seconds = run_playbook(inventory, "site.yml", env=env)
        noops.append(seconds)
        changed += sum(h.get("changed", 0) for h in recap(proc.stdout).values())
        _, seconds = run_playbook(inventory, str(playbook), env=plain)
        calibrations.append(seconds)
    top_tasks(proc.stdout, "no-op")
    proc, noop_plain = run_playbook(inventory, "site.yml", env={**plain, **PROFILE})
    top_tasks(proc.stdout, "no-op plain ssh")
    return {"scratch": scratch, "noop": statistics.median(noops), "changed": changed,
            "noop_plain": noop_plain, "calibration": statistics.median(calibrations),
            "load": os.getloadavg()[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved no-op/calibration pairs (medians printed)")
    args = parser.parse_args()
    ensure_image(quiet=True)
    lab = Lab(prefix="bench-", network="hostmesh-bench", subnet="10.231.7.0/24")
    lab.down()
    try:
        with tempfile.TemporaryDirectory(prefix="hostmesh-bench-") as tmp:
            lab.up(ssh_dir=ssh_dir(Path(tmp) / "inventory"))
            inventory = write_inventory(lab, Path(tmp) / "inventory")
            try:
                m = measure(inventory, Path(tmp), max(1, args.rounds))
            finally:
                stop_local_cloudflare(inventory)
    finally:
        lab.down()
    print(f"site_scratch_seconds: {m['scratch']:.1f} s")
    print(f"site_noop_seconds: {m['noop']:.1f} s")
    print(f"site_noop_changed_tasks: {m['changed']} tasks")
    print(f"site_noop_plain_ssh_seconds: {m['noop_plain']:.1f} s")
    print(f"calibration_60_tasks_seconds: {m['calibration']:.1f} s")
    print(f"site_noop_over_calibration_ratio: {m['noop'] / m['calibration']:.2f} ratio")
    print(f"load_average_1min_at_end: {m['load']:.1f} load")
    return 0


if __name__ == "__main__":
    sys.exit(main())
