#!/usr/bin/python
# Copyright: hostmesh developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module hostmesh.cluster.traefik_config."""

from __future__ import annotations

DOCUMENTATION = r"""
module: traefik_config
short_description: Render, validate and atomically write a Traefik dynamic config
version_added: 0.1.0
description:
  - Builds the Traefik v3 dynamic configuration of one node from the hostmesh service registry
    (C(hostmesh_services)), or takes a ready-made one in O(config), validates it and writes it
    atomically to O(path) for Traefik's file provider.
  - "For an HTTP service on the public entrypoints: a C(failover) service whose main service is
    the local backend (health-checked) and whose fallback is a health-checked pool of the peers
    that run the service, reached at their C(mesh) entrypoint; per-request failover on status
    codes (O(failover_status)) retries a request that meets a dead local backend on a peer.
    A node that does not run the service routes straight to the peers' pool."
  - On the C(mesh) entrypoint only local backends are routed, so a request hops at most once and
    can never loop.
  - A TCP service gets a TCP router on entrypoint C(tcp-<entry_port>) to its local backend when
    the node runs it, else to a health-checked pool of the peers' backends. Traefik has no TCP
    failover service, so there is no per-connection fallback from a local TCP backend.
  - Validation checks that every referenced service, middleware and entrypoint exists, that rules
    and backend URLs parse, that composite services do not loop, and that router names are
    unique. On any problem the module fails with a message naming the offending service and the
    file at O(path) stays untouched (last known good).
  - The file is rewritten only when its content changes, because every reload marks all servers
    up again until their next health probe.
  - Runs on the node under its system Python; needs only the standard library.
author:
  - hostmesh developers (@hostmesh)
extends_documentation_fragment:
  - ansible.builtin.files
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
options:
  path:
    description:
      - Dynamic configuration file to write, for example V(/etc/traefik/dynamic/hostmesh.yml).
      - The content is JSON, which is valid YAML, so a C(.yml) name suits the file provider.
    type: path
    required: true
    version_added: 0.1.0
  node:
    description:
      - Inventory name of the node the configuration is for. Required with O(services).
    type: str
    version_added: 0.1.0
  nodes:
    description:
      - Every node of the cluster, mapped to its mesh (WireGuard) address.
      - A service whose C(nodes) names a host missing here fails validation.
    type: dict
    default: {}
    version_added: 0.1.0
  services:
    description:
      - The service registry, in the format of C(hostmesh_services) (see the collection's
        C(docs/inventory.md)); per service C(hosts), C(port), C(nodes), C(health_path),
        optional C(protocol) (V(http) or V(tcp)), C(entry_port) (tcp), C(rule) and
        C(middlewares).
      - Mutually exclusive with O(config).
    type: dict
    version_added: 0.1.0
  config:
    description:
      - A complete dynamic configuration to validate and write as is, instead of O(services).
    type: dict
    version_added: 0.1.0
  app_placement:
    description:
      - Where the replicas of the O(services) entries with C(replicas) were placed last, app name
        to a list of node names (the C(apps) of the apps role's placement record,
        C(hostmesh_state_dir/apps_placement.json)).
      - Such an entry keeps the recorded nodes that are in O(nodes) (and in O(online_nodes)
        when given); missing replicas go to further nodes in the app's rendezvous order, the
        same rule and function as the apps role's, so routes and containers agree.
    type: dict
    default: {}
    version_added: 0.3.0
  online_nodes:
    description:
      - The nodes the primary reports online, preferred for replicas (see O(app_placement)).
        Not given, or while half or more of O(nodes) are missing from it (the primary may be
        the one cut off; a warning says so), every node counts as online.
    type: list
    elements: str
    version_added: 0.3.0
  entrypoints:
    description:
      - Entrypoints defined in Traefik's static configuration. When given, a router using any
        other entrypoint is an error.
    type: list
    elements: str
    version_added: 0.1.0
  mesh_port:
    description:
      - Port of the C(mesh) entrypoint on every node.
    type: int
    default: 8000
    version_added: 0.1.0
  public_entrypoints:
    description:
      - Entrypoints that get the public routers of every HTTP service.
    type: list
    elements: str
    default: [web, websecure]
    version_added: 0.1.0
  secure_entrypoints:
    description:
      - The subset of O(public_entrypoints) whose routers terminate TLS.
    type: list
    elements: str
    default: [websecure]
    version_added: 0.1.0
  mesh_entrypoint:
    description:
      - Name of the entrypoint bound to the node's mesh address.
    type: str
    default: mesh
    version_added: 0.1.0
  health_check_interval:
    description:
      - Interval of the health probes of local backends and peers, a Go duration.
    type: str
    default: 10s
    version_added: 0.1.0
  health_check_timeout:
    description:
      - Timeout of one health probe, a Go duration.
    type: str
    default: 3s
    version_added: 0.1.0
  mesh_keepalive:
    description:
      - Reuse connections to peers' mesh entrypoints.
      - V(false) (the default) dials every forwarded request afresh, so a request to a peer that
        died since its last health probe fails its 1 s dial and the retry middleware sends it
        to another peer. A pooled connection to a dead peer would instead hold the request
        until the client gives up, because Traefik never retries a request it has sent.
      - V(true) saves one TCP handshake over the mesh per forwarded request (and the
        TIME_WAIT sockets that cap new connections at a few hundred per second per peer) at
        the price of those hung requests in the seconds before the health check notices.
    type: bool
    default: false
    version_added: 0.1.0
  reserved_ports:
    description:
      - Ports Traefik already uses for its own entrypoints (web, websecure, mesh, API). A tcp
        service whose C(entry_port) is one of them is an error naming the service, as is an
        C(entry_port) used by two services.
    type: list
    elements: int
    default: []
    version_added: 0.1.0
  failover_status:
    description:
      - Status codes or ranges of the local backend that make Traefik retry the same request on
        the peers (C(failover.errors.status), Traefik 3.7 and later). V([]) turns it off.
    type: list
    elements: str
    default: ["502-504"]
    version_added: 0.1.0
  local_address:
    description:
      - Address at which the node reaches its own backends.
    type: str
    default: 127.0.0.1
    version_added: 0.1.0
  cert_resolver:
    description:
      - Certificate resolver (ACME) set on the routers of O(secure_entrypoints). Without it
        Traefik uses its default certificate or the ones in O(extra).
    type: str
    version_added: 0.1.0
  middlewares:
    description:
      - HTTP middlewares (Traefik's own format) that registry entries may name in their
        C(middlewares) list.
    type: dict
    default: {}
    version_added: 0.1.0
  api_host:
    description:
      - Publish the primary's API on O(secure_entrypoints) under this name (for example
        V(hostmesh.example.org)), so a controller outside the mesh reaches it over TLS.
    type: str
    version_added: 0.1.0
  api_url:
    description:
      - URL at which this node reaches the primary's API, for example V(http://10.50.0.1:8080).
        Required with O(api_host).
    type: str
    version_added: 0.1.0
  extra:
    description:
      - Raw dynamic configuration merged into the rendered one (for example C(tls.certificates)
        or more routers). A name that clashes with a rendered one is an error.
    type: dict
    version_added: 0.1.0
  view_source:
    description:
      - Write the routes of this node for the agent's root-run installer instead of Traefik's
        dynamic file itself (routing follows the primary's health view, issue 17).
      - "The routes file is JSON with the keys C(hostmesh_routes) (format, V(1)), C(node),
        C(nodes) (name to mesh address) and C(config) (the dynamic configuration).
        C(python -m hostmesh.agent.routing install) renders Traefik's dynamic file from it
        without the servers of the peers the primary sees offline. Idempotence compares this
        file, never the rendered one, so the agent may change the peer lists at runtime while
        a second run reports no change."
      - V(auto) follows the view where the node agent is installed (O(view_agent_python) is
        executable on the node), so a node without the agent keeps plain routes.
      - Requires O(services). The routes go to O(view_path) (or O(path) when O(view_path) is
        not given); place it outside the directory Traefik's file provider watches, for
        example V(/etc/traefik/hostmesh-routes.json).
      - The result's RV(view_source) says which way was taken.
    type: raw
    default: false
    version_added: 0.2.0
  view_path:
    description:
      - Where the routes go when the view is followed. Given, the module also removes it when
        the view is not followed, so the installer finds nothing to render, and O(path) is
        then Traefik's dynamic file.
    type: path
    version_added: 0.3.0
  view_agent_python:
    description:
      - The node agent's Python, whose presence turns O(view_source=auto) on.
    type: path
    default: /opt/hostmesh/venv/bin/python
    version_added: 0.3.0
notes:
  - Traefik's file provider must watch the directory of O(path) (C(watch=true)); the temporary
    file used for the atomic write ends in C(.tmp), which the provider ignores.
seealso:
  - name: Traefik failover service
    description: The failover service and its C(errors) option.
    link: https://doc.traefik.io/traefik/reference/routing-configuration/http/load-balancing/service/
"""

EXAMPLES = r"""
- name: Render Traefik's routes of this node from the registry
  hostmesh.cluster.traefik_config:
    path: /etc/traefik/dynamic/hostmesh.yml
    node: "{{ inventory_hostname }}"
    nodes: "{{ dict(groups['hostmesh_nodes'] | zip(groups['hostmesh_nodes'] | map('extract', hostvars, 'wireguard_mesh_address'))) }}"
    services:
      whoami:
        hosts: [whoami.example.org]
        port: 8081
        nodes: [node1, node3]
        health_path: /
    health_check_interval: 2s
    entrypoints: [web, websecure, mesh, traefik]
    owner: root
    group: traefik
    mode: "0640"

- name: Validate and write a hand-made dynamic config
  hostmesh.cluster.traefik_config:
    path: /etc/traefik/dynamic/static-site.yml
    config:
      http:
        routers:
          site:
            entryPoints: [web]
            rule: Host(`www.example.org`)
            service: site
        services:
          site:
            loadBalancer:
              servers:
                - url: http://127.0.0.1:8088
"""

RETURN = r"""
path:
  description: The dynamic configuration file.
  returned: always
  type: str
  sample: /etc/traefik/dynamic/hostmesh.yml
config:
  description: The dynamic configuration as written (or as it would be written in check mode).
  returned: success
  type: dict
  sample: {"http": {"routers": {"whoami-web": {"entryPoints": ["web"], "rule": "Host(`whoami.lab.test`)", "service": "whoami"}}}}
routers:
  description: Names of the HTTP and TCP routers in the configuration, as C(http/<name>) or C(tcp/<name>).
  returned: success
  type: list
  elements: str
  sample: ["http/whoami-mesh", "http/whoami-web", "http/whoami-websecure"]
view_source:
  description: Whether the routes were written for the agent's installer (the view is followed).
  returned: success
  type: bool
  sample: true
errors:
  description: Every validation problem found, each naming the offending service or router.
  returned: failure
  type: list
  elements: str
  sample: ["service 'whoami': nodes node9 are not in the inventory (known: node1, node2, node3)"]
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.parsing.convert_bool import boolean
from ansible_collections.hostmesh.cluster.plugins.module_utils._apps_validate import (
    plan_placement,
    read_placement,
    validate_apps,
)
from ansible_collections.hostmesh.cluster.plugins.module_utils._atomic import (
    read_text,
    write_atomic,
)
from ansible_collections.hostmesh.cluster.plugins.module_utils._traefik_build import (
    build_dynamic_config,
    render,
    validate_registry,
)
from ansible_collections.hostmesh.cluster.plugins.module_utils._traefik_validate import (
    ConfigError,
    validate_dynamic_config,
)


def _build(params):
    """Return (config, warnings) or raise ConfigError."""
    if params["config"] is not None:
        return params["config"], []
    if not params["node"]:
        raise ConfigError(["node is required with services"])
    services, nodes, notes = params["services"], list(params["nodes"]), []
    try:
        placed = read_placement({"hostmesh_apps_placement": 1, "apps": params["app_placement"]})
    except ValueError as exc:
        raise ConfigError([f"app_placement: {exc}"]) from None
    online = params["online_nodes"]
    if not validate_apps(services, nodes, params["reserved_ports"], online, placed):
        # replicas -> nodes with the placement inputs; the build validates the result again
        # (with an invalid app the build names the problems of the registry as given)
        services, notes = plan_placement(services, nodes, online, placed)
    warnings = validate_registry(services, params["nodes"], params["reserved_ports"])[1] + notes
    config = build_dynamic_config(
        services,
        params["node"],
        params["nodes"],
        mesh_port=params["mesh_port"],
        public_entrypoints=params["public_entrypoints"],
        secure_entrypoints=params["secure_entrypoints"],
        mesh_entrypoint=params["mesh_entrypoint"],
        health_interval=params["health_check_interval"],
        health_timeout=params["health_check_timeout"],
        failover_status=params["failover_status"],
        local_address=params["local_address"],
        cert_resolver=params["cert_resolver"],
        middlewares=params["middlewares"],
        api_host=params["api_host"],
        api_url=params["api_url"],
        extra=params["extra"],
        mesh_keepalive=params["mesh_keepalive"],
        reserved_ports=params["reserved_ports"],
    )
    return config, warnings


def _view_source(module):
    """view_source as a bool: auto is on where the agent's Python is on the node."""
    value = module.params["view_source"]
    if isinstance(value, str) and value.strip().lower() == "auto":
        agent = module.params["view_agent_python"]
        return bool(agent) and os.access(agent, os.X_OK)
    try:
        return boolean(value, strict=True)
    except TypeError:
        module.fail_json(msg=f"view_source must be true, false or auto, got {value!r}")


def main():
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "required": True},
            "node": {"type": "str"},
            "nodes": {"type": "dict", "default": {}},
            "services": {"type": "dict"},
            "config": {"type": "dict"},
            "app_placement": {"type": "dict", "default": {}},
            "online_nodes": {"type": "list", "elements": "str"},
            "entrypoints": {"type": "list", "elements": "str"},
            "mesh_port": {"type": "int", "default": 8000},
            "public_entrypoints": {
                "type": "list",
                "elements": "str",
                "default": ["web", "websecure"],
            },
            "secure_entrypoints": {"type": "list", "elements": "str", "default": ["websecure"]},
            "mesh_entrypoint": {"type": "str", "default": "mesh"},
            "health_check_interval": {"type": "str", "default": "10s"},
            "health_check_timeout": {"type": "str", "default": "3s"},
            "mesh_keepalive": {"type": "bool", "default": False},
            "reserved_ports": {"type": "list", "elements": "int", "default": []},
            "failover_status": {"type": "list", "elements": "str", "default": ["502-504"]},
            "local_address": {"type": "str", "default": "127.0.0.1"},
            "cert_resolver": {"type": "str"},
            "middlewares": {"type": "dict", "default": {}},
            "api_host": {"type": "str"},
            "api_url": {"type": "str"},
            "extra": {"type": "dict"},
            "view_source": {"type": "raw", "default": False},
            "view_path": {"type": "path"},
            "view_agent_python": {"type": "path", "default": "/opt/hostmesh/venv/bin/python"},
        },
        mutually_exclusive=[("services", "config")],
        required_one_of=[("services", "config")],
        required_together=[("api_host", "api_url")],
        add_file_common_args=True,
        supports_check_mode=True,
    )
    view = _view_source(module)
    view_path = module.params["view_path"]
    path = view_path if view and view_path else module.params["path"]
    try:
        config, warnings = _build(module.params)
        entrypoints = module.params["entrypoints"]
        problems = validate_dynamic_config(config, set(entrypoints) if entrypoints else None)
        if problems:
            raise ConfigError(problems)
    except ConfigError as exc:
        module.fail_json(
            msg="Traefik dynamic config for {} is invalid, {} left unchanged: {}".format(
                module.params["node"] or path, path, "; ".join(exc.errors)
            ),
            errors=exc.errors,
            path=path,
        )
    for warning in warnings:
        module.warn(warning)

    if view:
        if module.params["services"] is None:
            module.fail_json(msg="view_source needs services (the registry), not config",
                             path=path)
        content = render({"hostmesh_routes": 1, "node": module.params["node"],
                          "nodes": module.params["nodes"], "config": config})
    else:
        content = render(config)
    # Not following the view: the routes file goes first, so that the installer
    # (hostmesh-routes.path, if it was set up before) finds nothing to render.
    stale_routes = bool(not view and view_path and os.path.lexists(view_path))
    if stale_routes and not module.check_mode:
        try:
            os.unlink(view_path)
        except OSError as exc:
            module.fail_json(msg=f"Cannot remove {view_path}: {exc}", path=view_path)
    before = read_text(path)
    changed = before != content
    if changed and not module.check_mode:
        try:
            write_atomic(path, content, mode=0o644, keep_mode=True)
        except OSError as exc:
            module.fail_json(msg=f"Cannot write {path}: {exc}", path=path)
    file_args = module.load_file_common_arguments(module.params)
    file_args["path"] = path
    if not module.check_mode or before is not None:
        changed = module.set_fs_attributes_if_different(file_args, changed)
    result = {
        "changed": changed or stale_routes,
        "path": path,
        "view_source": view,
        "config": config,
        "routers": sorted(
            f"{proto}/{name}"
            for proto in ("http", "tcp")
            for name in (config.get(proto) or {}).get("routers") or {}
        ),
    }
    if module._diff:
        result["diff"] = {
            "before": before or "",
            "after": content,
            "before_header": path,
            "after_header": path,
        }
    module.exit_json(**result)


if __name__ == "__main__":
    main()
