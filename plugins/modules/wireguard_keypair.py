#!/usr/bin/python
# Copyright: hostmesh contributors
# Apache License 2.0 (see LICENSE)
"""Ansible module hostmesh.cluster.wireguard_keypair."""

from __future__ import annotations

DOCUMENTATION = r"""
module: wireguard_keypair
short_description: Ensure a WireGuard private key exists on the node and return its public key
version_added: "0.1.0"
description:
  - Creates a WireGuard private key in a file on the target (mode C(0600)) when the file
    is absent, and returns the matching public key.
  - The private key is generated on the target and never leaves it; it is never returned
    nor logged.
  - With O(kind=preshared_key) the file holds a preshared key instead (32 random bytes) and
    no public key is returned; the role uses this on the controller for per-pair keys.
  - Stands alone (Python standard library only), so it runs under the node's system Python
    without C(wg) or any extra library.
author:
  - hostmesh contributors (@hostmesh)
options:
  path:
    description:
      - File holding the key. Its directory is created (mode C(0700)) when missing.
    type: path
    default: /etc/wireguard/wg0.key
    version_added: "0.1.0"
  kind:
    description:
      - V(private_key) for a Curve25519 private key (like C(wg genkey)),
        V(preshared_key) for a symmetric preshared key (like C(wg genpsk)).
    type: str
    choices: [private_key, preshared_key]
    default: private_key
    version_added: "0.1.0"
  rotate:
    description:
      - Replace an existing key with a new one. Reports a change on every run while set.
    type: bool
    default: false
    version_added: "0.1.0"
  create:
    description:
      - Create the key when it is absent. With V(false) an absent key is reported as
        RV(exists=false) and nothing changes (used to read the key of nodes outside
        C(--limit)).
    type: bool
    default: true
    version_added: "0.1.0"
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - The diff shows whether the key exists and its public key, never the key itself.
  platform:
    platforms: posix
notes:
  - An existing file that does not hold a valid key is an error (nothing is overwritten);
    use O(rotate=true) to replace it.
"""

EXAMPLES = r"""
- name: Ensure the node's WireGuard key
  hostmesh.cluster.wireguard_keypair:
    path: /etc/wireguard/wg0.key
  register: __wireguard_keypair

- name: Show the public key
  ansible.builtin.debug:
    msg: "{{ __wireguard_keypair.public_key }}"

- name: Rotate the key
  hostmesh.cluster.wireguard_keypair:
    path: /etc/wireguard/wg0.key
    rotate: true

- name: Create a preshared key on the controller
  hostmesh.cluster.wireguard_keypair:
    path: "{{ inventory_dir }}/.hostmesh/secrets/wireguard_psk_node1_node2"
    kind: preshared_key
  delegate_to: localhost
"""

RETURN = r"""
public_key:
  description:
    - Base64 public key of the private key in O(path).
    - Null for O(kind=preshared_key), and in check mode when a key would be created.
  returned: always
  type: str
  sample: xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=
path:
  description: The key file.
  returned: always
  type: str
  sample: /etc/wireguard/wg0.key
exists:
  description: Whether the key file exists (after the run; in check mode, as it would).
  returned: always
  type: bool
rotated:
  description: Whether an existing key was replaced.
  returned: always
  type: bool
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.hostmesh.cluster.plugins.module_utils._atomic import write_atomic
from ansible_collections.hostmesh.cluster.plugins.module_utils._wireguard import (
    decode_key,
    generate_preshared_key,
    generate_private_key,
    public_key,
)


class KeyPair:
    """Create, read or rotate one key file."""

    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.path = module.params["path"]
        self.kind = module.params["kind"]

    def _read(self):
        try:
            with open(self.path, encoding="ascii") as handle:
                text = handle.read().strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            self.module.fail_json(msg=f"cannot read key file {self.path}: {exc}")
        self.module.no_log_values.add(text)
        try:
            decode_key(text)
        except ValueError as exc:
            self.module.fail_json(
                msg=f"{self.path} does not hold a valid WireGuard key ({exc}); remove the file or run with "
                "rotate=true to replace it"
            )
        return text

    def _public(self, key):
        if key is None or self.kind != "private_key":
            return None
        return public_key(key)

    def _write(self, key: str) -> None:
        write_atomic(self.path, key + "\n", mode=0o600, dir_mode=0o700)

    def present(self) -> dict:
        params = self.module.params
        current = self._read()
        result = {
            "changed": False,
            "path": self.path,
            "rotated": False,
            "exists": current is not None,
        }
        before_pub = self._public(current)
        mode_wrong = current is not None and (os.stat(self.path).st_mode & 0o777) != 0o600
        if current is not None and not params["rotate"]:
            if mode_wrong:
                result["changed"] = True
                if not self.module.check_mode:
                    os.chmod(self.path, 0o600)
            result["public_key"] = before_pub
            result["diff"] = {
                "before": {"mode": "other" if mode_wrong else "0600"},
                "after": {"mode": "0600"},
            }
            return result
        if current is None and not params["create"]:
            result["public_key"] = None
            return result
        result["changed"] = True
        result["rotated"] = current is not None
        result["exists"] = True
        if self.module.check_mode:
            result["public_key"] = None
        else:
            new = generate_private_key() if self.kind == "private_key" else generate_preshared_key()
            self.module.no_log_values.add(new)
            self._write(new)
            result["public_key"] = self._public(new)
        result["diff"] = {
            "before": {"exists": current is not None, "public_key": before_pub},
            "after": {"exists": True, "public_key": result["public_key"] or "(new key)"},
        }
        return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "default": "/etc/wireguard/wg0.key"},
            "kind": {
                "type": "str",
                "default": "private_key",
                "choices": ["private_key", "preshared_key"],
            },
            "rotate": {"type": "bool", "default": False},
            "create": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    result = KeyPair(module).present()
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
