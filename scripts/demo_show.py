#!/usr/bin/env python3
"""The end of `make demo`: show the converged lab from a user's point of view.

1. writes inventory/lab.hostmesh.yml, a dynamic-inventory config that reaches
   the primary's API through an SSH tunnel (the lab's key and known_hosts) and
   whose token is read from the lab's secret store at run time (never copied,
   git-ignored);
2. the inventory graph as the primary sees it, and a ping through it;
3. the same whoami.lab.test request answered through each node, with the
   name of the node that served it;
4. the DNS records the cluster owns on the lab's local Cloudflare API;
5. https://whoami.lab.test through each node, verified against the lab ACME
   CA's root (inventory/lab/.hostmesh/acme-root.pem), and the certificate's
   serial (the same everywhere: one order for the cluster).

Exits non-zero when any of it does not hold (a demo that hides a failure
would be worse than none).
"""

from __future__ import annotations

import http.client
import ssl
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lab import Lab
from lab_acme import https_get
from sitelab import ROOT, VENV_BIN, ansible_env

LAB = Lab()  # hostmesh-lab-node1..3, as inventory/lab/hosts.yml
STATE = ROOT / "inventory" / "lab" / ".hostmesh"
CONFIG = ROOT / "inventory" / "lab.hostmesh.yml"
SERVICE_HOST = "whoami.lab.test"
ZONE = "lab.test"
CLUSTER = "lab"


def write_config() -> Path:
    CONFIG.write_text(
        "# Written by `make demo`: the lab's nodes as its primary sees them.\n"
        "#   ansible-inventory -i inventory/lab.hostmesh.yml --graph\n"
        "#   ansible -i inventory/lab.hostmesh.yml hostmesh_online -m ansible.builtin.ping\n"
        "plugin: hostmesh.cluster.nodes\n"
        "# the agent's API listens only on the mesh and on loopback: reach it through an\n"
        "# SSH tunnel to the primary (the lab's key and known_hosts, host keys checked)\n"
        f"ssh_host: {LAB.address(LAB.nodes[0])}\n"
        "ssh_user: admin\n"
        f"ssh_args: -i {STATE}/ssh/id_ed25519 -o IdentitiesOnly=yes"
        f" -o UserKnownHostsFile={STATE}/ssh/known_hosts\n"
        "url: http://127.0.0.1:8080\n"
        "# read from the lab's secret store at run time; never copied here\n"
        f"token: \"{{{{ lookup('ansible.builtin.file', '{STATE}/secrets/admin_token') }}}}\"\n"
        "# over SSH to the nodes' public addresses, with the lab's key and known_hosts\n"
        "ansible_host_source: public_ip\n"
        "compose:\n"
        "  ansible_user: \"'admin'\"\n"
        "  ansible_become: \"true\"\n"
        f"  ansible_ssh_private_key_file: \"'{STATE}/ssh/id_ed25519'\"\n"
        f"  ansible_ssh_common_args: \"'-o UserKnownHostsFile={STATE}/ssh/known_hosts"
        " -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes'\"\n"
    )
    CONFIG.chmod(0o600)
    return CONFIG


def run(*cmd: str) -> str:
    proc = subprocess.run(
        cmd, check=False, cwd=ROOT, env=ansible_env(), capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def whoami_through(node: str) -> str:
    conn = http.client.HTTPConnection(LAB.address(node), 80, timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": SERVICE_HOST})
        resp = conn.getresponse()
        body = resp.read().decode().strip()
        return body if resp.status == 200 else f"HTTP {resp.status} {body[:60]}"
    except OSError as exc:
        return f"failed: {exc}"
    finally:
        conn.close()


def https_through(node: str) -> tuple[str, str]:
    """(served by, certificate serial) for https://whoami.lab.test through ``node``, verified."""
    try:
        status, body, serial = https_get(LAB.address(node), 443, SERVICE_HOST,
                                         cafile=str(STATE / "acme-root.pem"))
    except (OSError, ssl.SSLError) as exc:
        return f"failed: {exc}", ""
    if status != 200:
        return f"failed: HTTP {status}", serial
    return body, serial


def owned_records() -> list[str]:
    import cloudflare  # the controller has the SDK (dev extra)

    token = (STATE / "secrets" / "cloudflare_api_token").read_text().strip()
    gateway = LAB.address(LAB.nodes[0]).rsplit(".", 1)[0] + ".1"
    client = cloudflare.Cloudflare(
        api_token=token, base_url=f"http://{gateway}:8787/client/v4", max_retries=0
    )
    zone = next(iter(client.zones.list(name=ZONE)))
    rows = []
    for rec in client.dns.records.list(zone_id=zone.id, per_page=500):
        if (rec.comment or "").startswith(f"hostmesh:{CLUSTER}:"):
            rows.append(f"{rec.type:5} {rec.name:14} {rec.content:15} {rec.comment}")
    return sorted(rows)


def main() -> int:
    cfg = write_config()
    print(f"\n== dynamic inventory ({cfg.relative_to(ROOT)}) ==")
    graph = run(str(VENV_BIN / "ansible-inventory"), "-i", str(cfg), "--graph")
    print(graph.rstrip())
    pings = run(
        str(VENV_BIN / "ansible"), "-i", str(cfg), "hostmesh_online", "-m", "ansible.builtin.ping"
    )
    print(f"ping through it: {pings.count('SUCCESS')} node(s) answered")

    print(f"\n== GET http://<node>/ with Host: {SERVICE_HOST} ==")
    answers = {node: whoami_through(node) for node in LAB.nodes}
    for node, answer in answers.items():
        print(f"through {node} ({LAB.address(node)}): served by {answer}")

    print(f"\n== DNS records the cluster owns in {ZONE} (lab Cloudflare API) ==")
    records = owned_records()
    print("\n".join(records) or "(none)")

    print(f"\n== GET https://{SERVICE_HOST}/ through each node, verified with "
          f"{(STATE / 'acme-root.pem').relative_to(ROOT)} ==")
    secure = {node: https_through(node) for node in LAB.nodes}
    for node, (answer, serial) in secure.items():
        print(f"through {node} ({LAB.address(node)}): served by {answer}, certificate {serial}")
    serials = {serial for _answer, serial in secure.values()}

    bad = [n for n, a in answers.items() if a not in LAB.nodes]
    bad += [n for n, (a, _s) in secure.items() if a not in LAB.nodes and n not in bad]
    if bad or "hostmesh_online" not in graph or not records or len(serials) != 1:
        print(
            f"\ndemo check failed: requests through {bad or 'every node'}, "
            f"{len(records)} record(s)",
            file=sys.stderr,
        )
        return 1
    print("\nThe lab keeps running: `make lab-down` removes it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
