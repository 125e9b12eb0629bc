"""HTTP to HTTPS by default where a node serves certificates (issue 15): the traefik
role's static config, rendered by the real ansible-playbook from the role's own
defaults, vars and template, for traefik_web_redirect_to_https auto/true/false; and a
value that is none of them is refused by the role's settings check, with nothing
rendered. The redirect on a real lab: tests/integration/site/test_site_tls.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
ROLE = ROOT / "roles" / "traefik"

# (case, variables, redirect expected)
CASES = [
    ("auto_with_tls_role", {"tls_enabled": True}, True),
    ("auto_without_tls", {}, False),
    ("auto_tls_role_off", {"tls_enabled": False}, False),
    ("auto_with_own_certificates",
     {"traefik_tls_certificates": [{"certFile": "/c.crt", "keyFile": "/c.key"}]}, True),
    ("true", {"traefik_web_redirect_to_https": True}, True),
    ("true_string", {"traefik_web_redirect_to_https": "yes"}, True),
    ("false_with_tls_role", {"traefik_web_redirect_to_https": False, "tls_enabled": True}, False),
    ("auto_string", {"traefik_web_redirect_to_https": "AUTO", "tls_enabled": "true"}, True),
]


def playbook(tmp: Path, tasks: list[dict]) -> subprocess.CompletedProcess:
    play = tmp / "play.yml"
    play.write_text(json.dumps([{
        "hosts": "localhost", "gather_facts": False,
        "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
        "vars": {"wireguard_mesh_address": "10.50.0.1", "hostmesh_services": {}},
        "tasks": tasks}]))
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_ROLES_PATH": str(ROOT / "roles"),
           "PATH": f"{BIN}:{os.environ['PATH']}"}
    return subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", "-e",
         json.dumps({"ansible_python_interpreter": sys.executable}), str(play)],
        capture_output=True, text=True, env=env, timeout=300, check=False)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, dict]:
    tmp = tmp_path_factory.mktemp("redirect")
    tasks = [{"name": f"render {case}", "ansible.builtin.template": {
        "src": str(ROLE / "templates" / "traefik.yml.j2"), "dest": str(tmp / f"{case}.yml"),
        "mode": "0644"}, "vars": variables} for case, variables, _ in CASES]
    proc = playbook(tmp, tasks)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {case: yaml.safe_load((tmp / f"{case}.yml").read_text()) for case, _, _ in CASES}


@pytest.mark.parametrize(("case", "expected"), [(c, e) for c, _, e in CASES])
def test_the_web_entrypoint_redirects_exactly_where_expected(rendered, case, expected):
    web = rendered[case]["entryPoints"]["web"]
    assert web["address"] == ":80"
    if expected:
        assert web["http"]["redirections"]["entryPoint"] == {
            "to": "websecure", "scheme": "https", "permanent": True}
    else:
        assert "http" not in web
    # the other entrypoints never redirect: peers (mesh) and ping/metrics (traefik) stay HTTP
    for name in ("websecure", "mesh", "traefik"):
        assert "http" not in rendered[case]["entryPoints"][name], name
    assert rendered[case]["ping"] == {"entryPoint": "traefik"}


@pytest.mark.parametrize("bad", ["maybe", "on-with-tls", ""])
def test_anything_but_true_false_auto_is_refused_before_anything_changes(tmp_path, bad):
    out = tmp_path / "traefik.yml"
    proc = playbook(tmp_path, [
        {"name": "settings", "ansible.builtin.import_role": {"name": "traefik",
                                                              "tasks_from": "settings"},
         "vars": {"traefik_web_redirect_to_https": bad}},
        {"name": "render", "ansible.builtin.template": {
            "src": str(ROLE / "templates" / "traefik.yml.j2"), "dest": str(out),
            "mode": "0644"}, "vars": {"traefik_web_redirect_to_https": bad}}])
    assert proc.returncode == 2, proc.stdout
    assert f"traefik_web_redirect_to_https must be true, false or auto, got {bad}." in proc.stdout
    assert not out.exists()


def test_the_argument_spec_takes_auto():
    spec = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    option = spec["argument_specs"]["main"]["options"]["traefik_web_redirect_to_https"]
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    assert option["type"] == "raw" and option["default"] == defaults[
        "traefik_web_redirect_to_https"] == "auto"
