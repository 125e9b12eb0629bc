# Copyright: hostmesh contributors
# Apache License 2.0 (see LICENSE)
"""Filters of the hostmesh.cluster.wireguard role: mesh planning on the controller.

The logic lives in plugins/module_utils/_wireguard.py (unit tested there); these
are thin adapters from inventory data to it.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.hostmesh.cluster.plugins.module_utils import _wireguard as wg


def _hostvar(hostvars, host, name, default=None):
    hv = hostvars[host]
    try:
        return hv.get(name, default)
    except KeyError:
        return default


def wireguard_mesh_nodes(hosts, hostvars, defaults):
    """Build the node list of the mesh from the inventory (never from the play).

    defaults: values used when a host does not set its own (wireguard_port,
    wireguard_persistent_keepalive).
    """
    nodes = []
    for host in sorted(set(hosts)):
        if "wireguard_endpoint" in hostvars[host]:
            endpoint = _hostvar(hostvars, host, "wireguard_endpoint")
        else:
            endpoint = _hostvar(hostvars, host, "ansible_host", host)
        nodes.append(
            {
                "name": host,
                "address": _hostvar(hostvars, host, "wireguard_address") or "",
                "endpoint": str(endpoint or "").strip(),
                "port": _hostvar(
                    hostvars, host, "wireguard_port", defaults.get("wireguard_port", 51821)
                ),
                "keepalive": _hostvar(
                    hostvars,
                    host,
                    "wireguard_persistent_keepalive",
                    defaults.get("wireguard_persistent_keepalive", 0),
                )
                or 0,
            }
        )
    return nodes


def wireguard_mesh_errors(nodes, subnet, state=None):
    """Return the list of problems of the mesh definition (empty when fine)."""
    return wg.mesh_errors(list(nodes), subnet, dict(state or {}))


def wireguard_mesh_plan(nodes, subnet, state, public_keys):
    """Return the new mesh record (addresses and public keys of every node)."""
    try:
        return wg.mesh_plan(list(nodes), subnet, dict(state or {}), dict(public_keys or {}))
    except ValueError as exc:
        raise AnsibleFilterError(str(exc)) from exc


def wireguard_public_keys(hosts, hostvars, remote_results=None):
    """Collect the public keys this run read: from play hosts, then from delegated reads."""
    keys = {}
    for host in hosts:
        result = _hostvar(hostvars, host, "__wireguard_keypair") or {}
        if result.get("public_key"):
            keys[host] = result["public_key"]
    for item in (remote_results or {}).get("results", []):
        if item.get("public_key") and item.get("item"):
            keys.setdefault(item["item"], item["public_key"])
    return keys


def wireguard_peers(plan, me, keepalive=0, psks=None):
    """Return the peer list of host `me` for hostmesh.cluster.wireguard_config."""
    return wg.peers_for(plan, me, keepalive, psks)


def wireguard_psk_pairs(names, me=None):
    """Return the pair names of all nodes, or only those that include `me`."""
    pairs = wg.psk_pairs(list(names))
    if me is None:
        return pairs
    return [wg.pair_name(me, other) for other in sorted(set(names)) if other != me]


class FilterModule:
    """WireGuard mesh filters."""

    def filters(self):
        return {
            "wireguard_mesh_nodes": wireguard_mesh_nodes,
            "wireguard_mesh_errors": wireguard_mesh_errors,
            "wireguard_mesh_plan": wireguard_mesh_plan,
            "wireguard_public_keys": wireguard_public_keys,
            "wireguard_peers": wireguard_peers,
            "wireguard_psk_pairs": wireguard_psk_pairs,
        }
