"""The tls role's distribution never puts an older certificate back (agent sync, issue 15),
and keeps a node's pair only when it passes the installer's check (security review F1).

The real ansible-playbook runs the role's distribute.yml on this machine (local
connection, every path in a temporary directory, a test CA's root as
tls_trusted_roots): the issuer's current pair, then a newer pair installed the way a
secondary's agent + root-run installer install it, then the role again. Also: a second
run and --check --diff change nothing, and no key reaches the output; a self-signed
pair a node serves is replaced by the issuer's; an issuer whose certificate no node
would take stops the role with a message saying what to set.
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
from tls_pairs import CA, pair

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


@pytest.fixture(scope="module")
def ca():
    return CA()


@pytest.fixture
def site(tmp_path, ca):
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
                 "tls_acme_venv": str(Path(sys.prefix)), "tls_trusted_roots": ca.root_pem},
        "tasks": [{"name": "the role", "ansible.builtin.import_role": {"name": "tls"}}]}]))
    return {"state": state, "tls": tls, "dyn": dyn, "inv": inv, "play": play}


def run(site, *extra: str) -> tuple[dict, str]:
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_STDOUT_CALLBACK": "default", "PATH": f"{BIN}:{os.environ['PATH']}"}
    # the issuer's own tasks (a wheelhouse, systemd units) are the lab tests' business
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(site["inv"]),
                           str(site["play"]), "--skip-tags", "tls_issuer", *extra],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recap = proc.stdout[proc.stdout.rindex("PLAY RECAP"):]
    counts = dict(part.split("=") for part in recap.split(":", 1)[1].split() if "=" in part)
    return {k: int(v) for k, v in counts.items()}, proc.stdout + proc.stderr


def served(site) -> str:
    return deploy.installed(site["tls"], site["dyn"])["lab.test"].serial


def files(site) -> list[str]:
    return sorted(p.name for p in site["tls"].iterdir())


def pair_files(*chains: bytes) -> list[str]:
    return sorted(f"lab.test-{bundle.version_of(c)}{ext}" for c in chains for ext in (".crt", ".key"))


def headers(out: str) -> list[str]:
    return [ln.split("[", 1)[1].split("]")[0].removeprefix("tls : ")
            for ln in out.splitlines() if ln.startswith("TASK [")]


def test_the_role_keeps_a_newer_pair_the_agent_installed(site, ca):
    old = ca.issue(NAMES, days=30)
    issuer_state(site["state"], *old)
    counts, out = run(site)
    assert counts["changed"] >= 1, out
    assert served(site) == bundle.version_of(old[0]), out
    counts, out = run(site)
    assert counts["changed"] == 0, out
    # a no-op: one probe, one check of its answers, the writing tasks not even included
    assert "included:" not in out, out
    assert len(headers(out)) == 4, headers(out)  # the arguments, probe, check, include
    # a renewal the agent brought (the root-run installer's way of installing it)
    new = ca.issue(NAMES, days=60)
    changed, kept = deploy.update({"lab.test": new}, site["tls"], site["dyn"], newer_only=True)
    assert changed and not kept
    counts, out = run(site, "--check", "--diff")
    assert counts["changed"] == 0 and served(site) == bundle.version_of(new[0]), out
    assert "PRIVATE KEY" not in out
    # the issuer's status still names the older one: the node keeps the newer pair and,
    # like the hand-over, the previous one; nothing to change (docs/status/15.md, Missing 1)
    counts, out = run(site)
    assert counts["changed"] == 0 and "included:" not in out, out
    assert served(site) == bundle.version_of(new[0]), out
    assert files(site) == pair_files(old[0], new[0])
    counts, out = run(site, "--check", "--diff")
    assert counts["changed"] == 0 and "PRIVATE KEY" not in out
    # once the issuer has it too, nothing changes either
    issuer_state(site["state"], *new)
    counts, out = run(site)
    assert counts["changed"] == 0 and served(site) == bundle.version_of(new[0]), out
    # a newer issued one replaces it (the role switches: only the new pair stays) ...
    newest = ca.issue(NAMES, days=90)
    issuer_state(site["state"], *newest)
    counts, out = run(site)
    assert counts["changed"] >= 1 and served(site) == bundle.version_of(newest[0])
    assert files(site) == pair_files(newest[0]), out
    assert "PRIVATE KEY" not in out
    counts, out = run(site)
    assert counts["changed"] == 0 and "included:" not in out, out
    # ... and a pair file changed by hand is put back: the probe sees it
    key = site["tls"] / f"lab.test-{bundle.version_of(newest[0])}.key"
    key.chmod(0o644)
    counts, out = run(site)
    assert counts["changed"] >= 1 and oct(key.stat().st_mode & 0o777) == "0o600", out
    (site["dyn"] / "hostmesh-tls.yml").write_text("# edited\n{}\n")
    counts, out = run(site)
    assert counts["changed"] >= 1 and served(site) == bundle.version_of(newest[0]), out
    stray = site["tls"] / "gone.test-0123456789abcdef.crt"  # a set no longer handed out
    stray.write_text("left over")
    counts, out = run(site)
    assert counts["changed"] >= 1 and not stray.exists(), out
    counts, out = run(site)
    assert counts["changed"] == 0 and "included:" not in out, out


def test_a_pair_the_node_serves_that_fails_the_check_is_replaced(site, ca):
    issued = ca.issue(NAMES, days=60)
    issuer_state(site["state"], *issued)
    counts, out = run(site)
    assert served(site) == bundle.version_of(issued[0])
    # what a compromised agent account got served before the check: self-signed, right
    # names, ending in 100 years; and one from another CA that ends later than the issuer's
    for hostile in (pair(NAMES, days=36500), CA("rogue").issue(NAMES, days=90)):
        deploy.install({"lab.test": hostile}, site["tls"], site["dyn"])
        counts, out = run(site)
        assert counts["changed"] >= 1 and served(site) == bundle.version_of(issued[0]), out
        assert not (site["tls"] / f"lab.test-{bundle.version_of(hostile[0])}.crt").exists()
        assert "PRIVATE KEY" not in out
    counts, out = run(site)
    assert counts["changed"] == 0, out


def test_an_issuer_certificate_no_node_would_take_stops_the_role(site):
    issuer_state(site["state"], *pair(NAMES, days=60))  # not from the trusted CA
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "ANSIBLE_NOCOLOR": "1",
           "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(site["inv"]),
                           str(site["play"]), "--skip-tags", "tls_issuer"], capture_output=True,
                          text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 2, proc.stdout
    assert "self-signed certificate" in proc.stdout and "Set tls_trusted_roots" in proc.stdout
    assert not site["tls"].exists() and not list(site["dyn"].iterdir())  # nothing handed out


def test_the_installer_unit_reads_the_roots_file_the_role_writes(tmp_path, ca):
    play = tmp_path / "render.yml"
    out = tmp_path / "hostmesh-tls-install.service"
    play.write_text(json.dumps([{
        "hosts": "localhost", "gather_facts": False,
        "vars_files": [str(ROOT / "roles/tls/defaults/main.yml"),
                       str(ROOT / "roles/tls/vars/main.yml")],
        "tasks": [
            {"name": "render", "ansible.builtin.template": {
                "src": str(ROOT / "roles/tls/templates/hostmesh-tls-install.service.j2"),
                "dest": str(out), "mode": "0644"}},
            {"name": "roots", "ansible.builtin.copy": {
                "content": "{{ _tls_trusted_roots_text }}", "dest": str(tmp_path / "roots.pem"),
                "mode": "0644"}}]}]))
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "PATH": f"{BIN}:{os.environ['PATH']}"}
    extra = {"ansible_python_interpreter": sys.executable, "tls_acme_zone": "lab.test",
             "tls_acme_certificates": [["lab.test", "*.lab.test"], ["Other.test"]],
             "hostmesh_state_dir": str(tmp_path), "tls_trusted_roots": ca.root_pem}
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           "-e", json.dumps(extra), str(play)],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    unit = out.read_text()
    assert " --trusted-roots /etc/traefik/tls/trusted-roots.pem " in unit
    assert "--set lab.test=lab.test,*.lab.test --set other.test=other.test" in unit
    from hostmesh.tls import trust

    roots = trust.read_roots(tmp_path / "roots.pem")
    assert ca.root_pem.strip() in roots and roots.count("BEGIN CERTIFICATE") == 1
