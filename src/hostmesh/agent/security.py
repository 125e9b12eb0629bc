"""Secrets: generation, hashing, constant-time checks, private files.

Keys and tokens are 32 random bytes, so a plain SHA-256 is the right hash at
rest (no password stretching needed) and `hmac.compare_digest` keeps the
comparison constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from collections import OrderedDict, deque
from pathlib import Path

from hostmesh.module_utils import _names

_PRINTABLE = re.compile(r"[\x21-\x7e]+")  # used with fullmatch
MIN_KEY_LEN = 32
MAX_KEY_LEN = 256


def new_secret() -> str:
    """32 random bytes, URL-safe (43 characters)."""
    return secrets.token_urlsafe(32)


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def matches(value: str | None, hashes: list[str] | tuple[str, ...]) -> bool:
    """True when sha256(value) equals one of `hashes` (each compared in constant time)."""
    if not value or not hashes:
        return False
    digest = sha256_hex(value)
    ok = False
    for h in hashes:
        # no early exit: the time does not depend on which entry matched
        ok |= hmac.compare_digest(digest, h)
    return ok


def key_problem(key: object) -> str | None:
    """Why `key` is not acceptable as a node API key, or None."""
    if not isinstance(key, str):
        return "must be a string"
    if not MIN_KEY_LEN <= len(key) <= MAX_KEY_LEN or not _PRINTABLE.fullmatch(key):
        return (f"must be {MIN_KEY_LEN}-{MAX_KEY_LEN} printable ASCII characters without spaces "
                "(e.g. `openssl rand -hex 32`)")
    return None


# One definition of "a plain IP address", shared with the collection's preflights.
is_ip = _names.is_ip


def write_private(path: Path, text: str) -> None:
    """Write `text` atomically to `path` with mode 0600."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class RateLimiter:
    """Sliding-window limit of attempts per client address."""

    def __init__(self, limit: int, window: float, max_clients: int = 10000):
        self.limit = limit
        self.window = window
        self.max_clients = max_clients
        self._hits: dict[str, deque[float]] = {}

    def allow(self, client: str, now: float | None = None) -> tuple[bool, float]:
        """(allowed, seconds until the next attempt would be allowed)."""
        now = time.monotonic() if now is None else now
        hits = self._hits.get(client)
        if hits is None:
            if len(self._hits) >= self.max_clients:
                self._prune(now)
            hits = self._hits[client] = deque()
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return False, max(0.0, hits[0] + self.window - now)
        hits.append(now)
        return True, 0.0

    def _prune(self, now: float) -> None:
        for client in [c for c, h in self._hits.items() if not h or h[-1] <= now - self.window]:
            del self._hits[client]
        if len(self._hits) >= self.max_clients:
            # still full of active clients: forget the oldest half rather than grow
            for client in list(self._hits)[: self.max_clients // 2]:
                del self._hits[client]


# -- the primary's proof towards a secondary ----------------------------------
#
# The primary never sends its own key to a secondary. Each call it makes (health
# checks) carries a proof bound to that one node and that one moment: an HMAC,
# keyed with the SHA-256 of the *node's* key (which the primary holds at rest and
# the node knows), over the method, path, both ids, a timestamp and a random nonce.
# A hostile node that receives its own proof learns nothing usable against another
# node (another key), and a secondary refuses a replayed nonce or an old timestamp.

PROOF_HEADER = "X-Hostmesh-Primary-Proof"
PROOF_WINDOW = 60.0  # seconds either way of the secondary's clock
_PROOF_RE = re.compile(r"v1 id=([A-Za-z0-9._-]{1,64}) node=([A-Za-z0-9._-]{1,64}) "
                       r"ts=(\d{1,12}) nonce=([0-9a-f]{32}) sig=([0-9a-f]{64})")


def _proof_sig(node_key_hash: str, method: str, path: str, primary_id: str, node_id: str,
               ts: int, nonce: str) -> str:
    message = f"hostmesh-primary-proof-v1\n{method}\n{path}\n{primary_id}\n{node_id}\n" \
              f"{ts}\n{nonce}"
    return hmac.new(node_key_hash.encode(), message.encode(), hashlib.sha256).hexdigest()


def primary_proof(node_key_hash: str, method: str, path: str, primary_id: str,
                  node_id: str, now: float | None = None) -> str:
    """The proof header value for one call of the primary to one node."""
    ts = int(time.time() if now is None else now)
    nonce = secrets.token_hex(16)
    sig = _proof_sig(node_key_hash, method, path, primary_id, node_id, ts, nonce)
    return f"v1 id={primary_id} node={node_id} ts={ts} nonce={nonce} sig={sig}"


class ProofVerifier:
    """A secondary's check of the primary's proof (replays refused, memory bounded)."""

    def __init__(self, max_nonces: int = 20000):
        self.max_nonces = max_nonces
        self._seen: OrderedDict[str, float] = OrderedDict()

    def verify(self, header: str | None, method: str, path: str, node_id: str,
               node_keys: list[str], primary_id: str | None,
               now: float | None = None) -> str | None:
        """None when the proof is good, else why not (for the log; no secret in it)."""
        now = time.time() if now is None else now
        if not header:
            return "no primary proof"
        m = _PROOF_RE.fullmatch(header.strip())
        if not m:
            return "malformed primary proof"
        pid, nid, ts, nonce, sig = m.groups()
        if primary_id is None:
            return "no primary pinned yet (not registered)"
        if not hmac.compare_digest(pid, primary_id):
            return "proof from another primary id"
        if nid != node_id:
            return "proof made for another node"
        if abs(now - int(ts)) > PROOF_WINDOW:
            return "proof too old or from the future (check the clocks)"
        ok = False
        for key in node_keys:
            if key:
                expected = _proof_sig(sha256_hex(key), method, path, pid, nid, int(ts), nonce)
                ok |= hmac.compare_digest(expected, sig)
        if not ok:
            return "bad primary proof signature"
        while self._seen and (len(self._seen) >= self.max_nonces
                              or next(iter(self._seen.values())) < now - 2 * PROOF_WINDOW):
            self._seen.popitem(last=False)
        if nonce in self._seen:
            return "replayed primary proof"
        self._seen[nonce] = now
        return None


# -- logs that an anonymous client cannot flood --------------------------------


class RepeatFilter(logging.Filter):
    """Bounded logging of warnings and errors, whatever clients do.

    Each distinct message goes through at most `burst` times per `window` seconds;
    the rest are counted and summarised when it comes again after the window
    ("suppressed N identical messages"). Over all messages, at most `total` per
    window are written; the next one written says how many were dropped. So a
    client that makes the agent fail the same way a million times, or a thousand
    different ways, writes a few hundred lines, not hundreds of megabytes.
    Tracebacks of dropped records go with them. INFO and below are not limited.
    """

    def __init__(self, burst: int = 5, window: float = 60.0, max_keys: int = 1000,
                 total: int = 600):
        super().__init__()
        self.burst = burst
        self.window = window
        self.max_keys = max_keys
        self.total = total
        self._state: OrderedDict[tuple, list] = OrderedDict()  # key -> [start, count]
        self._window_start = time.monotonic()
        self._written = 0
        self._dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is logged as is
            text = str(record.msg)
        exc = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        key = (record.name, record.levelno, text[:300], exc)
        now = time.monotonic()
        state = self._state.get(key)
        if state is not None and now - state[0] >= self.window:
            suppressed = state[1] - self.burst
            del self._state[key]
            state = None
            if suppressed > 0:
                text = (f"suppressed {suppressed} identical messages in the last "
                        f"{self.window:g}s: {text}")
                record.msg, record.args = "%s", (text,)
        if state is None:
            if len(self._state) >= self.max_keys:
                self._state.popitem(last=False)
            self._state[key] = [now, 1]
        else:
            state[1] += 1
            if state[1] > self.burst:
                return False
        return self._within_total(record, text, now)

    def _within_total(self, record: logging.LogRecord, text: str, now: float) -> bool:
        if now - self._window_start >= self.window:
            self._window_start, self._written = now, 0
            if self._dropped:
                note = (f"(log rate limit: {self._dropped} warnings/errors dropped before "
                        f"this one) {text}")
                record.msg, record.args = "%s", (note,)
                self._dropped = 0
        self._written += 1
        if self._written > self.total:
            self._dropped += 1
            return False
        return True
