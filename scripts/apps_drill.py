"""The apps drill: hostmesh.cluster.apps end to end on a converged site lab.

With the app `hello` (hello.lab.test, port 8082, the lab's demo image) added to
the lab's registry: deploy 2 replicas, rerun (changed=0), --check --diff of
version 2 (shows it, changes nothing), roll version 1 -> 2 under load through
every node, scale 2 -> 3 -> 2 under load, roll out an image whose health check
fails (stops at the first node, the other keeps version 2), remove the app.
Every step is checked with a `Drill` (a failed check raises
SystemExit naming the drill) and measured; `scenario` returns the figures.

Used by tests/integration/site/test_site_apps.py (the shared site lab, part of
`make test`) and bench/apps_rollout.py (its own lab, prints the figures). The
lab's gateway registry (scripts/lab_gateway.py) holds whoami:1; `push_images`
adds versions 2 and `bad` (answers 500).
"""

from __future__ import annotations

import http.client
import threading
import time
from pathlib import Path

import lab_registry
import yaml
from lab import Lab
from lab_cloudflare import gateway_listen
from sitelab import ROOT, Drill, changed_count, changed_tasks, run_playbook

HOST = "hello.lab.test"
LAB_SERVICES = yaml.safe_load(
    (ROOT / "inventory/lab/group_vars/hostmesh_nodes/main.yml").read_text()
)["hostmesh_services"]


def registry(lab: Lab) -> str:
    return gateway_listen(lab.subnet, lab_registry.PORT)


def push_images(lab: Lab) -> None:
    """Versions 1 and 2 of the demo image, and `bad`, in the lab's registry."""
    for version in ("1", "2"):
        lab_registry.push_demo(registry(lab), version)
    lab_registry.push_demo(registry(lab), "bad", failing=True)


def services(lab: Lab, version="1", replicas=2) -> dict:
    """The lab's registry plus `hello` at `version` with `replicas`."""
    app = {
        "hosts": [HOST],
        "port": 8082,
        "health_path": "/",
        "replicas": replicas,
        "container": {
            "image": f"{registry(lab)}/{lab_registry.REPOSITORY}:{version}",
            "port": 8080,
            "health_timeout": 10,
        },
    }
    return {**LAB_SERVICES, "hello": app}


def apps(inventory: Path, registry_: dict, *args: str, check: bool = True):
    """playbooks/apps.yml with `registry_` as hostmesh_services; (process, seconds).
    The lab's whoami stays in it: the routes follow the whole registry."""
    extra = inventory.parent / f"apps-{time.monotonic_ns()}.yml"
    extra.write_text(yaml.safe_dump({"hostmesh_services": registry_}))
    return run_playbook(inventory, "playbooks/apps.yml", "-e", f"@{extra}", *args, check=check)


def get(address: str) -> tuple[int, str, str]:
    """(status, X-Whoami-Version, body) of hello.lab.test through the node at `address`."""
    return get_host(address, HOST)


def get_host(address: str, host: str) -> tuple[int, str, str]:
    """(status, X-Whoami-Version, body) of `host` through the node at `address`."""
    conn = http.client.HTTPConnection(address, 80, timeout=3)
    try:
        conn.request("GET", "/", headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, resp.getheader("X-Whoami-Version") or "", resp.read().decode().strip()
    except OSError as exc:
        return 0, "", str(exc)
    finally:
        conn.close()


class Load:
    """Requests through every node of `lab`, one thread per node, until stopped."""

    def __init__(self, lab: Lab):
        self.results, self._stop = [], threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(lab.address(n),), daemon=True)
            for n in lab.nodes
        ]

    def _run(self, address):
        deadline = time.monotonic() + 400
        while not self._stop.is_set() and time.monotonic() < deadline:
            self.results.append((address, *get(address)))
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


def scenario(lab: Lab, inventory: Path) -> dict[str, tuple[float, str]]:
    """Run the drill on the converged `lab`; return {figure: (value, unit)}."""
    drill = Drill("apps_drill", lab)
    check, figures = drill.check, {}

    def running(node: str) -> str:
        return drill.node_exec(
            node, "docker", "ps", "--filter", "label=hostmesh.app=hello", "--format", "{{.Image}}"
        )

    _, seconds = apps(inventory, services(lab, "1"))
    placed = sorted(n for n in lab.nodes if running(n))
    check(len(placed) == 2, f"2 replicas expected, running on {placed}")
    for node in lab.nodes:
        status, version, body = get(lab.address(node))
        check((status, version) == (200, "1") and body in placed, f"{node}: {status} {body}")
    figures["apps_deploy_seconds"] = (seconds, "s")

    again, seconds = apps(inventory, services(lab, "1"))
    changed = changed_count(again.stdout)
    figures["apps_noop_seconds"] = (seconds, "s")
    figures["apps_noop_changed_tasks"] = (changed, "tasks")
    check(changed == 0, f"rerun changed: {changed_tasks(again.stdout)}")

    # Check mode shows the new image and touches nothing: containers and routes stay.
    dry, _ = apps(inventory, services(lab, "2"), "--check", "--diff")
    check(
        changed_count(dry.stdout) > 0 and f"{lab_registry.REPOSITORY}:2" in dry.stdout,
        "--check --diff does not show the new image",
    )
    check(all(running(n).endswith(":1") for n in placed), "--check changed a replica")
    check(
        all(get(lab.address(n))[:2] == (200, "1") for n in lab.nodes),
        "hello does not answer version 1 through every node after --check",
    )

    with Load(lab) as load:
        _, seconds = apps(inventory, services(lab, "2"))
    check(all(running(n).endswith(":2") for n in placed), "not every replica runs version 2")
    figures["apps_rollout_seconds_per_node"] = (seconds / len(placed), "s")
    figures["apps_rollout_requests"] = (len(load.results), "requests")
    figures["apps_rollout_failed_requests"] = (len(load.failures), "requests")
    check(not load.failures, f"requests failed during the rollout: {load.failures[:5]}")

    for count, name in ((3, "up"), (2, "down")):
        with Load(lab) as load:
            apps(inventory, services(lab, "2", replicas=count))
        check(len([n for n in lab.nodes if running(n)]) == count, f"scale to {count}")
        figures[f"apps_scale_{name}_failed_requests"] = (len(load.failures), "requests")
        check(not load.failures, f"requests failed scaling {name}: {load.failures[:5]}")
    check(sorted(n for n in lab.nodes if running(n)) == placed, "placement moved")

    with Load(lab) as load:
        bad, _ = apps(inventory, services(lab, "bad"), check=False)
    check(bad.returncode != 0, "a rollout to an unhealthy image succeeded")
    check(
        f"app 'hello' on {placed[0]}: the new replica" in bad.stdout
        and "GET / answered 500" in bad.stdout,
        "the failure does not name node and reason",
    )
    check(running(placed[1]).endswith(":2"), "a node not reached left the old version")
    figures["apps_bad_rollout_failed_requests"] = (len(load.failures), "requests")
    check(not load.failures, f"requests failed during the stopped rollout: {load.failures[:5]}")

    apps(inventory, dict(LAB_SERVICES))
    check(all(running(n) == "" for n in lab.nodes), "containers left after removal")
    check(all(get(lab.address(n))[0] == 404 for n in lab.nodes), "a route left after removal")
    return figures
