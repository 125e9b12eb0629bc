# Private to the collection: may change without notice.
"""Read a public-IP detector's answer: the one parser for the controller and the nodes.

A detector answers either Cloudflare's trace format (``key=value`` lines, one
of them ``ip=<address>``, as ``https://cloudflare.com/cdn-cgi/trace``) or a
bare address (ipify-style services). Used by `hostmesh ddns sync` on the nodes
(through the agent's wheel, which ships this directory as
``hostmesh.module_utils``) and by the ddns role on the controller (through the
``hostmesh.cluster.detected_ip`` filter). Standard library only, no import of
Ansible, so both can load it.
"""

from __future__ import annotations

import ipaddress


class DetectionFailed(Exception):
    """The public address could not be determined; the message says why."""


def parse_detector_body(body, version=None):
    """Extract the address from a trace-style or plain body; check its family."""
    text = str(body).strip()
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
