"""The collection's dependency declarations, read by the tools that consume them.

`ansible-builder create` turns execution-environment.yml into a build context
holding the collection tarball and the galaxy requirements that install it;
`ansible-builder introspect` on the installed collection finds the Python and
system requirements declared in meta/execution-environment.yml; and
requirements.yml installs the collection offline, as a playbook project does.
No image is built (no container registry is reachable) and nothing is
downloaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def load(path: Path):
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A directory with the EE definition, requirements.yml and the built tarball in dist/."""
    proj = tmp_path_factory.mktemp("ee")
    for name in ("execution-environment.yml", "requirements.yml"):
        shutil.copy2(ROOT / name, proj / name)
    run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path",
         str(proj / "dist"), str(ROOT)], proj)
    return proj


def tarball(project: Path) -> Path:
    (path,) = (project / "dist").glob("hostmesh-cluster-*.tar.gz")
    return path


def test_declared_files_agree_with_each_other():
    galaxy = load(ROOT / "galaxy.yml")
    # the apps role's containers; requirements.yml names it too, with the same bound
    assert galaxy["dependencies"] == {"community.docker": ">=3.4.0"}
    meta = load(ROOT / "meta" / "execution-environment.yml")
    assert meta["dependencies"] == {"python": "requirements.txt", "system": "bindep.txt"}
    reqs = [ln.split("#")[0].strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()]
    assert [r for r in reqs if r] == ["cloudflare>=4"]
    coll, docker = load(ROOT / "requirements.yml")["collections"]
    assert docker == {"name": "community.docker", "version": galaxy["dependencies"]["community.docker"]}
    assert coll["name"] == "hostmesh.cluster"
    assert coll["source"] == f"dist/hostmesh-cluster-{galaxy['version']}.tar.gz", \
        "requirements.yml must name the tarball of galaxy.yml's version"
    ee = load(ROOT / "execution-environment.yml")
    assert ee["version"] == 3
    assert ee["dependencies"]["galaxy"] == "requirements.yml"


def test_ansible_builder_create_makes_a_context_with_our_requirements(project, tmp_path):
    context = tmp_path / "context"
    # run from elsewhere: paths in the EE file are relative to the file itself
    run([str(BIN / "ansible-builder"), "create", "-f", str(project / "execution-environment.yml"),
         "--context", str(context)], tmp_path)
    build = context / "_build"
    galaxy_reqs = load(build / "requirements.yml")
    coll, docker = galaxy_reqs["collections"]
    assert docker["name"] == "community.docker"
    assert coll["name"] == "hostmesh.cluster" and coll["type"] == "file"
    # the tarball sits where the galaxy stage (WORKDIR /build) looks for it
    copied = build / coll["source"]
    assert copied.read_bytes() == tarball(project).read_bytes()
    containerfile = next(p for p in (context / "Containerfile", context / "Dockerfile")
                         if p.exists()).read_text()
    assert "ansible-galaxy collection install" in containerfile
    assert "-r requirements.yml" in containerfile
    assert "ansible-core>=2.16" in containerfile
    # introspection of the installed collections brings in meta/execution-environment.yml
    assert "introspect" in containerfile


def test_installed_collection_declares_its_python_and_system_requirements(project, tmp_path):
    colls = tmp_path / "colls"
    run([str(BIN / "ansible-galaxy"), "collection", "install", "--offline", "-p", str(colls),
         str(tarball(project))], tmp_path)
    installed = colls / "ansible_collections" / "hostmesh" / "cluster"
    for name in ("requirements.txt", "bindep.txt", "meta/execution-environment.yml", "LICENSE"):
        assert (installed / name).is_file(), f"{name} is not in the tarball"
    out = run([str(BIN / "ansible-builder"), "introspect", "--sanitize", str(colls)],
              tmp_path).stdout
    data = yaml.safe_load(out.split("\n", 1)[1])  # first line is a '# Dependency data' title
    python = [line.split("#")[0].strip() for line in data["python"]]
    system = [line.split("#")[0].strip() for line in data["system"]]
    assert python == ["cloudflare>=4"]
    assert "openssh-client [platform:dpkg]" in system
    assert "openssh-clients [platform:rpm]" in system


def test_requirements_yml_installs_the_collection_offline(project, tmp_path):
    out = tmp_path / "collections"
    run([str(BIN / "ansible-galaxy"), "collection", "install", "--offline",
         "-r", "requirements.yml", "-p", str(out)], project)
    manifest = out / "ansible_collections" / "hostmesh" / "cluster" / "MANIFEST.json"
    assert manifest.is_file()
    with tarfile.open(tarball(project)) as tar:
        assert "MANIFEST.json" in tar.getnames()
