"""The repository's shape: roles, collection build, FQCN resolution, lab inventory.

These tests read the checkout and run the real Ansible tools (ansible-doc,
ansible-galaxy, ansible-inventory, ansible-playbook --syntax-check); none
needs Docker.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "tasks").is_dir())
MODULES = sorted(
    p.stem for p in (ROOT / "plugins" / "modules").glob("*.py") if not p.name.startswith("_")
)


def tool(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else name


def run(cmd: list[str], cwd: Path = ROOT, env: dict | None = None, check: bool = True):
    full_env = {**os.environ, "ANSIBLE_NOCOLOR": "1", **(env or {})}
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True,
                          check=False, timeout=300)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def load_yaml(path: Path):
    with path.open() as fh:
        return yaml.safe_load(fh)


# --------------------------------------------------------------------- layout
def test_layout_has_the_designed_top_level_files():
    for rel in ("README.md", "Makefile", "pyproject.toml", "galaxy.yml", "meta/runtime.yml",
                "ansible.cfg", "site.yml", "inventory/lab/hosts.yml",
                "inventory/example/hosts.yml", "molecule/default/molecule.yml",
                ".config/molecule/config.yml", "scripts/setup-host.sh", "scripts/lab.py",
                ".ci/run", "LICENSE", "requirements.txt", "bindep.txt", "requirements.yml",
                "execution-environment.yml", "meta/execution-environment.yml"):
        assert (ROOT / rel).exists(), f"{rel} is missing"
    link = ROOT / "collections" / "ansible_collections" / "hostmesh" / "cluster"
    assert link.is_symlink() and link.resolve() == ROOT, \
        "collections/ansible_collections/hostmesh/cluster must link back to the repo root"


def test_galaxy_metadata_names_the_collection():
    galaxy = load_yaml(ROOT / "galaxy.yml")
    assert (galaxy["namespace"], galaxy["name"]) == ("hostmesh", "cluster")
    runtime = load_yaml(ROOT / "meta" / "runtime.yml")
    assert runtime["requires_ansible"].startswith(">=")


def test_site_imports_only_existing_playbooks():
    for play in load_yaml(ROOT / "site.yml"):
        target = play["ansible.builtin.import_playbook"]
        assert (ROOT / target).exists(), f"site.yml imports missing {target}"


# ---------------------------------------------------------------------- roles
def test_there_are_roles():
    assert ROLES, "no role under roles/"


@pytest.mark.parametrize("role", ROLES)
def test_role_defaults_match_argument_specs(role):
    """defaults/main.yml and meta/argument_specs.yml declare the same variables."""
    defaults = load_yaml(ROOT / "roles" / role / "defaults" / "main.yml") or {}
    specs = load_yaml(ROOT / "roles" / role / "meta" / "argument_specs.yml")
    options = specs["argument_specs"]["main"].get("options") or {}
    assert set(defaults) - set(options) == set(), "in defaults, not in argument_specs"
    # Required options have no default; every other option must have one.
    optional = {k for k, v in options.items() if not v.get("required", False)}
    assert optional - set(defaults) == set(), "optional in argument_specs, no default"


@pytest.mark.parametrize("role", ROLES)
def test_role_runs_preflight_first_and_has_readme(role):
    main = load_yaml(ROOT / "roles" / role / "tasks" / "main.yml")
    first = main[0]
    target = next((v for k, v in first.items() if k.endswith(("import_tasks", "include_tasks"))),
                  None)
    target = target["file"] if isinstance(target, dict) else target
    assert target == "preflight.yml", f"first task of {role} must import preflight.yml"
    readme = (ROOT / "roles" / role / "README.md").read_text()
    for heading in ("Requirements", "Role Variables", "Example Playbook"):
        assert heading in readme, f"roles/{role}/README.md lacks a {heading} section"


def _task_files():
    for path in sorted([*(ROOT / "roles").glob("*/tasks/*.yml"), *(ROOT / "playbooks").glob("*.yml"),
                        ROOT / "site.yml"]):
        yield path, load_yaml(path) or []


def _walk_tasks(items):
    for item in items:
        if not isinstance(item, dict):
            continue
        yield item
        for key in ("block", "rescue", "always", "tasks", "pre_tasks", "post_tasks", "handlers"):
            yield from _walk_tasks(item.get(key) or [])


def test_tagged_dynamic_includes_apply_their_tags():
    """A tagged include_tasks/include_role runs none of its tasks under --tags without apply."""
    bad = []
    for path, items in _task_files():
        for task in _walk_tasks(items):
            for key in ("ansible.builtin.include_tasks", "ansible.builtin.include_role",
                        "include_tasks", "include_role"):
                if key in task and task.get("tags"):
                    args = task[key] if isinstance(task[key], dict) else {}
                    applied = set((args.get("apply") or {}).get("tags") or [])
                    tags = task["tags"] if isinstance(task["tags"], list) else [task["tags"]]
                    if not set(tags) <= applied | {"always"}:
                        bad.append(f"{path.relative_to(ROOT)}: {task.get('name')!r}")
    assert not bad, "tagged includes without apply: tags: " + "; ".join(bad)


def test_ddns_cli_default_config_is_where_the_role_writes_it():
    sys.path.insert(0, str(ROOT / "src"))
    from hostmesh.dns import sync

    defaults = load_yaml(ROOT / "roles" / "ddns" / "defaults" / "main.yml")
    assert sync.DEFAULT_CONFIG == f"{defaults['ddns_config_dir']}/ddns.env"
    unit = (ROOT / "roles" / "ddns" / "templates" / "hostmesh-ddns.service.j2").read_text()
    assert "--config {{ ddns_config_dir }}/ddns.env" in unit


def test_no_file_refers_outside_the_project():
    """The project's docs stand alone: no pointer to notes kept beside the checkout."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True,
                           text=True).stdout.split("\0")
    # Whatever sits beside the checkout (other checkouts, notes folders): neither a
    # relative path into it nor the name of a document kept there may appear.
    # Other checkouts (.git) and names our own tree uses are left out.
    own_names = {Path(rel).name for rel in files if rel}
    needles = set()
    for sibling in ROOT.parent.iterdir():
        if sibling.resolve() == ROOT.resolve() or not sibling.is_dir() \
                or (sibling / ".git").exists():
            continue
        needles.add(f"../{sibling.name}/")
        needles.update(doc.name for doc in sibling.glob("*.md") if doc.name not in own_names)
    bad = []
    for rel in filter(None, files):
        path = ROOT / rel
        if path.is_symlink() or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        bad += [f"{rel}: {n}" for n in needles if n in text]
    assert not bad, "files refer outside the project: " + "; ".join(bad)


@pytest.mark.parametrize("role", ROLES)
def test_role_handlers_listen(role):
    path = ROOT / "roles" / role / "handlers" / "main.yml"
    if not path.exists():
        return
    for handler in load_yaml(path) or []:
        assert "listen" in handler, f"handler {handler.get('name')!r} of {role} has no listen:"


# ------------------------------------------------------- FQCN from the checkout
def test_there_are_modules():
    assert MODULES, "no module under plugins/modules"


@pytest.mark.parametrize("module", MODULES)
def test_module_resolves_by_fqcn_with_full_docs(module):
    name = f"hostmesh.cluster.{module}"
    out = run([tool("ansible-doc"), "-t", "module", "--json", name]).stdout
    doc = json.loads(out)[name]
    assert doc["doc"].get("short_description"), f"{name} has no short_description"
    assert doc.get("examples"), f"{name} has no EXAMPLES"
    assert doc.get("return") is not None, f"{name} has no RETURN"
    attributes = doc["doc"].get("attributes", {})
    assert "check_mode" in attributes and "diff_mode" in attributes, \
        f"{name} documents no check_mode/diff_mode attributes"


def test_roles_resolve_by_fqcn_and_site_parses():
    out = run([tool("ansible-doc"), "-t", "role", "-l", "hostmesh.cluster"]).stdout
    for role in ROLES:
        assert f"hostmesh.cluster.{role}" in out
    run([tool("ansible-playbook"), "-i", "inventory/lab", "--syntax-check", "site.yml"])


def test_lab_inventory_groups():
    out = run([tool("ansible-inventory"), "-i", "inventory/lab", "--list"]).stdout
    inv = json.loads(out)
    assert inv["hostmesh_primary"]["hosts"] == ["node1"]
    assert sorted(inv["hostmesh_secondary"]["hosts"]) == ["node2", "node3"]
    assert sorted(inv["hostmesh_nodes"]["children"]) == ["hostmesh_primary", "hostmesh_secondary"]
    hostvars = inv["_meta"]["hostvars"]
    for i in (1, 2, 3):
        assert hostvars[f"node{i}"]["ansible_connection"] == "ssh"
        assert hostvars[f"node{i}"]["ansible_host"] == f"10.231.1.1{i}"
        assert hostvars[f"node{i}"]["hostmesh_lab"] is True


def test_example_inventory_parses_with_one_primary():
    out = run([tool("ansible-inventory"), "-i", "inventory/example/hosts.yml", "--list"]).stdout
    inv = json.loads(out)
    assert len(inv["hostmesh_primary"]["hosts"]) == 1
    assert inv["hostmesh_secondary"]["hosts"]


# ----------------------------------------------------- built and installed copy
def _tracked_copy(dest: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if not src.exists() and not src.is_symlink():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dest / rel)
        else:
            shutil.copy2(src, dest / rel)
    return dest


def test_galaxy_build_excludes_state_and_installs_elsewhere(tmp_path):
    src = _tracked_copy(tmp_path / "src")
    # What a working checkout accumulates and must never ship.
    planted = {
        ".venv/bin/python": "venv",
        "inventory/lab/.hostmesh/secrets/admin_token": "s3cret",
        ".hostmesh/secrets/registration_token": "s3cret",
        "tests/output/junit.xml": "<x/>",
        "src/hostmesh/__pycache__/x.pyc": "",
    }
    for rel, text in planted.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)

    run([tool("ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path / "dist"),
         str(src)], cwd=tmp_path)
    tarballs = list((tmp_path / "dist").glob("hostmesh-cluster-*.tar.gz"))
    assert len(tarballs) == 1
    with tarfile.open(tarballs[0]) as tar:
        members = tar.getnames()
    assert "galaxy.yml" not in members and "MANIFEST.json" in members
    for bad in (".venv", "collections", ".hostmesh", "tests/output", "__pycache__", ".git"):
        leaked = [m for m in members if f"/{bad}/" in f"/{m}/"]
        assert not leaked, f"{bad} leaked into the tarball: {leaked[:3]}"
    for wanted in ("plugins/modules", "roles", "src/hostmesh", "meta/runtime.yml",
                   "pyproject.toml"):
        assert any(m == wanted or m.startswith(wanted + "/") for m in members), wanted

    # Install into an empty directory and use it from elsewhere, with no
    # ansible.cfg of ours in sight.
    colls = tmp_path / "installed"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"ANSIBLE_CONFIG": str(elsewhere / "none.cfg"), "ANSIBLE_COLLECTIONS_PATH": str(colls),
           "HOME": str(tmp_path)}
    before = run([tool("ansible-doc"), "-t", "module", "-l", "hostmesh.cluster"], cwd=elsewhere,
                 env=env, check=False)
    assert "hostmesh.cluster." not in before.stdout, "resolved before install: test is not honest"
    run([tool("ansible-galaxy"), "collection", "install", "--offline", "-p", str(colls),
         str(tarballs[0])], cwd=elsewhere, env=env)
    listing = run([tool("ansible-doc"), "-t", "module", "-l", "hostmesh.cluster"], cwd=elsewhere,
                  env=env).stdout
    for module in MODULES:
        assert f"hostmesh.cluster.{module}" in listing
    roles = run([tool("ansible-doc"), "-t", "role", "-l", "hostmesh.cluster"], cwd=elsewhere,
                env=env).stdout
    for role in ROLES:
        assert f"hostmesh.cluster.{role}" in roles


def test_test_modules_have_unique_basenames():
    """pytest imports test modules by basename (no __init__.py in tests/): two
    test files with the same name stop the whole run at collection."""
    seen: dict[str, Path] = {}
    clashes = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        if "output" in path.relative_to(ROOT / "tests").parts:
            continue
        if path.name in seen:
            clashes.append(f"{seen[path.name].relative_to(ROOT)} and {path.relative_to(ROOT)}")
        seen.setdefault(path.name, path)
    assert not clashes, f"test files sharing a name (rename one): {clashes}"
