"""Secrets: generation, hashing, constant-time checks, private files.

Keys and tokens are 32 random bytes, so a plain SHA-256 is the right hash at
rest (no password stretching needed) and `hmac.compare_digest` keeps the
comparison constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
import secrets
import time
from collections import deque
from pathlib import Path

_PRINTABLE = re.compile(r"^[\x21-\x7e]+$")
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
    if not MIN_KEY_LEN <= len(key) <= MAX_KEY_LEN or not _PRINTABLE.match(key):
        return (f"must be {MIN_KEY_LEN}-{MAX_KEY_LEN} printable ASCII characters without spaces "
                "(e.g. `openssl rand -hex 32`)")
    return None


def is_ip(value: object) -> bool:
    if not isinstance(value, str) or len(value) > 45:
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


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
