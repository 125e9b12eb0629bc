"""roles/node_agent/files/build_wheelhouse.py: reuse, manifest, bad input."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "roles" / "node_agent" / "files" / "build_wheelhouse.py"
spec = importlib.util.spec_from_file_location("build_wheelhouse", SCRIPT)
bw = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bw)


def run(*args):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False
    )
    return proc.returncode, json.loads(proc.stdout)


def test_given_wheelhouse_is_shipped_with_a_manifest_and_reused(tmp_path):
    given = tmp_path / "given"
    given.mkdir()
    (given / "hostmesh-0.1.0-py3-none-any.whl").write_bytes(b"wheel-1")
    (given / "dep-1.0-py3-none-any.whl").write_bytes(b"dep")
    cache = tmp_path / "cache"
    rc, out = run("--source", str(tmp_path), "--cache", str(cache), "--wheelhouse", str(given))
    assert rc == 0 and out["changed"] and out["wheel"] == "hostmesh-0.1.0-py3-none-any.whl"
    manifest = json.loads((cache / "ship" / "manifest.json").read_text())
    assert set(manifest["files"]) == {"hostmesh-0.1.0-py3-none-any.whl", "dep-1.0-py3-none-any.whl"}
    rc, out = run("--source", str(tmp_path), "--cache", str(cache), "--wheelhouse", str(given))
    assert rc == 0 and not out["changed"], "unchanged wheelhouse (idempotency)"
    # same name, new content (a rebuilt wheel of the same version): shipped again
    (given / "hostmesh-0.1.0-py3-none-any.whl").write_bytes(b"wheel-2")
    (given / "dep-1.0-py3-none-any.whl").unlink()
    rc, out = run("--source", str(tmp_path), "--cache", str(cache), "--wheelhouse", str(given))
    assert rc == 0 and out["changed"]
    assert sorted(p.name for p in (cache / "ship").iterdir()) == [
        "hostmesh-0.1.0-py3-none-any.whl",
        "manifest.json",
    ]


def test_wheelhouse_without_hostmesh_is_refused(tmp_path):
    (tmp_path / "given").mkdir()
    rc, out = run(
        "--source",
        str(tmp_path),
        "--cache",
        str(tmp_path / "c"),
        "--wheelhouse",
        str(tmp_path / "given"),
    )
    assert rc == 1 and out["failed"] and "holds no hostmesh-*.whl" in out["msg"]


def test_incomplete_collection_is_refused(tmp_path):
    rc, out = run("--source", str(tmp_path), "--cache", str(tmp_path / "c"))
    assert rc == 1 and "does not hold pyproject.toml and src/hostmesh" in out["msg"]


def test_source_hash_follows_sources_only(tmp_path):
    (tmp_path / "src" / "hostmesh" / "__pycache__").mkdir(parents=True)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "hostmesh"\n')
    (tmp_path / "src" / "hostmesh" / "__init__.py").write_text("x = 1\n")
    first = bw.source_hash(tmp_path)
    (tmp_path / "src" / "hostmesh" / "__pycache__" / "m.pyc").write_bytes(b"junk")
    (tmp_path / "build").mkdir()
    (tmp_path / "README.md").write_text("docs only: no new wheel, no agent restart\n")
    assert bw.source_hash(tmp_path) == first
    (tmp_path / "src" / "hostmesh" / "__init__.py").write_text("x = 2\n")
    assert bw.source_hash(tmp_path) != first


def test_dependencies_are_read_from_pyproject():
    assert bw.dependencies(ROOT) and all(isinstance(d, str) for d in bw.dependencies(ROOT))
