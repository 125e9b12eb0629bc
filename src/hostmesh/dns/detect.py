"""Public-IP detection for the node-side DDNS updater (stdlib only).

The detector answers either Cloudflare's trace format (``key=value`` lines, one
of them ``ip=<address>``, as ``https://cloudflare.com/cdn-cgi/trace``) or a
bare address (as ipify-style services). A failure raises DetectionFailed and
never yields a guess: the caller then leaves the records alone.
"""

from __future__ import annotations

import urllib.error
import urllib.request

# The one parser of a detector's answer, shared with the ddns role's
# `hostmesh.cluster.detected_ip` filter (plugins/module_utils/_public_ip.py).
from hostmesh.module_utils._public_ip import DetectionFailed, parse_detector_body

__all__ = ["DEFAULT_DETECTOR_URL", "DetectionFailed", "detect_public_ip", "parse_detector_body"]

DEFAULT_DETECTOR_URL = "https://cloudflare.com/cdn-cgi/trace"
MAX_BODY = 64 * 1024


def detect_public_ip(url: str = DEFAULT_DETECTOR_URL, *, version: int | None = 4,
                     timeout: float = 10.0) -> str:
    """Ask ``url`` for this host's public address."""
    if not url.startswith(("http://", "https://")):
        raise DetectionFailed(f"detector URL {url!r} must start with http:// or https://")
    req = urllib.request.Request(url, headers={"User-Agent": "hostmesh-ddns"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read(MAX_BODY).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        raise DetectionFailed(f"detector {url} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DetectionFailed(f"detector {url} is unreachable ({reason})") from None
    try:
        return parse_detector_body(body, version)
    except DetectionFailed as exc:
        raise DetectionFailed(f"detector {url}: {exc}") from None
