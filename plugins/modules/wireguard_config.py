#!/usr/bin/python
# Copyright: hostmesh contributors
# Apache License 2.0 (see LICENSE)
"""Ansible module hostmesh.cluster.wireguard_config."""

from __future__ import annotations

DOCUMENTATION = r"""
module: wireguard_config
short_description: Write a wg-quick configuration whose private key never leaves the node
version_added: "0.1.0"
description:
  - Renders a C(wg-quick) configuration from an interface definition and a peer list, reads
    the private key from a file on the node (see M(hostmesh.cluster.wireguard_keypair)) and
    writes the result atomically with mode C(0600).
  - Reports separately whether the C([Interface]) part changed (needs a restart of the
    interface) or only the peers changed (can be applied with C(wg syncconf) without
    interrupting traffic).
  - Private and preshared keys are never returned; the diff shows them as C(<hidden>).
  - Stands alone (Python standard library only).
author:
  - hostmesh contributors (@hostmesh)
options:
  path:
    description: The configuration file, for example C(/etc/wireguard/wg0.conf).
    type: path
    required: true
    version_added: "0.1.0"
  private_key_path:
    description: File on the node that holds the interface's private key.
    type: path
    required: true
    version_added: "0.1.0"
  address:
    description: Address of the interface with the mesh prefix, for example V(10.50.0.1/24).
    type: str
    required: true
    version_added: "0.1.0"
  listen_port:
    description: UDP port the interface listens on.
    type: int
    default: 51821
    version_added: "0.1.0"
  mtu:
    description: MTU of the interface; V(0) lets wg-quick choose.
    type: int
    default: 0
    version_added: "0.1.0"
  peers:
    description: The peers, written in name order.
    type: list
    elements: dict
    default: []
    version_added: "0.1.0"
    suboptions:
      name:
        description: Name of the peer (written as a comment).
        type: str
        required: true
      public_key:
        description: Base64 public key of the peer.
        type: str
        required: true
      allowed_ips:
        description: Addresses routed to this peer, in CIDR form.
        type: list
        elements: str
        required: true
      endpoint:
        description: C(host:port) where the peer is reached; omit for a peer without a reachable endpoint.
        type: str
      preshared_key:
        description: Base64 preshared key of this pair of nodes.
        type: str
      persistent_keepalive:
        description: Seconds between keepalives sent to this peer (for nodes behind NAT).
        type: int
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - Key values are replaced by C(<hidden>) in the diff.
  platform:
    platforms: posix
"""

EXAMPLES = r"""
- name: Write the mesh configuration
  hostmesh.cluster.wireguard_config:
    path: /etc/wireguard/wg0.conf
    private_key_path: /etc/wireguard/wg0.key
    address: 10.50.0.1/24
    listen_port: 51821
    peers:
      - name: node2
        public_key: xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=
        allowed_ips: [10.50.0.2/32]
        endpoint: 192.0.2.12:51821
  register: __wireguard_config
"""

RETURN = r"""
path:
  description: The configuration file.
  returned: always
  type: str
  sample: /etc/wireguard/wg0.conf
interface_changed:
  description: Whether the C([Interface]) part changed (address, port, MTU, private key), or the file is new.
  returned: always
  type: bool
peers_changed:
  description: Whether anything outside the C([Interface]) part changed.
  returned: always
  type: bool
peers:
  description: Names of the peers in the file.
  returned: always
  type: list
  elements: str
  sample: [node2, node3]
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.hostmesh.cluster.plugins.module_utils._atomic import write_atomic
from ansible_collections.hostmesh.cluster.plugins.module_utils._wireguard import (
    decode_key,
    interface_section,
    parse_sections,
    redact_config,
    render_config,
)

_PLACEHOLDER = "(key created by this run)"


class ConfigFile:
    """Render, compare and write one wg-quick file."""

    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.params = module.params

    def _private_key(self):
        path = self.params["private_key_path"]
        try:
            with open(path, encoding="ascii") as handle:
                key = handle.read().strip()
        except FileNotFoundError:
            if self.module.check_mode:
                return _PLACEHOLDER
            self.module.fail_json(
                msg=f"private key {path} does not exist; create it with hostmesh.cluster.wireguard_keypair first"
            )
        self.module.no_log_values.add(key)
        try:
            decode_key(key)
        except ValueError as exc:
            self.module.fail_json(msg=f"{path} does not hold a valid WireGuard key ({exc})")
        return key

    def _validate_peers(self) -> None:
        seen = {}
        for peer in self.params["peers"]:
            try:
                decode_key(peer["public_key"])
            except ValueError as exc:
                self.module.fail_json(
                    msg="peer {}: public_key {!r} is invalid ({})".format(
                        peer["name"], peer["public_key"], exc
                    )
                )
            if peer.get("preshared_key"):
                try:
                    decode_key(peer["preshared_key"])
                except ValueError as exc:
                    self.module.fail_json(
                        msg="peer {}: preshared_key is invalid ({})".format(peer["name"], exc)
                    )
            if peer["public_key"] in seen:
                self.module.fail_json(
                    msg="peers {} and {} have the same public key {}; each node needs its own key".format(
                        seen[peer["public_key"]], peer["name"], peer["public_key"]
                    )
                )
            seen[peer["public_key"]] = peer["name"]

    def present(self) -> dict:
        self._validate_peers()
        path = self.params["path"]
        key = self._private_key()
        interface = {
            "address": self.params["address"],
            "listen_port": self.params["listen_port"],
            "mtu": self.params["mtu"],
        }
        wanted = render_config(interface, self.params["peers"], key)
        try:
            with open(path, encoding="utf-8") as handle:
                current = handle.read()
        except FileNotFoundError:
            current = None
        for name, items in parse_sections(current or ""):
            for item_key, value in items:
                if item_key in ("privatekey", "presharedkey"):
                    self.module.no_log_values.add(value)
        mode_ok = current is not None and (os.stat(path).st_mode & 0o777) == 0o600
        content_changed = current != wanted
        interface_changed = current is None or interface_section(current) != interface_section(
            wanted
        )
        peers_changed = current is None or [
            s for s in parse_sections(current) if s[0] != "interface"
        ] != [s for s in parse_sections(wanted) if s[0] != "interface"]
        result = {
            "changed": content_changed or not mode_ok,
            "path": path,
            "interface_changed": interface_changed,
            "peers_changed": peers_changed,
            "peers": sorted(p["name"] for p in self.params["peers"]),
        }
        if self.module._diff:
            result["diff"] = {
                "before_header": path,
                "after_header": path,
                "before": redact_config(current or ""),
                "after": redact_config(wanted),
            }
        if result["changed"] and not self.module.check_mode:
            write_atomic(path, wanted, mode=0o600, dir_mode=0o700)
        return result


def main() -> None:
    peer_spec = {
        "name": {"type": "str", "required": True},
        "public_key": {"type": "str", "required": True},
        "allowed_ips": {"type": "list", "elements": "str", "required": True},
        "endpoint": {"type": "str"},
        "preshared_key": {"type": "str", "no_log": True},
        "persistent_keepalive": {"type": "int"},
    }
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "private_key_path": {"type": "path", "required": True, "no_log": False},
            "address": {"type": "str", "required": True},
            "listen_port": {"type": "int", "default": 51821},
            "mtu": {"type": "int", "default": 0},
            "peers": {"type": "list", "elements": "dict", "default": [], "options": peer_spec},
        },
        supports_check_mode=True,
    )
    module.exit_json(**ConfigFile(module).present())


if __name__ == "__main__":
    main()
