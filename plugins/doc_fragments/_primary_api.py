# Private to the collection: may change without notice.
"""Connection options for the primary's API, shared by the `node` module and
the `nodes` inventory plugin."""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  url:
    description:
      - Base URL of the primary's API, for example V(http://10.231.1.11:8080) in the lab
        or V(https://hostmesh.example.org) through Traefik in production.
    type: str
    required: true
    version_added: 0.1.0
  token:
    description:
      - Admin bearer token of the primary (C(ADMIN_TOKEN) in the agent's environment).
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
