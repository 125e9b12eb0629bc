"""The tls role's distribution never puts an older certificate back (agent sync, issue 15).

The real ansible-playbook runs the role's distribute.yml on this machine (local
connection, every path in a temporary directory): the issuer's current pair, then a
newer pair installed the way a secondary's agent + root-run installer install it,
then the role again. Also: a second run and --check --diff change nothing, and no key
reaches the output; the role's new unit templates render.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hostmesh.tls import bundle, deploy

sys.path.insert(0, str(Path(__file__).parent))
from tls_pairs import pair

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
NAMES = ["lab.test", "*.lab.test"]


def issuer_state(state: Path, chain: bytes, key: bytes) -> None:
    info = bundle.inspect(chain)
    cur = state / "certs" / "lab.test" / info["serial"]
    cur.mkdir(parents=True, exist_ok=True)
    (cur / "fullchain.pem").write_bytes(chain)
    (cur / "privkey.pem").write_bytes(key)
    link = state / "certs" / "lab.test" / "current"
    link.unlink(missing_ok=True)
    link.symlink_to(info["serial"])
    (state / "status.json").write_text(json.dumps({"sets": {"lab.test": {
        "serial": info["serial"], "not_after": info["not_after"] + 0.5}}}))


@pytest.fixture
def site(tmp_path):
    state, tls, dyn = tmp_path / "acme", tmp_path / "tls", tmp_path / "dynamic"
    dyn.mkdir()
    inv = tmp_path / "hosts.yml"
    inv.write_text(json.dumps({"hostmesh_nodes": {"children": {"hostmesh_primary": {"hosts": {
        "node1": {"ansible_connection": "local",
                  "ansible_python_interpreter": sys.executable}}}}}}))
    play = tmp_path / "play.yml"
    group = os.getgid()
    import grp
    import pwd

    user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(group).gr_name
    play.write_text(json.dumps([{
        "hosts": "hostmesh_nodes", "gather_facts": False,
        "vars": {"tls_enabled": True, "tls_acme_enabled": True, "tls_agent_sync": True,
                 "tls_acme_zone": "lab.test", "tls_acme_state_dir": str(state),
                 "tls_dir": str(tls), "tls_traefik_dynamic_dir": str(dyn),
                 "tls_traefik_user": user, "tls_traefik_group": group,
                 "tls_acme_venv": str(Path(sys.prefix))},
        "tasks": [{"name": "distribute", "ansible.builtin.import_role": {
            "name": "tls", "tasks_from": "distribute"}}]}]))
    return {"state": state, "tls": tls, "dyn": dyn, "inv": inv, "play": play}


def run(site, *extra: str) -> tuple[dict, str]:
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_STDOUT_CALLBACK": "default", "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(site["inv"]),
                           str(site["play"]), *extra], capture_output=True, text=True,
                          env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recap = proc.stdout[proc.stdout.rindex("PLAY RECAP"):]
    counts = dict(part.split("=") for part in recap.split(":", 1)[1].split() if "=" in part)
    return {k: int(v) for k, v in counts.items()}, proc.stdout + proc.stderr


def served(site) -> str:
    return deploy.installed(site["tls"], site["dyn"])["lab.test"].serial


def test_the_role_keeps_a_newer_pair_the_agent_installed(site):
    old = pair(NAMES, days=30)
    issuer_state(site["state"], *old)
    counts, out = run(site)
    assert counts["changed"] >= 1 and served(site) == bundle.version_of(old[0])
    counts, out = run(site)
    assert counts["changed"] == 0, out
    # a renewal the agent brought (the root-run installer's way of installing it)
    new = pair(NAMES, days=60)
    changed, kept = deploy.update({"lab.test": new}, site["tls"], site["dyn"], newer_only=True)
    assert changed and not kept
    counts, out = run(site, "--check", "--diff")
    assert served(site) == bundle.version_of(new[0])
    assert "PRIVATE KEY" not in out
    counts, out = run(site)  # the issuer's status still names the older one
    assert served(site) == bundle.version_of(new[0]), out
    # only the previous pair (kept by the hand-over for one more switch) was cleaned up
    assert sorted(p.name for p in site["tls"].iterdir()) == [
        f"lab.test-{bundle.version_of(new[0])}.crt", f"lab.test-{bundle.version_of(new[0])}.key"]
    counts, out = run(site)
    assert counts["changed"] == 0, out
    counts, out = run(site, "--check", "--diff")
    assert counts["changed"] == 0 and "PRIVATE KEY" not in out
    # once the issuer has it too, nothing changes either
    issuer_state(site["state"], *new)
    counts, out = run(site)
    assert counts["changed"] == 0 and served(site) == bundle.version_of(new[0]), out
    # and a newer issued one replaces it as before
    newest = pair(NAMES, days=90)
    issuer_state(site["state"], *newest)
    counts, out = run(site)
    assert counts["changed"] >= 1 and served(site) == bundle.version_of(newest[0])
    assert "PRIVATE KEY" not in out
