"""Routing follows the primary's view, on a real lab (issue 17). Optional: not
collected by pytest.

    flock /tmp/hostmesh-heavy.lock .venv/bin/python tests/integration/health/lab_routing_view.py

Its own lab (routeview-node1..3 on hostmesh-routeview, 10.231.36.0/24), over SSH like
every lab: `site.yml` with `traefik_follow_primary_view: true` (whoami on node1 and
node3, so node2's Traefik routes it to the peers' pool), then, as an operator would
see it:
- node2: the agent's routing inbox (0700 hostmesh), `hostmesh-routes.path` active,
  `/etc/traefik/hostmesh-routes.json`, both peers in the dynamic file;
- node3's agent frozen (SIGSTOP; its Traefik and whoami keep serving) under continuous
  HTTP through node2: node3 leaves node2's pool within 15 s detection + one heartbeat,
  0 failed requests, then only node1 answers;
- while node3 is out, `playbooks/traefik.yml` changes nothing (changed=0, and
  `--check --diff` too) and node3 stays out;
- SIGCONT: node3 back in node2's pool; the installer's journal says what it did;
- `traefik_follow_primary_view: false`: the routes file goes, every peer stays, a
  second run changed=0.
Prints `name: value unit` lines, exits 0 when every check holds; removes the lab
(HOSTMESH_KEEP_LAB=1 keeps it).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "scripts"))
from lab import Lab
from sitelab import Drill, changed_count, changed_tasks, run_playbook, site_lab

LAB = Lab(prefix="routeview-", network="hostmesh-routeview", subnet="10.231.36.0/24")
HOST = "whoami.lab.test"
ON = ["-e", json.dumps({"traefik_follow_primary_view": True})]
OFF = ["-e", json.dumps({"traefik_follow_primary_view": False})]
HEARTBEAT, DETECTION = 5.0, 15.0
DRILL = Drill("lab_routing_view", LAB, interval=0.3)
check, node_exec, wait = DRILL.check, DRILL.node_exec, DRILL.wait


def pool(node: str = "node2") -> set[str]:
    """The hosts of whoami's peers pool in `node`'s dynamic file."""
    raw = node_exec(node, "cat", "/etc/traefik/dynamic/hostmesh.yml")
    servers = json.loads(raw)["http"]["services"]["whoami-peers"]["loadBalancer"]["servers"]
    return {s["url"].split("//")[1].split(":")[0] for s in servers}


def mesh(node: str) -> str:
    env = node_exec(node, "cat", "/etc/hostmesh/agent.env")
    return next(ln.split("=", 1)[1] for ln in env.splitlines()
                if ln.startswith("NODE_WIREGUARD_IP="))


def get(node: str) -> str:
    req = urllib.request.Request(f"http://{LAB.address(node)}/", headers={"Host": HOST})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.read().decode().strip() if resp.status == 200 else "failed"
    except (OSError, urllib.error.HTTPError):
        return "failed"


def changed(proc) -> int:
    return changed_count(proc.stdout)


def agent_signal(node: str, sig: str) -> None:
    subprocess.run(["docker", "exec", LAB.container(node), "systemctl", "kill", f"--signal={sig}",
                    "hostmesh-agent.service"], check=True, timeout=60)


def scenario(inventory: Path) -> None:
    addresses = {n: mesh(n) for n in LAB.nodes}
    modes = node_exec("node2", "stat", "-c", "%a %U", "/var/lib/hostmesh/routing-inbox")
    check(modes == "700 hostmesh", f"node2: inbox is {modes}")
    active = node_exec("node2", "systemctl", "is-active", "hostmesh-routes.path")
    check(active == "active", f"node2: hostmesh-routes.path is {active}")
    source = node_exec("node2", "stat", "-c", "%a %U %G", "/etc/traefik/hostmesh-routes.json")
    check(source == "640 root traefik", f"node2: routes file is {source}")
    wait(lambda: node_exec("node2", "cat", "/var/lib/hostmesh/routing-inbox/offline.json"),
         2 * HEARTBEAT + 5, "node2's agent writing its first view")
    check(pool() == {addresses["node1"], addresses["node3"]}, f"node2's pool is {pool()}")

    results: list[tuple[float, str]] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            results.append((time.monotonic(), get("node2")))

    thread = threading.Thread(target=hammer, daemon=True)
    thread.start()
    try:
        wait(lambda: {b for _t, b in results} >= {"node1", "node3"}, 20,
             "both peers answering through node2")
        agent_signal("node3", "SIGSTOP")
        frozen = time.monotonic()
        try:
            wait(lambda: pool() == {addresses["node1"]}, DETECTION + HEARTBEAT + 10,
                 "node3 leaving node2's pool", interval=0.2)
            left = time.monotonic() - frozen
            print(f"lab_routing_view_seconds_to_leave_the_pool: {left:.1f} s")
            check(left <= DETECTION + HEARTBEAT + 2, f"node3 left after {left:.1f} s")
            time.sleep(3)
            settled = time.monotonic()
            time.sleep(3)
            bodies = {b for t, b in results if t >= settled}
            check(bodies == {"node1"}, f"answers through node2 after the change: {bodies}")
            for extra in ((), ("--check", "--diff")):
                proc, _ = run_playbook(inventory, "playbooks/traefik.yml", *ON, *extra)
                print(f"lab_routing_view_traefik_rerun{'_check' if extra else ''}_changed_tasks: "
                      f"{changed(proc)} tasks")
                check(changed(proc) == 0, f"traefik.yml {extra}: {changed_tasks(proc.stdout)}")
                check(pool() == {addresses["node1"]}, "traefik.yml put node3 back")
        finally:
            agent_signal("node3", "SIGCONT")
        resumed = time.monotonic()
        wait(lambda: pool() == {addresses["node1"], addresses["node3"]}, 2 * HEARTBEAT + 10,
             "node3 back in node2's pool", interval=0.2)
        back = time.monotonic() - resumed
        print(f"lab_routing_view_seconds_to_come_back: {back:.1f} s")
        wait(lambda: "node3" in {b for t, b in results if t >= resumed + back}, 20,
             "node3 answering through node2 again")
    finally:
        stop.set()
        thread.join(15)
    failed = [r for r in results if r[1] == "failed"]
    print(f"lab_routing_view_requests: {len(results)} requests")
    print(f"lab_routing_view_failed_requests: {len(failed)} requests")
    check(not failed, f"{len(failed)} failed requests")
    journal = node_exec("node2", "journalctl", "-u", "hostmesh-routes.service", "--no-pager")
    check("routing installed" in journal and "removed=http/whoami-peers:node3" in journal,
          f"node2: installer journal:\n{journal[-3000:]}")
    primary = node_exec("node1", "journalctl", "-u", "hostmesh-agent.service", "--no-pager")
    check("routing view offline=node3" in primary, "the primary's journal has no view line")

    proc, _ = run_playbook(inventory, "playbooks/traefik.yml", *OFF)
    print(f"lab_routing_view_off_changed_tasks: {changed(proc)} tasks")
    check(not node_exec("node2", "ls", "/etc/traefik/hostmesh-routes.json"),
          "the routes file is still there")
    check(pool() == {addresses["node1"], addresses["node3"]}, "off: not every peer")
    proc, _ = run_playbook(inventory, "playbooks/traefik.yml", *OFF)
    print(f"lab_routing_view_off_rerun_changed_tasks: {changed(proc)} tasks")
    check(changed(proc) == 0, f"off rerun: {changed_tasks(proc.stdout)}")


def main() -> int:
    with site_lab(LAB, "hostmesh-routing-view-") as dest:
        _proc, seconds = run_playbook(dest, "site.yml", *ON)
        print(f"lab_routing_view_site_seconds: {seconds:.1f} s")
        scenario(dest)
    print("lab_routing_view: every check held")
    return 0


if __name__ == "__main__":
    sys.exit(main())
