"""The Makefile, its test lanes and .ci/run fail on any failure, pytest
finding nothing included."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
# This file runs inside `make test`, which hands its command-line variables
# (CI's LOCAL_LANE) to every make below it through MAKEFLAGS: the Makefile's
# own defaults are what these tests read, so each make here starts without them.
PLAIN_MAKE_ENV = {k: v for k, v in os.environ.items()
                  if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES",
                               "LOCAL_LANE", "SCENARIOS", "PYTEST_ARGS")}


def test_make_test_unit_fails_when_pytest_collects_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = subprocess.run(
        ["make", "-C", str(ROOT), "test-unit", f"PYTEST_ARGS={tmp_path / 'empty'} -p no:cacheprovider"],
        capture_output=True, text=True, check=False, timeout=120, env=PLAIN_MAKE_ENV)
    assert "no tests ran" in proc.stdout
    assert proc.returncode != 0


def test_make_discovers_every_molecule_scenario():
    proc = subprocess.run(["make", "-C", str(ROOT), "-n", "test-molecule"],
                          capture_output=True, text=True, check=True, timeout=60,
                          env=PLAIN_MAKE_ENV)
    loop = next(line for line in proc.stdout.splitlines() if "for s in" in line)
    found = loop.split("for s in", 1)[1].split(";", 1)[0].split()
    expected = sorted(p.parent.name for p in (ROOT / "molecule").glob("*/molecule.yml"))
    assert sorted(found) == expected
    assert found[-1] == "default", "the whole lab runs after the role scenarios"


def fake_make(tmp_path: Path, failing: str) -> tuple[dict, Path]:
    """A `make` that records its arguments and fails for target `failing`."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "calls"
    script = bindir / "make"
    script.write_text(f"#!/bin/sh\necho \"$*\" >> {log}\n[ \"$1\" != \"{failing}\" ]\n")
    script.chmod(0o755)
    return {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}, log


def test_ci_run_lints_in_the_test_lanes_and_fails_when_they_fail(tmp_path):
    env, log = fake_make(tmp_path, failing="test")
    proc = subprocess.run([str(ROOT / ".ci" / "run")], env=env, capture_output=True, text=True,
                          check=False, timeout=60)
    assert proc.returncode == 1
    assert log.read_text().splitlines() == ["test LOCAL_LANE=test-local test-molecule lint"]
    assert "FAILED" in proc.stdout


def test_ci_run_passes_when_make_test_passes(tmp_path):
    env, _ = fake_make(tmp_path, failing="nothing")
    proc = subprocess.run([str(ROOT / ".ci" / "run")], env=env, capture_output=True, text=True,
                          check=False, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ci: passed" in proc.stdout


def lanes(tmp_path: Path, *specs: str, make_body: str) -> subprocess.CompletedProcess:
    script = tmp_path / "make"
    script.write_text("#!/bin/sh\n" + make_body)
    script.chmod(0o755)
    env = {**os.environ, "MAKE": str(script), "LANES_LOG_DIR": str(tmp_path / "logs")}
    return subprocess.run([str(ROOT / "scripts" / "test-lanes.sh"), *specs], env=env,
                          capture_output=True, text=True, check=False, timeout=60)


def test_lanes_run_at_the_same_time(tmp_path):
    # `a` finishes only once `b` has started: one lane after the other would time out
    flag = tmp_path / "b-started"
    body = (f'if [ "$2" = a ]; then for i in $(seq 100); do [ -e {flag} ] && exit 0; sleep 0.1; done;'
            f' echo "b never started"; exit 1; fi\ntouch {flag}\n')
    proc = lanes(tmp_path, "one:a", "two:b", make_body=body)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "== one: passed in" in proc.stdout and "== two: passed in" in proc.stdout


def test_a_failed_target_fails_the_run_and_the_lane_goes_on(tmp_path):
    body = ('echo "ran $2"\n[ "$2" != bad ] && exit 0\n'
            'echo "FAILED - RETRYING: [node1]: Wait (3 retries left)."\n'
            'echo "FAILED tests/unit/test_x.py::test_y - AssertionError"\nexit 1\n')
    proc = lanes(tmp_path, "labs:slow", "local:first bad last", make_body=body)
    assert proc.returncode == 1
    out = proc.stdout.splitlines()
    # every line of a lane carries its name; the target after the failed one still ran
    assert "local| ran first" in out and "local| ran bad" in out and "local| ran last" in out
    assert "labs| ran slow" in out
    assert "local| == make bad FAILED" in out
    assert any(line.startswith("== local: FAILED in") and line.endswith("make bad")
               for line in out), out
    assert any(line.startswith("== labs: passed in") for line in out), out
    # the failed test again after the summary line, where the end of a CI log shows it
    summary = out.index(next(line for line in out if line.startswith("== local: FAILED in")))
    assert "local| FAILED tests/unit/test_x.py::test_y - AssertionError" in out[summary:]
    assert not [line for line in out[summary:] if "RETRYING" in line]  # Ansible's retries are no failure
    # each lane's own log, without the prefix
    assert (tmp_path / "logs" / "local.log").read_text().count("ran ") == 3


def test_lanes_refuse_a_spec_without_targets(tmp_path):
    for spec in ("labs", "labs:", ":test-local"):
        proc = lanes(tmp_path, spec, make_body="exit 0\n")
        assert proc.returncode == 2, spec
        assert "lane:target" in proc.stderr


def test_make_test_runs_every_test_directory_in_its_lanes():
    proc = subprocess.run(["make", "-C", str(ROOT), "-n", "test", "test-integration", "test-local"],
                          capture_output=True, text=True, check=True, timeout=60,
                          env=PLAIN_MAKE_ENV)
    lanes_line = next(line for line in proc.stdout.splitlines() if "test-lanes.sh" in line)
    assert '"labs:test-integration"' in lanes_line
    assert '"local:test-local test-molecule"' in lanes_line
    pytest_paths = set()
    for line in proc.stdout.splitlines():
        if line.startswith("pytest "):
            pytest_paths.update(w for w in line.split()[1:] if w.startswith("tests/"))
    with_tests = {p.relative_to(ROOT).parts[:2] for p in (ROOT / "tests").rglob("test_*.py")}
    assert with_tests, "no test files found"
    for parts in with_tests:
        assert "/".join(parts[:2]) in pytest_paths, f"{'/'.join(parts)} is in no lane"


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
    assert [r for r in rows if r[1] == "FRESH"] == [["test", "FRESH", "1"]]
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
