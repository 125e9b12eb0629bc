"""Public-IP detection for the node-side DDNS updater (stdlib only).

The detector answers either Cloudflare's trace format (``key=value`` lines, one
of them ``ip=<address>``, as ``https://cloudflare.com/cdn-cgi/trace``) or a
bare address (as ipify-style services). A failure raises DetectionFailed and
never yields a guess: the caller then leaves the records alone.
"""

from __future__ import annotations

import ipaddress
import urllib.error
import urllib.request

DEFAULT_DETECTOR_URL = "https://cloudflare.com/cdn-cgi/trace"
MAX_BODY = 64 * 1024


class DetectionFailed(Exception):
    """The public address could not be determined; the message says why."""


def parse_detector_body(body: str, version: int | None = None) -> str:
    """Extract the address from a trace-style or plain body; check its family."""
    text = body.strip()
    candidate = None
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "ip":
            candidate = value.strip()
            break
    if candidate is None:
        candidate = text if "\n" not in text else ""
    try:
        ip = ipaddress.ip_address(candidate)
    except ValueError:
        shown = text[:80].replace("\n", "\\n")
        raise DetectionFailed(
            f"the detector's answer holds no IP address (expected 'ip=<address>' or a bare "
            f"address, got {shown!r})"
        ) from None
    if version is not None and ip.version != version:
        raise DetectionFailed(f"the detector answered {ip}, which is not an IPv{version} address")
    return str(ip)


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
