# Private to the collection: may change without notice.
"""What a node's name and id may be: the one definition.

The agent enforces these rules on its own configuration and on every
registration (``hostmesh.agent.config`` imports this file through the agent's
wheel, which ships this directory as ``hostmesh.module_utils``), and the
node_agent role checks the inventory against them before anything changes
(through the ``hostmesh.cluster.node_identity_errors`` filter). Standard
library only, no import of Ansible, so both can load it.
"""

from __future__ import annotations

import ipaddress
import re

# Every pattern matches the whole string (re.fullmatch): `$` would accept "web1\n".
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Host names the inventory plugin (plugins/inventory/nodes.py) could not turn into a
# host without breaking the inventory or shadowing Ansible's own: Ansible's implicit
# groups and localhost, and every group the plugin creates. Compared case-insensitively.
RESERVED_NAMES = frozenset({
    "all", "ungrouped", "localhost", "localhost.localdomain", "hostmesh_nodes",
    "hostmesh_online", "hostmesh_offline", "hostmesh_unreachable", "hostmesh_unknown",
    "hostmesh_primary", "hostmesh_secondary",
})
RESERVED_PREFIXES = ("hostmesh_",)  # hostmesh_label_*, hostmesh_app_*, hostmesh_<status>
_IP_CHARS = re.compile(r"[0-9A-Fa-f.:]{2,45}")


def is_ip(value):
    """A plain IPv4/IPv6 address (no zone id: `fe80::1%eth0` could carry anything)."""
    if not isinstance(value, str) or not _IP_CHARS.fullmatch(value):
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def name_problem(name):
    """Why `name` cannot be a node name, or None (format checked separately)."""
    folded = name.lower()
    if folded in RESERVED_NAMES or folded.startswith(RESERVED_PREFIXES):
        return (f"{name!r} is reserved: it is an Ansible group name, localhost, or a group "
                "the hostmesh inventory creates (hostmesh_*); choose another node name")
    if is_ip(name):
        return f"{name!r} is an IP address; a node name must be a host name"
    return None


def node_identity_errors(name, node_id=""):
    """Every problem of a node's name and (optional) id, each saying how to fix it."""
    errors = []
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        errors.append(f"node name {name!r} must be 1-63 letters, digits, '.', '_' or '-', "
                      "starting with a letter or digit")
    else:
        problem = name_problem(name)
        if problem:
            errors.append(f"node name {problem}")
    if node_id not in (None, "") and (not isinstance(node_id, str)
                                      or not ID_RE.fullmatch(node_id)):
        errors.append(f"node id {node_id!r} must be 1-64 letters, digits, '.', '_' or '-', "
                      "starting with a letter or digit")
    return errors
