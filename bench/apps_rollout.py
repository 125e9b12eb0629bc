"""hostmesh.cluster.apps end to end on a fresh 3-node lab: deploy, rerun, rolling update
under load, scale 2 -> 3 -> 2, a failing health check, removal (scripts/apps_drill.py).

Starts its own lab (apps-bench-node1..3 on hostmesh-apps-bench, 10.231.16.0/24),
converges site.yml (the lab's gateway registry holds the demo image), pushes
versions 2 and `bad` (answers 500), then runs the drill with the app `hello`.
Every step is checked (the script fails when one does not hold) and timed.
Prints `name: value unit` lines:
  apps_deploy_seconds, apps_noop_seconds, apps_noop_changed_tasks (must be 0)
  apps_rollout_seconds_per_node, apps_rollout_requests, apps_rollout_failed_requests (goal 0)
  apps_scale_up_failed_requests, apps_scale_down_failed_requests (goal 0)
  apps_bad_rollout_failed_requests (goal 0; the rollout stops at the first node)
Removes the lab afterwards (HOSTMESH_KEEP_LAB=1 keeps it).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import apps_drill
from lab import Lab
from sitelab import run_playbook, site_lab

LAB = Lab(prefix="apps-bench-", network="hostmesh-apps-bench", subnet="10.231.16.0/24")


def main() -> int:
    with site_lab(LAB, "hostmesh-apps-bench-") as inventory:
        run_playbook(inventory, "site.yml")
        apps_drill.push_images(LAB)
        for name, (value, unit) in apps_drill.scenario(LAB, inventory).items():
            print(f"{name}: {value:.1f} {unit}" if isinstance(value, float) else
                  f"{name}: {value} {unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
