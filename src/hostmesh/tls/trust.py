"""Who signed a pair: a leaf must lead up to a trusted root before a node serves it.

The root-run installer (``python -m hostmesh.tls.node install``) and the tls role's
"keep the newer pair" rule both ask ``verify`` about a pair. A pair passes when:

- its leaf is valid now (not before its notBefore, not after its notAfter) and ends
  at most ``MAX_DAYS_AHEAD`` days from now: a CA-issued certificate ends within 398
  days (browsers refuse longer ones), so a leaf ending years out is someone's own
  making, and the "never go back to an older certificate" rule would otherwise keep
  it in place over every genuine renewal;
- the leaf, with the intermediates its chain carries, leads up to a trusted root:
  the node's system store (OpenSSL's default paths, ``SSL_CERT_FILE`` /
  ``SSL_CERT_DIR`` honoured) plus the roots given (the tls role's
  ``tls_trusted_roots``, e.g. a private ACME CA's root), for a TLS server
  (extended key usage), and is valid for the set's first name.

Standard library only (a secondary's agent has no ``cryptography``): the chain is
checked by OpenSSL itself, in a TLS handshake between two in-memory ``ssl``
objects, the pair on the server side and a client that trusts only the roots
above, as any client of the node would check it. Nothing here reads or logs key
material beyond handing the key to the server side.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path

from hostmesh.tls import bundle

MAX_DAYS_AHEAD = 400  # a leaf ending later than this many days from now is refused
MAX_ROOTS = 1024 * 1024  # bytes of a roots file
_DAY = 86400


class TrustError(bundle.BundleError):
    """The pair is not signed by a trusted CA, or its validity is out of bounds."""


class RootsError(Exception):
    """The roots file (or text) is unusable: a configuration error, not a hostile pair."""


def read_roots(source: str | Path | None) -> str:
    """PEM text of the extra roots: ``source`` is a path, ``-`` (standard input), or None
    (none). A file with no certificate at all (only comments, or empty) means none; a
    private key in it, or a certificate block OpenSSL cannot load, is refused."""
    if source is None:
        return ""
    if str(source) == "-":
        import sys

        text = sys.stdin.read(MAX_ROOTS + 1)
        where = "standard input"
    else:
        try:
            with open(source, "rb") as fh:
                raw = fh.read(MAX_ROOTS + 1)
        except OSError as exc:
            raise RootsError(f"cannot read the trusted roots {source}: {exc.strerror}") from None
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise RootsError(f"the trusted roots {source} are not PEM text") from None
        where = str(source)
    if len(text) > MAX_ROOTS:
        raise RootsError(f"the trusted roots ({where}) are larger than {MAX_ROOTS} bytes")
    if "PRIVATE KEY" in text:
        raise RootsError(f"the trusted roots ({where}) hold a private key: give the CA's "
                         "certificate only")
    if "-----BEGIN" not in text:
        return ""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=text)
    except (ssl.SSLError, ValueError) as exc:
        raise RootsError(f"the trusted roots ({where}) do not load as PEM certificates "
                         f"({type(exc).__name__})") from None
    return text


def client_context(roots: str = "", system: bool = True) -> ssl.SSLContext:
    """The client side of the check: trusts the system store (``system``) and ``roots``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
    if system:
        ctx.set_default_verify_paths()
    if roots:
        ctx.load_verify_locations(cadata=roots)
    return ctx


def _day(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def _times(chain: bytes) -> tuple[float, float]:
    """(notBefore, notAfter) of the chain's leaf, Unix seconds."""
    end = chain.find(b"-----END CERTIFICATE-----")
    if end < 0:
        raise bundle.BundleError("the chain has no complete certificate")
    with bundle._private_tmp() as tmp:
        path = Path(tmp) / "leaf.pem"
        path.write_bytes(chain[: end + 25] + b"\n")
        try:
            decoded = ssl._ssl._test_decode_cert(str(path))  # the stdlib's own decoder
        except (ssl.SSLError, ValueError) as exc:
            raise bundle.BundleError(f"the leaf certificate does not parse "
                                     f"({type(exc).__name__})") from None
    try:
        return (ssl.cert_time_to_seconds(decoded["notBefore"]),
                ssl.cert_time_to_seconds(decoded["notAfter"]))
    except (KeyError, ValueError):
        raise bundle.BundleError("the leaf certificate has no readable validity") from None


def check_validity(chain: bytes, now: float | None = None,
                   max_days: int = MAX_DAYS_AHEAD) -> None:
    """The leaf is valid now and ends at most ``max_days`` from now."""
    now = time.time() if now is None else now
    not_before, not_after = _times(chain)
    if not_before > now:
        raise TrustError(f"the certificate is not valid yet (from {_day(not_before)}; the "
                         f"node's clock says {_day(now)})")
    if not_after < now:
        raise TrustError(f"the certificate has expired ({_day(not_after)})")
    if not_after > now + max_days * _DAY:
        raise TrustError(f"the certificate ends {_day(not_after)}, "
                         f"{int((not_after - now) // _DAY)} days from now: more than "
                         f"{max_days} days, longer than any CA issues (a certificate made to "
                         "outlive every renewal)")


def _hostname(names: list[str]) -> str:
    """A name to check the leaf against: the set's first name (a wildcard's own label)."""
    first = min(names, key=lambda n: (n.startswith("*."), n))
    return "hostmesh-check." + first[2:] if first.startswith("*.") else first


def _handshake(chain: bytes, key: bytes, client: ssl.SSLContext, hostname: str) -> None:
    server = bundle.server_context(chain, key)
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    cli = client.wrap_bio(c_in, c_out, server_hostname=hostname)
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    done: set[str] = set()
    for _round in range(16):
        for side, obj in (("client", cli), ("server", srv)):
            if side in done:
                continue
            try:
                obj.do_handshake()
                done.add(side)
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if done == {"client", "server"}:
            return
    raise bundle.BundleError("the check's TLS handshake did not complete")


def verify(chain: bytes, key: bytes, names: list[str], *, roots: str = "",
           system: bool = True, now: float | None = None,
           max_days: int = MAX_DAYS_AHEAD) -> dict:
    """Check a pair before it is served (see the module's text); returns
    ``bundle.check``'s answer. Raises ``TrustError`` (who signed it, its validity) or
    ``bundle.BundleError`` (the pair itself), each with a message and no content."""
    info = bundle.check(chain, key, names)
    check_validity(chain, now, max_days)
    try:
        _handshake(chain, key, client_context(roots, system), _hostname(names))
    except ssl.SSLCertVerificationError as exc:
        sources = (("the system store", system), ("the trusted roots given", bool(roots)))
        trusted = " and ".join([what for what, used in sources if used])
        raise TrustError(f"the certificate does not lead up to a trusted root: "
                         f"{exc.verify_message or exc.reason} (verify code {exc.verify_code}); "
                         f"trusted: {trusted or 'nothing'}") from None
    except ssl.SSLError as exc:
        raise TrustError(f"the certificate could not be checked in a TLS handshake "
                         f"({exc.reason or type(exc).__name__})") from None
    return info
