"""site.yml on a fresh 3-node lab: from scratch, no-op rerun, and a calibration.

Prints `name: value unit` lines:
  site_scratch_seconds, site_noop_seconds           (default strategy: Mitogen when installed)
  calibration_60_tasks_seconds                      (60 trivial idempotent tasks, plain
                                                     linear strategy with pipelining)
  site_noop_over_calibration_ratio                  (goal <= 0.5)
and, on stderr, the task profile's top 5 tasks of each site.yml run.

Uses its own lab (bench-node1..3 on 10.231.7.0/24) and removes it afterwards.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from lab import Lab, ensure_image
from sitelab import ansible_env, recap, run_playbook, stop_local_cloudflare, write_inventory

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


def measure(inventory: Path, tmp: Path) -> tuple[float, float, int, float]:
    """site.yml from scratch, its no-op rerun, then the calibration's no-op run."""
    env = ansible_env(**PROFILE)
    proc, scratch = run_playbook(inventory, "site.yml", env=env)
    top_tasks(proc.stdout, "scratch")
    proc, noop = run_playbook(inventory, "site.yml", env=env)
    top_tasks(proc.stdout, "no-op")
    changed = sum(h.get("changed", 0) for h in recap(proc.stdout).values())
    # Warm the calibration once (creates its files), then time the no-op run.
    plain = ansible_env(ANSIBLE_STRATEGY="ansible.builtin.linear", HOSTMESH_MITOGEN="0")
    playbook = calibration_playbook(tmp / "calibration.yml")
    run_playbook(inventory, str(playbook), env=plain)
    _, calibration = run_playbook(inventory, str(playbook), env=plain)
    return scratch, noop, changed, calibration


def main() -> int:
    ensure_image(quiet=True)
    lab = Lab(prefix="bench-", network="hostmesh-bench", subnet="10.231.7.0/24")
    lab.down()
    lab.up()
    try:
        with tempfile.TemporaryDirectory(prefix="hostmesh-bench-") as tmp:
            inventory = write_inventory(lab, Path(tmp) / "inventory")
            try:
                scratch, noop, changed, calibration = measure(inventory, Path(tmp))
            finally:
                stop_local_cloudflare(inventory)
    finally:
        lab.down()
    print(f"site_scratch_seconds: {scratch:.1f} s")
    print(f"site_noop_seconds: {noop:.1f} s")
    print(f"site_noop_changed_tasks: {changed} tasks")
    print(f"calibration_60_tasks_seconds: {calibration:.1f} s")
    print(f"site_noop_over_calibration_ratio: {noop / calibration:.2f} ratio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
