"""`python -m hostmesh.tls.node probe`: the tls role's one look at a node (issue 15).

The role includes its writing tasks only where this says something differs, so each
answer here is one the role's idempotence rests on: a file's content, mode, owner or
kind; a pair whose key does not belong to its chain; the files the cleanup (and
hostmesh.tls.deploy) would remove; hostmesh-tls.yml not as the role writes it; the
issuer's current pairs with the installer's verdict. Real files, real certificates
from a test CA, the module run as the role runs it (spec on standard input).
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hostmesh.tls import bundle, deploy, node

sys.path.insert(0, str(Path(__file__).parent))
from tls_pairs import CA, pair

NAMES = ["lab.test", "*.lab.test"]
USER = pwd.getpwuid(os.getuid()).pw_name
GROUP = grp.getgrgid(os.getgid()).gr_name


@pytest.fixture(scope="module")
def ca():
    return CA()


@pytest.fixture
def layout(tmp_path):
    tls, dyn = tmp_path / "tls", tmp_path / "dynamic"
    dyn.mkdir()
    spec = {"tls_dir": str(tls), "dynamic_dir": str(dyn), "owner": USER, "group": GROUP,
            "sets": {"lab.test": NAMES}, "roots": "", "files": [], "units": []}
    return tls, dyn, spec


def run(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, "-m", "hostmesh.tls.node", "probe"],
                          input=json.dumps(spec), capture_output=True, text=True, timeout=60,
                          check=True)
    assert "PRIVATE KEY" not in proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def test_files_differ_by_content_mode_owner_kind_or_presence(layout):
    tls, _dyn, spec = layout
    f = tls.parent / "settings"
    f.write_text("A=1\n")
    f.chmod(0o600)
    d = tls.parent / "inbox"
    d.mkdir(mode=0o700)
    d.chmod(0o700)
    right = {"path": str(f), "state": "file", "mode": "0600", "owner": USER, "group": GROUP,
             "sha256": hashlib.sha256(b"A=1\n").hexdigest()}
    cases = {
        "right": right,
        "content": {**right, "sha256": hashlib.sha256(b"A=2\n").hexdigest()},
        "mode": {**right, "mode": "0644"},
        "owner": {**right, "owner": "nobody" if USER != "nobody" else "root"},
        "kind": {**right, "state": "directory"},
        "missing": {**right, "path": str(tls.parent / "nothing")},
        "present": {"path": str(f), "state": "absent"},
        "dir": {"path": str(d), "state": "directory", "mode": "0700", "owner": USER,
                "group": GROUP},
        "absent": {"path": str(tls.parent / "nothing"), "state": "absent"},
    }
    for name, item in cases.items():
        out = run({**spec, "files": [item]})
        assert (out["differs"] != []) == (name not in ("right", "dir", "absent")), name
    assert run({**spec, "files": [right]})["target"].startswith(
        f"{sys.version_info[0]}.{sys.version_info[1]}:")


def test_a_unit_it_cannot_confirm_differs(layout):
    _tls, _dyn, spec = layout
    out = run({**spec, "units": [{"name": "hostmesh-no-such-unit.timer", "enabled": True,
                                  "active": True}]})
    assert out["differs"] == ["hostmesh-no-such-unit.timer"]
    out = run({**spec, "units": [{"name": "hostmesh-no-such-unit.path", "active": False}]})
    assert out["differs"] == []


def test_pairs_stale_files_and_the_dynamic_file(layout, ca):
    tls, dyn, spec = layout
    old, new = ca.issue(NAMES, days=30), ca.issue(NAMES, days=60)
    deploy.install({"lab.test": old}, tls, dyn)
    time.sleep(0.01)
    deploy.install({"lab.test": new}, tls, dyn)  # the previous pair stays
    out = run({**spec, "roots": ca.root_pem})
    v_old, v_new = bundle.version_of(old[0]), bundle.version_of(new[0])
    assert out["pairs"] == {f"lab.test-{v_new}": True} and out["stale"] == []
    assert out["served"]["lab.test"]["version"] == v_new
    assert out["served"]["lab.test"]["trusted"] is True
    assert out["dynamic"]["tls"]["certificates"] == [
        {"certFile": f"{tls}/lab.test-{v_new}.crt", "keyFile": f"{tls}/lab.test-{v_new}.key"}]
    # a pair older than the previous one, and a set no longer served: the cleanup's
    stale = [tls / "lab.test-0000000000000000.crt", tls / "gone.test-1111111111111111.key"]
    for path in stale:
        path.write_text("x")
        os.utime(path, (1, 1))
    assert sorted(run(spec)["stale"]) == sorted(map(str, stale))
    assert sorted(map(str, deploy.stale(tls, {"lab.test": v_new}))) == sorted(map(str, stale))
    assert f"lab.test-{v_old}.crt" in os.listdir(tls)  # the previous one is kept
    # the key of another pair under the current pair's name: not right
    (tls / f"lab.test-{v_new}.key").write_bytes(old[1])
    assert run(spec)["pairs"] == {f"lab.test-{v_new}": False}
    (tls / f"lab.test-{v_new}.key").write_bytes(new[1])
    (tls / f"lab.test-{v_new}.key").chmod(0o640)
    assert run(spec)["pairs"] == {f"lab.test-{v_new}": False}
    (tls / f"lab.test-{v_new}.key").chmod(0o600)
    assert run(spec)["pairs"] == {f"lab.test-{v_new}": True}
    # hostmesh-tls.yml edited (same meaning, other bytes): not as the role writes it
    text = (dyn / deploy.DYNAMIC_NAME).read_text()
    (dyn / deploy.DYNAMIC_NAME).write_text(text.replace("\n  ", "\n    "))
    assert run(spec)["dynamic"] == "not as the role writes it"
    (dyn / deploy.DYNAMIC_NAME).unlink()
    assert run(spec)["dynamic"] is None


def test_the_issuers_current_pairs_with_the_installers_verdict(layout, ca, tmp_path):
    _tls, _dyn, spec = layout
    state = tmp_path / "acme"
    for label, (chain, key) in (("trusted", ca.issue(NAMES, days=60)),
                                ("self-signed", pair(NAMES, days=60))):
        cur = state / "certs" / "lab.test" / label
        cur.mkdir(parents=True)
        (cur / "fullchain.pem").write_bytes(chain)
        (cur / "privkey.pem").write_bytes(key)
        link = state / "certs" / "lab.test" / "current"
        link.unlink(missing_ok=True)
        link.symlink_to(label)
        out = run({**spec, "roots": ca.root_pem, "issuer_state_dir": str(state)})
        issued = out["issued"]["lab.test"]
        assert issued["version"] == bundle.version_of(chain)
        assert issued["serial"] == bundle.inspect(chain)["serial"]
        assert issued["trusted"] is (label == "trusted"), issued
    assert run({**spec, "issuer_state_dir": str(tmp_path / "none")})["issued"] == {}


def test_bad_spec_exits_2_without_a_traceback(layout):
    _tls, _dyn, spec = layout
    del spec["tls_dir"]
    proc = subprocess.run([sys.executable, "-m", "hostmesh.tls.node", "probe"],
                          input=json.dumps(spec), capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 2 and "probe:" in proc.stderr and "Traceback" not in proc.stderr
    assert node.main  # the module the role calls
