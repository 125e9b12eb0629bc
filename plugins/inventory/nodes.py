# Copyright: (c) 2026, hostmesh developers
# Apache License 2.0 (see LICENSE)
"""Dynamic inventory of hostmesh nodes, read from the primary's API."""

from __future__ import annotations

DOCUMENTATION = r"""
name: nodes
short_description: Cluster nodes and their health, from the hostmesh primary's API
version_added: 0.1.0
author:
  - hostmesh developers (@hostmesh)
description:
  - Asks the primary agent of a hostmesh cluster (C(GET /api/nodes)) which nodes exist and how
    healthy they are, and turns the answer into an inventory.
  - Every node becomes a host named after the node's C(name) (the agent's C(NODE_NAME), which
    Ansible sets to C(inventory_hostname)), so the dynamic and the static inventory name hosts alike.
  - "Groups: V(hostmesh_online), V(hostmesh_offline), V(hostmesh_unreachable) (from the node's
    C(status)), V(hostmesh_primary) and V(hostmesh_secondary) (both children of V(hostmesh_nodes)),
    one group per label, named O(label_group_prefix) + the label, and one group per app a node
    reports, named O(app_group_prefix) + the app."
  - "Apps: each node reports the containers of its hostmesh apps (C(hostmesh.cluster.apps)) with
    its heartbeats. C(hostmesh_apps) is that list, one item per container with C(name) (the
    app), C(container), C(image), C(state) (Docker's: V(running), V(exited), ...) and
    C(health) (V(healthy), V(unhealthy), V(starting) or V(none)); empty when the node runs none
    or has not reported. A node is in the group of every app it has a container of, whatever
    the container's state (the state is in C(hostmesh_apps))."
  - "Host variables: every field of the API's node record, prefixed with C(hostmesh_):
    C(hostmesh_node_id), C(hostmesh_name), C(hostmesh_status), C(hostmesh_is_primary),
    C(hostmesh_api_endpoint), C(hostmesh_last_seen), C(hostmesh_consecutive_failures),
    C(hostmesh_last_health_check), C(hostmesh_wireguard_ip), C(hostmesh_public_ip),
    C(hostmesh_labels) (always a list), C(hostmesh_version), C(hostmesh_created_at),
    C(hostmesh_updated_at), C(hostmesh_stats) (the node's CPU, memory and disk from its last
    heartbeat, see docs/inventory.md), C(hostmesh_stats_at), C(hostmesh_apps) (the node's app
    containers, always a list, see below) and C(hostmesh_apps_at). Fields that look like secrets
    (C(api_key), C(private_key), C(token), C(secret), C(password), C(*_hash)) are dropped,
    even if a primary sends them (a Selfhostly primary sends each node's C(api_key))."
  - Also reads the C(/api/nodes) answer of a Selfhostly primary (same field names, no WireGuard
    address and no labels); its nodes get C(ansible_host) from their C(api_endpoint).
  - Every value that comes from the API is marked unsafe, so node names or labels can never
    inject templates.
  - Needs nothing but C(ansible-core). The API client ships in this collection's C(module_utils).
  - The configuration file must end in C(.hostmesh.yml) or C(.hostmesh.yaml).
extends_documentation_fragment:
  - hostmesh.cluster._primary_api
  - ansible.builtin.constructed
  - ansible.builtin.inventory_cache
options:
  plugin:
    description:
      - The name of this plugin; it must always be V(hostmesh.cluster.nodes) to use this plugin.
    type: str
    required: true
    choices: [hostmesh.cluster.nodes]
    version_added: 0.1.0
  url:
    description:
      - Base URL of the primary's API.
      - With O(ssh_host), the API's address as the primary itself sees it; empty means its
        loopback address V(http://127.0.0.1:8080).
      - Without O(ssh_host), an address this machine reaches on its own; the agent's API listens
        only on the mesh and on loopback, so that is the primary's mesh address
        (V(http://10.50.0.1:8080)) from a controller that is a WireGuard peer, or the loopback
        address when the inventory is read on the primary itself.
    type: str
    default: ""
    version_added: 0.1.0
  ssh_host:
    description:
      - Reach the primary's API through an SSH tunnel to this host (the primary's address or a
        C(Host) of your SSH configuration). The supported way to read the inventory from a
        controller outside the mesh; it needs no root and no port of the primary but SSH.
      - The plugin runs this machine's C(ssh) as the current user,
        C(ssh -N -L 127.0.0.1:<free port>:<api host>:<api port> [user@]ssh_host), with your own
        SSH configuration (keys, agent, C(ProxyJump), C(known_hosts)), waits until the API
        answers through it, reads the node list and always closes it.
      - Always C(BatchMode=yes), C(ExitOnForwardFailure=yes) and C(StrictHostKeyChecking=yes),
        so record the primary's host key in your C(known_hosts) first. A host key that changed or a
        refused login stops with C(ssh failed) and ssh's own words.
    type: str
    env:
      - name: HOSTMESH_SSH_HOST
    version_added: 0.1.0
  ssh_user:
    description:
      - User to log in as on O(ssh_host); default the one of your SSH configuration.
    type: str
    env:
      - name: HOSTMESH_SSH_USER
    version_added: 0.1.0
  ssh_port:
    description:
      - SSH port of O(ssh_host); default the one of your SSH configuration (22).
    type: int
    version_added: 0.1.0
  ssh_args:
    description:
      - Extra arguments for C(ssh), split like a shell would, for example
        V(-i ~/.ssh/hostmesh -o UserKnownHostsFile=inventory/prod/.hostmesh/known_hosts).
      - Arguments that would turn host key checking off (C(StrictHostKeyChecking) other than
        V(yes)) or detach ssh from the plugin (C(-f)) are refused.
    type: str
    env:
      - name: HOSTMESH_SSH_ARGS
    version_added: 0.1.0
  token:
    description:
      - Admin bearer token of the primary (C(ADMIN_TOKEN) in the agent's environment).
      - Read from E(HOSTMESH_ADMIN_TOKEN) when not set in the configuration file.
      - May be a vault-encrypted value or a template, for example
        V({{ lookup('ansible.builtin.file', '.hostmesh/secrets/admin_token') }}).
      - Never written to any message, log, cache or C(-vvv) output.
      - Takes precedence over O(node_id) and O(node_api_key). With neither, no credentials are
        sent (a Selfhostly primary with C(AUTH_ENABLED=false)).
    type: str
    env:
      - name: HOSTMESH_ADMIN_TOKEN
    version_added: 0.1.0
  node_id:
    description:
      - Authenticate as a node instead of as the admin, with O(node_id) and O(node_api_key)
        (sent as the C(X-Node-ID) and C(X-Node-API-Key) headers, which a Selfhostly primary
        accepts). Both or neither must be set.
    type: str
    env:
      - name: HOSTMESH_NODE_ID
    version_added: 0.1.0
  node_api_key:
    description:
      - The node's API key, see O(node_id). May be vault-encrypted or templated. Never logged.
    type: str
    env:
      - name: HOSTMESH_NODE_API_KEY
    version_added: 0.1.0
  ansible_host_source:
    description:
      - Which field of the node record becomes C(ansible_host).
      - V(wireguard_ip) is the node's mesh address (for a controller that is a WireGuard peer).
      - V(api_endpoint) is the host part of the node's C(api_endpoint) URL.
      - V(public_ip) is the node's public address.
      - V(name) sets no C(ansible_host), so Ansible connects to the node's name.
      - When the chosen field is empty (a Selfhostly primary has no C(wireguard_ip)), the host
        part of C(api_endpoint) is used, and when that is empty too, the name.
    type: str
    default: wireguard_ip
    choices: [wireguard_ip, api_endpoint, public_ip, name]
    version_added: 0.1.0
  statuses:
    description:
      - Only nodes whose C(status) is in this list become hosts.
      - The empty default keeps every node, whatever its status.
    type: list
    elements: str
    default: []
    version_added: 0.1.0
  label_group_prefix:
    description:
      - "Prefix of the group made for each label. A label V(gpu) (or V(gpu=true), as in the
        agent's C(NODE_LABELS=gpu=true,zone=eu)) gives the group V(hostmesh_label_gpu); the label
        V(zone=eu) gives V(hostmesh_label_zone_eu). Characters not allowed in group names become
        V(_)."
      - "Must not be empty (letters, digits and V(_)): nodes choose their labels, and a group
        made from a label never takes the name of a group this plugin makes or of a host."
    type: str
    default: hostmesh_label_
    version_added: 0.1.0
  app_group_prefix:
    description:
      - "Prefix of the group made for each app. The app V(whoami) gives V(hostmesh_app_whoami);
        V(my-app.v2) gives V(hostmesh_app_my_app_v2) (characters not allowed in group names
        become V(_))."
      - "Must not be empty (letters, digits and V(_)): nodes report their apps, and a group
        made from an app never takes the name of a group this plugin makes or of a host. Apps
        are what nodes say they run: do not hand secrets out by these groups."
    type: str
    default: hostmesh_app_
    version_added: 0.1.0
  filters:
    description:
      - A list of include/exclude filters that select the hosts of this inventory, as in
        community.docker's inventory plugins.
      - Filters are evaluated in order until one O(filters[].include) or O(filters[].exclude)
        condition matches; the host is then included or excluded. When none matches, the host is
        included.
      - Conditions see C(inventory_hostname) and the C(hostmesh_*) variables of the host.
    type: list
    elements: dict
    default: []
    version_added: 0.1.0
    suboptions:
      include:
        description:
          - A Jinja2 condition. If it matches for a host, that host is B(included).
          - Exactly one of O(filters[].include) and O(filters[].exclude) per entry.
        type: str
      exclude:
        description:
          - A Jinja2 condition. If it matches for a host, that host is B(excluded).
          - Exactly one of O(filters[].include) and O(filters[].exclude) per entry.
        type: str
notes:
  - With O(cache) enabled, the node list is cached under a key made of the URL (never of the
    credentials); the cache holds no secret. When the primary cannot be reached but a cached
    node list is still valid, that list is used and a warning says so.
  - An unreachable primary fails fast (O(timeout)); the error names the URL and the cause.
  - A node record that cannot become a host is skipped with a warning, never failing the whole
    inventory - a record that is not an object or has no name, a name that is not a host name,
    a name that is a group name (V(all), V(ungrouped), V(hostmesh_*), the label groups) or
    localhost, an address that is not one, or a name already used ignoring case.
seealso:
  - name: hostmesh design
    description: The agent's HTTP API and the inventory contract.
    link: https://example.invalid/hostmesh/cluster
"""

EXAMPLES = r"""
---
# inventory/prod.hostmesh.yml -- from a controller outside the mesh: an SSH tunnel
# to the primary (your own SSH config and known_hosts), the API on its loopback
plugin: hostmesh.cluster.nodes
ssh_host: node1.example.org
ssh_user: admin
token: "{{ lookup('ansible.builtin.file', 'inventory/prod/.hostmesh/secrets/admin_token') }}"
ansible_host_source: public_ip
---
# from a controller that is itself a WireGuard peer of the cluster: the mesh
plugin: hostmesh.cluster.nodes
url: http://10.50.0.1:8080
# token from the environment: export HOSTMESH_ADMIN_TOKEN=...
---
# The lab (make demo writes this file): only the healthy nodes, at their public
# address; the tunnel uses the lab's key and known_hosts; the token is read from
# the controller-side secret store written by the hostmesh.cluster.secret module
plugin: hostmesh.cluster.nodes
ssh_host: 10.231.1.11
ssh_user: admin
ssh_args: -i inventory/lab/.hostmesh/ssh/id_ed25519 -o UserKnownHostsFile=inventory/lab/.hostmesh/ssh/known_hosts
token: "{{ lookup('ansible.builtin.file', 'inventory/lab/.hostmesh/secrets/admin_token') }}"
statuses: [online]
ansible_host_source: public_ip
---
# Read-only access with a node's own credentials (also works against Selfhostly)
plugin: hostmesh.cluster.nodes
url: http://10.50.0.1:8080
node_id: 7f9c2b4e-0d1a-4c55-9a57-3c1e2f0b8d61
node_api_key: !vault |
  $ANSIBLE_VAULT;1.1;AES256
  6638...
---
# Constructed groups and variables, filters and a cache
plugin: hostmesh.cluster.nodes
ssh_host: node1.example.org
filters:
  - exclude: "'maintenance' in hostmesh_labels"
  - include: true
compose:
  ansible_user: "'debian'"
  flaky: hostmesh_consecutive_failures > 0
groups:
  flaky_nodes: hostmesh_consecutive_failures > 0
keyed_groups:
  - key: hostmesh_version
    prefix: agent_version
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/hostmesh-inventory
cache_timeout: 300
"""

import re
import urllib.parse
from collections.abc import Mapping

from ansible.errors import AnsibleError, AnsibleParserError
from ansible.module_utils.common.text.converters import to_native
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible.utils.display import Display
from ansible.utils.unsafe_proxy import wrap_var
from ansible_collections.hostmesh.cluster.plugins.module_utils._agent_client import (
    AgentClient,
    AuthRejected,
    BadResponse,
    Credentials,
    HostmeshAPIError,
    PrimaryUnreachable,
)
from ansible_collections.hostmesh.cluster.plugins.plugin_utils._ssh_tunnel import (
    TunnelError,
    ssh_tunnel,
)

display = Display()

STATUS_GROUPS = ("hostmesh_online", "hostmesh_offline", "hostmesh_unreachable")
ROLE_GROUPS = ("hostmesh_primary", "hostmesh_secondary")
PARENT_GROUP = "hostmesh_nodes"
# A field whose name matches this is never exposed as a host variable or cached
# (a Selfhostly primary, for one, sends each node's api_key in its node list).
_SECRET_FIELD = re.compile(
    r"(^|_)(api_?key|private_?key|key_hash|token|secret|password|passwd)(_|$)|(^|_)hash$",
    re.IGNORECASE,
)
_GROUP_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
_FILTER_KEYS = ("include", "exclude")
_HOST_CHARS = re.compile(r"[A-Za-z0-9._:%-]+")  # fullmatch: `$` would let "\n" through


def make_unsafe(value):
    """Mark every string inside `value` unsafe, recursively (no templating of API data)."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return {make_unsafe(k): make_unsafe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return type(value)(make_unsafe(v) for v in value)
    if isinstance(value, (str, bytes)):
        return wrap_var(value)
    return value


def redact_url(url: str) -> str:
    """The URL without any user:password part, for messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def endpoint_host(endpoint) -> str | None:
    """Host part of an api_endpoint such as http://10.0.0.5:8080 (or a bare host:port)."""
    if not endpoint or not isinstance(endpoint, str):
        return None
    text = endpoint.strip()
    if "://" not in text:
        text = "//" + text
    try:
        host = urllib.parse.urlsplit(text).hostname
    except ValueError:
        return None
    if not host or not _HOST_CHARS.fullmatch(host):
        return None
    return host


def normalize_labels(labels) -> list[str]:
    """Labels as a flat list of group-name parts, whatever shape the primary used.

    A mapping (hostmesh: {"gpu": "true", "zone": "eu"}) gives "gpu" and
    "zone_eu" (a true/empty value gives the bare key); a list of strings stays as
    it is; a comma-separated string is split; anything else gives no label.
    """
    if labels is None or labels == "":
        return []
    if isinstance(labels, str):
        return [part.strip() for part in labels.split(",") if part.strip()]
    if isinstance(labels, Mapping):
        out = []
        for key, value in labels.items():
            bare = value in (None, "", True) or str(value).lower() == "true"
            out.append(str(key) if bare else f"{key}_{value}")
        return out
    if isinstance(labels, (list, tuple)):
        return [str(item) for item in labels if item not in (None, "")]
    return []


_APP_KEYS = ("name", "container", "image", "state", "health")
_APP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")  # the agent's rule; fullmatch


def normalize_apps(apps) -> list[dict]:
    """A node's app containers as a list of {name, container, image, state, health}.

    Anything else the primary sends (not a list, an item without a valid app name) is
    left out; values are kept as strings or None, other keys dropped.
    """
    if not isinstance(apps, (list, tuple)):
        return []
    out = []
    for item in apps:
        if not isinstance(item, Mapping):
            continue
        name = item.get("name")
        if not isinstance(name, str) or not _APP_NAME.fullmatch(name):
            continue
        out.append({key: (item.get(key) if isinstance(item.get(key), str) else None)
                    for key in _APP_KEYS})
    return out


def parse_filters(filters) -> list[dict]:
    """Validate the `filters` option: a list of one-key {include|exclude: condition} dicts."""
    result = []
    for index, entry in enumerate(filters or [], start=1):
        if not isinstance(entry, Mapping):
            raise AnsibleError(
                f"filters[{index}] must be a mapping such as "
                "{include: \"hostmesh_status == 'online'\"}, not " + type(entry).__name__
            )
        entry = {k: v for k, v in entry.items() if k not in _FILTER_KEYS or v is not None}
        if len(entry) != 1 or next(iter(entry)) not in _FILTER_KEYS:
            raise AnsibleError(
                f"filters[{index}] must have exactly one key, include or exclude; "
                f"got {sorted(map(str, entry)) or 'none'}"
            )
        key, value = next(iter(entry.items()))
        if not isinstance(value, (str, bool)):
            raise AnsibleError(
                f"filters[{index}].{key} must be a Jinja2 condition (string) or a boolean, "
                f"not {type(value).__name__}"
            )
        result.append({key: value})
    return result


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    """hostmesh.cluster.nodes: one host per node the primary knows."""

    NAME = "hostmesh.cluster.nodes"

    # -- entry points ----------------------------------------------------

    def verify_file(self, path):
        """Accept only *.hostmesh.yml / *.hostmesh.yaml files."""
        return super().verify_file(path) and path.endswith((".hostmesh.yml", ".hostmesh.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        client = self._create_client()
        self._populate(client, cache=cache)

    # -- client ----------------------------------------------------------

    def _secret_option(self, name):
        """An option that may be a template or a vault value; '' and None mean unset."""
        value = self.get_option(name)
        if value is None:
            return None
        try:
            if isinstance(value, str) and self.templar.is_possibly_template(value):
                value = self.templar.template(value)
        except Exception as exc:  # noqa: BLE001 - any templating failure; never echo the value
            raise AnsibleParserError(
                f"could not template the {name} option of {self.NAME}: "
                f"{type(exc).__name__}; check the expression (its value is not shown)"
            ) from None
        value = to_native(value).strip() if value is not None else ""
        return value or None

    def _create_client(self):
        """Build the one API client (module_utils._agent_client.AgentClient) from the options."""
        url = self._secret_option("url")
        ssh_host = self._secret_option("ssh_host")
        if ssh_host:
            url = url or "http://127.0.0.1:8080"
            if not url.startswith("http://"):
                raise AnsibleParserError(
                    f"{self.NAME}: with ssh_host the url is the API's plain http address as the "
                    f"primary sees it (the tunnel encrypts), for example http://127.0.0.1:8080; "
                    f"got {redact_url(url)}"
                )
        if not url:
            raise AnsibleParserError(
                f"{self.NAME}: the url option is required without ssh_host: set ssh_host to "
                "reach the primary through an SSH tunnel (ssh_host: <primary>), or url to its "
                "mesh address from a WireGuard peer (url: http://10.50.0.1:8080)"
            )
        token = self._secret_option("token")
        node_id = self._secret_option("node_id")
        node_api_key = self._secret_option("node_api_key")
        if not token and bool(node_id) != bool(node_api_key):
            missing = "node_api_key" if node_id else "node_id"
            raise AnsibleParserError(
                f"{self.NAME}: node_id and node_api_key go together; {missing} is missing "
                "(or set token for admin access)"
            )
        credentials = Credentials(
            admin_token=token,
            node_id=None if token else node_id,
            node_api_key=None if token else node_api_key,
        )
        timeout = self.get_option("timeout")
        try:
            timeout = float(timeout)
        except (TypeError, ValueError):
            raise AnsibleParserError(
                f"{self.NAME}: timeout must be a number of seconds, got {timeout!r}"
            ) from None
        if timeout <= 0:
            raise AnsibleParserError(f"{self.NAME}: timeout must be > 0 seconds, got {timeout}")
        try:
            return AgentClient(
                url,
                credentials,
                timeout=timeout,
                validate_certs=boolean(self.get_option("validate_certs")),
                ca_path=self.get_option("ca_path"),
            )
        except HostmeshAPIError as exc:
            raise AnsibleParserError(f"{self.NAME}: {exc}") from None
        except (OSError, ValueError) as exc:  # ca_path unreadable, bad PEM
            raise AnsibleParserError(
                f"{self.NAME}: cannot set up TLS for {redact_url(url)}: {exc}; check ca_path"
            ) from None

    # -- fetching (with cache) ---------------------------------------------

    def _fetch_nodes(self, client) -> list[dict]:
        """GET /api/nodes, through an SSH tunnel when ssh_host is set."""
        ssh_host = self._secret_option("ssh_host")
        if not ssh_host:
            return self._fetch_nodes_direct(client)
        api = urllib.parse.urlsplit(client.url)
        ssh_port = self.get_option("ssh_port")
        try:
            with ssh_tunnel(
                ssh_host,
                user=self._secret_option("ssh_user"),
                port=int(ssh_port) if ssh_port else None,
                ssh_args=self._secret_option("ssh_args"),
                remote_host=api.hostname or "127.0.0.1",
                remote_port=api.port or 80,
                timeout=client.timeout,
                probe=lambda port: AgentClient(f"http://127.0.0.1:{port}", timeout=2).health(),
            ) as local_port:
                remote_url, client.url = client.url, f"http://127.0.0.1:{local_port}"
                try:
                    return self._fetch_nodes_direct(client, where=f"{remote_url} via {ssh_host}")
                finally:
                    client.url = remote_url
        except TunnelError as exc:
            if exc.unreachable:
                raise _Unreachable(f"{self.NAME}: {exc}") from None
            raise AnsibleError(f"{self.NAME}: {exc}") from None

    def _fetch_nodes_direct(self, client, where=None) -> list[dict]:
        """GET /api/nodes through the client, as AnsibleErrors that say what to do."""
        url = where or redact_url(getattr(client, "url", self.get_option("url") or ""))
        try:
            nodes = client.list_nodes()
        except PrimaryUnreachable as exc:
            raise _Unreachable(
                f"{self.NAME}: the primary's API at {url} is unreachable: {_cause(exc, url)}. "
                "Check that the agent runs there, that this machine can reach its address, "
                "or raise the timeout option."
            ) from None
        except AuthRejected as exc:
            creds = getattr(client, "credentials", None)
            if creds is not None and not creds.admin_token and creds.node_id:
                raise AnsibleError(
                    f"{self.NAME}: node credentials (node_id/node_api_key) rejected by the "
                    f"primary at {url} (HTTP {exc.status}); a hostmesh primary lists nodes only "
                    "for the admin: set the token option or HOSTMESH_ADMIN_TOKEN instead"
                ) from None
            given = "" if creds is None or creds.admin_token else " (no token was set)"
            raise AnsibleError(
                f"{self.NAME}: admin token rejected by the primary at {url} "
                f"(HTTP {exc.status}){given}; set the token option or HOSTMESH_ADMIN_TOKEN to "
                "the primary's ADMIN_TOKEN"
            ) from None
        except BadResponse as exc:
            raise AnsibleParserError(
                f"{self.NAME}: could not parse the answer of {url}/api/nodes: {exc}"
            ) from None
        except HostmeshAPIError as exc:
            raise AnsibleError(f"{self.NAME}: GET {url}/api/nodes failed: {exc}") from None
        return [_strip_secrets(node) for node in nodes]

    def _populate(self, client, cache=True):
        """Fill the inventory from the primary (or the cache), then build groups and vars."""
        use_cache = bool(self.get_option("cache"))
        cache_key = self.get_cache_key(
            redact_url(self.get_option("url") or "")
            + (f"@ssh:{self._secret_option('ssh_host')}" if self.get_option("ssh_host") else "")
        )
        nodes = None
        update_cache = False
        if use_cache and cache:
            try:
                nodes = self._cache[cache_key]
            except KeyError:
                update_cache = True
        elif use_cache:
            update_cache = True  # --flush-cache / refresh: ask the primary, then rewrite
        if nodes is None:
            try:
                nodes = self._fetch_nodes(client)
            except _Unreachable as exc:
                stale = self._cached_copy(cache_key) if use_cache else None
                if stale is None:
                    raise AnsibleError(str(exc)) from None
                display.warning(f"{exc} Using the cached node list instead; it may be stale.")
                nodes, update_cache = stale, False
        if update_cache:
            self._cache[cache_key] = nodes
        self._add_nodes(nodes)

    def _cached_copy(self, cache_key):
        try:
            return self._cache[cache_key]
        except KeyError:
            return None
        except Exception as exc:  # noqa: BLE001 - a broken cache must not hide the real error
            display.vvv(f"{self.NAME}: cannot read the cache: {exc}")
            return None

    # -- building the inventory --------------------------------------------

    def _add_nodes(self, nodes) -> None:
        if not isinstance(nodes, list):
            raise AnsibleParserError(
                f"{self.NAME}: expected a list of nodes, got {type(nodes).__name__}"
            )
        strict = self.get_option("strict")
        filters = parse_filters(self.get_option("filters"))
        statuses = [str(s).strip().lower() for s in (self.get_option("statuses") or [])]
        host_source = self.get_option("ansible_host_source")
        label_prefix = self.get_option("label_group_prefix") or ""
        app_prefix = self.get_option("app_group_prefix") or ""
        # Nodes choose their labels and report their apps: without a prefix a hostile
        # node could join any group (hostmesh_primary, or a group of another inventory).
        for option, prefix in (("label_group_prefix", label_prefix), ("app_group_prefix", app_prefix)):
            if not _GROUP_PREFIX.fullmatch(prefix):
                raise AnsibleParserError(
                    f"{self.NAME}: {option} {prefix!r} must be a non-empty prefix of letters, "
                    "digits and '_' (the default is fine): the groups it makes are named after "
                    "what each node reports, so without a prefix a node could put itself in "
                    "any group, hostmesh_primary included"
                )

        self.inventory.add_group(PARENT_GROUP)
        for group in STATUS_GROUPS + ROLE_GROUPS:
            self.inventory.add_group(group)
        for group in ROLE_GROUPS:
            self.inventory.add_child(PARENT_GROUP, group)

        seen: dict[str, str] = {}
        for index, node in enumerate(nodes):
            # one bad record (a hostile or broken primary's) is skipped with a warning;
            # it never fails the whole inventory
            problem = _record_problem(node, label_prefix, app_prefix)
            if problem is None:
                ansible_host = self._ansible_host(node, host_source)
                if ansible_host and not _valid_host(ansible_host):
                    problem = f"its {host_source} {_shown(ansible_host)} is not an address"
            if problem is not None:
                display.warning(f"{self.NAME}: skipping node #{index} of the primary's "
                                f"answer: {problem}")
                continue
            hostvars = self._hostvars(node, index)
            label_groups = hostvars.pop("_label_groups")
            app_groups = hostvars.pop("_app_groups")
            name = hostvars["hostmesh_name"]
            status = hostvars["hostmesh_status"]
            if statuses and status not in statuses:
                continue
            if name.lower() in seen:
                display.warning(
                    f"{self.NAME}: two nodes are named {name!r} (ids {seen[name.lower()]} and "
                    f"{hostvars['hostmesh_node_id']}; names are compared ignoring case); "
                    "keeping the first"
                )
                continue
            if name.lower() in {g.lower() for g in self.inventory.groups}:
                display.warning(f"{self.NAME}: skipping node {name!r}: a group has that name")
                continue
            if not self._filter_host(name, hostvars, filters):
                continue
            seen[name.lower()] = hostvars["hostmesh_node_id"]

            self.inventory.add_host(name)
            for key, value in hostvars.items():
                self.inventory.set_variable(name, key, value)
            if ansible_host:
                self.inventory.set_variable(name, "ansible_host", make_unsafe(ansible_host))

            status_group = "hostmesh_" + _GROUP_UNSAFE.sub("_", status or "unknown")
            self.inventory.add_group(status_group)
            self.inventory.add_child(status_group, name)
            role_group = (
                "hostmesh_primary" if hostvars["hostmesh_is_primary"] else "hostmesh_secondary"
            )
            self.inventory.add_child(role_group, name)
            reported = [label_prefix + _GROUP_UNSAFE.sub("_", label) for label in label_groups]
            reported += [app_prefix + _GROUP_UNSAFE.sub("_", app) for app in app_groups]
            for group in reported:
                # what a node reports never puts it in a group the inventory itself makes
                if group.lower() in _RESERVED or group.lower() == status_group.lower() \
                        or group.lower() in {h.lower() for h in self.inventory.hosts}:
                    display.warning(f"{self.NAME}: node {name!r}: not adding it to group "
                                    f"{group!r}, made from what it reports: that name is taken")
                    continue
                self.inventory.add_group(group)
                self.inventory.add_child(group, name)

            facts = dict(hostvars)
            if ansible_host:
                facts["ansible_host"] = make_unsafe(ansible_host)
            self._set_composite_vars(self.get_option("compose"), facts, name, strict=strict)
            self._add_host_to_composed_groups(self.get_option("groups"), facts, name, strict=strict)
            self._add_host_to_keyed_groups(
                self.get_option("keyed_groups"), facts, name, strict=strict
            )

    def _hostvars(self, node: Mapping, index: int) -> dict:
        """hostmesh_* variables of one node, every value marked unsafe."""
        node_id = node.get("id")
        name = node.get("name") or node_id
        if not name or not isinstance(name, str):
            raise AnsibleParserError(
                f"{self.NAME}: node #{index} of the primary's answer has neither a name nor "
                f"an id (keys: {sorted(map(str, node))})"
            )
        out = {}
        for key, value in node.items():
            key = str(key)
            if _SECRET_FIELD.search(key):
                continue
            var = "hostmesh_node_id" if key == "id" else "hostmesh_" + _GROUP_UNSAFE.sub("_", key)
            out[var] = value
        out["hostmesh_node_id"] = node_id
        out["hostmesh_name"] = name
        status = node.get("status")
        out["hostmesh_status"] = status.strip().lower() if isinstance(status, str) else "unknown"
        out["hostmesh_is_primary"] = _as_bool(node.get("is_primary"))
        failures = node.get("consecutive_failures")
        out["hostmesh_consecutive_failures"] = failures if isinstance(failures, int) else 0
        labels = node.get("labels")
        out["hostmesh_labels"] = labels if isinstance(labels, (Mapping, list)) else {}
        out["_label_groups"] = normalize_labels(labels)
        out["hostmesh_apps"] = normalize_apps(node.get("apps"))
        out["_app_groups"] = sorted({app["name"] for app in out["hostmesh_apps"]})
        return make_unsafe(out)

    @staticmethod
    def _ansible_host(node: Mapping, source: str) -> str | None:
        if source == "name":
            return None
        if source == "api_endpoint":
            value = endpoint_host(node.get("api_endpoint"))
        else:
            value = node.get(source)
            value = value.strip() if isinstance(value, str) else None
            if value and "/" in value:  # a CIDR such as 10.50.0.2/24
                value = value.split("/", 1)[0]
        return value or endpoint_host(node.get("api_endpoint"))

    def _filter_host(self, name, hostvars, filters) -> bool:
        """community.docker semantics: first matching include/exclude wins; default include."""
        if not filters:
            return True
        variables = dict(hostvars)
        variables["inventory_hostname"] = name
        for entry in filters:
            ((kind, condition),) = entry.items()
            if self._evaluate(condition, variables, name):
                return kind == "include"
        return True

    def _evaluate(self, condition, variables, host) -> bool:
        if isinstance(condition, bool):
            return condition
        templar = self.templar
        old = templar.available_variables
        try:
            templar.available_variables = variables
            if hasattr(templar, "evaluate_conditional"):
                return bool(templar.evaluate_conditional(condition))
            text = "{% if " + condition + " %} True {% else %} False {% endif %}"
            return boolean(templar.template(text))
        except Exception as exc:  # noqa: BLE001 - report any template error for this host
            raise AnsibleParserError(
                f"{self.NAME}: could not evaluate filter condition {condition!r} for host "
                f"{host}: {to_native(exc)}"
            ) from None
        finally:
            templar.available_variables = old


# What a node record must look like to become a host (the agent's own rules:
# hostmesh/agent/config.py NAME_RE/ID_RE and RESERVED_NAMES); matched whole.
_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_GROUP_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_RESERVED = frozenset({"all", "ungrouped", "localhost", "localhost.localdomain", "127.0.0.1",
                       "::1", PARENT_GROUP, *STATUS_GROUPS, *ROLE_GROUPS, "hostmesh_unknown"})
_ADDRESS = re.compile(r"[0-9A-Fa-f.:]{2,45}|[A-Za-z0-9]([A-Za-z0-9-]{0,62})"
                      r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?")


def _shown(value) -> str:
    """A value from the API, safe to put in a one-line warning."""
    return repr(value)[:80]


def _record_problem(node, label_prefix: str, app_prefix: str = "") -> str | None:
    """Why this node record cannot become a host, or None."""
    if not isinstance(node, Mapping):
        return f"it is a {type(node).__name__}, not an object"
    name = node.get("name") or node.get("id")
    if not name or not isinstance(name, str):
        return f"it has neither a name nor an id (keys: {sorted(map(str, node))[:20]})"
    if not _HOST_NAME.fullmatch(name):
        return f"its name {_shown(name)} is not a host name"
    folded = name.lower()
    if folded in _RESERVED or folded.startswith("hostmesh_") \
            or (label_prefix and folded.startswith(label_prefix.lower())) \
            or (app_prefix and folded.startswith(app_prefix.lower())):
        return (f"its name {_shown(name)} is a group name or localhost, which would break "
                "or take over the inventory")
    return None


def _valid_host(value) -> bool:
    return isinstance(value, str) and bool(_ADDRESS.fullmatch(value))


class _Unreachable(AnsibleError):
    """The primary could not be reached (a cached copy may stand in)."""


def _cause(exc, url: str) -> str:
    """The reason of a PrimaryUnreachable, without repeating the client's advice."""
    text = str(exc)
    match = re.search(r"cannot reach the hostmesh API at \S+: (.*?); check that", text)
    return match.group(1) if match else text


def _strip_secrets(node):
    if not isinstance(node, Mapping):
        return node
    return {k: v for k, v in node.items() if not _SECRET_FIELD.search(str(k))}


def _as_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value != 0
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return False
