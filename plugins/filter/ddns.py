# Copyright: hostmesh contributors
# Apache License 2.0 (see LICENSE)
"""Filters of the hostmesh.cluster.ddns role: the role's checks, written once in Python.

The DNS spec rules live in plugins/module_utils/_dns_reconcile.py (what
`cloudflare_dns` and `hostmesh ddns sync` enforce) and the detector parsing in
plugins/module_utils/_public_ip.py (what `hostmesh ddns sync` uses on the
nodes); these filters let the role's preflight and publish tasks ask the same
code instead of repeating the rules in Jinja.
"""

from __future__ import annotations

import ipaddress

from ansible.errors import AnsibleFilterError
from ansible_collections.hostmesh.cluster.plugins.module_utils._dns_reconcile import (
    InvalidSpec,
    Spec,
    validate_spec,
)
from ansible_collections.hostmesh.cluster.plugins.module_utils._public_ip import (
    DetectionFailed,
    parse_detector_body,
)

# Stand-in addresses (198.18.0.0/15, reserved for benchmarks) for nodes whose
# address is only known once detected: the checks then see every node name.
_PLACEHOLDERS = ipaddress.ip_network("198.18.0.0/15")


def ddns_spec_errors(zone, cluster, names, nodes, ttl=300, proxied=False, state="present"):
    """The problems of the role's DNS settings, as the reconciler words them (empty when valid)."""
    zone = str(zone or "")
    if state == "absent" and not zone:
        return []
    try:
        ttl = int(ttl)
    except (TypeError, ValueError):
        return [f"ttl {ttl!r} is invalid: use 1 (automatic) or 30..86400 seconds"]
    if isinstance(names, (str, bytes)) or not isinstance(names, (list, tuple)):
        return [f"names must be a list of full names, got {names!r}"]
    if state == "present" and not names:
        return ["names is empty: list the public names, e.g. ['example.org', '*.example.org']"]
    hosts = list(nodes or []) if state == "present" else []
    placeholders = {str(h): {"ipv4": str(_PLACEHOLDERS[i + 1])} for i, h in enumerate(hosts)}
    try:
        validate_spec(Spec(zone=zone, cluster=str(cluster or ""), names=list(names or []),
                           nodes=placeholders, ttl=ttl, proxied=bool(proxied)))
    except InvalidSpec as exc:
        return [str(exc)]
    return []


def detected_ip(body, version=4, source="the detector"):
    """The address in a detector's answer (trace ``ip=`` line or a bare address)."""
    try:
        return parse_detector_body(body, int(version) if version else None)
    except DetectionFailed as exc:
        raise AnsibleFilterError(f"{source}: {exc}") from None


class FilterModule:
    def filters(self):
        return {"ddns_spec_errors": ddns_spec_errors, "detected_ip": detected_ip}
