"""The cluster's ACME issuer against a real ACME CA (Debian's pebble) on loopback.

pebble validates DNS-01 by real DNS lookups at the Cloudflare stand-in's DNS
(``-dnsserver``), which answers from the TXT records the issuer wrote through
the stand-in's v4 API. Nothing leaves loopback.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hostmesh.tls.issuer import CertSet, Issuer, IssuerConfig, IssuerError, backoff
from tests.cloudflare_server.harness import CloudflareServer

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "scripts"))
from lab_acme import Pebble, free_port

ZONE = "example.org"
TOKEN = "acme-edit-token-0123456789abcdef"
READ_TOKEN = "acme-read-token-0123456789abcdef"
NAMES = ["example.org", "*.example.org"]


@pytest.fixture(scope="module")
def cf():
    with CloudflareServer(zones=(ZONE, "other.test"), token=TOKEN, read_token=READ_TOKEN,
                          dns=True) as server:
        yield server


@pytest.fixture(scope="module")
def pebble(cf, tmp_path_factory):
    with Pebble(tmp_path_factory.mktemp("pebble"), dns_server=f"127.0.0.1:{cf.dns_port}") as peb:
        yield peb


@pytest.fixture(autouse=True)
def clean(cf):
    cf.wipe()


def config(pebble, cf, tmp_path, **kw) -> IssuerConfig:
    base = {"directory_url": pebble.directory_url, "zone": ZONE, "cluster": "t1",
                "sets": [CertSet.from_domains(NAMES)], "api_token": TOKEN, "api_base_url": cf.base_url,
                "state_dir": tmp_path / "acme", "ca_bundle": pebble.ca_bundle, "propagation_seconds": 0,
                "backoff_base": 30}
    base.update(kw)
    return IssuerConfig(**base)


def serve_and_verify(cert_dir: Path, root_pem: str, hostname: str) -> str:
    """A real TLS handshake on loopback with the issued chain; returns the peer's serial."""
    from cryptography import x509

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_dir / "fullchain.pem", cert_dir / "privkey.pem")
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    port = lsock.getsockname()[1]

    def accept():
        conn, _ = lsock.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ssl.SSLError):
            pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cadata=root_pem)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                client_ctx.wrap_socket(raw, server_hostname=hostname) as tls:
            der = tls.getpeercert(binary_form=True)
            tls.sendall(b"x")
    finally:
        thread.join(5)
        lsock.close()
    return format(x509.load_der_x509_certificate(der).serial_number, "x")


def test_one_order_covers_apex_and_wildcard_and_verifies(pebble, cf, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    issuer = Issuer(config(pebble, cf, tmp_path))
    status = issuer.run_once()
    st = status["sets"]["example.org"]
    assert st["orders"] == 1 and st["failures"] == 0, st
    assert st["names"] == ["*.example.org", "example.org"]
    # renewal at two-thirds of the lifetime
    assert st["renew_at"] == pytest.approx(
        st["not_before"] + (st["not_after"] - st["not_before"]) * 2 / 3)
    cur = issuer.current("example.org")
    root = pebble.root_pem()
    for host in ("example.org", "whoami.example.org", "anything.example.org"):
        assert serve_and_verify(cur, root, host) == st["serial"]
    with pytest.raises(ssl.SSLCertVerificationError):
        serve_and_verify(cur, root, "a.b.example.org")  # a wildcard covers one label only
    # two DNS writes per certificate (one batch creates, one removes); none left behind
    assert status["dns_api_calls"]["writes"] == 2
    assert st["dns_writes_last_order"] == 2
    assert [w["kind"] for w in cf.writes()] == ["batch", "batch"]
    assert cf.records() == []
    # secrets 0600 / 0700, and never in the log
    state = tmp_path / "acme"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for secret in (state / "account.key", cur / "privkey.pem", state / "account.json"):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    assert stat.S_IMODE(cur.resolve().stat().st_mode) == 0o700
    key_body = (cur / "privkey.pem").read_text().splitlines()[1]
    account_body = (state / "account.key").read_text().splitlines()[1]
    for text in (caplog.text,):
        assert TOKEN not in text and key_body not in text and account_body not in text

    # a second pass orders nothing and makes no API call
    cf.reset_stats()
    again = Issuer(config(pebble, cf, tmp_path)).run_once()
    assert again["sets"]["example.org"]["orders"] == 1
    assert cf.stats()["log"] == []


def test_renews_at_two_thirds_and_keeps_the_previous(pebble, cf, tmp_path):
    Issuer(config(pebble, cf, tmp_path)).run_once()
    first = Issuer(config(pebble, cf, tmp_path)).status()["sets"]["example.org"]
    before = Issuer(config(pebble, cf, tmp_path), clock=lambda: first["renew_at"] - 60).run_once()
    assert before["sets"]["example.org"]["orders"] == 1  # not yet due
    issuer = Issuer(config(pebble, cf, tmp_path), clock=lambda: first["renew_at"] + 1)
    after = issuer.run_once()["sets"]["example.org"]
    assert after["orders"] == 2 and after["serial"] != first["serial"]
    assert os.readlink(tmp_path / "acme/certs/example.org/current") == after["serial"]
    assert (tmp_path / "acme/certs/example.org" / first["serial"] / "fullchain.pem").exists()
    assert serve_and_verify(issuer.current("example.org"), pebble.root_pem(),
                            "x.example.org") == after["serial"]


def test_names_changed_orders_again(pebble, cf, tmp_path):
    Issuer(config(pebble, cf, tmp_path)).run_once()
    wider = config(pebble, cf, tmp_path,
                   sets=[CertSet.from_domains(NAMES + ["*.apps.example.org"])])
    st = Issuer(wider).run_once()["sets"]["example.org"]
    assert st["orders"] == 2
    assert st["names"] == ["*.apps.example.org", "*.example.org", "example.org"]


def test_failed_renewal_keeps_the_certificate_backs_off_and_recovers(pebble, cf, tmp_path,
                                                                     caplog):
    Issuer(config(pebble, cf, tmp_path)).run_once()
    cur = tmp_path / "acme/certs/example.org/current"
    files = {p.name: p.read_bytes() for p in cur.iterdir()}
    serial = os.readlink(cur)
    dead = f"https://127.0.0.1:{free_port('127.0.0.1')}/dir"
    t0 = time.time() + 100 * 86400  # far past renew_at
    caplog.set_level(logging.INFO)
    bad = Issuer(config(pebble, cf, tmp_path, directory_url=dead), clock=lambda: t0)
    st = bad.run_once()["sets"]["example.org"]
    assert st["failures"] == 1 and "cannot reach the ACME CA" in st["last_error"]
    assert st["next_attempt"] == pytest.approx(t0 + 30, abs=5)
    assert "FAILED" in caplog.text and "serving the current certificate" in caplog.text
    assert os.readlink(cur) == serial
    assert {p.name: p.read_bytes() for p in cur.iterdir()} == files
    # during the backoff: no attempt, but still loud
    caplog.clear()
    st = Issuer(config(pebble, cf, tmp_path, directory_url=dead),
                clock=lambda: t0 + 10).run_once()["sets"]["example.org"]
    assert st["failures"] == 1 and st["orders"] == 2
    assert "backing off" in caplog.text
    # a second failure doubles the wait
    st = Issuer(config(pebble, cf, tmp_path, directory_url=dead),
                clock=lambda: t0 + 31).run_once()["sets"]["example.org"]
    assert st["failures"] == 2 and st["next_attempt"] == pytest.approx(t0 + 31 + 60, abs=5)
    # the CA is back: the next due attempt succeeds and resets the count
    good = Issuer(config(pebble, cf, tmp_path), clock=lambda: t0 + 100)
    st = good.run_once()["sets"]["example.org"]
    assert st["failures"] == 0 and st["last_error"] is None and os.readlink(cur) != serial


def test_backoff_doubles_and_caps():
    assert [backoff(n, 60, 6 * 3600) for n in range(4)] == [0, 60, 120, 240]
    assert backoff(50, 60, 6 * 3600) == 6 * 3600


def test_token_without_dns_edit_is_a_clear_error_and_nothing_is_written(pebble, cf, tmp_path):
    issuer = Issuer(config(pebble, cf, tmp_path, api_token=READ_TOKEN))
    st = issuer.run_once()["sets"]["example.org"]
    assert st["failures"] == 1
    assert "lacks a permission" in st["last_error"] and "DNS:Edit" in st["last_error"]
    assert READ_TOKEN not in st["last_error"]
    assert issuer.current("example.org") is None
    assert cf.records() == []


def test_name_outside_the_zone_is_refused_before_any_order(pebble, cf, tmp_path):
    with pytest.raises(Exception, match="outside the zone example.org"):
        Issuer(config(pebble, cf, tmp_path, sets=[CertSet.from_domains(["example.com"])]))
    with pytest.raises(IssuerError, match="not a DNS name"):
        CertSet.from_domains(["exa*mple.org"])
    assert cf.stats()["log"] == []


def test_challenge_records_owned_by_others_are_never_touched(pebble, cf, tmp_path):
    cf.seed([
        {"type": "TXT", "name": "_acme-challenge.example.org", "content": "someone-else",
         "comment": "certbot"},
        {"type": "TXT", "name": "_acme-challenge.example.org", "content": "other-cluster",
         "comment": "hostmesh:t2:acme"},
        # left behind by a crashed run of this cluster: removed before the order
        {"type": "TXT", "name": "_acme-challenge.example.org", "content": "stale",
         "comment": "hostmesh:t1:acme"},
        {"type": "A", "name": "example.org", "content": "192.0.2.1",
         "comment": "hostmesh:t1:node1"},
    ])
    st = Issuer(config(pebble, cf, tmp_path)).run_once()["sets"]["example.org"]
    assert st["failures"] == 0, st
    left = sorted((r["type"], r["content"], r["comment"]) for r in cf.records())
    assert left == [("A", "192.0.2.1", "hostmesh:t1:node1"),
                    ("TXT", "other-cluster", "hostmesh:t2:acme"),
                    ("TXT", "someone-else", "certbot")]


def renew_command(pebble, cf, tmp_path) -> list[str]:
    """`hostmesh acme renew` as its unit runs it: settings in an env file, the token
    in a 0600 file, state under tmp_path/state."""
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    env_file = tmp_path / "acme.env"
    env_file.write_text(
        f"ACME_DIRECTORY_URL={pebble.directory_url}\nACME_CA_BUNDLE={pebble.ca_bundle}\n"
        f"ACME_ZONE={ZONE}\nACME_CLUSTER=t1\nACME_CERTS=example.org,*.example.org\n"
        f"ACME_STATE_DIR={tmp_path / 'state'}\nACME_TOKEN_FILE={token_file}\n"
        f"CLOUDFLARE_BASE_URL={cf.base_url}\nACME_PROPAGATION_SECONDS=0\n")
    hostmesh = [sys.executable, "-m", "hostmesh.cli", "acme", "renew", "--config", str(env_file)]
    return hostmesh


def test_cli_pass_exit_codes_and_no_secret_on_stderr(pebble, cf, tmp_path):
    hostmesh = renew_command(pebble, cf, tmp_path)
    first = subprocess.run(hostmesh, capture_output=True, text=True, timeout=120, check=False)
    assert first.returncode == 0, first.stderr
    assert "issued for *.example.org, example.org" in first.stderr
    key = (tmp_path / "state/certs/example.org/current/privkey.pem").read_text()
    for out in (first.stdout, first.stderr):
        assert TOKEN not in out and key.splitlines()[1] not in out
    second = subprocess.run(hostmesh, capture_output=True, text=True, timeout=120, check=False)
    assert second.returncode == 0 and "ordering" not in second.stderr
    # the deploy hook hands the current certificate to this node's Traefik, once
    deployed = [*hostmesh, "--deploy-tls-dir", str(tmp_path / "tls"),
                "--deploy-dynamic-dir", str(tmp_path / "dynamic")]
    (tmp_path / "dynamic").mkdir()
    third = subprocess.run(deployed, capture_output=True, text=True, timeout=120, check=False)
    assert third.returncode == 0 and "handed example.org to Traefik" in third.stderr, third.stderr
    assert [p.read_text() for p in (tmp_path / "tls").glob("*.key")] == [key]
    assert "certFile" in (tmp_path / "dynamic/hostmesh-tls.yml").read_text()
    fourth = subprocess.run(deployed, capture_output=True, text=True, timeout=120, check=False)
    assert fourth.returncode == 0 and "handed" not in fourth.stderr
    half = subprocess.run([*hostmesh, "--deploy-tls-dir", str(tmp_path / "tls")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert half.returncode == 2 and "ACME_DEPLOY_DYNAMIC_DIR" in half.stderr
    bad = subprocess.run([*hostmesh, "--certs", "example.org,www.example.com"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "outside the zone example.org" in bad.stderr
    assert "nothing was ordered" in bad.stderr
    down = subprocess.run([*hostmesh, "--force", "--directory-url",
                           f"https://127.0.0.1:{free_port('127.0.0.1')}/dir"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert down.returncode == 1 and "cannot reach the ACME CA" in down.stderr
    assert "serving the current certificate" in down.stderr
    assert (tmp_path / "state/certs/example.org/current/privkey.pem").read_text() == key


def test_two_passes_at_once_make_one_order(pebble, cf, tmp_path):
    """The timer's pass and the tls role's may start together: one orders, the other
    waits for it (a lock in the state directory) and finds the certificate."""
    hostmesh = renew_command(pebble, cf, tmp_path)
    passes = [subprocess.Popen(hostmesh, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in passes]
    assert [p.returncode for p in passes] == [0, 0, 0], outs
    assert sum("issued for" in err for _out, err in outs) == 1, outs
    status = json.loads((tmp_path / "state" / "status.json").read_text())
    assert status["sets"]["example.org"]["orders"] == 1
    assert oct((tmp_path / "state" / "pass.lock").stat().st_mode & 0o777) == "0o600"
