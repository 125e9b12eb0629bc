#!/usr/bin/python
# Copyright: hostmesh developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Documentation of hostmesh.cluster.secret; the work is done by its action plugin."""

from __future__ import annotations

DOCUMENTATION = r"""
module: secret
short_description: Create once, read and rotate a cluster secret on the controller
version_added: 0.1.0
description:
  - Keeps one secret per file under the controller-side state of the cluster,
    by default C({{ hostmesh_state_dir }}/secrets/<name>) (C(hostmesh_state_dir) defaults
    to C({{ inventory_dir }}/.hostmesh)). Files are mode C(0600) in a C(0700) directory.
  - A missing secret is created once from 32 random bytes (URL-safe base64, no padding);
    later runs return the same value.
  - When a vault password is configured for the run (C(--vault-password-file),
    C(--vault-id)), new files are vault-encrypted and encrypted files are decrypted
    transparently.
  - O(rotate=true) replaces the value and keeps the replaced value(s) in
    C(<name>.previous) until O(forget_previous=true), so a rotation that is
    interrupted can be resumed without losing a value a node may still use.
  - The result is always marked C(no_log); the value never appears in the output,
    in C(-vvv) logs or in diffs (diffs only say whether the secret exists).
  - Runs on the controller only, through its action plugin; no managed host is contacted.
author:
  - hostmesh developers (@hostmesh)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: In check mode a missing secret is generated but not stored.
  diff_mode:
    support: full
    details: The diff describes presence and pending previous values, never a value.
  platform:
    support: full
    platforms: posix
options:
  name:
    description:
      - Name of the secret, also its file name, for example V(admin_token),
        V(registration_token) or V(node_api_key_node1).
      - 1-128 letters, digits, V(_), V(-) or V(.), starting with a letter or digit;
        must not end in V(.previous).
    type: str
    required: true
    version_added: 0.1.0
  dir:
    description:
      - Directory holding the secret files.
      - Defaults to C({{ hostmesh_state_dir }}/secrets), or C({{ inventory_dir }}/.hostmesh/secrets)
        when C(hostmesh_state_dir) is not set.
    type: path
    version_added: 0.1.0
  state:
    description:
      - V(present) creates the secret when missing and returns it.
      - V(absent) removes the secret and its previous values.
    type: str
    choices: [present, absent]
    default: present
    version_added: 0.1.0
  rotate:
    description:
      - Replace the value by a new random one, keeping the old one in RV(previous).
    type: bool
    default: false
    version_added: 0.1.0
  value:
    description:
      - Use this value instead of a random one (to import an existing token).
        When it differs from the stored value, the stored one becomes a previous value.
    type: str
    version_added: 0.1.0
  forget_previous:
    description:
      - Drop the previous values kept by earlier rotations (the end of a rotation).
    type: bool
    default: false
    version_added: 0.1.0
  length:
    description:
      - Number of random bytes of a generated secret (16-1024).
    type: int
    default: 32
    version_added: 0.1.0
  encrypt:
    description:
      - Vault-encrypt the files written. By default they are encrypted exactly when a
        vault password is configured. V(true) without a vault password is an error.
    type: bool
    version_added: 0.1.0
  vault_id:
    description:
      - Vault id to encrypt with when several are configured; default the first one.
    type: str
    version_added: 0.1.0
notes:
  - Register the result and use RV(value) in later tasks that also set C(no_log=true).
seealso:
  - module: hostmesh.cluster.node
"""

EXAMPLES = r"""
- name: Ensure the registration token exists
  hostmesh.cluster.secret:
    name: registration_token
  register: __registration_token

- name: Give a node its own API key
  hostmesh.cluster.secret:
    name: "node_api_key_{{ inventory_hostname }}"
  register: __node_key

- name: Rotate the admin token, keeping the old one until the rotation ends
  hostmesh.cluster.secret:
    name: admin_token
    rotate: true
  register: __admin_token

- name: End the rotation
  hostmesh.cluster.secret:
    name: admin_token
    forget_previous: true

- name: Keep secrets elsewhere, always vault-encrypted
  hostmesh.cluster.secret:
    name: admin_token
    dir: /srv/cluster-secrets
    encrypt: true
"""

RETURN = r"""
value:
  description: The current value (absent after O(state=absent)). Never shown in output.
  returned: success
  type: str
previous:
  description: Values replaced by unfinished rotations, oldest first.
  returned: success
  type: list
  elements: str
path:
  description: File holding the secret.
  returned: success
  type: str
  sample: /work/inventory/lab/.hostmesh/secrets/admin_token
created:
  description: Whether the secret was created by this run.
  returned: success
  type: bool
rotated:
  description: Whether the value was replaced by this run.
  returned: success
  type: bool
encrypted:
  description: Whether the file written by this run is vault-encrypted.
  returned: success
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.hostmesh.cluster.plugins.module_utils._secret import (
    ARGUMENT_SPEC,
    MUTUALLY_EXCLUSIVE,
    SecretError,
    SecretStore,
)


def main():
    # Reached only when the action plugin is bypassed (for example run as a
    # plain module on a host): same store, no vault, explicit dir.
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        mutually_exclusive=MUTUALLY_EXCLUSIVE,
        supports_check_mode=True,
    )
    p = module.params
    if not p["dir"]:
        module.fail_json(
            msg="dir is required when the secret module runs without its action plugin"
        )
    if p["encrypt"]:
        module.fail_json(msg="encrypt=true needs the action plugin (it holds the vault password)")
    store = SecretStore(p["dir"])
    try:
        out = store.apply(p, check_mode=module.check_mode)
    except SecretError as exc:
        module.fail_json(msg=str(exc))
    # no vault here: out.encrypted is False
    module.exit_json(
        **out.result(store.path(p["name"])),
        diff={"before": out.before, "after": out.after},
        _ansible_no_log=True,
    )


if __name__ == "__main__":
    main()
