"""hostmesh.tls without a CA: names, backoff, the Traefik hand-over, the lab scripts' DNS."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import pytest
from hostmesh.module_utils._dns_reconcile import InvalidSpec

from hostmesh.tls import deploy
from hostmesh.tls.cli import ConfigError, add_arguments, resolve
from hostmesh.tls.dns01 import challenge_name, check_names
from hostmesh.tls.issuer import CertSet, IssuerError, backoff

ROOT = Path(__file__).resolve().parents[3]


def test_challenge_names_and_zone_check():
    assert challenge_name("*.Example.org") == "_acme-challenge.example.org"
    assert challenge_name("a.example.org") == "_acme-challenge.a.example.org"
    check_names(["example.org", "*.example.org", "a.b.example.org"], "example.org.")
    for bad in ("example.com", "notexample.org", "*.org"):
        with pytest.raises(InvalidSpec, match="outside the zone example.org"):
            check_names([bad], "example.org")


def test_cert_sets():
    cs = CertSet.from_domains([" Example.org. ", "*.example.org", ""])
    assert (cs.name, cs.domains) == ("example.org", ["example.org", "*.example.org"])
    assert CertSet.from_domains(["*.apps.example.org"]).name == "apps.example.org"
    for bad in ([], ["a.*.example.org"], ["exa mple.org"], ["localhost"], ["-x.example.org"]):
        with pytest.raises(IssuerError):
            CertSet.from_domains(bad)


def test_backoff():
    assert [backoff(n, 60, 3600) for n in range(6)] == [0, 60, 120, 240, 480, 960]
    assert backoff(10_000, 60, 3600) == 3600


def _pem(n: int) -> bytes:
    return f"-----BEGIN CERTIFICATE-----\nchain{n}\n-----END CERTIFICATE-----\n".encode()


def _fresh_key_pem() -> bytes:
    """A private key made for this test: no key material is committed to the tree."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())


def test_deploy_is_idempotent_keeps_one_previous_pair_and_holds_no_key(tmp_path):
    tls, dyn = tmp_path / "tls", tmp_path / "dynamic"
    dyn.mkdir()
    key = _fresh_key_pem()
    secret = key.decode().splitlines()[1]  # a line of the key material itself
    assert deploy.install({"example.org": (_pem(1), key)}, tls, dyn) is True
    assert deploy.install({"example.org": (_pem(1), key)}, tls, dyn) is False
    (k,) = tls.glob("*.key")
    assert stat.S_IMODE(k.stat().st_mode) == 0o600 and k.read_bytes() == key
    text = (dyn / "hostmesh-tls.yml").read_text()
    assert secret not in text and "chain1" not in text
    assert str(k) in text and "defaultCertificate" in text
    for n in (2, 3):
        assert deploy.install({"example.org": (_pem(n), key)}, tls, dyn) is True
    crts = sorted(p.read_bytes() for p in tls.glob("*.crt"))
    assert crts == sorted([_pem(2), _pem(3)])  # current and previous only
    assert len(list(tls.glob("*.key"))) == 2
    assert not list(tls.glob(".*.tmp"))


def test_cli_config_errors_say_what_is_missing(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(ConfigError, match="ACME_DIRECTORY_URL.*ACME_TOKEN_FILE"):
        resolve(parser.parse_args(["--zone", "example.org"]))
    empty = tmp_path / "token"
    empty.write_text("")
    args = parser.parse_args(["--directory-url", "https://ca.invalid/dir", "--zone", "example.org",
                              "--cluster", "c", "--certs", "example.org", "--token-file",
                              str(empty)])
    with pytest.raises(ConfigError, match="is empty"):
        resolve(args)
    empty.write_text("tok")
    args.certs = "exa*mple.org"
    with pytest.raises(ConfigError, match="ACME_CERTS"):
        resolve(args)


def test_cli_bad_config_exits_2_and_orders_nothing(tmp_path):
    token = tmp_path / "token"
    token.write_text("secret-token-value-123")
    out = subprocess.run(
        [sys.executable, "-m", "hostmesh.cli", "acme", "renew", "--directory-url",
         "https://127.0.0.1:9/dir", "--zone", "example.org", "--cluster", "c", "--certs",
         "example.org,www.example.net", "--token-file", str(token), "--state-dir",
         str(tmp_path / "state")], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2
    assert "www.example.net' is outside the zone example.org" in out.stderr
    assert "secret-token-value-123" not in out.stderr
    assert not (tmp_path / "state").exists()


def test_lab_cloudflare_also_answers_dns(tmp_path):
    sys.path.insert(0, str(ROOT / "tests" / "unit" / "scripts"))
    from _scripts import load_script

    lc = load_script("lab_cloudflare")
    sys.path.insert(0, str(ROOT / "scripts"))
    from lab_acme import free_port

    state = tmp_path / ".hostmesh"
    listen = f"127.0.0.1:{free_port('127.0.0.1')}"
    dns_port = free_port("127.0.0.1")
    try:
        # started without DNS first (an older lab-up): starting with DNS restarts it
        assert lc.start(state, listen, ["lab.test"]) == "started"
        assert not lc.dns_answers(f"127.0.0.1:{dns_port}", "lab.test")
        assert lc.start(state, listen, ["lab.test"], f"127.0.0.1:{dns_port}") == "started"
        assert lc.dns_answers(f"127.0.0.1:{dns_port}", "lab.test")
        assert lc.start(state, listen, ["lab.test"], f"127.0.0.1:{dns_port}") == "running"
        resp = dns.query.udp(dns.message.make_query("lab.test", "SOA"), "127.0.0.1",
                             port=dns_port, timeout=5)
        assert resp.answer and resp.answer[0].rdtype == dns.rdatatype.SOA
    finally:
        assert lc.stop(state) == "stopped"
def test_lab_cloudflare_dns_needs_a_subnet(capsys):
    sys.path.insert(0, str(ROOT / "tests" / "unit" / "scripts"))
    from _scripts import load_script

    lc = load_script("lab_cloudflare")
    with pytest.raises(SystemExit):
        lc.main(["start", "--state-dir", "/nonexistent", "--listen", "127.0.0.1:1", "--dns"])
    assert "--dns needs --subnet" in capsys.readouterr().err
    assert not Path("/nonexistent").exists()
