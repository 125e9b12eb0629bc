"""One certificate set as a single JSON document: what the primary's agent hands to a node.

A bundle is ``{"set", "version", "serial", "not_after", "names", "fullchain", "key"}``:

- ``version``: the first 16 hex digits of the chain's SHA-256, the same id that
  names the pair on every node (``<tls_dir>/<set>-<version>.crt``), so "has
  anything changed" is a string comparison;
- ``serial`` / ``not_after`` / ``names``: the leaf's serial number (hex), the end
  of its validity (Unix seconds) and its DNS names, read from the chain;
- ``fullchain`` / ``key``: PEM text. The key is the one secret in here.

Standard library only (the agent on a secondary has no ``cryptography``): the
leaf is decoded by CPython's ``ssl`` module, and ``check`` proves that the key
belongs to the leaf by loading both into an ``ssl.SSLContext``, as a TLS server
would. Nothing here logs or returns key material in an error message.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import ssl
import tempfile
from pathlib import Path

SET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{0,252}$")
VERSION_RE = re.compile(r"^[0-9a-f]{16}$")
MAX_CHAIN = 64 * 1024
MAX_KEY = 16 * 1024
MAX_BUNDLE = 128 * 1024
_CERT_BEGIN = b"-----BEGIN CERTIFICATE-----"


class BundleError(Exception):
    """A bundle or pair is unusable; the message names the problem, never the content."""


def version_of(chain: bytes) -> str:
    """The pair's version id: SHA-256 of the chain, 16 hex digits (as hostmesh.tls.deploy)."""
    return hashlib.sha256(chain).hexdigest()[:16]


def _private_tmp() -> tempfile.TemporaryDirectory:
    # 0700 directory: the key is written there for the ssl module to read, then removed
    return tempfile.TemporaryDirectory(prefix="hostmesh-tls-")


def inspect(chain: bytes) -> dict:
    """The leaf's serial (hex), not_after (Unix seconds) and sorted DNS names."""
    if not chain.lstrip().startswith(_CERT_BEGIN):
        raise BundleError("the chain is not PEM (no BEGIN CERTIFICATE at its start)")
    leaf = chain[: chain.index(b"-----END CERTIFICATE-----") + 25] + b"\n" \
        if b"-----END CERTIFICATE-----" in chain else b""
    if not leaf:
        raise BundleError("the chain has no complete certificate")
    with _private_tmp() as tmp:
        path = Path(tmp) / "leaf.pem"
        path.write_bytes(leaf)
        try:
            decoded = ssl._ssl._test_decode_cert(str(path))  # the stdlib's own decoder
        except (ssl.SSLError, ValueError) as exc:
            raise BundleError(f"the leaf certificate does not parse ({type(exc).__name__})") \
                from None
    try:
        not_after = int(ssl.cert_time_to_seconds(decoded["notAfter"]))
    except (KeyError, ValueError):
        raise BundleError("the leaf certificate has no readable notAfter") from None
    names = sorted({value.lower() for kind, value in decoded.get("subjectAltName", ())
                    if kind == "DNS"})
    return {"serial": str(decoded.get("serialNumber", "")).lower().lstrip("0") or "0",
            "not_after": not_after, "names": names}


def server_context(chain: bytes, key: bytes) -> ssl.SSLContext:
    """A TLS server context holding the pair; BundleError when the key does not
    belong to the chain's certificate. The key is written only to a private
    0600 file in a private directory, removed at once."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with _private_tmp() as tmp:
        cert_path, key_path = Path(tmp) / "chain.pem", Path(tmp) / "key.pem"
        cert_path.write_bytes(chain)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        try:
            server.load_cert_chain(cert_path, key_path)
        except ssl.SSLError:
            raise BundleError("the key does not belong to the chain's certificate (or one of "
                              "them does not parse)") from None
    return server


def check(chain: bytes, key: bytes, names: list[str] | None = None) -> dict:
    """Check a pair before it is served: sizes, PEM shape, key matches the leaf, and
    (when given) the leaf's DNS names are exactly ``names``. Returns ``inspect(chain)``
    plus ``version``."""
    if not chain or len(chain) > MAX_CHAIN:
        raise BundleError(f"the chain is empty or larger than {MAX_CHAIN} bytes")
    if not key or len(key) > MAX_KEY:
        raise BundleError(f"the key is empty or larger than {MAX_KEY} bytes")
    if b"PRIVATE KEY" in chain:
        raise BundleError("the chain holds a private key; a chain is certificates only")
    if not (key.lstrip().startswith(b"-----BEGIN ") and b"PRIVATE KEY-----" in key):
        raise BundleError("the key is not a PEM private key")
    info = inspect(chain)
    server_context(chain, key)
    if names is not None:
        want = sorted({n.lower() for n in names})
        if info["names"] != want:
            raise BundleError(f"the certificate is for {', '.join(info['names']) or 'no name'}, "
                              f"not for {', '.join(want)}")
    info["version"] = version_of(chain)
    return info


def make(name: str, chain: bytes, key: bytes) -> dict:
    """A checked bundle of one set."""
    if not SET_RE.fullmatch(name):
        raise BundleError(f"set name {name!r} is not a-z, 0-9, '.', '-'")
    info = check(chain, key)
    return {"set": name, "version": info["version"], "serial": info["serial"],
            "not_after": info["not_after"], "names": info["names"],
            "fullchain": chain.decode("ascii"), "key": key.decode("ascii")}


def parse(doc: object, name: str | None = None, names: list[str] | None = None) -> dict:
    """A bundle received or read from a file, checked again from scratch: the set (and
    ``name`` when given), the version against the chain, the key against the leaf, and
    (when given) the names. Returns the bundle rebuilt from the pair (nothing else kept)."""
    if not isinstance(doc, dict):
        raise BundleError("a bundle is a JSON object")
    set_name, chain, key = doc.get("set"), doc.get("fullchain"), doc.get("key")
    if not isinstance(set_name, str) or not SET_RE.fullmatch(set_name):
        raise BundleError("the bundle's set name is missing or not a-z, 0-9, '.', '-'")
    if name is not None and set_name != name:
        raise BundleError(f"the bundle is for set {set_name!r}, not {name!r}")
    if not isinstance(chain, str) or not isinstance(key, str):
        raise BundleError("the bundle needs fullchain and key as PEM text")
    try:
        chain_b, key_b = chain.encode("ascii"), key.encode("ascii")
    except UnicodeEncodeError:
        raise BundleError("the bundle's PEM text is not ASCII") from None
    out = make(set_name, chain_b, key_b)
    if doc.get("version") != out["version"]:
        raise BundleError("the bundle's version does not match its chain")
    if names is not None:
        want = sorted({n.lower() for n in names})
        if out["names"] != want:
            raise BundleError(f"the certificate is for {', '.join(out['names']) or 'no name'}, "
                              f"not for {', '.join(want)}")
    return out


def dumps(bundle: dict) -> bytes:
    return (json.dumps(bundle, sort_keys=True, indent=1) + "\n").encode("ascii")


def read_file(path: str | Path, name: str | None = None,
              names: list[str] | None = None) -> dict:
    """A bundle file, read without following a symlink and at most MAX_BUNDLE bytes (it
    may sit in a directory another user owns), then ``parse``d."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise BundleError(f"cannot open {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        import stat

        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise BundleError(f"{path} is not a regular file")
        raw = fh.read(MAX_BUNDLE + 1)
    if len(raw) > MAX_BUNDLE:
        raise BundleError(f"{path} is larger than {MAX_BUNDLE} bytes")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        raise BundleError(f"{path} is not JSON") from None
    return parse(doc, name, names)


def write_file(path: str | Path, bundle: dict, owner: tuple[int, int] | None = None,
               staging: str | Path | None = None) -> bool:
    """Write a bundle file atomically, 0600 (``owner`` when given); False when it already
    holds these bytes. With ``staging`` (a directory on the same file system) the file is
    written there and renamed into place, so a watcher of ``path``'s directory (the
    installer's path unit) sees one complete file appear and no half-written one."""
    path = Path(path)
    data = dumps(bundle)
    try:
        if path.is_file() and not path.is_symlink() and path.read_bytes() == data \
                and (owner is None or (path.stat().st_uid, path.stat().st_gid) == owner):
            return False
    except OSError:
        pass
    from hostmesh.tls.deploy import _write

    if staging is None:
        _write(path, data, 0o600, owner)
        return True
    staging = Path(staging)
    staging.mkdir(mode=0o700, exist_ok=True)
    _write(staging / path.name, data, 0o600, owner)
    os.replace(staging / path.name, path)
    return True
