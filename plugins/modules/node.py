#!/usr/bin/python
# Copyright: hostmesh developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""hostmesh.cluster.node: manual registration through the primary's admin API."""

from __future__ import annotations

DOCUMENTATION = r"""
module: node
short_description: Register, update or remove a node through the hostmesh primary's admin API
version_added: 0.1.0
description:
  - The manual path next to auto-registration. Creates a node record on the primary
    (C(POST /api/nodes)), updates the fields that differ (C(PUT /api/nodes/{id})) or
    removes it (C(DELETE /api/nodes/{id})), with the admin token.
  - Idempotent. Compares the node's current record with the wanted fields and changes
    only what differs. The primary never returns keys, so an existing node's key is sent
    only with O(update_key=always) (how C(rotate_keys.yml) rotates a key; the primary
    keeps accepting the previous key for its C(KEY_GRACE_SECONDS)).
  - Run it on the primary (C(delegate_to) the first host of C(hostmesh_primary)) against
    its loopback address, the default O(url), so that the admin token stays inside
    Ansible's SSH connection; the agent's API listens only on the mesh and on loopback.
  - Needs nothing but C(ansible-core) and the node's Python. The API client ships in this
    collection's C(module_utils).
author:
  - hostmesh developers (@hostmesh)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - hostmesh.cluster._primary_api
attributes:
  check_mode:
    support: full
    details: Reads the primary's records and reports what would change, writes nothing.
  diff_mode:
    support: full
    details: Shows the node's record before and after; a key change is marked, never shown.
  platform:
    support: full
    platforms: posix
options:
  name:
    description:
      - Name of the node (C(NODE_NAME), the inventory name of the host).
    type: str
    required: true
    version_added: 0.1.0
  id:
    description:
      - Id of the node. When set, the node is looked up by id (and renamed to O(name) if
        needed); otherwise by O(name), and a new node gets an id chosen by the primary.
    type: str
    version_added: 0.1.0
  state:
    description:
      - V(present) creates or updates the node, V(absent) removes it.
    type: str
    choices: [present, absent]
    default: present
    version_added: 0.1.0
  api_endpoint:
    description:
      - URL where the primary reaches the node's agent, for example V(http://10.50.0.2:8080).
        Required to create a node.
    type: str
    version_added: 0.1.0
  api_key:
    description:
      - The node's API key (32 random bytes, for example from M(hostmesh.cluster.secret)).
        Required to create a node; see O(update_key) for existing nodes. Never logged.
    type: str
    version_added: 0.1.0
  update_key:
    description:
      - V(on_create) sends O(api_key) only when the node is created (idempotent).
      - V(always) also sets it on an existing node (a key rotation; always reports a change).
    type: str
    choices: [on_create, always]
    default: on_create
    version_added: 0.1.0
  wireguard_ip:
    description: The node's address on the mesh.
    type: str
    version_added: 0.1.0
  public_ip:
    description: The node's public address.
    type: str
    version_added: 0.1.0
  labels:
    description: Labels of the node (string values); replaces the labels when set.
    type: dict
    version_added: 0.1.0
notes:
  - The admin token comes from O(token) or E(HOSTMESH_ADMIN_TOKEN); read it with
    M(hostmesh.cluster.secret) (C(name=admin_token)) and keep C(no_log) on the task.
seealso:
  - module: hostmesh.cluster.secret
  - module: hostmesh.cluster.node_info
"""

EXAMPLES = r"""
# Every call runs on the primary against its loopback address (the default url),
# so the admin token travels only inside Ansible's SSH connection.
- name: Read the admin token on the controller
  hostmesh.cluster.secret:
    name: admin_token
  register: __admin_token
  run_once: true
  no_log: true

- name: Give the new node its key
  hostmesh.cluster.secret:
    name: node_api_key_node4
  register: __node4_key
  run_once: true
  no_log: true

- name: Register node4 by hand
  hostmesh.cluster.node:
    token: "{{ __admin_token.value }}"
    name: node4
    api_endpoint: http://10.50.0.4:8080
    wireguard_ip: 10.50.0.4
    api_key: "{{ __node4_key.value }}"
    labels:
      zone: eu
  delegate_to: "{{ groups['hostmesh_primary'][0] }}"
  run_once: true
  no_log: true

- name: Remove node4
  hostmesh.cluster.node:
    token: "{{ __admin_token.value }}"
    name: node4
    state: absent
  delegate_to: "{{ groups['hostmesh_primary'][0] }}"
  run_once: true
"""

RETURN = r"""
node:
  description: The node's record as the primary returned it (never a key); absent after removal.
  returned: success and O(state=present)
  type: dict
  sample:
    id: 7f7c2c1e-3c5e-4c83-9a53-0f1d0d3f5a10
    name: node4
    api_endpoint: http://10.50.0.4:8080
    is_primary: false
    status: online
    labels: {zone: eu}
key_updated:
  description: Whether the node's key was sent to the primary by this run.
  returned: success
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.hostmesh.cluster.plugins.module_utils._agent_client import (
    AgentClient,
    AuthRejected,
    Conflict,
    Credentials,
    HostmeshAPIError,
    PrimaryUnreachable,
)
from ansible_collections.hostmesh.cluster.plugins.module_utils._node import (
    NodeError,
    NodeManager,
    admin_token,
    connection_argument_spec,
    make_client,
    token_rejected,
)


def argument_spec() -> dict:
    return {
        **connection_argument_spec(),
        "name": {"type": "str", "required": True},
        "id": {"type": "str"},
        "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
        "api_endpoint": {"type": "str"},
        "api_key": {"type": "str", "no_log": True},
        "update_key": {"type": "str", "default": "on_create", "choices": ["on_create", "always"]},
        "wireguard_ip": {"type": "str"},
        "public_ip": {"type": "str"},
        "labels": {"type": "dict"},
    }


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    p = module.params
    token = admin_token(p)
    if not token:
        module.fail_json(
            msg="no admin token: set token or the HOSTMESH_ADMIN_TOKEN environment variable"
        )
    module.no_log_values.add(token)
    if p["labels"] is not None:
        p["labels"] = {str(k): str(v) for k, v in p["labels"].items()}
    try:
        client = make_client(AgentClient, Credentials, p, token)
        manager = NodeManager(client, check_mode=module.check_mode)
        if p["state"] == "absent":
            out = manager.absent(p["name"], p["id"])
        else:
            want = {
                k: p[k] for k in ("name", "api_endpoint", "wireguard_ip", "public_ip", "labels")
            }
            out = manager.present(
                want, node_id=p["id"], api_key=p["api_key"], update_key=p["update_key"]
            )
    except NodeError as exc:
        module.fail_json(msg=str(exc))
    except PrimaryUnreachable as exc:
        module.fail_json(msg=str(exc))
    except AuthRejected:
        module.fail_json(msg=token_rejected(p["url"]))
    except Conflict as exc:
        module.fail_json(msg=f"{exc}; the name {p['name']!r} may be taken by another node")
    except HostmeshAPIError as exc:
        module.fail_json(msg=str(exc))
    result = {"changed": out.changed, "key_updated": out.key_updated}
    if p["state"] == "present":
        result["node"] = out.node
    if module._diff:
        result["diff"] = {"before": out.before, "after": out.after}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
