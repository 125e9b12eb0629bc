"""One view of what runs where, on a real lab (issue 16). Optional: not collected by pytest.

    flock /tmp/hostmesh-heavy.lock .venv/bin/python tests/integration/apps/lab_apps_view.py

Starts its own lab (apps-view-node1..3 on hostmesh-apps-view, 10.231.26.0/24),
converges site.yml over SSH, starts the lab registry on the gateway with the demo
image, puts the node agent's user in the docker group by hand on every node (what
earlier versions of hostmesh.cluster.apps did, and the agents restarted with it), runs
playbooks/apps.yml with the app `hello` (2 replicas), then checks, as a user would see
it:
- the agent's user is no longer in the docker group, nor its running process;
- hostmesh-apps-report.service runs on the nodes with Docker Engine and writes
  /run/hostmesh-apps/apps.json, 0640 root:hostmesh, in a 0750 directory;
- `playbooks/summary.yml` says which node runs `hello` (running) and that the third
  node runs no app;
- the dynamic inventory (SSH tunnel to the primary) puts exactly the two nodes in
  `hostmesh_app_hello`, with `hostmesh_apps`;
- a second apps.yml run changes nothing, and nor does `--check --diff`;
- a replica stopped by hand is reported `exited` within a few heartbeats;
- a stopped reporter: the agent logs that its report is stale (once), the primary keeps
  the last report; started again, the node reports again.
Prints `name: value unit` lines and exits 0 when every check holds; removes the lab
(HOSTMESH_KEEP_LAB=1 keeps it).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests" / "integration" / "inventory"))
import lab_registry
from lab import Lab
from lab_cloudflare import gateway_listen
from livecluster import plain
from sitelab import (
    VENV_BIN,
    Drill,
    ansible_env,
    changed_count,
    changed_tasks,
    run_playbook,
    site_lab,
)

LAB = Lab(prefix="apps-view-", network="hostmesh-apps-view", subnet="10.231.26.0/24")
REGISTRY = gateway_listen(LAB.subnet, lab_registry.PORT)
LAB_SERVICES = yaml.safe_load(
    (ROOT / "inventory/lab/group_vars/hostmesh_nodes/main.yml").read_text()
)["hostmesh_services"]
HELLO = {"hosts": ["hello.lab.test"], "port": 8082, "health_path": "/", "replicas": 2,
         "container": {"image": f"{REGISTRY}/{lab_registry.REPOSITORY}:1", "port": 8080,
                       "health_timeout": 20}}
DRILL = Drill("lab_apps_view", LAB, interval=2)
check, node_exec, wait = DRILL.check, DRILL.node_exec, DRILL.wait


def apps(inventory: Path):
    extra = inventory.parent / "apps-extra.yml"
    extra.write_text(yaml.safe_dump({"hostmesh_services": {**LAB_SERVICES, "hello": HELLO}}))
    return run_playbook(inventory, "playbooks/apps.yml", "-e", f"@{extra}")


def apps_check(inventory: Path):
    extra = inventory.parent / "apps-extra.yml"
    return run_playbook(inventory, "playbooks/apps.yml", "-e", f"@{extra}", "--check", "--diff")


def summary_lines(inventory: Path) -> dict[str, str]:
    proc, _ = run_playbook(inventory, "playbooks/summary.yml")
    return dict(re.findall(r'"(node\d)((?: runs |: ).*?)"', proc.stdout))


def inventory_config(inventory: Path) -> Path:
    state = inventory / ".hostmesh"
    config = inventory.parent / "view.hostmesh.yml"
    config.write_text(
        "plugin: hostmesh.cluster.nodes\n"
        f"ssh_host: {LAB.address(LAB.nodes[0])}\n"
        "ssh_user: admin\n"
        f"ssh_args: -i {state}/ssh/id_ed25519 -o IdentitiesOnly=yes"
        f" -o UserKnownHostsFile={state}/ssh/known_hosts\n"
        "url: http://127.0.0.1:8080\n"
        f"token: \"{{{{ lookup('ansible.builtin.file', '{state}/secrets/admin_token') }}}}\"\n")
    config.chmod(0o600)
    return config


def inventory_list(config: Path) -> dict:
    proc = subprocess.run([str(VENV_BIN / "ansible-inventory"), "-i", str(config), "--list"],
                          cwd=ROOT, env=ansible_env(), capture_output=True, text=True,
                          check=False, timeout=120)
    check(proc.returncode == 0, f"ansible-inventory failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def agent_groups(node: str) -> set[str]:
    """The supplementary group ids of the running node agent."""
    pid = node_exec(node, "systemctl", "show", "-P", "MainPID", "hostmesh-agent.service")
    status = node_exec(node, "cat", f"/proc/{pid}/status")
    line = next((ln for ln in status.splitlines() if ln.startswith("Groups:")), "Groups:")
    return set(line.split()[1:])


def the_old_docker_group(node: str) -> None:
    """What hostmesh.cluster.apps did before the reporter: the agent in the docker group."""
    node_exec(node, "usermod", "-aG", "docker", "hostmesh")
    node_exec(node, "systemctl", "restart", "hostmesh-agent.service")


def scenario(inventory: Path) -> None:
    docker_gid = node_exec(LAB.nodes[0], "getent", "group", "docker").split(":")[2]
    for node in LAB.nodes:
        the_old_docker_group(node)
        check(docker_gid in agent_groups(node), f"{node}: setting up the old docker group")
    started = time.monotonic()
    apps(inventory)
    placed = sorted(n for n in LAB.nodes if node_exec(n, "docker", "ps", "-q", "--filter",
                                                       "label=hostmesh.app=hello"))
    check(len(placed) == 2, f"2 replicas expected, running on {placed}")
    for node in LAB.nodes:  # every node: the membership is gone, from the process too
        groups = node_exec(node, "id", "-nG", "hostmesh").split()
        check("docker" not in groups, f"{node}: the agent's user is still in the docker "
                                      f"group ({groups})")
        check(docker_gid not in agent_groups(node),
              f"{node}: the running agent still has the docker group")
    print(f"apps_view_agent_in_docker_group: 0 of {len(LAB.nodes)} nodes")
    for node in placed:  # nodes with Docker Engine: the reporter
        active = node_exec(node, "systemctl", "is-active", "hostmesh-apps-report.service")
        check(active == "active", f"{node}: hostmesh-apps-report.service is {active}")
        modes = node_exec(node, "stat", "-c", "%a %U:%G", "/run/hostmesh-apps",
                          "/run/hostmesh-apps/apps.json").splitlines()
        check(modes == ["750 root:hostmesh", "640 root:hostmesh"],
              f"{node}: report directory and file are {modes}")
        report = json.loads(node_exec(node, "cat", "/run/hostmesh-apps/apps.json"))
        check([a["name"] for a in report["apps"]] == ["hello"], f"{node}: report {report}")
        exposure = node_exec(node, "systemd-analyze", "security",
                             "hostmesh-apps-report.service").splitlines()
        level = next((m.group(1) for ln in exposure
                      if (m := re.search(r"Overall exposure level.*: ([0-9.]+)", ln))), "?")
        print(f"apps_view_reporter_exposure_{node}: {level} (systemd-analyze security)")

    lines = wait(lambda: (s := summary_lines(inventory)) and all(
        "hello (running)" in s.get(n, "") for n in placed) and s, 120,
        "summary.yml to show hello running on both replicas")
    print(f"apps_view_seconds_to_summary: {time.monotonic() - started:.1f} s")
    for node in LAB.nodes:
        print(f"summary {node}{lines.get(node, ': (missing)')}")
    (other,) = [n for n in LAB.nodes if n not in placed]
    check(lines.get(other) == ": no app", f"{other}: {lines.get(other)}")

    data = plain(inventory_list(inventory_config(inventory)))
    members = sorted(data.get("hostmesh_app_hello", {}).get("hosts", []))
    check(members == placed, f"hostmesh_app_hello is {members}, expected {placed}")
    for node in placed:
        reported = data["_meta"]["hostvars"][node]["hostmesh_apps"]
        check([a["name"] for a in reported] == ["hello"] and reported[0]["state"] == "running",
              f"{node}: hostmesh_apps {reported}")
    check(data["_meta"]["hostvars"][other]["hostmesh_apps"] == [], f"{other} reports apps")
    print("apps_view_inventory_group_hosts: 2 hosts")

    again, _ = apps(inventory)
    changed = changed_count(again.stdout)
    print(f"apps_view_rerun_changed_tasks: {changed} tasks")
    check(changed == 0, f"rerun changed: {changed_tasks(again.stdout)}")
    checked, _ = apps_check(inventory)
    changed = changed_count(checked.stdout)
    print(f"apps_view_check_mode_changed_tasks: {changed} tasks")
    check(changed == 0, f"--check --diff changed: {changed_tasks(checked.stdout)}")

    stopped = time.monotonic()
    node_exec(placed[0], "docker", "stop", "hostmesh-hello")
    wait(lambda: "hello (exited)" in summary_lines(inventory).get(placed[0], ""), 60,
         f"{placed[0]}'s stopped replica reported as exited")
    print(f"apps_view_seconds_to_report_a_stop: {time.monotonic() - stopped:.1f} s")

    # the reporter stops: the agent stops sending (it says so once), the view keeps the
    # last report; started again, the node reports again
    node = placed[0]
    node_exec(node, "systemctl", "stop", "hostmesh-apps-report.service")
    wait(lambda: "apps not reported" in node_exec(
        node, "journalctl", "-u", "hostmesh-agent.service", "--since", "-2min", "--no-pager"),
        60, f"{node}'s agent to notice its stale report")
    check("hello (exited)" in summary_lines(inventory).get(node, ""),
          f"{node}: the last report is not kept")
    node_exec(node, "docker", "start", "hostmesh-hello")
    node_exec(node, "systemctl", "start", "hostmesh-apps-report.service")
    restarted = time.monotonic()
    wait(lambda: "hello (running)" in summary_lines(inventory).get(node, ""), 60,
         f"{node} reporting again")
    print(f"apps_view_seconds_to_report_after_reporter_restart: "
          f"{time.monotonic() - restarted:.1f} s")


def main() -> int:
    with site_lab(LAB, "hostmesh-apps-view-") as inventory:
        run_playbook(inventory, "site.yml")
        with lab_registry.running(inventory / ".hostmesh", REGISTRY):
            lab_registry.push_demo(REGISTRY, "1")
            scenario(inventory)
    print("lab_apps_view: every check held")
    return 0


if __name__ == "__main__":
    sys.exit(main())
