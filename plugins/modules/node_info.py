#!/usr/bin/python
# Copyright: hostmesh developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""hostmesh.cluster.node_info: read the primary's node registry and health (read-only)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: node_info
short_description: Read the nodes a hostmesh primary knows, and an agent's health
version_added: 0.1.0
description:
  - Reads the primary's registry with the admin token (C(GET /api/nodes), or
    C(GET /api/nodes/{id}) for O(id)) and returns every node, or the one node asked for
    by O(name) or O(id), with its status (C(online), C(offline), C(unreachable)), mesh
    address and when it was last heard of.
  - With V(health) in O(gather_subset), also returns the unauthenticated
    C(GET /api/health) answer of the agent at O(url) (any node's agent, not only the
    primary's); V(health) alone needs no token.
  - Read-only; never reports a change. Node records never carry a key, even when a
    primary sends one (fields such as C(api_key) or C(*_hash) are dropped).
  - Run it on the primary (C(delegate_to)) against its loopback address, the default
    O(url), so that the admin token stays inside Ansible's SSH connection.
  - Needs nothing but C(ansible-core) and the node's Python; the API client ships in
    this collection's C(module_utils).
author:
  - hostmesh developers (@hostmesh)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - hostmesh.cluster._primary_api
attributes:
  check_mode:
    support: full
    details: Only reads, so it does the same in check mode.
  diff_mode:
    support: N/A
    details: Changes nothing, so there is nothing to diff.
  platform:
    support: full
    platforms: posix
options:
  name:
    description:
      - Return only the node with this name (C(NODE_NAME), the host's inventory name)
        in RV(node). Mutually exclusive with O(id).
    type: str
    version_added: 0.1.0
  id:
    description:
      - Return only the node with this id (C(NODE_ID)) in RV(node). Mutually exclusive
        with O(name).
    type: str
    version_added: 0.1.0
  gather_subset:
    description:
      - What to read. V(nodes) is the registry (admin token required); V(health) is the
        agent's C(/api/health) (no token).
    type: list
    elements: str
    choices: [nodes, health]
    default: [nodes]
    version_added: 0.1.0
notes:
  - The admin token comes from O(token) or E(HOSTMESH_ADMIN_TOKEN); read it with
    M(hostmesh.cluster.secret) (C(name=admin_token)) and keep C(no_log) on the task.
  - To wait for a condition, use C(until) with C(retries); an agent that does not
    answer is a failure of the task, so C(until) with the test C(succeeded) waits for it.
seealso:
  - module: hostmesh.cluster.node
  - module: hostmesh.cluster.secret
  - plugin: hostmesh.cluster.nodes
    plugin_type: inventory
"""

EXAMPLES = r"""
- name: Read the admin token on the controller
  hostmesh.cluster.secret:
    name: admin_token
  register: __admin_token
  run_once: true
  no_log: true

- name: List every node, on the primary against its loopback address
  hostmesh.cluster.node_info:
    token: "{{ __admin_token.value }}"
  register: __cluster
  delegate_to: "{{ groups['hostmesh_primary'][0] }}"
  run_once: true

- name: Show who is offline
  ansible.builtin.debug:
    msg: "{{ __cluster.nodes | rejectattr('status', 'equalto', 'online') | map(attribute='name') }}"
  run_once: true

- name: Wait until node2 is online
  hostmesh.cluster.node_info:
    token: "{{ __admin_token.value }}"
    name: node2
  register: __node2
  until: __node2.node is not none and __node2.node.status == 'online'
  retries: 30
  delay: 1
  delegate_to: "{{ groups['hostmesh_primary'][0] }}"

- name: Wait until this node's own agent answers (no token needed)
  hostmesh.cluster.node_info:
    gather_subset: [health]
  register: __health
  until: __health is succeeded
  retries: 30
  delay: 1
"""

RETURN = r"""
nodes:
  description:
    - The nodes, sorted by name; only the one asked for (or none) with O(name) or O(id).
    - Never carries a key.
  returned: V(nodes) in O(gather_subset)
  type: list
  elements: dict
  sample:
    - id: 0b8e6f2a-51c4-5f43-9d0c-1d2e3f4a5b6c
      name: node1
      api_endpoint: http://10.50.0.1:8080
      is_primary: true
      status: online
      wireguard_ip: 10.50.0.1
      public_ip: 203.0.113.10
      last_seen: "2026-12-01T02:00:00Z"
      consecutive_failures: 0
      labels: {}
      version: 0.1.0
node:
  description: The node asked for by O(name) or O(id), or V(null) when the primary knows no such node.
  returned: V(nodes) in O(gather_subset) and O(name) or O(id) given
  type: dict
health:
  description: The agent's C(/api/health) answer.
  returned: V(health) in O(gather_subset)
  type: dict
  sample:
    status: healthy
    service: hostmesh
    role: primary
    node_id: 0b8e6f2a-51c4-5f43-9d0c-1d2e3f4a5b6c
    version: 0.1.0
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.hostmesh.cluster.plugins.module_utils._agent_client import (
    AgentClient,
    AuthRejected,
    Credentials,
    HostmeshAPIError,
    PrimaryUnreachable,
)
from ansible_collections.hostmesh.cluster.plugins.module_utils._node import (
    admin_token,
    connection_argument_spec,
    make_client,
    node_info,
    token_rejected,
)


def argument_spec() -> dict:
    return {
        **connection_argument_spec(),
        "name": {"type": "str"},
        "id": {"type": "str"},
        "gather_subset": {
            "type": "list",
            "elements": "str",
            "choices": ["nodes", "health"],
            "default": ["nodes"],
        },
    }


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        mutually_exclusive=[("name", "id")],
        supports_check_mode=True,
    )
    p = module.params
    subset = set(p["gather_subset"])
    if not subset:
        module.fail_json(msg="gather_subset is empty: ask for nodes, health or both")
    if (p["name"] or p["id"]) and "nodes" not in subset:
        module.fail_json(msg="name and id select from the node list: add nodes to gather_subset")
    token = admin_token(p)
    if token:
        module.no_log_values.add(token)
    if "nodes" in subset and not token:
        module.fail_json(
            msg="no admin token: set token (hostmesh.cluster.secret name=admin_token) or the "
            "HOSTMESH_ADMIN_TOKEN environment variable; gather_subset=[health] needs none"
        )
    result = {"changed": False}
    try:
        client = make_client(AgentClient, Credentials, p, token)
        if "health" in subset:
            # /api/health is public: never send the token where it is not needed
            result["health"] = make_client(AgentClient, Credentials, p, None).health()
        if "nodes" in subset:
            result.update(node_info(client, name=p["name"], node_id=p["id"]))
    except PrimaryUnreachable as exc:
        module.fail_json(msg=str(exc), unreachable_url=p["url"])
    except AuthRejected:
        module.fail_json(msg=token_rejected(p["url"]))
    except HostmeshAPIError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
