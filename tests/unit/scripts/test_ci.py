"""The Makefile and .ci/run fail on any failure, pytest finding nothing included."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_make_test_unit_fails_when_pytest_collects_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = subprocess.run(
        ["make", "-C", str(ROOT), "test-unit", f"PYTEST_ARGS={tmp_path / 'empty'} -p no:cacheprovider"],
        capture_output=True, text=True, check=False, timeout=120)
    assert "no tests ran" in proc.stdout
    assert proc.returncode != 0


def test_make_discovers_every_molecule_scenario():
    proc = subprocess.run(["make", "-C", str(ROOT), "-n", "test-molecule"],
                          capture_output=True, text=True, check=True, timeout=60)
    loop = next(line for line in proc.stdout.splitlines() if "for s in" in line)
    found = loop.split("for s in", 1)[1].split(";", 1)[0].split()
    expected = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))
    assert sorted(found) == expected
    assert found[-1] == "default", "the whole lab runs after the role scenarios"


def fake_make(tmp_path: Path, failing: str) -> tuple[dict, Path]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "calls"
    script = bindir / "make"
    script.write_text(f"#!/bin/sh\necho \"$1\" >> {log}\n[ \"$1\" != \"{failing}\" ]\n")
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}, log


def test_ci_run_fails_when_tests_fail_and_still_lints(tmp_path):
    env, log = fake_make(tmp_path, failing="test")
    proc = subprocess.run([str(ROOT / ".ci" / "run")], env=env, capture_output=True, text=True,
                          check=False, timeout=60)
    assert proc.returncode == 1
    assert log.read_text().split() == ["test", "lint"]
    assert "FAILED" in proc.stdout


def test_ci_run_fails_when_lint_fails(tmp_path):
    env, _ = fake_make(tmp_path, failing="lint")
    proc = subprocess.run([str(ROOT / ".ci" / "run")], env=env, capture_output=True, text=True,
                          check=False, timeout=60)
    assert proc.returncode == 1


def test_ci_run_passes_when_both_pass(tmp_path):
    env, _ = fake_make(tmp_path, failing="nothing")
    proc = subprocess.run([str(ROOT / ".ci" / "run")], env=env, capture_output=True, text=True,
                          check=False, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ci_run_uses_fresh_caches_and_a_fresh_image(tmp_path):
    """Nothing cached outside the checkout: empty HOME and caches, removed afterwards."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    seen = tmp_path / "seen"
    names = ["HOME", "XDG_CACHE_HOME", "PIP_CACHE_DIR", "HOSTMESH_CACHE_DIR"]
    lines = "".join(
        f'd="${{{n}}}"; printf "%s {n} %s %s\\n" "$1" "$d" "$(ls -A "$d" 2>/dev/null | wc -l)"'
        f" >> {seen}\n"
        for n in names
    )
    script = bindir / "make"
    script.write_text(f"#!/bin/sh\n{lines}echo \"$1 FRESH $HOSTMESH_FRESH_IMAGE\" >> {seen}\n")
    script.chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}",
           "HOSTMESH_CACHE_DIR": str(tmp_path / "old-cache"), "HOME": str(tmp_path / "old-home")}
    proc = subprocess.run([str(ROOT / ".ci" / "run")], env=env, capture_output=True, text=True,
                          check=False, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line.split() for line in seen.read_text().splitlines()]
    assert [r for r in rows if r[1] == "FRESH"] == [["test", "FRESH", "1"], ["lint", "FRESH", "1"]]
    dirs = {}
    for target, name, path, *count in (r for r in rows if r[1] != "FRESH"):
        assert path.startswith("/") and "old-" not in path, (name, path)
        if name != "HOME":
            assert count == ["0"], f"{name} {path} is not empty for make {target}"
        dirs.setdefault(name, set()).add(path)
    assert all(len(paths) == 1 for paths in dirs.values()), dirs
    assert len({next(iter(p)) for p in dirs.values()}) == len(names), "one directory each"
    for paths in dirs.values():
        assert not Path(next(iter(paths))).exists(), "removed after the run"
