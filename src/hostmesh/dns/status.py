"""The DDNS updater's status file: what the last `hostmesh ddns sync` runs did (issue 17).

Each run of `hostmesh ddns sync` (``--status-file`` / ``DDNS_STATUS_FILE``; the
ddns role sets ``/var/lib/hostmesh-ddns/status.json``) records its outcome here,
and the node's agent exports it at ``GET /metrics``
(``hostmesh_ddns_last_success_timestamp_seconds`` and friends), so Prometheus
can alert on a node whose updater fails or stopped running.

The file is small JSON, replaced atomically (readers see the old or the new
file), mode 0640: the ddns role makes its directory ``hostmesh-ddns`` owned and
group-owned by the agent's group with the setgid bit, so the agent reads it and
cannot write it. It never holds a token: the error summary is one line, at most
``MAX_ERROR`` characters, with the run's token (if it appears) replaced by
``<token>``.

    {"format": 1, "last_attempt": 1764590000.1, "last_success": 1764590000.1,
     "last_error": null, "last_error_at": null, "consecutive_failures": 0,
     "exit_code": 0}
"""

from __future__ import annotations

import json
import math
import os

FORMAT = 1
MAX_ERROR = 300
MAX_BYTES = 16384  # a valid file is a few hundred bytes


class StatusInvalid(ValueError):
    """The status file exists but is not what `hostmesh ddns sync` writes."""


def _timestamp(value: object, key: str, *, optional: bool) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value < 0:
        raise StatusInvalid(f"{key} must be a time in seconds since the epoch, got {value!r}"[:200])
    return float(value)


def check(doc: object) -> dict:
    """The status, checked strictly; raises StatusInvalid saying what is wrong."""
    if not isinstance(doc, dict):
        raise StatusInvalid(f"expected a JSON object, got {type(doc).__name__}")
    if doc.get("format") != FORMAT:
        raise StatusInvalid(f"format must be {FORMAT}, got {doc.get('format')!r}"[:200])
    failures = doc.get("consecutive_failures")
    if isinstance(failures, bool) or not isinstance(failures, int) or failures < 0:
        raise StatusInvalid(f"consecutive_failures must be a whole number >= 0, got "
                            f"{failures!r}"[:200])
    error = doc.get("last_error")
    if error is not None and not isinstance(error, str):
        raise StatusInvalid("last_error must be a string or null")
    return {
        "last_attempt": _timestamp(doc.get("last_attempt"), "last_attempt", optional=False),
        "last_success": _timestamp(doc.get("last_success"), "last_success", optional=True),
        "last_error_at": _timestamp(doc.get("last_error_at"), "last_error_at", optional=True),
        "last_error": error,
        "consecutive_failures": failures,
    }


def read(path: str | os.PathLike) -> dict:
    """The checked status. FileNotFoundError when there is none (no updater ran here);
    StatusInvalid when the file is not a valid status; OSError when it cannot be read."""
    with open(path, "rb") as handle:
        raw = handle.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise StatusInvalid(f"larger than {MAX_BYTES} bytes")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise StatusInvalid("not JSON") from None
    return check(doc)


def summary(message: str, secret: str | None = None) -> str:
    """One line, at most MAX_ERROR characters, the secret (if any) never in it."""
    text = " ".join(str(message).split())
    if secret:
        text = text.replace(secret, "<token>")
    if len(text) > MAX_ERROR:
        text = text[:MAX_ERROR - 3] + "..."
    return text


def record(path: str | os.PathLike, *, ok: bool, now: float, exit_code: int,
           error: str | None = None, secret: str | None = None) -> dict:
    """Write this run's outcome over the previous status; returns what was written.

    A previous file that is missing or invalid counts as no history (the run's own
    outcome is still recorded)."""
    try:
        previous = read(path)
    except (OSError, StatusInvalid):
        previous = {"last_success": None, "last_error": None, "last_error_at": None,
                    "consecutive_failures": 0}
    doc = {
        "format": FORMAT,
        "last_attempt": now,
        "last_success": now if ok else previous["last_success"],
        "last_error": previous["last_error"] if ok else summary(error or "failed", secret),
        "last_error_at": previous["last_error_at"] if ok else now,
        "consecutive_failures": 0 if ok else previous["consecutive_failures"] + 1,
        "exit_code": exit_code,
    }
    from hostmesh.module_utils._atomic import write_atomic

    write_atomic(os.fspath(path), json.dumps(doc, sort_keys=True) + "\n", mode=0o640)
    return doc
