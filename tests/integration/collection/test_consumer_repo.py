"""hostmesh.cluster used from another repository, the way a user gets it.

The tarball (`ansible-galaxy collection build`) is installed into an empty
project directory, with a fresh virtualenv that holds only ansible-core and
the requirements the collection itself declares (its requirements.txt): no
`hostmesh` package, no `ansible` bundle, nothing of this checkout on any path.
From there, by FQCN only:

- `hostmesh.cluster.node` registers a node on a real primary agent (a
  `hostmesh agent` process on loopback), then changes nothing on a second run;
- the `hostmesh.cluster.nodes` inventory plugin lists that primary's nodes;
- `hostmesh.cluster.cloudflare_dns` publishes a record on the local server
  speaking Cloudflare's v4 API (the SDK comes from requirements.txt);
- the roles and the collection's playbooks resolve (`--syntax-check`).

pip may fill the fresh venv from its cache or the package index.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "tests" / "integration" / "agent"))
sys.path.insert(0, str(ROOT / "tests" / "integration" / "inventory"))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agent_harness import ADMIN_TOKEN, Cluster, node_key
from livecluster import plain

from tests.cloudflare_server.harness import CloudflareServer

ROLES = ["wireguard", "node_agent", "traefik", "ddns"]


def ansible_core_version() -> str:
    from ansible.release import __version__

    return __version__


def run(cmd, cwd: Path, env: dict | None = None, check: bool = True, timeout: int = 600):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(map(str, cmd))} exited {proc.returncode}\n"
                    f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


class Consumer:
    """An empty project with the installed collection and its own fresh venv."""

    def __init__(self, root: Path):
        self.root = root
        self.project = root / "project"
        self.venv = root / "venv"
        self.home = root / "home"

    def env(self, **extra: str) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items()
                if k in ("LANG", "LC_ALL", "TERM", "TMPDIR") or k.startswith("PIP_")}
        return {**keep, "PATH": f"{self.venv / 'bin'}:/usr/bin:/bin", "HOME": str(self.home),
                "ANSIBLE_NOCOLOR": "1", **extra}

    def tool(self, name: str) -> Path:
        return self.venv / "bin" / name

    def ansible(self, name: str, *args, env: dict | None = None, check: bool = True):
        return run([self.tool(name), *args], self.project, self.env(**(env or {})), check)

    def playbook(self, tasks: str, **env: str) -> tuple[dict, int]:
        """Run one task on localhost; return its result and the play's changed count."""
        result = self.project / "result.json"
        result.unlink(missing_ok=True)
        (self.project / "play.yml").write_text(
            "- name: Use the collection by FQCN\n  hosts: localhost\n  gather_facts: false\n"
            "  tasks:\n" + textwrap.indent(textwrap.dedent(tasks), "    ")
            + "      register: __result\n"
            "    - name: Keep the result for the test\n"
            "      ansible.builtin.copy:\n"
            f"        dest: {result}\n"
            "        content: \"{{ __result | to_json }}\"\n"
            "        mode: '0600'\n"
            "      changed_when: false\n"
        )
        proc = self.ansible("ansible-playbook", "play.yml", env=env, check=False)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        changed = re.search(r"^localhost\s+:.*\bchanged=(\d+)", proc.stdout, re.MULTILINE)
        return json.loads(result.read_text()), int(changed[1])


@pytest.fixture(scope="module")
def consumer(tmp_path_factory) -> Consumer:
    c = Consumer(tmp_path_factory.mktemp("consumer"))
    c.home.mkdir()
    c.project.mkdir()
    run([BIN / "ansible-galaxy", "collection", "build", "--output-path", c.root / "dist", ROOT],
        c.root)
    (tarball,) = (c.root / "dist").glob("hostmesh-cluster-*.tar.gz")

    # Only ansible-core, then what the installed collection says it needs.
    run([sys.executable, "-m", "venv", c.venv], c.root)
    pip = [c.tool("python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run([*pip, f"ansible-core=={ansible_core_version()}"], c.root,
        {**os.environ, "HOME": os.environ.get("HOME", str(c.home))})
    # The collection's one dependency, community.docker, offline from the copy the
    # `ansible` package put into this venv (as a site without Galaxy would use a mirror).
    bundled = Path(sysconfig.get_paths()["purelib"]) / "ansible_collections" / "community"
    deps = c.root / "deps.yml"
    deps.write_text(yaml.safe_dump({"collections": [
        {"name": str(bundled / name), "type": "dir"}
        for name in ("docker", "library_inventory_filtering_v1")]}))
    run([c.tool("ansible-galaxy"), "collection", "install", "--offline", "-p",
         c.project / "collections", "-r", deps], c.project, c.env())
    run([c.tool("ansible-galaxy"), "collection", "install", "--offline", "-p",
         c.project / "collections", tarball], c.project, c.env())
    installed = c.project / "collections" / "ansible_collections" / "hostmesh" / "cluster"
    run([*pip, "-r", installed / "requirements.txt"], c.root,
        {**os.environ, "HOME": os.environ.get("HOME", str(c.home))})

    (c.project / "ansible.cfg").write_text(
        "[defaults]\ncollections_path = ./collections\ninventory = hosts.yml\n"
        "interpreter_python = auto_silent\n"
    )
    (c.project / "hosts.yml").write_text(yaml.safe_dump({
        "all": {"hosts": {"localhost": {
            "ansible_connection": "local",
            "ansible_python_interpreter": str(c.tool("python")),
        }}},
    }))
    return c


def test_the_fresh_venv_has_no_hostmesh_package_and_no_checkout_in_sight(consumer):
    probe = run([consumer.tool("python"), "-c", "import hostmesh"], consumer.root,
                consumer.env(), check=False)
    assert probe.returncode != 0, "the consumer venv can import hostmesh: the test is not honest"
    listing = consumer.ansible("ansible-galaxy", "collection", "list", "--format", "json").stdout
    found = {name: path for path, colls in json.loads(listing).items() for name in colls
             if not name.startswith("ansible.")}  # ansible-core's own internal collections
    # the collection and its declared dependency (with its own), all in the project
    here = str(consumer.project / "collections" / "ansible_collections")
    assert found == {"hostmesh.cluster": here, "community.docker": here,
                     "community.library_inventory_filtering_v1": here}
    installed = consumer.project / "collections" / "ansible_collections" / "hostmesh" / "cluster"
    assert installed.is_dir() and not installed.is_symlink()
    freeze = run([consumer.tool("python"), "-m", "pip", "freeze"], consumer.root,
                 consumer.env()).stdout.lower()
    assert "ansible-core==" in freeze and "cloudflare==" in freeze
    assert "hostmesh" not in freeze and "\nansible==" not in f"\n{freeze}"


@pytest.fixture(scope="module")
def primary(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp("primary"))
    try:
        yield cluster.primary()
    finally:
        cluster.close()


def test_node_module_registers_on_a_real_primary_and_is_idempotent(consumer, primary):
    task = f"""\
    - name: Register consumer-node
      hostmesh.cluster.node:
        url: {primary.url}
        token: "{{{{ lookup('ansible.builtin.env', 'HOSTMESH_ADMIN_TOKEN') }}}}"
        name: consumer-node
        api_endpoint: http://10.50.0.99:{primary.port}
        wireguard_ip: 10.50.0.99
        api_key: {node_key('consumer-node')}
        labels:
          zone: eu
    """
    env = {"HOSTMESH_ADMIN_TOKEN": ADMIN_TOKEN}
    result, changed = consumer.playbook(task, **env)
    assert result["changed"] is True and changed == 1, result
    assert result["node"]["name"] == "consumer-node"
    assert "api_key" not in result["node"]
    nodes = {n["name"]: n for n in primary.admin().list_nodes()}
    assert nodes["consumer-node"]["labels"] == {"zone": "eu"}
    assert nodes["consumer-node"]["api_endpoint"] == f"http://10.50.0.99:{primary.port}"

    again, changed = consumer.playbook(task, **env)
    assert again["changed"] is False and changed == 0, again


def test_nodes_inventory_plugin_lists_the_primary(consumer, primary):
    # a secondary is checked at its mesh address and the agent port
    node = {"name": "inv-node", "api_endpoint": f"http://10.50.0.98:{primary.port}",
            "api_key": node_key("inv-node"), "labels": {"gpu": "true"},
            "wireguard_ip": "10.50.0.98"}
    admin = primary.admin()
    if not any(n["name"] == "inv-node" for n in admin.list_nodes()):
        admin.create_node(node)
    (consumer.project / "cluster.hostmesh.yml").write_text(
        f"plugin: hostmesh.cluster.nodes\nurl: {primary.url}\n"
    )
    out = consumer.ansible("ansible-inventory", "-i", "cluster.hostmesh.yml", "--list",
                           env={"HOSTMESH_ADMIN_TOKEN": ADMIN_TOKEN}).stdout
    inv = plain(json.loads(out))
    assert inv["hostmesh_primary"]["hosts"] == ["primary"]
    assert "inv-node" in inv["hostmesh_secondary"]["hosts"]
    assert "primary" in inv["hostmesh_online"]["hosts"]
    assert "inv-node" in inv["hostmesh_label_gpu"]["hosts"]
    hostvars = inv["_meta"]["hostvars"]
    assert hostvars["inv-node"]["ansible_host"] == "10.50.0.98"
    assert hostvars["primary"]["hostmesh_is_primary"] is True
    assert ADMIN_TOKEN not in out

    denied = consumer.ansible("ansible-inventory", "-i", "cluster.hostmesh.yml", "--list",
                              env={"HOSTMESH_ADMIN_TOKEN": "wrong-token-0123456789abcdef0123"},
                              check=False)
    assert "inv-node" not in denied.stdout


def test_cloudflare_dns_runs_with_the_declared_requirements_only(consumer):
    with CloudflareServer(zones=["example.org"], token="consumer-token-0123456789") as cf:
        task = f"""\
        - name: One A record per node
          hostmesh.cluster.cloudflare_dns:
            api_token: consumer-token-0123456789
            api_base_url: {cf.base_url}
            zone: example.org
            cluster: consumer
            names: [example.org]
            nodes:
              n1: {{ipv4: 192.0.2.10}}
        """
        result, changed = consumer.playbook(task)
        assert result["changed"] is True and changed == 1, result
        records = [(r["name"], r["type"], r["content"], r.get("comment")) for r in cf.records()]
        assert records == [("example.org", "A", "192.0.2.10", "hostmesh:consumer:n1")]
        again, changed = consumer.playbook(task)
        assert again["changed"] is False and changed == 0, again


def test_roles_and_playbooks_resolve_by_fqcn(consumer):
    (consumer.project / "cluster.yml").write_text(yaml.safe_dump({
        "hostmesh_nodes": {"children": {
            "hostmesh_primary": {"hosts": {"n1": {"ansible_host": "192.0.2.1"}}},
            "hostmesh_secondary": {"hosts": {"n2": {"ansible_host": "192.0.2.2"}}},
        }},
    }))
    (consumer.project / "site.yml").write_text(
        "- name: Check first\n  ansible.builtin.import_playbook: hostmesh.cluster.preflight\n"
        "- name: Build the cluster\n  hosts: hostmesh_nodes\n  become: true\n  roles:\n"
        + "".join(f"    - hostmesh.cluster.{r}\n" for r in ROLES)
    )
    consumer.ansible("ansible-playbook", "-i", "cluster.yml", "--syntax-check", "site.yml")
    listing = consumer.ansible("ansible-doc", "-t", "role", "-l", "hostmesh.cluster").stdout
    for role in ROLES:
        assert f"hostmesh.cluster.{role}" in listing
    modules = consumer.ansible("ansible-doc", "-t", "module", "-l", "hostmesh.cluster").stdout
    for module in ("node", "cloudflare_dns", "secret", "traefik_config", "wireguard_keypair"):
        assert f"hostmesh.cluster.{module}" in modules
