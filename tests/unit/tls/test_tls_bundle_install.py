"""Bundles, the merging hand-over and the root-run installer (hostmesh.tls.bundle/deploy/node).

Real files, real ssl module checks; the certificates are made at test time.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hostmesh.tls import bundle, deploy, node
from hostmesh.tls.agent import Source, load_settings, offered

sys.path.insert(0, str(Path(__file__).parent))
from tls_pairs import CA, pair

NAMES = ["lab.test", "*.lab.test"]


def test_bundle_round_trip_and_what_it_says():
    chain, key = pair(NAMES, days=30, serial=0xABC)
    doc = bundle.make("lab.test", chain, key)
    assert doc["version"] == bundle.version_of(chain) == deploy._serial(chain)
    assert doc["serial"] == "abc" and doc["names"] == ["*.lab.test", "lab.test"]
    assert doc["not_after"] == pytest.approx(bundle.inspect(chain)["not_after"])
    again = bundle.parse(json.loads(bundle.dumps(doc)), "lab.test", NAMES)
    assert again == doc


@pytest.mark.parametrize("spoil, message", [
    (lambda d: d.update(key=pair(NAMES)[1].decode()), "does not belong"),
    (lambda d: d.update(version="0" * 16), "version does not match"),
    (lambda d: d.update(set="other.test"), "not 'lab.test'"),
    (lambda d: d.update(set="../etc"), "set name"),
    (lambda d: d.update(fullchain=d["fullchain"] + d["key"]), "holds a private key"),
    (lambda d: d.update(key="not a key"), "not a PEM private key"),
    (lambda d: d.update(fullchain="x" * 70000), "larger than"),
    (lambda d: d.pop("key"), "PEM text"),
])
def test_a_spoilt_bundle_is_refused_without_its_content_in_the_message(spoil, message):
    chain, key = pair(NAMES)
    doc = bundle.make("lab.test", chain, key)
    spoil(doc)
    with pytest.raises(bundle.BundleError, match=message) as err:
        bundle.parse(doc, "lab.test")
    assert "PRIVATE" not in str(err.value) and "BEGIN" not in str(err.value)


def test_names_must_be_exactly_the_sets():
    chain, key = pair(["lab.test", "*.lab.test", "evil.example"])
    doc = bundle.make("lab.test", chain, key)
    with pytest.raises(bundle.BundleError, match="not for \\*.lab.test, lab.test"):
        bundle.parse(doc, "lab.test", NAMES)


def test_read_file_refuses_symlinks_and_big_files(tmp_path):
    chain, key = pair(NAMES)
    real = tmp_path / "real.json"
    bundle.write_file(real, bundle.make("lab.test", chain, key))
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    assert bundle.write_file(real, bundle.make("lab.test", chain, key)) is False  # unchanged
    link = tmp_path / "lab.test.json"
    link.symlink_to(real)
    with pytest.raises(bundle.BundleError, match="cannot open"):
        bundle.read_file(link, "lab.test")
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (bundle.MAX_BUNDLE + 1))
    with pytest.raises(bundle.BundleError, match="larger than"):
        bundle.read_file(big)
    assert bundle.read_file(real, "lab.test", NAMES)["version"] == bundle.version_of(chain)
    # staged: the watched directory sees the whole file appear by one rename, nothing else
    watched = tmp_path / "inbox"
    watched.mkdir()
    assert bundle.write_file(watched / "lab.test.json", bundle.make("lab.test", chain, key),
                             staging=watched / ".staging")
    assert sorted(p.name for p in watched.iterdir()) == [".staging", "lab.test.json"]
    assert list((watched / ".staging").iterdir()) == []
    assert stat.S_IMODE((watched / "lab.test.json").stat().st_mode) == 0o600


def layout(tmp_path):
    tls, dyn = tmp_path / "tls", tmp_path / "dynamic"
    dyn.mkdir()
    return tls, dyn


def test_update_keeps_other_sets_and_never_goes_back_to_an_older_certificate(tmp_path):
    tls, dyn = layout(tmp_path)
    own = pair(["own.test"], days=300)
    old = pair(NAMES, days=30)
    deploy.install({"lab.test": old, "own.test": own}, tls, dyn)
    new = pair(NAMES, days=60)
    changed, kept = deploy.update({"lab.test": new}, tls, dyn, newer_only=True)
    assert changed and kept == []
    now = deploy.installed(tls, dyn)
    assert {n: p.serial for n, p in now.items()} == {
        "lab.test": deploy._serial(new[0]), "own.test": deploy._serial(own[0])}
    # an older one offered later (a stale copy, a late Ansible run) changes nothing
    changed, kept = deploy.update({"lab.test": old}, tls, dyn, newer_only=True)
    assert (changed, kept) == (False, ["lab.test"])
    assert deploy.installed(tls, dyn)["lab.test"].serial == deploy._serial(new[0])
    # without newer_only (the issuer on the primary: its current is the truth) it switches
    changed, _ = deploy.update({"lab.test": old}, tls, dyn)
    assert changed and deploy.installed(tls, dyn)["lab.test"].serial == deploy._serial(old[0])
    text = (dyn / deploy.DYNAMIC_NAME).read_text()
    assert "PRIVATE KEY" not in text and "own.test-" in text


def inbox_with(tmp_path, docs: dict[str, object]) -> Path:
    inbox = tmp_path / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    for name, doc in docs.items():
        (inbox / f"{name}.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return inbox


def test_the_root_installer_installs_a_good_bundle_once(tmp_path):
    tls, dyn = layout(tmp_path)
    ca = CA()
    roots = tmp_path / "roots.pem"
    roots.write_text(ca.root_pem)
    chain, key = ca.issue(NAMES)
    inbox = inbox_with(tmp_path, {"lab.test": bundle.make("lab.test", chain, key)})
    args = ["install", "--inbox", str(inbox), "--tls-dir", str(tls), "--dynamic-dir", str(dyn),
            "--set", "lab.test=lab.test,*.lab.test", "--trusted-roots", str(roots)]
    assert node.main(args) == 0
    pair_now = deploy.installed(tls, dyn)["lab.test"]
    assert pair_now.serial == bundle.version_of(chain)
    assert stat.S_IMODE(pair_now.key.stat().st_mode) == 0o600
    before = (dyn / deploy.DYNAMIC_NAME).stat().st_mtime_ns
    assert node.main(args) == 0  # nothing new: nothing rewritten
    assert (dyn / deploy.DYNAMIC_NAME).stat().st_mtime_ns == before
    assert node.status(tls, dyn)["lab.test"]["version"] == bundle.version_of(chain)


def test_the_root_installer_trusts_nothing_in_the_inbox(tmp_path, caplog):
    tls, dyn = layout(tmp_path)
    good = pair(NAMES)
    deploy.install({"lab.test": good}, tls, dyn)
    served = (dyn / deploy.DYNAMIC_NAME).read_bytes()
    secret = tmp_path / "secret.json"  # a root-only file the agent would like read
    secret.write_text(json.dumps(bundle.make("lab.test", *pair(NAMES, days=90))))
    wrong_names = bundle.make("lab.test", *pair(["lab.test", "*.lab.test", "bank.example"]))
    mismatched = bundle.make("lab.test", *pair(NAMES, days=90))
    mismatched["key"] = pair(NAMES)[1].decode()
    base = ["--tls-dir", str(tls), "--dynamic-dir", str(dyn), "--set",
            "lab.test=lab.test,*.lab.test"]
    for name, doc in (("names", wrong_names), ("key", mismatched), ("junk", "[1, 2")):
        inbox = inbox_with(tmp_path / name, {"lab.test": doc})
        assert node.main(["install", "--inbox", str(inbox), *base]) == 1, name
    inbox = tmp_path / "link"
    inbox.mkdir()
    (inbox / "lab.test.json").symlink_to(secret)
    assert node.main(["install", "--inbox", str(inbox), *base]) == 1
    assert (dyn / deploy.DYNAMIC_NAME).read_bytes() == served  # nothing changed
    err = caplog.text
    assert err.count("refused") == 4 and "PRIVATE" not in err and "BEGIN" not in err
    # an unknown set in the inbox is ignored, bad arguments change nothing
    other = inbox_with(tmp_path / "other", {"evil.test": bundle.make(
        "evil.test", *pair(["evil.test"]))})
    assert node.main(["install", "--inbox", str(other), *base]) == 0
    assert set(deploy.installed(tls, dyn)) == {"lab.test"}
    assert node.main(["install", "--inbox", str(other), "--tls-dir", str(tls),
                      "--dynamic-dir", str(dyn)]) == 2


def test_the_installer_runs_as_a_module(tmp_path):
    tls, dyn = layout(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "hostmesh.tls.node", "status", "--tls-dir",
                           str(tls), "--dynamic-dir", str(dyn)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0 and json.loads(proc.stdout) == {}


def test_agent_settings_and_offers(tmp_path):
    s = load_settings({}, tmp_path, True)
    assert s.export_dir == tmp_path / "tls-export" and s.enabled(True) and not s.ready(True)
    (tmp_path / "tls-export").mkdir()  # the tls role creates it: on without a restart
    assert s.ready(True)
    s = load_settings({"TLS_SYNC": "false"}, tmp_path, True)
    assert not s.enabled(True) and not s.ready(True)
    s = load_settings({}, tmp_path, False)
    assert not s.ready(False)
    (tmp_path / "tls-inbox").mkdir()
    assert s.ready(False)
    direct = load_settings({"TLS_INSTALL_TLS_DIR": "/t", "TLS_INSTALL_DYNAMIC_DIR": "/d"},
                           tmp_path / "none", False)
    assert direct.ready(False)
    for bad in ({"TLS_SYNC": "maybe"}, {"TLS_EXPORT_DIR": "relative"},
                {"TLS_INSTALL_TLS_DIR": "/x"}):
        with pytest.raises(Exception, match="TLS_"):
            load_settings(bad, tmp_path, False)
    assert offered({"tls": {"lab.test": "0123456789abcdef", "../x": "0123456789abcdef",
                            "b.test": "nothex", "c.test": 5}}) == {"lab.test": "0123456789abcdef"}
    assert offered({"tls": ["x"]}) == {} and offered({}) == {}


def test_source_reads_again_only_on_change(tmp_path, caplog):
    import logging

    export = tmp_path / "export"
    export.mkdir()
    src = Source(export, logging.getLogger("t"), ttl=0)
    assert src.versions() == {}
    chain, key = pair(NAMES)
    bundle.write_file(export / "lab.test.json", bundle.make("lab.test", chain, key))
    (export / "broken.test.json").write_text("{}")
    assert src.versions() == {"lab.test": bundle.version_of(chain)}
    assert src.get("broken.test") is None and src.get("lab.test")["key"] == key.decode()
    new = pair(NAMES)
    bundle.write_file(export / "lab.test.json", bundle.make("lab.test", *new))
    os.utime(export / "lab.test.json", ns=(1, 1))
    assert src.versions() == {"lab.test": bundle.version_of(new[0])}
    assert "PRIVATE" not in caplog.text
