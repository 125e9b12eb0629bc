"""Renewal drill with short-lived certificates on a real lab (issue 15).

    flock /tmp/hostmesh-heavy.lock .venv/bin/python bench/tls_renewal_drill.py \
        [--validity 180] [--renewals 2] [--compare-ref REF]

Its own lab (tlsrenew-node1..3 on hostmesh-tlsrenew, 10.231.45.0/24), over SSH like
every lab. The lab's ACME CA (pebble on the gateway) is restarted with certificates
valid for --validity seconds (its certificateValidityPeriod) before site.yml, which
runs hostmesh.cluster.tls with the lab's settings plus a timer that fires every 5 s
(tls_acme_timer "*:*:0/5", tls_acme_timer_random_delay 0). Then, with nothing
forced and no Ansible run: HTTPS load through every node (each request a new TLS
connection to the node's :443 for whoami.lab.test, verified against pebble's root)
while hostmesh-acme.timer renews at two-thirds of each lifetime and the agents carry
each renewal to the secondaries, until --renewals renewals are served everywhere.
Afterwards playbooks/tls.yml reruns (changed=0 expected: the renewal left nothing for
Ansible) and counts its task headers, then --check --diff. With --compare-ref, the
tls role of that git revision (the same hostmesh wheel) runs twice on the same lab
afterwards: its changes after the renewals and its no-op task headers (a figure of
before a change).

Prints `name: value unit` lines; exits 1 when a request failed, a renewal was not
served everywhere within one renewal period, or a rerun changed something. Removes
the lab (HOSTMESH_KEEP_LAB=1 keeps it).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import lab_acme
import lab_gateway
from lab import Lab
from sitelab import (
    Drill,
    ansible_env,
    changed_count,
    changed_tasks,
    run_playbook,
    site_lab,
)

LAB = Lab(prefix="tlsrenew-", network="hostmesh-tlsrenew", subnet="10.231.45.0/24")
HOST = "whoami.lab.test"
TIMER = {"tls_acme_timer": "*:*:0/5", "tls_acme_timer_random_delay": 0}
DRILL = Drill("tls_renewal_drill", LAB, interval=0.5)
check, node_exec = DRILL.check, DRILL.node_exec


def say(line: str) -> None:
    print(line, flush=True)


def restart_pebble(state: Path, validity: int) -> str:
    """The lab's pebble again, with short-lived certificates; its new root (PEM)."""
    ip = lab_gateway.gateway(LAB.subnet)
    lab_acme.stop(state)
    probe = lab_acme.Pebble(state, ip, dns_server=f"{ip}:53", port=14000, management_port=15000)
    DRILL.wait(lambda: not probe.answers(), 20, "the lab's pebble to stop")
    lab_acme.start(state, ip, f"{ip}:53", validity=validity)
    return (state / "acme-root.pem").read_text()


def issuer_status() -> dict:
    raw = node_exec("node1", "cat", "/var/lib/hostmesh-acme/status.json")
    try:
        return json.loads(raw)["sets"]["lab.test"]
    except (ValueError, KeyError):
        return {}


def headers(stdout: str) -> int:
    return sum(1 for ln in stdout.splitlines() if ln.startswith("TASK ["))


class Load:
    """One thread per node: a new verified TLS connection per request, ~10 a second."""

    def __init__(self, root: str):
        self.root, self.stop = root, threading.Event()
        self.results: list[tuple[float, str, str]] = []  # (time, node, serial | error)
        self.first: dict[str, dict[str, float]] = {}  # serial -> node -> first served
        self.threads = [threading.Thread(target=self.run, args=(n,), daemon=True)
                        for n in LAB.nodes]

    def run(self, node: str) -> None:
        while not self.stop.is_set():
            now = time.time()
            try:
                code, _body, serial = lab_acme.https_get(LAB.address(node), 443, HOST,
                                                         cadata=self.root)
                got = serial if code == 200 else f"HTTP {code}"
            except (OSError, ssl.SSLError) as exc:
                got = f"error {type(exc).__name__}: {exc}"
            self.results.append((now, node, got))
            if not got.startswith(("HTTP", "error")):
                self.first.setdefault(got, {}).setdefault(node, now)
            time.sleep(0.1)

    def everywhere(self, serial: str) -> bool:
        return len(self.first.get(serial, {})) == len(LAB.nodes)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(15)


def drill(inventory: Path, root: str, validity: int, renewals: int) -> dict:
    extra = ("-e", json.dumps(TIMER))
    proc, seconds = run_playbook(inventory, "site.yml", *extra)
    say(f"tls_renewal_drill_site_seconds: {seconds:.1f} s")
    check("PRIVATE KEY" not in proc.stdout + proc.stderr, "a key in site.yml's output")
    first = issuer_status()
    check(first.get("serial"), "no certificate after site.yml")
    say(f"tls_renewal_drill_orders_in_site: {first.get('orders')} orders")
    check(first.get("orders") == 1, "site.yml made more than one order (the timer's pass and "
          "the role's at once?)")
    lifetime = first["not_after"] - first["not_before"]
    say(f"tls_renewal_drill_certificate_lifetime: {lifetime:.0f} s")
    DRILL.wait(lambda: all(serial_of(n, root) == first["serial"] for n in LAB.nodes), 60,
               "every node serving the first certificate")
    pids = {n: node_exec(n, "systemctl", "show", "-P", "MainPID", "traefik.service")
            for n in LAB.nodes}
    issued = [first]
    with Load(root) as load:
        deadline = time.monotonic() + (renewals + 1) * lifetime + 60
        while time.monotonic() < deadline and not (
                len(issued) > renewals and load.everywhere(issued[-1]["serial"])):
            time.sleep(2)
            st = issuer_status()
            if st.get("serial") and st["serial"] != issued[-1]["serial"]:
                issued.append(st)
                say(f"# renewal {len(issued) - 1}: {st['serial']} (orders {st['orders']})")
        time.sleep(2)
    took = len(issued) - 1
    say(f"tls_renewal_drill_renewals: {took} renewals")
    check(took >= renewals, f"{took} renewals within {(renewals + 1) * lifetime + 60:.0f} s")
    failed = [r for r in load.results if r[2].startswith(("HTTP", "error"))]
    say(f"tls_renewal_drill_requests: {len(load.results)} requests")
    say(f"tls_renewal_drill_failed_requests: {len(failed)} requests")
    worst_at, worst_spread, least_margin = 0.0, 0.0, float("inf")
    for before, after in itertools.pairwise(issued):
        at = (after["issued_at"] - before["not_before"]) / lifetime
        served = load.first.get(after["serial"], {})
        check(len(served) == len(LAB.nodes), f"{after['serial']} served only by {sorted(served)}")
        spread = max(served.values()) - after["issued_at"]
        margin = before["not_after"] - max(served.values())
        say(f"# {after['serial']}: issued at {at:.2f} of the previous lifetime, served by every "
            f"node {spread:.1f} s later, {margin:.0f} s before the previous one ended")
        check(after["orders"] == before["orders"] + 1, f"orders {before} -> {after}")
        check(spread < lifetime * 2 / 3, f"{after['serial']} took {spread:.1f} s to every node, "
              f"more than one renewal period")
        worst_at, worst_spread = max(worst_at, at), max(worst_spread, spread)
        least_margin = min(least_margin, margin)
    say(f"tls_renewal_drill_renewal_at_lifetime_fraction: {worst_at:.2f} ratio")
    say(f"tls_renewal_drill_seconds_to_every_node: {worst_spread:.1f} s")
    say(f"tls_renewal_drill_margin_before_expiry_seconds: {least_margin:.0f} s")
    check(not failed, f"failed requests: {failed[:5]}")
    check(pids == {n: node_exec(n, "systemctl", "show", "-P", "MainPID", "traefik.service")
                   for n in LAB.nodes}, "Traefik restarted")
    journal = node_exec("node1", "journalctl", "-u", "hostmesh-acme.service", "--no-pager",
                        "-o", "cat")
    say(f"tls_renewal_drill_issuer_passes: {journal.count('Finished')} passes")
    for node in LAB.nodes[1:]:
        journal = node_exec(node, "journalctl", "-u", "hostmesh-tls-install.service",
                            "--no-pager")
        check(journal.count("installed lab.test version") >= took,
              f"{node}: the installer's journal:\n{journal[-2000:]}")
    left = issued[-1]["renew_at"] - time.time()
    say(f"# {left:.0f} s until the next renewal is due")

    rerun, seconds = run_playbook(inventory, "playbooks/tls.yml", *extra)
    say(f"tls_renewal_drill_tls_rerun_changed_tasks: {changed_count(rerun.stdout)} tasks")
    if changed_tasks(rerun.stdout):
        say(f"# changed: {changed_tasks(rerun.stdout)}")
    say(f"tls_renewal_drill_tls_noop_task_headers: {headers(rerun.stdout)} headers")
    say(f"tls_renewal_drill_tls_noop_seconds: {seconds:.1f} s")
    checked, _ = run_playbook(inventory, "playbooks/tls.yml", *extra, "--check", "--diff")
    say(f"tls_renewal_drill_check_mode_changed_tasks: {changed_count(checked.stdout)} tasks")
    check(all(serial_of(n, root) == issued[-1]["serial"] for n in LAB.nodes),
          "a node no longer serves the newest certificate after the reruns")
    for p in (rerun, checked):
        check("PRIVATE KEY" not in p.stdout + p.stderr, "a key in the playbook output")
    return {"rerun": rerun, "checked": checked}


def serial_of(node: str, root: str) -> str | None:
    try:
        code, _body, serial = lab_acme.https_get(LAB.address(node), 443, HOST, cadata=root)
    except (OSError, ssl.SSLError):
        return None
    return serial if code == 200 else None


def old_tree(ref: str, dest: Path) -> Path:
    """`ref`'s tree with today's hostmesh wheel sources (the same wheel: nothing to install)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], capture_output=True,
                             check=True, timeout=120).stdout
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True, timeout=120)
    for part in ("pyproject.toml", "src/hostmesh", "plugins/module_utils"):
        target = dest / part
        if target.is_dir():
            shutil.rmtree(target)
        if (ROOT / part).is_dir():
            shutil.copytree(ROOT / part, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / part, target)
    return dest


def compare(ref: str, tree: Path, inventory: Path) -> None:
    env = ansible_env(ANSIBLE_CONFIG=str(tree / "ansible.cfg"))
    cmd = [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", str(inventory),
           "playbooks/tls.yml", "-e", json.dumps(TIMER)]
    runs = []
    for _ in range(2):
        started = time.monotonic()
        proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True,
                              check=False, timeout=900)
        check(proc.returncode == 0, f"{ref}'s tls.yml failed:\n{proc.stdout[-4000:]}")
        runs.append((proc, time.monotonic() - started))
    say(f"# {ref}'s tls role after the renewals: {changed_tasks(runs[0][0].stdout)}; then "
        f"changed {changed_count(runs[1][0].stdout)}")
    say(f"tls_renewal_drill_before_rerun_changed_tasks: {changed_count(runs[0][0].stdout)} tasks")
    say(f"tls_renewal_drill_before_noop_task_headers: {headers(runs[1][0].stdout)} headers")
    say(f"tls_renewal_drill_before_noop_seconds: {runs[1][1]:.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--validity", type=int, default=180,
                        help="lifetime of the lab CA's certificates, seconds (default 180)")
    parser.add_argument("--renewals", type=int, default=2, help="renewals to watch (default 2)")
    parser.add_argument("--compare-ref", help="also run this git revision's tls role after")
    args = parser.parse_args()
    say(f"tls_renewal_drill_validity_seconds: {args.validity} s")
    with tempfile.TemporaryDirectory(prefix="hostmesh-tls-renew-old-") as tmp:
        tree = old_tree(args.compare_ref, Path(tmp) / "tree") if args.compare_ref else None
        with site_lab(LAB, "hostmesh-tls-renew-") as inventory:
            root = restart_pebble(inventory / ".hostmesh", args.validity)
            out = drill(inventory, root, args.validity, args.renewals)
            if tree is not None:
                compare(args.compare_ref, tree, inventory)
    for name in ("rerun", "checked"):
        check(changed_count(out[name].stdout) == 0,
              f"{name} changed: {changed_tasks(out[name].stdout)}")
    say("tls_renewal_drill: every check held")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
