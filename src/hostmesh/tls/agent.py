"""The agents' part of certificate distribution (issue 15): renewals reach every node.

Primary: the issuer (``hostmesh acme renew``, root) leaves each set's current pair
as a bundle in ``TLS_EXPORT_DIR`` (``ACME_EXPORT_DIR``); ``Source`` reads it (again
only when a file changed) and the API hands it to authenticated nodes:

- every heartbeat answer carries ``"tls": {"<set>": "<version>"}`` (16 hex digits);
- ``GET /api/tls/certificates/<set>`` (node key only) answers the bundle.

Secondary: ``Sync`` compares the versions of each heartbeat answer with what it last
delivered and fetches only a set whose version changed, checks it from scratch
(version = the chain's hash, the key belongs to the leaf), then delivers it:

- ``inbox`` (the role's way): ``TLS_INBOX_DIR/<set>.json`` (0600, the agent's own
  directory); ``hostmesh-tls-install.path`` starts the root-run
  ``python -m hostmesh.tls.node install``, which checks it once more (names of the
  set, newer than what is served) and installs it with ``hostmesh.tls.deploy``
  (key 0600 owned by Traefik's user; Traefik reloads without a restart). The
  agent itself never gets write access to Traefik's files;
- ``direct`` (``TLS_INSTALL_TLS_DIR`` + ``TLS_INSTALL_DYNAMIC_DIR``): the agent
  installs it itself (an agent that may write Traefik's files; the loopback tests).

Standard library only. No key material in a log line or an error message.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from hostmesh.tls import bundle, deploy

MAX_SETS = 32
_SYNC_MODES = ("auto", "true", "false")


class TlsConfigError(Exception):
    pass


@dataclass
class TlsSettings:
    sync: str = "auto"  # auto: on when the directory exists (the role creates it)
    export_dir: Path | None = None  # primary
    inbox_dir: Path | None = None  # secondary, inbox mode
    install_tls_dir: Path | None = None  # secondary, direct mode
    install_dynamic_dir: Path | None = None
    install_owner: str | None = None

    def enabled(self, is_primary: bool) -> bool:
        """Whether this agent takes part at all (looked at once, at start)."""
        return self.sync != "false"

    def ready(self, is_primary: bool) -> bool:
        """Whether to offer (primary) or fetch (secondary) now: with TLS_SYNC=auto, once
        the tls role created the directory (no agent restart needed)."""
        if self.sync == "false":
            return False
        if self.sync == "true" or (not is_primary and self.install_tls_dir):
            return True
        directory = self.export_dir if is_primary else self.inbox_dir
        return bool(directory and directory.is_dir())


def load_settings(env: dict[str, str], data_dir: Path, is_primary: bool) -> TlsSettings:
    """TLS_SYNC, TLS_EXPORT_DIR, TLS_INBOX_DIR, TLS_INSTALL_* (see the agent's README)."""
    sync = (env.get("TLS_SYNC") or "auto").strip().lower()
    if sync not in _SYNC_MODES:
        raise TlsConfigError(f"TLS_SYNC={sync!r}: use auto (on when the directory the tls "
                             "role creates exists), true or false")

    def path(name: str, default: Path | None) -> Path | None:
        raw = (env.get(name) or "").strip()
        if not raw:
            return default
        if not raw.startswith("/") or "\0" in raw:
            raise TlsConfigError(f"{name}={raw!r}: expected an absolute path")
        return Path(raw)

    settings = TlsSettings(
        sync=sync,
        export_dir=path("TLS_EXPORT_DIR", data_dir / "tls-export"),
        inbox_dir=path("TLS_INBOX_DIR", data_dir / "tls-inbox"),
        install_tls_dir=path("TLS_INSTALL_TLS_DIR", None),
        install_dynamic_dir=path("TLS_INSTALL_DYNAMIC_DIR", None),
        install_owner=(env.get("TLS_INSTALL_OWNER") or "").strip() or None,
    )
    if bool(settings.install_tls_dir) != bool(settings.install_dynamic_dir):
        raise TlsConfigError("set both TLS_INSTALL_TLS_DIR and TLS_INSTALL_DYNAMIC_DIR (the "
                             "agent then installs pairs itself), or neither (it leaves them "
                             "in TLS_INBOX_DIR for the root-run installer)")
    return settings


def _owner(user: str | None) -> tuple[int, int] | None:
    if not user:
        return None
    import pwd

    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


# -- primary ---------------------------------------------------------------------------


class Source:
    """The bundles the issuer left in the export directory, read again only on change."""

    def __init__(self, directory: Path, log: logging.Logger, ttl: float = 1.0):
        self.directory = directory
        self.log = log
        self.ttl = ttl
        self._files: dict[str, tuple[tuple, dict | None]] = {}  # set -> (stat key, bundle)
        self._scanned = -1e9
        self._lock = threading.Lock()

    def _scan(self) -> None:
        now = time.monotonic()
        if now - self._scanned < self.ttl:
            return
        with self._lock:
            if now - self._scanned < self.ttl:
                return
            seen = {}
            try:
                entries = list(os.scandir(self.directory))
            except OSError:
                entries = []
            for entry in entries:
                name = entry.name[:-5] if entry.name.endswith(".json") else ""
                if not bundle.SET_RE.fullmatch(name) or len(seen) >= MAX_SETS:
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                key = (st.st_ino, st.st_mtime_ns, st.st_size)
                old = self._files.get(name)
                if old is not None and old[0] == key:
                    seen[name] = old
                    continue
                try:
                    doc = bundle.read_file(entry.path, name)
                except bundle.BundleError as exc:
                    self.log.error("tls bundle unusable set=%s reason=%s", name,
                                   str(exc).replace(" ", "_")[:200])
                    doc = None
                else:
                    self.log.info("tls bundle loaded set=%s version=%s serial=%s not_after=%d",
                                  name, doc["version"], doc["serial"], doc["not_after"])
                seen[name] = (key, doc)
            self._files = seen
            self._scanned = now

    def versions(self) -> dict[str, str]:
        """{set: version} of the usable bundles (what every heartbeat answer carries)."""
        self._scan()
        return {name: doc["version"] for name, (_k, doc) in sorted(self._files.items())
                if doc is not None}

    def summary(self) -> dict[str, dict]:
        self._scan()
        return {name: {k: doc[k] for k in ("version", "serial", "not_after", "names")}
                for name, (_k, doc) in sorted(self._files.items()) if doc is not None}

    def get(self, name: str) -> dict | None:
        self._scan()
        entry = self._files.get(name)
        return entry[1] if entry is not None else None


# -- secondary -------------------------------------------------------------------------


def offered(answer: dict) -> dict[str, str]:
    """The versions a heartbeat answer offers (anything malformed is ignored)."""
    raw = answer.get("tls")
    if not isinstance(raw, dict):
        return {}
    out = {}
    for name, version in list(raw.items())[:MAX_SETS]:
        if isinstance(name, str) and bundle.SET_RE.fullmatch(name) and isinstance(version, str) \
                and bundle.VERSION_RE.fullmatch(version):
            out[name] = version
    return out


class Sync:
    """A secondary: fetch a set when the primary offers another version, deliver it."""

    def __init__(self, settings: TlsSettings, client, log: logging.Logger):
        self.settings = settings
        self.client = client  # AgentClient with this node's id and key
        self.log = log
        self.direct = settings.install_tls_dir is not None
        self.have: dict[str, str] = {}
        self._looked = False  # what was delivered before, read when the inbox is there
        self.failures: dict[str, int] = {}

    def _delivered(self) -> dict[str, str]:
        if self.direct:
            return {n: p.serial for n, p in deploy.installed(
                self.settings.install_tls_dir, self.settings.install_dynamic_dir).items()}
        have = {}
        inbox = self.settings.inbox_dir
        for path in sorted(inbox.glob("*.json")) if inbox and inbox.is_dir() else []:
            try:
                have[path.stem] = bundle.read_file(path, path.stem)["version"]
            except bundle.BundleError:
                continue
        return have

    def wanted(self, answer: dict) -> dict[str, str]:
        if not self.settings.ready(False):
            return {}  # no inbox (yet): the root-run installer is not set up on this node
        if not self._looked:
            self.have, self._looked = self._delivered(), True
        return {n: v for n, v in offered(answer).items() if self.have.get(n) != v}

    def run(self, answer: dict) -> list[str]:
        """Fetch and deliver every set whose offered version is new; the sets delivered.
        Blocking (call it in a thread)."""
        done = []
        for name, version in self.wanted(answer).items():
            try:
                got = self._fetch(name)
                self._deliver(got)
            except Exception as exc:  # noqa: BLE001 - logged; tried again next heartbeat
                self.failures[name] = self.failures.get(name, 0) + 1
                reason = " ".join(str(exc).split())[:300].replace('"', "'")
                self.log.warning('tls fetch failed set=%s offered=%s reason="%s" '
                                 "action=retry-next-heartbeat", name, version, reason)
                continue
            self.failures.pop(name, None)
            self.have[name] = got["version"]
            done.append(name)
            self.log.info("tls certificate delivered set=%s version=%s serial=%s not_after=%d "
                          "to=%s", name, got["version"], got["serial"], got["not_after"],
                          "traefik" if self.direct else "inbox")
        return done

    def _fetch(self, name: str) -> dict:
        _status, payload = self.client.request("GET", f"/api/tls/certificates/{name}")
        try:
            return bundle.parse(payload, name)
        except bundle.BundleError as exc:
            raise bundle.BundleError(f"the primary's answer is unusable: {exc}") from None

    def _deliver(self, got: dict) -> None:
        name = got["set"]
        if self.direct:
            _changed, kept = deploy.update(
                {name: (got["fullchain"].encode("ascii"), got["key"].encode("ascii"))},
                self.settings.install_tls_dir, self.settings.install_dynamic_dir,
                owner=_owner(self.settings.install_owner), newer_only=True)
            if kept:
                self.log.warning("tls kept the installed certificate set=%s: it ends later "
                                 "than the offered version %s", name, got["version"])
            return
        inbox = self.settings.inbox_dir
        # staged in a subdirectory: the installer's path unit (which watches the inbox)
        # is started by the rename, once, with the whole file there
        bundle.write_file(inbox / f"{name}.json", got, staging=inbox / ".staging")
