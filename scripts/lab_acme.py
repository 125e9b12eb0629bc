#!/usr/bin/env python3
"""The lab's ACME CA: Debian's ``pebble`` (a real ACME server for tests), for one lab.

    scripts/lab_acme.py start --state-dir DIR --listen IP --dns-server IP:PORT [--validity S]
    scripts/lab_acme.py stop --state-dir DIR
    scripts/lab_acme.py root --state-dir DIR          # prints the issuing root (PEM)

``start`` writes, under ``DIR/acme-ca/``: a private CA for pebble's own HTTPS
listener (``listener-ca.pem``; the issuer verifies the ACME directory with it),
pebble's config, and starts ``pebble -dnsserver IP:PORT`` in the background
(DNS-01 is validated by real lookups at that server: the lab Cloudflare
stand-in's DNS). The directory is ``https://IP:14000/dir``, the management API
(issuing roots) ``https://IP:15000``. ``DIR/acme-root.pem`` receives the root
that signs the issued certificates (pebble makes a new one at every start).
Importable from tests: ``Pebble(state_dir, "127.0.0.1", dns_server=...).start()``.

Pebble is test-only: it keeps everything in memory and makes a fresh root at
every start. Nothing here talks to any CA but this one.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PEBBLE = "/usr/bin/pebble"
DEFAULT_VALIDITY = 90 * 86400


def https_get(address: str, port: int, host: str, *, cadata: str | None = None,
              cafile: str | None = None) -> tuple[int, str, str]:
    """GET https://<host>/ through ``address:port`` with verification on (SNI =
    host, trust = ``cadata``/``cafile``): (status, body, served serial in hex)."""
    from cryptography import x509

    ctx = ssl.create_default_context(cadata=cadata, cafile=cafile)
    with socket.create_connection((address, port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as tls:
        serial = format(x509.load_der_x509_certificate(
            tls.getpeercert(binary_form=True)).serial_number, "x")
        tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode().strip(), serial


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _listener_certs(out: Path, ip: str) -> None:
    """A private CA and a server certificate for pebble's HTTPS listener on ``ip``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    if (out / "listener-ca.pem").exists() and (out / "listener.pem").exists():
        cert = x509.load_pem_x509_certificate((out / "listener.pem").read_bytes())
        ips = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if ipaddress.ip_address(ip) in ips.get_values_for_type(x509.IPAddress):
            return
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hostmesh lab pebble listener CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                         critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.IPAddress(ipaddress.ip_address(ip)), x509.DNSName("localhost")]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (out / "listener-ca.pem").write_bytes(ca.public_bytes(pem))
    (out / "listener.pem").write_bytes(cert.public_bytes(pem))
    key_file = out / "listener.key"
    key_file.touch(mode=0o600)
    key_file.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))


class Pebble:
    """One pebble process: ``start()``, ``directory_url``, ``ca_bundle``, ``root_pem()``, ``stop()``."""

    def __init__(self, state_dir: str | Path, listen: str = "127.0.0.1", *, dns_server: str,
                 port: int | None = None, management_port: int | None = None,
                 validity: int = DEFAULT_VALIDITY):
        self.dir = Path(state_dir).resolve() / "acme-ca"
        self.listen = listen
        self.dns_server = dns_server
        self.port = port or free_port(listen)
        self.management_port = management_port or free_port(listen)
        self.validity = int(validity)
        self.proc: subprocess.Popen | None = None

    @property
    def directory_url(self) -> str:
        return f"https://{self.listen}:{self.port}/dir"

    @property
    def ca_bundle(self) -> str:
        return str(self.dir / "listener-ca.pem")

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_bundle)

    def _get(self, url: str) -> bytes:
        with urllib.request.urlopen(url, timeout=5, context=self._context()) as resp:
            return resp.read()

    def answers(self) -> bool:
        try:
            return b"newOrder" in self._get(self.directory_url)
        except (OSError, ValueError):
            return False

    def write_config(self) -> Path:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _listener_certs(self.dir, self.listen)
        cfg = {"pebble": {
            "listenAddress": f"{self.listen}:{self.port}",
            "managementListenAddress": f"{self.listen}:{self.management_port}",
            "certificate": str(self.dir / "listener.pem"),
            "privateKey": str(self.dir / "listener.key"),
            # no HTTP-01 / TLS-ALPN-01 in this cluster: ports nobody listens on
            "httpPort": 5002, "tlsPort": 5001,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
            "certificateValidityPeriod": self.validity,
        }}
        path = self.dir / "pebble-config.json"
        path.write_text(json.dumps(cfg, indent=2))
        return path

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        # validate at once, never reject nonces at random, no authz reuse (every order is seen)
        env.update(PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0", PEBBLE_AUTHZREUSE="0",
                   PEBBLE_CHAIN_LENGTH="2")
        return env

    def command(self) -> list[str]:
        if not Path(PEBBLE).exists():
            raise SystemExit("lab_acme: pebble is not installed (Debian package `pebble`); "
                             "run scripts/setup-host.sh as root or: apt-get install -y pebble")
        return [PEBBLE, "-config", str(self.write_config()), "-dnsserver", self.dns_server]

    def start(self, log_file: str | Path | None = None) -> Pebble:
        cmd = self.command()
        log = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, env=self.env(), stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=log, start_new_session=True)
        self.wait_ready()
        return self

    def wait_ready(self, seconds: float = 20) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"pebble exited with {self.proc.returncode}")
            if self.answers():
                return
            time.sleep(0.1)
        raise RuntimeError(f"pebble did not answer on {self.directory_url} within {seconds} s")

    def root_pem(self) -> str:
        """The root that signs the certificates pebble issues (new at every start)."""
        return self._get(f"https://{self.listen}:{self.management_port}/roots/0").decode()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------- the lab's daemon


def start(state_dir: str | Path, listen: str, dns_server: str,
          validity: int = DEFAULT_VALIDITY) -> str:
    state = Path(state_dir).resolve()
    pid_file = state / "acme-ca.pid"
    peb = Pebble(state, listen, dns_server=dns_server, port=14000, management_port=15000,
                 validity=validity)
    if peb.answers():
        try:
            os.kill(int(pid_file.read_text()), 0)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"lab_acme: another ACME server already answers on {listen}:14000, "
                             f"not the one recorded in {pid_file}") from exc
        (state / "acme-root.pem").write_text(peb.root_pem())
        return "running"
    peb.start(log_file=state / "acme-ca.log")
    pid_file.write_text(f"{peb.proc.pid}\n")
    (state / "acme-root.pem").write_text(peb.root_pem())
    return "started"


def stop(state_dir: str | Path) -> str:
    pid_file = Path(state_dir).resolve() / "acme-ca.pid"
    if not pid_file.exists():
        return "not running"
    try:
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
        out = "stopped"
    except (ProcessLookupError, ValueError):
        out = "not running"
    pid_file.unlink()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lab_acme.py", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("start", help="start pebble (idempotent)")
    up.add_argument("--state-dir", required=True)
    up.add_argument("--listen", required=True, help="IP (the lab network's gateway)")
    up.add_argument("--dns-server", required=True, help="IP:PORT pebble resolves through")
    up.add_argument("--validity", type=int, default=DEFAULT_VALIDITY,
                    help="lifetime of issued certificates in seconds (default 90 days)")
    down = sub.add_parser("stop")
    down.add_argument("--state-dir", required=True)
    root = sub.add_parser("root")
    root.add_argument("--state-dir", required=True)
    args = parser.parse_args(argv)
    if args.cmd == "start":
        print(start(args.state_dir, args.listen, args.dns_server, args.validity))
    elif args.cmd == "stop":
        print(stop(args.state_dir))
    else:
        print((Path(args.state_dir) / "acme-root.pem").read_text(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
