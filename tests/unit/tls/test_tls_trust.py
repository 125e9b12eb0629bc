"""Who signed a pair (security review F1): the root-run installer serves only pairs that
lead up to a trusted root, are valid now and end within trust.MAX_DAYS_AHEAD days.

Real certificates made here with `cryptography` (a root, an intermediate, leaves as an
ACME CA issues them, and the pairs a compromised agent account could make), checked by
OpenSSL through the ssl module as the node does it; `cryptography`'s own X.509 verifier
is asked about the same chains and must agree.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from hostmesh.tls import bundle, deploy, node, trust

sys.path.insert(0, str(Path(__file__).parent))
from tls_pairs import CA, pair

NAMES = ["lab.test", "*.lab.test"]
SETS = ["--set", "lab.test=lab.test,*.lab.test"]


@pytest.fixture(scope="module")
def ca():
    return CA()


def cryptography_accepts(chain: bytes, root_pem: str, name: str = "lab.test") -> bool:
    """The same question put to cryptography's verifier (RFC 5280 path building)."""
    certs = x509.load_pem_x509_certificates(chain)
    store = Store(x509.load_pem_x509_certificates(root_pem.encode()))
    verifier = PolicyBuilder().store(store).build_server_verifier(x509.DNSName(name))
    try:
        verifier.verify(certs[0], certs[1:])
    except VerificationError:
        return False
    return True


def test_a_chain_through_the_intermediate_to_a_trusted_root_is_accepted(ca):
    chain, key = ca.issue(NAMES)
    info = trust.verify(chain, key, NAMES, roots=ca.root_pem)
    assert info["names"] == sorted(NAMES) and info["version"] == bundle.version_of(chain)
    assert cryptography_accepts(chain, ca.root_pem)
    # the root in the chain too (some CAs send it): still the trusted root that counts
    assert trust.verify(chain + ca.root_pem.encode(), key, NAMES, roots=ca.root_pem)
    # a root that signs leaves itself (pebble with a chain of 2)
    flat = CA(intermediate=False)
    chain, key = flat.issue(NAMES)
    assert trust.verify(chain, key, NAMES, roots=flat.root_pem)
    assert cryptography_accepts(chain, flat.root_pem)


def test_the_intermediates_come_from_the_pairs_chain(ca):
    chain, key = ca.issue(NAMES, with_chain=False)  # the leaf alone
    with pytest.raises(trust.TrustError, match="unable to get local issuer certificate"):
        trust.verify(chain, key, NAMES, roots=ca.root_pem)
    assert not cryptography_accepts(chain, ca.root_pem)
    # the intermediate of another CA in the chain does not help
    other = CA("other root")
    with pytest.raises(trust.TrustError, match="trusted root"):
        trust.verify(chain + other.chain, key, NAMES, roots=ca.root_pem)


@pytest.mark.parametrize("days", [90, 36500])
def test_a_self_signed_pair_for_the_right_names_is_refused(ca, days):
    chain, key = pair(NAMES, days=days)  # what a compromised agent account can make
    with pytest.raises(trust.TrustError) as err:
        trust.verify(chain, key, NAMES, roots=ca.root_pem)
    message = str(err.value)
    assert ("self-signed" in message) if days == 90 else ("more than 400 days" in message)
    assert not cryptography_accepts(chain, ca.root_pem)
    assert "PRIVATE" not in message and "BEGIN" not in message


def test_a_pair_signed_by_an_unknown_ca_is_refused(ca):
    rogue = CA("rogue root")
    chain, key = rogue.issue(NAMES)
    with pytest.raises(trust.TrustError, match="does not lead up to a trusted root: unable "
                                               "to get local issuer certificate"):
        trust.verify(chain, key, NAMES, roots=ca.root_pem)
    assert not cryptography_accepts(chain, ca.root_pem)
    # its root is not in the system store either: nothing given, nothing trusted but that
    with pytest.raises(trust.TrustError, match="trusted: the system store$"):
        trust.verify(chain, key, NAMES)


def test_a_leaf_that_ends_too_far_out_is_refused_even_from_the_trusted_ca(ca):
    chain, key = ca.issue(NAMES, days=36500)  # a 100-year leaf
    assert cryptography_accepts(chain, ca.root_pem)  # the chain itself is fine
    with pytest.raises(trust.TrustError, match=r"ends 2\d{3}-.*more than 400 days"):
        trust.verify(chain, key, NAMES, roots=ca.root_pem)
    # the bound is the constant (or the argument): 398 days (the longest a CA issues) pass
    assert trust.MAX_DAYS_AHEAD == 400
    assert trust.verify(*ca.issue(NAMES, days=398), NAMES, roots=ca.root_pem)
    with pytest.raises(trust.TrustError, match="more than 30 days"):
        trust.verify(*ca.issue(NAMES, days=90), NAMES, roots=ca.root_pem, max_days=30)


def test_a_leaf_not_yet_valid_or_expired_is_refused(ca):
    chain, key = ca.issue(NAMES, start_days=2, days=92)
    with pytest.raises(trust.TrustError, match="not valid yet"):
        trust.verify(chain, key, NAMES, roots=ca.root_pem)
    assert not cryptography_accepts(chain, ca.root_pem)
    chain, key = ca.issue(NAMES, start_days=-92, days=-2)
    with pytest.raises(trust.TrustError, match="has expired"):
        trust.verify(chain, key, NAMES, roots=ca.root_pem)


def test_names_and_key_are_still_checked_first(ca):
    chain, key = ca.issue(["lab.test", "*.lab.test", "bank.example"])
    with pytest.raises(bundle.BundleError, match="not for"):
        trust.verify(chain, key, NAMES, roots=ca.root_pem)
    chain, _key = ca.issue(NAMES)
    with pytest.raises(bundle.BundleError, match="does not belong"):
        trust.verify(chain, ca.issue(NAMES)[1], NAMES, roots=ca.root_pem)


def test_the_system_store_is_trusted(ca, tmp_path, monkeypatch):
    chain, key = ca.issue(NAMES)
    store = tmp_path / "ca-certificates.crt"
    store.write_text(ca.root_pem)
    monkeypatch.setenv("SSL_CERT_FILE", str(store))  # where OpenSSL looks for the system's
    assert trust.verify(chain, key, NAMES)
    with pytest.raises(trust.TrustError, match="trusted: nothing"):
        trust.verify(chain, key, NAMES, system=False)


def test_read_roots(ca, tmp_path):
    good = tmp_path / "roots.pem"
    good.write_text("# the lab CA\n" + ca.root_pem + CA("second").root_pem)
    assert trust.read_roots(good).count("BEGIN CERTIFICATE") == 2
    none = tmp_path / "none.pem"
    none.write_text("# no extra roots: the system store only\n")
    assert trust.read_roots(none) == "" and trust.read_roots(None) == ""
    keyed = tmp_path / "keyed.pem"
    keyed.write_bytes(ca.root_pem.encode() + pair(NAMES)[1])
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    for path, message in ((keyed, "private key"), (broken, "do not load"),
                          (tmp_path / "missing.pem", "cannot read")):
        with pytest.raises(trust.RootsError, match=message) as err:
            trust.read_roots(path)
        assert "BEGIN" not in str(err.value)


# -- the root-run installer -------------------------------------------------------------


@pytest.fixture
def served(tmp_path, ca):
    """A node serving a CA-issued pair; its roots file; what the installer may change."""
    tls, dyn = tmp_path / "tls", tmp_path / "dynamic"
    dyn.mkdir()
    current = ca.issue(NAMES, days=60)
    deploy.install({"lab.test": current}, tls, dyn)
    roots = tmp_path / "roots.pem"
    roots.write_text(ca.root_pem)
    return {"tls": tls, "dyn": dyn, "roots": roots, "current": current, "tmp": tmp_path}


def snapshot(s) -> dict:
    return {p.name: p.read_bytes() for d in (s["tls"], s["dyn"]) for p in sorted(d.iterdir())}


def run_install(s, doc: dict, *extra: str) -> int:
    inbox = s["tmp"] / "inbox"
    inbox.mkdir(exist_ok=True)
    (inbox / "lab.test.json").write_text(json.dumps(doc))
    return node.main(["install", "--inbox", str(inbox), "--tls-dir", str(s["tls"]),
                      "--dynamic-dir", str(s["dyn"]), *SETS, "--trusted-roots",
                      str(s["roots"]), *extra])


@pytest.mark.parametrize("case, message", [
    ("self-signed", "self-signed certificate"),
    ("self-signed, 100 years", "more than 400 days"),
    ("unknown CA", "unable to get local issuer certificate"),
    ("trusted CA, 100 years", "more than 400 days"),
    ("not yet valid", "not valid yet"),
    ("no intermediate", "unable to get local issuer certificate"),
])
def test_the_installer_refuses_it_writes_nothing_and_the_current_pair_keeps_serving(
        served, ca, caplog, case, message):
    offered = {
        "self-signed": lambda: pair(NAMES, days=90),
        "self-signed, 100 years": lambda: pair(NAMES, days=36500),
        "unknown CA": lambda: CA("rogue").issue(NAMES),
        "trusted CA, 100 years": lambda: ca.issue(NAMES, days=36500),
        "not yet valid": lambda: ca.issue(NAMES, start_days=1, days=300),
        "no intermediate": lambda: ca.issue(NAMES, days=300, with_chain=False),
    }[case]()
    before = snapshot(served)
    assert run_install(served, bundle.make("lab.test", *offered)) == 1
    assert snapshot(served) == before  # nothing written
    assert deploy.installed(served["tls"], served["dyn"])["lab.test"].serial == \
        bundle.version_of(served["current"][0])
    refusal = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(refusal) == 1 and message in refusal[0], refusal
    assert "lab.test.json" in refusal[0] and "current certificate keeps serving" in refusal[0]
    assert "PRIVATE" not in caplog.text and "BEGIN" not in caplog.text


def test_the_installer_takes_a_genuine_renewal(served, ca, caplog):
    caplog.set_level(logging.INFO, logger="hostmesh.tls")
    renewal = ca.issue(NAMES, days=90)
    assert run_install(served, bundle.make("lab.test", *renewal)) == 0
    assert deploy.installed(served["tls"], served["dyn"])["lab.test"].serial == \
        bundle.version_of(renewal[0])
    assert "installed lab.test version " + bundle.version_of(renewal[0]) in caplog.text
    # an older genuine one offered afterwards: the trusted newer pair keeps serving
    assert run_install(served, bundle.make("lab.test", *ca.issue(NAMES, days=30))) == 0
    assert deploy.installed(served["tls"], served["dyn"])["lab.test"].serial == \
        bundle.version_of(renewal[0])
    assert "kept the installed certificate of lab.test" in caplog.text


def test_a_pinned_pair_from_before_the_check_no_longer_blocks_renewals(served, ca, caplog):
    # what an older installer let in: self-signed, right names, ending in 100 years
    pinned = pair(NAMES, days=36500)
    deploy.install({"lab.test": pinned}, served["tls"], served["dyn"])
    status = node.status(served["tls"], served["dyn"], {"lab.test": NAMES}, ca.root_pem)
    assert status["lab.test"]["trusted"] is False
    assert "more than 400 days" in status["lab.test"]["refused"]
    renewal = ca.issue(NAMES, days=90)  # ends long before the pinned one
    assert run_install(served, bundle.make("lab.test", *renewal)) == 0
    assert deploy.installed(served["tls"], served["dyn"])["lab.test"].serial == \
        bundle.version_of(renewal[0])
    assert "fails the check" in caplog.text
    status = node.status(served["tls"], served["dyn"], {"lab.test": NAMES}, ca.root_pem)
    assert status["lab.test"]["trusted"] is True and "refused" not in status["lab.test"]


def test_bad_trusted_roots_change_nothing(served, ca, caplog):
    good = bundle.make("lab.test", *ca.issue(NAMES, days=90))
    before = snapshot(served)
    served["roots"].write_bytes(ca.root_pem.encode() + pair(NAMES)[1])
    assert run_install(served, good) == 2
    served["roots"] = served["tmp"] / "missing.pem"
    assert run_install(served, good) == 2
    assert snapshot(served) == before
    assert caplog.text.count("bad arguments") == 2 and "PRIVATE KEY-" not in caplog.text


def test_status_and_verify_from_the_command_line(served, ca, tmp_path):
    base = [sys.executable, "-m", "hostmesh.tls.node"]
    proc = subprocess.run([*base, "status", "--tls-dir", str(served["tls"]), "--dynamic-dir",
                           str(served["dyn"]), *SETS, "--trusted-roots", "-"],
                          input="# roots\n" + ca.root_pem, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["lab.test"]["trusted"] is True
    # the issuer's current pair, as the tls role checks it on the primary
    state = tmp_path / "issuer"
    cur = state / "certs" / "lab.test" / "current"
    cur.mkdir(parents=True)
    for chain, key, rc in ((*ca.issue(NAMES), 0), (*pair(NAMES), 1)):
        (cur / "fullchain.pem").write_bytes(chain)
        (cur / "privkey.pem").write_bytes(key)
        proc = subprocess.run([*base, "verify", "--issuer-state-dir", str(state), *SETS,
                               "--trusted-roots", str(served["roots"])],
                              capture_output=True, text=True, check=False)
        assert proc.returncode == rc, proc.stderr
        assert json.loads(proc.stdout)["lab.test"]["trusted"] is (rc == 0)
    assert "fails the check: the certificate does not lead up to a trusted root" in proc.stderr
