"""One ACME issuer for the cluster: account, orders, renewal, backoff, atomic files.

Layout under ``state_dir`` (default ``/var/lib/hostmesh-acme``, mode 0700):

- ``account.key`` (0600, RSA 2048, made once) and ``account.json`` (the
  account's URL at the CA; re-registered when the CA forgot it);
- ``certs/<set>/<serial>/fullchain.pem`` (0644) and ``privkey.pem`` (0600), and
  ``certs/<set>/current``, a symlink swapped with one ``rename``: a reader
  never sees a key of one certificate with the chain of another;
- ``status.json``: per set, the serial, names, ``not_before``/``not_after``,
  ``renew_at``, ``orders`` (every order ever placed), ``dns_writes_last_order``,
  ``failures``, ``next_attempt`` and ``last_error``; the tests and benches read it.

A set is ordered when it has no certificate, when its names changed, or at
``renew_at`` = not_before + 2/3 of the lifetime. A failed order keeps the
current certificate (files untouched), counts the failure, and waits
``backoff(failures)`` before the next attempt (1, 2, 4, ... minutes, at most
6 h; the timer may run as often as it likes);
every failure is logged at ERROR with what to fix and when the next try is.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from hostmesh.tls.dns01 import TxtChallenges, challenge_name, check_names

log = logging.getLogger("hostmesh.acme")

BACKOFF_BASE = 60.0
BACKOFF_MAX = 6 * 3600.0
RENEW_FRACTION = 2 / 3
SET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{0,99}$")


class IssuerError(Exception):
    """A failed order; the message says what failed and what to do (never a secret)."""


@dataclass
class CertSet:
    """One certificate: its directory name and the names it covers."""

    name: str
    domains: list[str]

    @classmethod
    def from_domains(cls, domains: list[str]) -> CertSet:
        clean = [d.strip().lower().rstrip(".") for d in domains if d.strip()]
        if not clean:
            raise IssuerError("a certificate set needs at least one name, e.g. "
                              "example.org,*.example.org")
        for d in clean:
            label = d.removeprefix("*.")
            if "*" in label or not re.fullmatch(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9])?"
                                                r"(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9])?)+", label):
                raise IssuerError(f"{d!r} is not a DNS name (a wildcard only as the first "
                                  "label: *.example.org)")
        first = clean[0].removeprefix("*.")
        return cls(first, clean)


@dataclass
class IssuerConfig:
    directory_url: str
    zone: str
    cluster: str
    sets: list[CertSet]
    api_token: str = field(repr=False)
    api_base_url: str | None = None
    state_dir: Path = Path("/var/lib/hostmesh-acme")
    email: str | None = None
    ca_bundle: str | None = None  # verify the CA's HTTPS with this file (the lab's pebble)
    propagation_seconds: float = 10.0  # wait after writing TXT records before answering
    order_timeout: float = 180.0
    backoff_base: float = BACKOFF_BASE
    backoff_max: float = BACKOFF_MAX


def backoff(failures: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_MAX) -> float:
    """Seconds to wait after the ``failures``-th failure in a row: base * 2**(n-1), capped."""
    if failures <= 0:
        return 0.0
    return min(cap, base * 2 ** min(failures - 1, 30))


def _utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically with ``mode`` from the first byte on (no window with wider access)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def cert_info(fullchain_pem: bytes) -> dict:
    from cryptography import x509

    cert = x509.load_pem_x509_certificates(fullchain_pem)[0]
    nb = cert.not_valid_before_utc.timestamp()
    na = cert.not_valid_after_utc.timestamp()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = sorted(n.lower() for n in san.value.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = []
    return {"serial": format(cert.serial_number, "x"), "names": names, "not_before": nb,
            "not_after": na, "renew_at": nb + (na - nb) * RENEW_FRACTION}


class Issuer:
    """Run with ``run_once()``; it returns the status of every set."""

    def __init__(self, cfg: IssuerConfig, *, clock=time.time):
        self.cfg = cfg
        self.clock = clock
        self.dir = Path(cfg.state_dir)
        self.dns = TxtChallenges(cfg.zone, cfg.cluster, cfg.api_token, cfg.api_base_url)
        self._client = None
        self._account_key = None
        for s in cfg.sets:
            check_names(s.domains, cfg.zone)
            if not SET_NAME.match(s.name):
                raise IssuerError(f"certificate set name {s.name!r} is not usable as a "
                                  "directory name")

    # -- state
    def status(self) -> dict:
        path = self.dir / "status.json"
        if path.exists():
            return json.loads(path.read_text())
        return {"sets": {}}

    def _save_status(self, status: dict) -> None:
        _write(self.dir / "status.json", json.dumps(status, indent=2, sort_keys=True).encode(),
               0o644)

    def current(self, name: str) -> Path | None:
        link = self.dir / "certs" / name / "current"
        return link if link.exists() else None

    # -- one pass
    def run_once(self, *, force: bool = False) -> dict:
        """Order what is due; returns the status. Raises nothing for a failed set (see status)."""
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        status = self.status()
        sets = status.setdefault("sets", {})
        now = self.clock()
        for cs in self.cfg.sets:
            st = sets.setdefault(cs.name, {"orders": 0, "failures": 0})
            st["domains"] = cs.domains
            due, why = self._due(cs, st, now, force)
            if not due:
                log.debug("%s: %s", cs.name, why)
                continue
            if st.get("failures") and now < st.get("next_attempt", 0) and not force:
                log.error("%s: still backing off after %d failed orders (last: %s); next attempt "
                          "at %s; serving the current certificate%s", cs.name, st["failures"],
                          st.get("last_error"), _utc(st["next_attempt"]), self._until(st))
                continue
            log.info("%s: ordering a certificate for %s (%s)", cs.name, ", ".join(cs.domains), why)
            st["orders"] = st.get("orders", 0) + 1
            st["last_attempt"] = now
            self._save_status(status)
            writes_before = self.dns.calls.get("writes", 0) if self.dns._rec is not None else 0
            try:
                info = self._order(cs)
            except Exception as exc:  # noqa: BLE001 - every failure is reported the same way
                msg = _describe(exc)
                st["failures"] = st.get("failures", 0) + 1
                wait = backoff(st["failures"], self.cfg.backoff_base, self.cfg.backoff_max)
                st["next_attempt"] = self.clock() + wait
                st["last_error"] = msg
                log.error("%s: certificate order FAILED (%d in a row): %s; serving the current "
                          "certificate%s; next attempt in %d s (%s)", cs.name, st["failures"], msg,
                          self._until(st), wait, _utc(st["next_attempt"]))
            else:
                st.update(info, failures=0, last_error=None, next_attempt=0,
                          issued_at=self.clock())
                log.info("%s: certificate %s issued for %s, valid until %s, renewal at %s",
                         cs.name, info["serial"], ", ".join(info["names"]),
                         _utc(info["not_after"]), _utc(info["renew_at"]))
            writes = self.dns.calls.get("writes", 0) if self.dns._rec is not None else 0
            st["dns_writes_last_order"] = writes - writes_before
            self._save_status(status)
        status["dns_api_calls"] = self.dns.calls if self.dns._rec is not None else {}
        self._save_status(status)
        return status

    @staticmethod
    def _until(st: dict) -> str:
        return f" (valid until {_utc(st['not_after'])})" if st.get("not_after") else " (none yet)"

    def _due(self, cs: CertSet, st: dict, now: float, force: bool) -> tuple[bool, str]:
        if force:
            return True, "forced"
        cur = self.current(cs.name)
        if cur is None:
            return True, "no certificate yet"
        info = cert_info((cur / "fullchain.pem").read_bytes())
        st.update({k: info[k] for k in ("serial", "not_before", "not_after", "renew_at")})
        if sorted(info["names"]) != sorted(cs.domains):
            return True, f"names changed (certificate has {', '.join(info['names'])})"
        if now >= info["renew_at"]:
            return True, f"renewal due since {_utc(info['renew_at'])}"
        return False, f"valid, renewal at {_utc(info['renew_at'])}"

    # -- ACME
    def _client_v2(self):
        if self._client is not None:
            return self._client
        import josepy as jose
        from acme import client as acme_client
        from acme import messages
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key_path = self.dir / "account.key"
        if key_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        else:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            _write(key_path, key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()), 0o600)
        self._account_key = jose.JWKRSA(key=key)
        net = acme_client.ClientNetwork(self._account_key, user_agent="hostmesh-acme",
                                        verify_ssl=self.cfg.ca_bundle or True, timeout=30)
        directory = acme_client.ClientV2.get_directory(self.cfg.directory_url, net)
        client = acme_client.ClientV2(directory, net)
        regr_path = self.dir / "account.json"
        if regr_path.exists():
            net.account = messages.RegistrationResource.json_loads(regr_path.read_text())
        else:
            self._register(client)
        self._client = client
        return client

    def _register(self, client) -> None:
        from acme import messages

        reg = messages.NewRegistration.from_data(email=self.cfg.email,
                                                 terms_of_service_agreed=True)
        regr = client.new_account(reg)
        _write(self.dir / "account.json", regr.json_dumps().encode(), 0o600)
        log.info("ACME account registered at %s", regr.uri)

    def _order(self, cs: CertSet) -> dict:
        from acme import messages

        try:
            return self._order_once(cs)
        except messages.Error as exc:
            if exc.code != "accountDoesNotExist":
                raise
            log.warning("the CA does not know the stored ACME account (was it reset?); "
                        "registering again")
            (self.dir / "account.json").unlink(missing_ok=True)
            self._register(self._client)
            return self._order_once(cs)

    def _order_once(self, cs: CertSet) -> dict:
        from acme import challenges, crypto_util
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        client = self._client_v2()
        pkey = ec.generate_private_key(ec.SECP256R1())
        key_pem = pkey.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())
        csr = crypto_util.make_csr(key_pem, cs.domains)
        # Records a crashed earlier run left behind would only confuse the CA.
        self.dns.cleanup()
        order = client.new_order(csr)
        todo, values = [], []
        for authz in order.authorizations:
            if authz.body.status.name == "valid":
                continue  # the CA still remembers this name's validation
            domain = authz.body.identifier.value
            if authz.body.wildcard:
                domain = "*." + domain
            chall = next((c for c in authz.body.challenges
                          if isinstance(c.chall, challenges.DNS01)), None)
            if chall is None:
                raise IssuerError(f"the CA offered no dns-01 challenge for {domain}")
            response, validation = chall.response_and_validation(self._account_key)
            todo.append((chall, response))
            values.append((challenge_name(domain), validation))
        try:
            self.dns.present(values)
            if values and self.cfg.propagation_seconds > 0:
                time.sleep(self.cfg.propagation_seconds)
            for chall, response in todo:
                client.answer_challenge(chall, response)
            deadline = dt.datetime.now() + dt.timedelta(seconds=self.cfg.order_timeout)
            order = client.poll_and_finalize(order, deadline=deadline)
        finally:
            try:
                self.dns.cleanup()
            except Exception as exc:  # noqa: BLE001 - the order's own error matters more
                log.warning("could not remove the DNS-01 challenge records: %s", _describe(exc))
        fullchain = order.fullchain_pem.encode()
        info = cert_info(fullchain)
        self._install(cs.name, info["serial"], fullchain, key_pem)
        return info

    def _install(self, name: str, serial: str, fullchain: bytes, key_pem: bytes) -> None:
        base = self.dir / "certs" / name
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        version = base / serial
        version.mkdir(mode=0o700, exist_ok=True)
        _write(version / "privkey.pem", key_pem, 0o600)
        _write(version / "fullchain.pem", fullchain, 0o644)
        tmp = base / ".current.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(serial)
        os.replace(tmp, base / "current")
        # keep the previous certificate for a roll-back by hand; drop older ones
        versions = sorted((p for p in base.iterdir() if p.is_dir() and not p.is_symlink()),
                          key=lambda p: p.stat().st_mtime)
        for old in versions[:-2]:
            for f in old.iterdir():
                f.unlink()
            old.rmdir()


def _describe(exc: BaseException) -> str:
    """What failed, in words that say what to do; never a token or a key."""
    from acme import errors as acme_errors
    from acme import messages

    from hostmesh.module_utils._dns_reconcile import DNSError

    if isinstance(exc, (IssuerError, DNSError)):
        return str(exc)
    if isinstance(exc, messages.Error):
        if exc.code == "rateLimited":
            return f"the CA rate limited the order ({exc.detail}); it is retried with backoff"
        return f"the CA refused: {exc.code or exc.typ}: {exc.detail}"
    if isinstance(exc, acme_errors.ValidationError):
        details = []
        for authz in exc.failed_authzrs:
            for ch in authz.body.challenges:
                if ch.error is not None:
                    details.append(f"{authz.body.identifier.value}: {ch.error.detail}")
        return ("the CA could not validate the DNS-01 challenge (" + "; ".join(details) + "); "
                "check that the zone's name servers answer the _acme-challenge TXT records")
    if isinstance(exc, acme_errors.TimeoutError):
        return "the order did not complete in time (order_timeout); the CA may be slow"
    try:
        import requests

        if isinstance(exc, requests.exceptions.SSLError):
            return (f"cannot verify the CA's HTTPS certificate ({exc.__class__.__name__}); "
                    "set the CA bundle (ACME_CA_BUNDLE) for a private CA")
        if isinstance(exc, requests.exceptions.RequestException):
            return (f"cannot reach the ACME CA ({exc.__class__.__name__}); check ACME_DIRECTORY_URL "
                    "and the network")
    except ImportError:  # pragma: no cover
        pass
    return f"{exc.__class__.__name__}: {exc}"
