"""hostmesh.cluster.apps end to end on a fresh 3-node lab: deploy, rerun, rolling update
under load, scale 2 -> 3 -> 2, a failing health check, removal.

Starts its own lab (apps-bench-node1..3 on hostmesh-apps-bench, 10.231.16.0/24),
converges site.yml, starts the lab registry (scripts/lab_registry.py) on the
gateway with the demo image hostmesh/whoami in versions 1, 2 and `bad`
(answers 500), then runs playbooks/apps.yml with the app `hello`
(hello.lab.test, port 8082) added to the lab's registry. Every step is
checked (the script fails when one does not hold) and timed. Prints
`name: value unit` lines:
  apps_deploy_seconds, apps_noop_seconds, apps_noop_changed_tasks (must be 0)
  apps_rollout_seconds_per_node, apps_rollout_requests, apps_rollout_failed_requests (goal 0)
  apps_scale_up_failed_requests, apps_scale_down_failed_requests (goal 0)
  apps_bad_rollout_failed_requests (goal 0; the rollout stops at the first node)
Removes the lab afterwards (HOSTMESH_KEEP_LAB=1 keeps it).
"""

from __future__ import annotations

import http.client
import sys
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import lab_registry
from lab import Lab
from lab_cloudflare import gateway_listen
from sitelab import Drill, changed_count, changed_tasks, run_playbook, site_lab

LAB = Lab(prefix="apps-bench-", network="hostmesh-apps-bench", subnet="10.231.16.0/24")
HOST = "hello.lab.test"
REGISTRY = gateway_listen(LAB.subnet, lab_registry.PORT)
LAB_SERVICES = yaml.safe_load(
    (ROOT / "inventory/lab/group_vars/hostmesh_nodes/main.yml").read_text()
)["hostmesh_services"]


def services(version="1", replicas=2):
    app = {
        "hosts": [HOST],
        "port": 8082,
        "health_path": "/",
        "replicas": replicas,
        "container": {
            "image": f"{REGISTRY}/{lab_registry.REPOSITORY}:{version}",
            "port": 8080,
            "health_timeout": 10,
        },
    }
    return {**LAB_SERVICES, "hello": app}


def apps(inventory: Path, registry: dict, check: bool = True):
    # The lab's whoami stays in the registry: the routes follow the whole registry.
    extra = inventory.parent / f"apps-{time.monotonic_ns()}.yml"
    extra.write_text(yaml.safe_dump({"hostmesh_services": registry}))
    return run_playbook(inventory, "playbooks/apps.yml", "-e", f"@{extra}", check=check)


def get(node: str) -> tuple[int, str, str]:
    conn = http.client.HTTPConnection(LAB.address(node), 80, timeout=3)
    try:
        conn.request("GET", "/", headers={"Host": HOST})
        resp = conn.getresponse()
        return resp.status, resp.getheader("X-Whoami-Version") or "", resp.read().decode().strip()
    except OSError as exc:
        return 0, "", str(exc)
    finally:
        conn.close()


class Load:
    """Requests through every node, one thread per node, until stopped."""

    def __init__(self):
        self.results, self._stop = [], threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True)
                         for n in LAB.nodes]

    def _run(self, node):
        deadline = time.monotonic() + 400
        while not self._stop.is_set() and time.monotonic() < deadline:
            self.results.append((node, *get(node)))
            time.sleep(0.05)

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)

    @property
    def failures(self):
        return [r for r in self.results if r[1] != 200]


DRILL = Drill("apps_rollout", LAB)
check = DRILL.check


def running(node: str) -> str:
    return DRILL.node_exec(node, "docker", "ps", "--filter", "label=hostmesh.app=hello",
                           "--format", "{{.Image}}")


def scenario(inventory: Path) -> None:
    _, seconds = apps(inventory, services("1"))
    placed = sorted(n for n in LAB.nodes if running(n))
    check(len(placed) == 2, f"2 replicas expected, running on {placed}")
    for node in LAB.nodes:
        status, version, body = get(node)
        check((status, version) == (200, "1") and body in placed, f"{node}: {status} {body}")
    print(f"apps_deploy_seconds: {seconds:.1f} s")

    again, seconds = apps(inventory, services("1"))
    changed = changed_count(again.stdout)
    print(f"apps_noop_seconds: {seconds:.1f} s")
    print(f"apps_noop_changed_tasks: {changed} tasks")
    check(changed == 0, f"rerun changed: {changed_tasks(again.stdout)}")

    with Load() as load:
        _, seconds = apps(inventory, services("2"))
    check(all(running(n).endswith(":2") for n in placed), "not every replica runs version 2")
    print(f"apps_rollout_seconds_per_node: {seconds / len(placed):.1f} s")
    print(f"apps_rollout_requests: {len(load.results)} requests")
    print(f"apps_rollout_failed_requests: {len(load.failures)} requests")

    for count, name in ((3, "up"), (2, "down")):
        with Load() as load:
            apps(inventory, services("2", replicas=count))
        check(len([n for n in LAB.nodes if running(n)]) == count, f"scale to {count}")
        print(f"apps_scale_{name}_failed_requests: {len(load.failures)} requests")
    check(sorted(n for n in LAB.nodes if running(n)) == placed, "placement moved")

    with Load() as load:
        bad, _ = apps(inventory, services("bad"), check=False)
    check(bad.returncode != 0, "a rollout to an unhealthy image succeeded")
    check(f"app 'hello' on {placed[0]}: the new replica" in bad.stdout
          and "GET / answered 500" in bad.stdout, "the failure does not name node and reason")
    check(running(placed[1]).endswith(":2"), "a node not reached left the old version")
    print(f"apps_bad_rollout_failed_requests: {len(load.failures)} requests")

    apps(inventory, dict(LAB_SERVICES))
    check(all(running(n) == "" for n in LAB.nodes), "containers left after removal")
    check(all(get(n)[0] == 404 for n in LAB.nodes), "a route left after removal")


def main() -> int:
    with site_lab(LAB, "hostmesh-apps-bench-") as inventory:
        run_playbook(inventory, "site.yml")
        with lab_registry.running(inventory / ".hostmesh", REGISTRY):
            for version in ("1", "2"):
                lab_registry.push_demo(REGISTRY, version)
            lab_registry.push_demo(REGISTRY, "bad", failing=True)
            scenario(inventory)
    return 0


if __name__ == "__main__":
    sys.exit(main())
