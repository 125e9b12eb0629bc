# Private to the collection: may change without notice.
"""Connection options for the primary's API, shared by the `node` and `node_info`
modules and the `nodes` inventory plugin."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  url:
    description:
      - Base URL of the primary's API as seen from where the call runs.
      - The default, the primary's loopback address, is right for a task that runs on the
        primary itself (C(delegate_to) the first host of C(hostmesh_primary)). The admin
        token then travels only inside the SSH connection Ansible already has, and the agent
        API never needs to be reachable from outside the mesh. This is how every playbook of
        the collection calls the API.
      - A machine that is itself a WireGuard peer of the cluster can use the primary's mesh
        address, for example V(http://10.50.0.1:8080).
      - Never point it at the primary's public address over plain C(http); the agent does
        not listen there, and the token would cross the network in clear.
    type: str
    default: http://127.0.0.1:8080
    version_added: 0.1.0
  token:
    description:
      - Admin bearer token of the primary (its hash is C(ADMIN_TOKEN_SHA256) in the agent's
        environment); read it with M(hostmesh.cluster.secret) (C(name=admin_token)).
      - Read from E(HOSTMESH_ADMIN_TOKEN) when not set. Never logged.
    type: str
    version_added: 0.1.0
  validate_certs:
    description:
      - Verify the primary's TLS certificate when O(url) is C(https).
    type: bool
    default: true
    version_added: 0.1.0
  ca_path:
    description:
      - PEM file of the CA that signed the primary's certificate.
    type: path
    version_added: 0.1.0
  timeout:
    description:
      - Seconds to wait for the primary before giving up, so an unreachable primary
        never hangs a run.
    type: float
    default: 5
    version_added: 0.1.0
"""
