#!/usr/bin/python
# Copyright: hostmesh developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Thin Ansible front end over module_utils._dns_reconcile (the one DNS reconciler)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: cloudflare_dns
short_description: Keep one A/AAAA record per node under shared names on Cloudflare
version_added: 0.1.0
description:
  - Makes the A (and AAAA) records that this cluster owns in a Cloudflare zone equal to the
    desired set, one record per node per name, for example every node under both
    V(example.org) and V(*.example.org).
  - Ownership is an exact match on the record comment C(hostmesh:<cluster>:<node>)
    (comments, not tags, because tags need a paid plan). Records with any other comment,
    or none, are never changed or deleted, so other clusters and other tools can share the
    zone and the names.
  - An owned record is updated in place (same id) rather than deleted and created again;
    records of nodes no longer in O(nodes) are deleted.
  - Lists the zone's owned records with pagination (stopping at C(total_pages)), computes
    the difference and sends every change in one atomic C(dns_records/batch) call, so a
    refused change leaves the zone exactly as it was.
  - Runs on the controller and needs only the official C(cloudflare) Python SDK in the Python
    that runs the module (C(pip install cloudflare), or the collection's C(requirements.txt)).
  - Uses the official C(cloudflare) Python SDK; rate limits (HTTP 429) are retried
    O(max_retries) times, waiting what C(Retry-After) asks (up to 60 s each).
author:
  - hostmesh developers (@hostmesh)
requirements:
  - python >= 3.10
  - hostmesh[cloudflare] (the official C(cloudflare) SDK 4.x or 5.x)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reads the zone and reports the planned changes; sends no write request.
  diff_mode:
    support: full
    details: One line per owned record (name, type, address, ttl, proxied, owner comment).
  platform:
    support: N/A
    platforms: posix
options:
  api_token:
    description:
      - Cloudflare API token with C(Zone:Read) and C(DNS:Edit) on O(zone).
      - Read from E(CLOUDFLARE_API_TOKEN) when not set. Never logged.
    type: str
    version_added: 0.1.0
  api_base_url:
    description:
      - Base URL of the Cloudflare v4 API, for example V(http://10.231.1.1:8787/client/v4)
        for the lab's local server.
      - When not set the SDK default applies (V(https://api.cloudflare.com/client/v4)) and
        E(CLOUDFLARE_BASE_URL) is honoured.
    type: str
    version_added: 0.1.0
  zone:
    description:
      - Name of the zone (its apex), for example V(example.org); the zone id is looked up.
    type: str
    required: true
    version_added: 0.1.0
  cluster:
    description:
      - Cluster name; records carry the owner comment C(hostmesh:<cluster>:<node>).
      - No V(:) and no spaces.
    type: str
    required: true
    version_added: 0.1.0
  names:
    description:
      - Full names to publish, inside O(zone), for example V(example.org) and V(*.example.org).
      - Required with O(state=present) when O(nodes) is not empty.
    type: list
    elements: str
    default: []
    version_added: 0.1.0
  nodes:
    description:
      - Map of node name to its public addresses, each a dictionary with C(ipv4) and/or C(ipv6).
      - A node with neither is an error. Two nodes with the same address are an error
        (Cloudflare refuses identical records).
      - A node that is left out loses its records.
    type: dict
    default: {}
    version_added: 0.1.0
  ttl:
    description:
      - TTL of the records in seconds, V(1) for automatic. Proxied records always use V(1).
    type: int
    default: 300
    version_added: 0.1.0
  proxied:
    description:
      - Whether the records are proxied by Cloudflare.
    type: bool
    default: false
    version_added: 0.1.0
  state:
    description:
      - V(present) makes the owned records equal to the desired set.
      - V(absent) removes every record this cluster owns in the zone (O(names) and O(nodes)
        are ignored).
    type: str
    choices: [present, absent]
    default: present
    version_added: 0.1.0
  max_retries:
    description:
      - How many times a rate-limited (HTTP 429) or failed (5xx, connection) request is retried.
    type: int
    default: 3
    version_added: 0.1.0
  timeout:
    description:
      - Seconds to wait for each API request.
    type: float
    default: 30
    version_added: 0.1.0
notes:
  - Errors say what happened and how to fix it; the token never appears in them.
    A rejected token, a zone the token cannot see, a missing permission, a rate limit
    that outlasts the retries and a refused batch all fail the task before anything changes.
seealso:
  - name: Cloudflare batch DNS record changes
    description: How one batch call applies deletes, patches, puts and posts atomically.
    link: https://developers.cloudflare.com/dns/manage-dns-records/how-to/batch-record-changes/
"""

EXAMPLES = r"""
- name: Publish every node under the apex and the wildcard
  hostmesh.cluster.cloudflare_dns:
    api_token: "{{ cloudflare_api_token }}"
    zone: example.org
    cluster: prod
    names: [example.org, "*.example.org"]
    nodes:
      node1: {ipv4: 203.0.113.10}
      node2: {ipv4: 203.0.113.11, ipv6: "2001:db8::11"}
    ttl: 300
    proxied: false
  register: dns

- name: Use the lab's local Cloudflare API server
  hostmesh.cluster.cloudflare_dns:
    api_token: "{{ cloudflare_api_token }}"
    api_base_url: http://10.231.1.1:8787/client/v4
    zone: lab.test
    cluster: lab
    names: [lab.test, "*.lab.test"]
    nodes: "{{ ddns_nodes }}"

- name: Remove every record the cluster owns in the zone
  hostmesh.cluster.cloudflare_dns:
    zone: example.org
    cluster: prod
    state: absent
"""

RETURN = r"""
zone_id:
  description: Id of the zone.
  returned: success
  type: str
  sample: 023e105f4ecef8ad9ca31a8372d0c353
created:
  description: Records created (planned ones in check mode, without C(id)).
  returned: success
  type: list
  elements: dict
  sample:
    - {name: example.org, type: A, content: 203.0.113.10, ttl: 300, proxied: false,
       comment: "hostmesh:prod:node1", id: 372e67954025e0ba6aaa6d586b9e0b59}
updated:
  description: Records updated in place; C(before) holds the replaced name, content, ttl, proxied.
  returned: success
  type: list
  elements: dict
  sample:
    - {name: example.org, type: A, content: 203.0.113.99, ttl: 300, proxied: false,
       comment: "hostmesh:prod:node1", id: 372e67954025e0ba6aaa6d586b9e0b59,
       before: {name: example.org, content: 203.0.113.10, ttl: 300, proxied: false}}
deleted:
  description: Records deleted (only ever records this cluster owns).
  returned: success
  type: list
  elements: dict
  sample: []
records:
  description: The owned A/AAAA records after the run (as planned in check mode).
  returned: success
  type: list
  elements: dict
  sample: []
diff:
  description:
    - The owned records before and after, one line per record (C(before), C(after) and headers);
      returned also without C(--diff).
  returned: success
  type: dict
  sample:
    before: "example.org A 203.0.113.10 ttl=300 proxied=false comment=hostmesh:prod:node1\n"
    after: "example.org A 203.0.113.99 ttl=300 proxied=false comment=hostmesh:prod:node1\n"
api_calls:
  description: Requests made to the API, C(reads) and C(writes) (at most one write per run).
  returned: success
  type: dict
  sample: {reads: 2, writes: 0}
"""

import sys
import traceback

from ansible.module_utils.basic import AnsibleModule, env_fallback
from ansible_collections.hostmesh.cluster.plugins.module_utils._dns_reconcile import (
    DNSError,
    Reconciler,
    Spec,
    make_client,
)

try:
    # imported by make_client; asked for here so a missing SDK gets a clear error
    from cloudflare import Cloudflare as _Cloudflare
except ImportError:
    CLOUDFLARE_IMPORT_ERROR = traceback.format_exc()
else:
    CLOUDFLARE_IMPORT_ERROR = None
    del _Cloudflare


def main():
    module = AnsibleModule(
        argument_spec={
            "api_token": {"type": "str", "no_log": True,
                          "fallback": (env_fallback, ["CLOUDFLARE_API_TOKEN"])},
            "api_base_url": {"type": "str"},
            "zone": {"type": "str", "required": True},
            "cluster": {"type": "str", "required": True},
            "names": {"type": "list", "elements": "str", "default": []},
            "nodes": {"type": "dict", "default": {}},
            "ttl": {"type": "int", "default": 300},
            "proxied": {"type": "bool", "default": False},
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "max_retries": {"type": "int", "default": 3},
            "timeout": {"type": "float", "default": 30},
        },
        supports_check_mode=True,
    )
    if CLOUDFLARE_IMPORT_ERROR:
        module.fail_json(
            msg=f"the official Cloudflare SDK is missing in {sys.executable} (the Python running "
            "this module): install it with `pip install cloudflare` (the collection's "
            "requirements.txt), or point ansible_python_interpreter for localhost at a Python "
            "that has it",
            exception=CLOUDFLARE_IMPORT_ERROR,
        )
    params = module.params
    present = params["state"] == "present"
    spec = Spec(
        zone=params["zone"],
        cluster=params["cluster"],
        names=params["names"] if present else [],
        nodes=params["nodes"] if present else {},
        ttl=params["ttl"],
        proxied=params["proxied"],
    )
    try:
        client = make_client(params["api_token"], params["api_base_url"],
                             max_retries=params["max_retries"], timeout=params["timeout"])
        result = Reconciler(client).converge(spec, check_mode=module.check_mode)
    except DNSError as exc:
        module.fail_json(msg=str(exc), error=type(exc).__name__)
    out = {
        "changed": result.changed,
        "zone_id": result.zone_id,
        "created": result.created,
        "updated": result.updated,
        "deleted": result.deleted,
        "records": result.records,
        "api_calls": result.api_calls,
        # Always returned (no secret in it) so `register` users can read it; shown with --diff.
        "diff": result.diff,
    }
    module.exit_json(**out)


if __name__ == "__main__":
    main()
