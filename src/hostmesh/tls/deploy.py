"""Hand a certificate to Traefik's file provider without restarting Traefik.

Layout on a node (standard library only, so the same code can run anywhere):

- ``<tls_dir>/<set>-<version>.crt`` (0644) and ``.key`` (0600, owned by Traefik's
  user when ``owner`` is given): one pair per certificate version, never
  rewritten in place;
- ``<dynamic_dir>/hostmesh-tls.yml``: ``tls.certificates`` listing the current
  pair of every set, and the first set as the default certificate (served to
  clients without SNI or with an unknown name). Written atomically, last.

Order of a switch: the new pair is written first, then the dynamic file is
replaced in one ``rename``; Traefik's file provider (``watch: true``) sees the
directory change and loads the new pair, while connections already open keep
the old one. Pairs older than the previous one are removed afterwards, so a
reload that is still reading the previous file never finds it gone. The
dynamic file holds paths only: no key is ever in it (and so never in a diff).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

DYNAMIC_NAME = "hostmesh-tls.yml"
_PAIR = re.compile(r"^(?P<set>[a-z0-9][a-z0-9.-]*)-(?P<serial>[0-9a-f]+)\.(crt|key)$")


@dataclass
class Pair:
    name: str
    serial: str
    cert: Path
    key: Path


def _write(path: Path, data: bytes, mode: int, owner: tuple[int, int] | None) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, *owner)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def render(pairs: list[Pair]) -> str:
    """The dynamic file (YAML is a superset of JSON: one stable rendering)."""
    certs = [{"certFile": str(p.cert), "keyFile": str(p.key)} for p in pairs]
    config: dict = {"tls": {"certificates": certs}}
    if pairs:
        config["tls"]["stores"] = {"default": {"defaultCertificate": dict(certs[0])}}
    return "# hostmesh: certificates of the cluster (hostmesh.tls.deploy); paths only\n" + \
        json.dumps(config, indent=2, sort_keys=True) + "\n"


def install(sources: dict[str, tuple[bytes, bytes]], tls_dir: str | Path,
            dynamic_dir: str | Path, *, owner: tuple[int, int] | None = None) -> bool:
    """Install ``{set: (fullchain_pem, key_pem)}``; True when anything changed.

    A set whose current pair already holds these bytes is left alone (idempotent).
    """
    tls = Path(tls_dir)
    if not tls.is_dir():
        tls.mkdir(mode=0o750, parents=True)
        if owner is not None:
            os.chown(tls, 0, owner[1])  # root:<Traefik's group>, 0750: Traefik may enter
    pairs: list[Pair] = []
    changed = False
    for name in sorted(sources):
        chain, key = sources[name]
        serial = _serial(chain)
        pair = Pair(name, serial, tls / f"{name}-{serial}.crt", tls / f"{name}-{serial}.key")
        if not (pair.cert.exists() and pair.key.exists()
                and pair.cert.read_bytes() == chain and pair.key.read_bytes() == key):
            _write(pair.key, key, 0o600, owner)
            _write(pair.cert, chain, 0o644, owner)
            changed = True
        pairs.append(pair)
    dynamic = Path(dynamic_dir) / DYNAMIC_NAME
    text = render(pairs).encode()
    if not dynamic.exists() or dynamic.read_bytes() != text:
        _write(dynamic, text, 0o644, None)
        changed = True
    _prune(tls, {p.name: p.serial for p in pairs})
    return changed


def _prune(tls: Path, current: dict[str, str]) -> None:
    """Keep each set's current and previous pair; remove older ones and unknown sets' pairs."""
    for path in stale(tls, current):
        path.unlink(missing_ok=True)


def stale(tls: str | Path, current: dict[str, str]) -> list[Path]:
    """The files ``_prune`` removes from ``tls``: every ``*.crt``/``*.key`` but each
    set's current pair and its previous one (the newest other ``.crt`` of the set by
    mtime, kept for a reload that is still reading it and for a roll-back by hand).
    A set not in ``current`` keeps nothing. The tls role keeps the same files, so a
    renewal the agents installed leaves nothing for its next run to change."""
    tls = Path(tls)
    try:
        files = [f for f in tls.iterdir() if f.suffix in (".crt", ".key")]
    except OSError:
        return []
    older: dict[str, list[tuple[float, str]]] = {}
    for f in files:
        m = _PAIR.match(f.name)
        if m and f.suffix == ".crt" and m["serial"] != current.get(m["set"]):
            older.setdefault(m["set"], []).append((f.stat().st_mtime, m["serial"]))
    keep = set(current.items())
    keep |= {(name, max(versions)[1]) for name, versions in older.items() if name in current}
    return sorted(f for f in files
                  if not ((m := _PAIR.match(f.name)) and (m["set"], m["serial"]) in keep))


def _serial(chain: bytes) -> str:
    """A version id of the chain: its SHA-256, 16 hex digits (stdlib only, unlike the serial)."""
    return hashlib.sha256(chain).hexdigest()[:16]


def installed(tls_dir: str | Path, dynamic_dir: str | Path) -> dict[str, Pair]:
    """The pairs this node's Traefik is pointed at now (from hostmesh-tls.yml), by set.

    Whoever wrote the file (this module or the tls role) wrote JSON after one comment
    line; pairs whose files are missing, or outside ``tls_dir``, are left out."""
    path = Path(dynamic_dir) / DYNAMIC_NAME
    try:
        text = path.read_text(encoding="utf-8")
        config = json.loads("\n".join(ln for ln in text.splitlines() if not ln.startswith("#")))
        certs = config["tls"]["certificates"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    tls = Path(tls_dir)
    out: dict[str, Pair] = {}
    for item in certs if isinstance(certs, list) else []:
        try:
            cert, key = Path(item["certFile"]), Path(item["keyFile"])
        except (KeyError, TypeError):
            continue
        m = _PAIR.match(cert.name)
        if m and cert.parent == tls and key == cert.with_suffix(".key") and cert.is_file() \
                and key.is_file():
            out[m["set"]] = Pair(m["set"], m["serial"], cert, key)
    return out


def update(sources: dict[str, tuple[bytes, bytes]], tls_dir: str | Path,
           dynamic_dir: str | Path, *, owner: tuple[int, int] | None = None,
           newer_only: bool = False) -> tuple[bool, list[str]]:
    """Install ``sources`` and keep every other set this node already serves (a
    bring-your-own certificate next to the issued ones). With ``newer_only``, a set
    whose installed certificate ends later than the offered one keeps it (a late
    Ansible run or a stale copy never puts an older certificate back).

    Returns (changed, the sets that kept a newer certificate)."""
    current = installed(tls_dir, dynamic_dir)
    merged = {name: (pair.cert.read_bytes(), pair.key.read_bytes())
              for name, pair in current.items()}
    kept: list[str] = []
    for name, (chain, key) in sources.items():
        pair = current.get(name)
        if newer_only and pair is not None and pair.serial != _serial(chain):
            from hostmesh.tls.bundle import BundleError, inspect

            try:
                if inspect(merged[name][0])["not_after"] > inspect(chain)["not_after"]:
                    kept.append(name)
                    continue
            except BundleError:
                pass  # an unreadable installed pair is replaced
        merged[name] = (chain, key)
    return install(merged, tls_dir, dynamic_dir, owner=owner), kept


def from_issuer(state_dir: str | Path, names: list[str]) -> dict[str, tuple[bytes, bytes]]:
    """The issuer's current pair of each set (``certs/<set>/current``)."""
    out = {}
    for name in names:
        cur = Path(state_dir) / "certs" / name / "current"
        out[name] = ((cur / "fullchain.pem").read_bytes(), (cur / "privkey.pem").read_bytes())
    return out
