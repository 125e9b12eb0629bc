"""Renewals reach every node through the agents, on a real lab (issue 15). Optional:
not collected by pytest.

    flock /tmp/hostmesh-heavy.lock .venv/bin/python tests/integration/tls/lab_agent_sync.py

Its own lab (tlssync-node1..3 on hostmesh-tlssync, 10.231.35.0/24), over SSH like
every lab: the Cloudflare stand-in with its DNS and pebble on the lab gateway,
`site.yml`, then `playbooks/tls.yml` (agent sync on by default). Then, as an operator
would see it:
- the issuer's export on node1 (0600, the agent's user), an inbox (0700) and an
  active hostmesh-tls-install.path on node2 and node3;
- `hostmesh acme renew --force` on node1 under continuous verified HTTPS through
  node2 and node3: 0 failed requests, the new serial served by both within
  seconds, no Ansible run, Traefik not restarted;
- the installer's journal on the secondaries says what it installed;
- playbooks/tls.yml afterwards keeps the new certificate and changes nothing (the
  previous pair stays, as the hand-over keeps it), again changed=0, and
  `--check --diff` changes nothing and shows no key;
- from node2, the primary's certificate endpoint answers 401 to a wrong key;
- a pair the agent account on node3 makes itself (self-signed, the right names,
  ending in 100 years) is refused by the installer (journal), nothing changes, node3
  keeps serving the issued certificate (security review F1);
- no private key in any agent's or the installer's journal.
Prints `name: value unit` lines, exits 0 when every check holds; removes the lab
(HOSTMESH_KEEP_LAB=1 keeps it).
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "scripts"))
import lab_acme
from lab import Lab
from sitelab import Drill, changed_count, changed_tasks, run_playbook, site_lab, start_acme

LAB = Lab(prefix="tlssync-", network="hostmesh-tlssync", subnet="10.231.35.0/24")
HOST = "whoami.lab.test"
SYNC: list[str] = []  # agent sync is on by default (tls_agent_sync)
DRILL = Drill("lab_agent_sync", LAB, interval=0.2)
check, node_exec, wait = DRILL.check, DRILL.node_exec, DRILL.wait


def serial(node: str, root: str) -> str | None:
    try:
        code, _body, got = lab_acme.https_get(LAB.address(node), 443, HOST, cadata=root)
    except (OSError, ssl.SSLError):
        return None
    return got if code == 200 else None


def export_doc(node: str = "node1") -> dict:
    return json.loads(node_exec(node, "cat", "/var/lib/hostmesh/tls-export/lab.test.json")
                      or "{}")


def inbox_version(node: str) -> str:
    raw = node_exec(node, "cat", "/var/lib/hostmesh/tls-inbox/lab.test.json")
    return json.loads(raw)["version"] if raw else ""


def hostile_pair(root: str, served: str) -> None:
    """The agent account on node3 drops its own pair in its inbox (security review F1)."""
    sys.path.insert(0, str(ROOT / "tests" / "integration" / "tls"))
    from tls_hostile import self_signed

    from hostmesh.tls import bundle

    roots = node_exec("node3", "stat", "-c", "%a %U", "/etc/traefik/tls/trusted-roots.pem")
    check(roots == "644 root", f"node3: trusted-roots.pem is {roots}")
    before = node_exec("node3", "ls", "/etc/traefik/tls")
    doc = bundle.dumps(bundle.make("lab.test", *self_signed(36500)))
    since = node_exec("node3", "date", "+%Y-%m-%d %H:%M:%S")
    subprocess.run(["docker", "exec", "-i", "-u", "hostmesh", LAB.container("node3"), "sh", "-c",
                    ("cd /var/lib/hostmesh/tls-inbox && mkdir -p .staging && "
                     "cat > .staging/lab.test.json && mv .staging/lab.test.json lab.test.json")],
                   input=doc, check=True,
                   timeout=60)

    def refused() -> str:
        journal = node_exec("node3", "journalctl", "-u", "hostmesh-tls-install.service",
                            "--since", since, "--no-pager")
        return journal if "refused" in journal else ""

    journal = wait(refused, 30, "node3's installer refusing the agent's own pair")
    check("more than 400 days" in journal and "keeps serving" in journal,
          f"node3: installer journal:\n{journal}")
    time.sleep(2)
    check(node_exec("node3", "ls", "/etc/traefik/tls") == before, "node3: files changed")
    check(serial("node3", root) == served, "node3 no longer serves the issued certificate")
    print("lab_agent_sync_hostile_pair_refused: 1 refused")


def scenario(inventory: Path, root: str) -> None:
    secondaries = LAB.nodes[1:]
    first, seconds = run_playbook(inventory, "playbooks/tls.yml", *SYNC)
    print(f"lab_agent_sync_tls_playbook_seconds: {seconds:.1f} s")
    modes = node_exec("node1", "stat", "-c", "%a %U", "/var/lib/hostmesh/tls-export",
                      "/var/lib/hostmesh/tls-export/lab.test.json").splitlines()
    check(modes == ["700 hostmesh", "600 hostmesh"], f"node1 export is {modes}")
    version = export_doc()["version"]
    for node in secondaries:
        modes = node_exec(node, "stat", "-c", "%a %U", "/var/lib/hostmesh/tls-inbox")
        check(modes == "700 hostmesh", f"{node}: inbox is {modes}")
        active = node_exec(node, "systemctl", "is-active", "hostmesh-tls-install.path")
        check(active == "active", f"{node}: hostmesh-tls-install.path is {active}")
        wait(lambda n=node: inbox_version(n) == version, 30, f"{node}'s agent fetching {version}")
    old = {n: wait(lambda n=n: serial(n, root), 30, f"HTTPS through {n}") for n in LAB.nodes}
    check(len(set(old.values())) == 1, f"one serial everywhere: {old}")
    pids = {n: node_exec(n, "systemctl", "show", "-P", "MainPID", "traefik.service")
            for n in secondaries}

    results: list[tuple[str, str]] = []
    stop = threading.Event()

    def hammer(node: str) -> None:
        while not stop.is_set():
            results.append((node, serial(node, root) or "failed"))
            time.sleep(0.05)

    threads = [threading.Thread(target=hammer, args=(n,), daemon=True) for n in secondaries]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        renew = subprocess.run(
            ["docker", "exec", LAB.container("node1"), "/opt/hostmesh/venv/bin/hostmesh",
             "acme", "renew", "--config", "/etc/hostmesh-acme/acme.env", "--force"],
            capture_output=True, text=True, check=False, timeout=300)
        check(renew.returncode == 0, f"renew --force failed: {renew.stderr[-2000:]}")
        left = time.monotonic()
        new = export_doc()["serial"]
        check(new != next(iter(old.values())), "the renewal made a new serial")
        for node in secondaries:
            wait(lambda n=node: serial(n, root) == new, 60, f"{node} serving {new}")
        took = time.monotonic() - left
        time.sleep(2)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    failed = [r for r in results if r[1] not in (new, next(iter(old.values())))]
    print(f"lab_agent_sync_seconds_to_every_secondary: {took:.1f} s")
    print(f"lab_agent_sync_requests: {len(results)} requests")
    print(f"lab_agent_sync_failed_requests: {len(failed)} requests")
    check(not failed, f"failed requests: {failed[:5]}")
    check(pids == {n: node_exec(n, "systemctl", "show", "-P", "MainPID", "traefik.service")
                   for n in secondaries}, "Traefik restarted")
    for node in secondaries:
        journal = node_exec(node, "journalctl", "-u", "hostmesh-tls-install.service",
                            "--no-pager")
        check("installed lab.test version" in journal, f"{node}: installer journal:\n{journal}")

    again, _ = run_playbook(inventory, "playbooks/tls.yml", *SYNC)
    check(all(serial(n, root) == new for n in LAB.nodes), "tls.yml put an older one back")
    print(f"lab_agent_sync_rerun_after_renewal_changed_tasks: {changed_count(again.stdout)} tasks")
    check(changed_count(again.stdout) == 0, f"the rerun after the renewal changed: "
          f"{changed_tasks(again.stdout)}")
    third, _ = run_playbook(inventory, "playbooks/tls.yml", *SYNC)
    changed = changed_count(third.stdout)
    print(f"lab_agent_sync_second_rerun_changed_tasks: {changed} tasks")
    check(changed == 0, f"second rerun changed: {changed_tasks(third.stdout)}")
    checked, _ = run_playbook(inventory, "playbooks/tls.yml", *SYNC, "--check", "--diff")
    changed = changed_count(checked.stdout)
    print(f"lab_agent_sync_check_mode_changed_tasks: {changed} tasks")
    check(changed == 0, f"--check --diff changed: {changed_tasks(checked.stdout)}")
    for proc in (first, again, third, checked):
        check("PRIVATE KEY" not in proc.stdout + proc.stderr, "a key in the playbook output")

    hostile_pair(root, new)

    node_id = node_exec("node2", "cat", "/var/lib/hostmesh/node_id")
    primary_url = next(ln.split("=", 1)[1] for ln in node_exec(
        "node2", "cat", "/etc/hostmesh/agent.env").splitlines()
        if ln.startswith("PRIMARY_NODE_URL="))
    code = node_exec("node2", "/opt/hostmesh/venv/bin/python", "-c", (
        "import urllib.request, urllib.error\n"
        f"r = urllib.request.Request('{primary_url}/api/tls/certificates/lab.test', "
        f"headers={{'X-Node-ID': '{node_id}', 'X-Node-API-Key': 'k' * 64}})\n"
        "try:\n    print(urllib.request.urlopen(r, timeout=5).status)\n"
        "except urllib.error.HTTPError as e:\n    print(e.code)"))
    print(f"lab_agent_sync_wrong_key_status: {code}")
    check(code == "401", f"a wrong key got {code}")
    for node in LAB.nodes:
        journal = node_exec(node, "journalctl", "-u", "hostmesh-agent.service", "-u",
                            "hostmesh-tls-install.service", "-u", "hostmesh-acme.service",
                            "--no-pager")
        check("PRIVATE KEY" not in journal, f"{node}: a key in the journal")


def main() -> int:
    with site_lab(LAB, "hostmesh-tls-sync-") as dest:
        try:
            root = start_acme(LAB, dest)
            run_playbook(dest, "site.yml")
            scenario(dest, root)
        finally:
            lab_acme.stop(dest / ".hostmesh")
    print("lab_agent_sync: every check held")
    return 0


if __name__ == "__main__":
    sys.exit(main())
