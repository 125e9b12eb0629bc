# Private to the collection: may change without notice.
"""Turn the hostmesh service registry into one node's Traefik dynamic config.

``validate_registry`` checks the registry against the inventory (every
message names the service); ``build_dynamic_config`` is a pure function of
the registry, the node and the mesh addresses; ``render`` serialises the
result deterministically. Standard library only (runs on the nodes).
"""

from __future__ import annotations

import json
import re

from ansible_collections.hostmesh.cluster.plugins.module_utils._apps_validate import (
    resolve_placement,
    validate_apps,
)
from ansible_collections.hostmesh.cluster.plugins.module_utils._traefik_rules import (
    HTTP_MATCHERS,
    parse_rule,
)
from ansible_collections.hostmesh.cluster.plugins.module_utils._traefik_validate import (
    ConfigError,
    is_port,
)

SERVICE_KEYS = {
    "hosts",
    "port",
    "nodes",
    "health_path",
    "protocol",
    "entry_port",
    "rule",
    "middlewares",
    # Container apps (_apps_validate.py): replicas is resolved into nodes first.
    "container",
    "replicas",
}
# Peers are reached over WireGuard: a dead peer drops packets instead of
# refusing, so dial briefly and let the retry middleware pick another peer
# rather than waiting for Traefik's 30 s default while the health check catches up.
# The retry middleware only retries a request that never reached a server, so by
# default connections to peers are not reused: a request sent on a pooled
# connection to a peer that died since its last probe would hang until the
# client gives up, while a fresh dial fails in 1 s and is retried elsewhere.
MESH_TRANSPORT = "hostmesh-mesh"
MESH_DIAL_TIMEOUT = "1s"
RETRY_MIDDLEWARE = "hostmesh-retry"
RETRY_ATTEMPTS = 2
NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?$")
HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)


def _url_host(address):
    return f"[{address}]" if ":" in address else address


def _host_rule(hosts):
    return " || ".join(f"Host(`{h}`)" for h in hosts)


def validate_registry(services, nodes, reserved_ports=()):
    """Check the service registry against the inventory's node names.

    Returns (errors, warnings); every message names the offending service.
    """
    errors, warnings = [], []
    if services is None:
        return errors, warnings
    if not isinstance(services, dict):
        return ["hostmesh_services must be a mapping of service name to settings"], warnings
    errors.extend(validate_apps(services, list(nodes), reserved_ports))
    services = resolve_placement(services, list(nodes))
    seen_hosts, seen_ports = {}, {}
    for name in sorted(services):
        svc = services[name]
        pre = f"service {name!r}"
        if not isinstance(name, str) or not NAME_RE.match(name):
            errors.append(
                f"{pre}: name must be letters, digits, '-' or '_' (it becomes a Traefik router "
                "name); rename the key in hostmesh_services"
            )
            continue
        if not isinstance(svc, dict):
            errors.append(f"{pre}: settings must be a mapping, got {type(svc).__name__}")
            continue
        extra = set(svc) - SERVICE_KEYS
        if extra:
            warnings.append("{}: ignoring unknown keys {}".format(pre, ", ".join(sorted(extra))))
        protocol = svc.get("protocol", "http")
        if protocol not in ("http", "tcp"):
            errors.append(f"{pre}: protocol must be http or tcp, got {protocol!r}")
            continue
        if not is_port(svc.get("port")):
            errors.append(
                "{}: port must be an integer 1-65535, got {!r} (where the service "
                "listens on its nodes)".format(pre, svc.get("port"))
            )
        run_on = svc.get("nodes")
        if not run_on or not isinstance(run_on, list):
            errors.append(f"{pre}: nodes must be a non-empty list of inventory hosts")
        else:
            unknown = [str(n) for n in run_on if n not in nodes]
            if unknown:
                errors.append(
                    "{}: nodes {} are not in the inventory (known: {}); fix "
                    "hostmesh_services.{}.nodes".format(
                        pre, ", ".join(unknown), ", ".join(sorted(nodes)) or "none", name
                    )
                )
            if len(set(map(str, run_on))) != len(run_on):
                errors.append(f"{pre}: nodes lists a host twice")
        for mw in svc.get("middlewares") or []:
            if not isinstance(mw, str):
                errors.append(f"{pre}: middlewares must be names (strings)")
        if protocol == "tcp":
            entry = svc.get("entry_port")
            if not is_port(entry):
                errors.append(
                    f"{pre}: a tcp service needs entry_port, an integer 1-65535, got {entry!r}"
                )
            elif entry in reserved_ports:
                errors.append(
                    "{}: entry_port {} is already used by Traefik ({})".format(
                        pre, entry, ", ".join(str(p) for p in sorted(reserved_ports))
                    )
                )
            elif entry in seen_ports:
                errors.append(
                    f"{pre}: entry_port {entry} is also used by service {seen_ports[entry]!r}"
                )
            else:
                seen_ports[entry] = name
            continue
        hosts = svc.get("hosts")
        if not hosts or not isinstance(hosts, list):
            errors.append(f"{pre}: hosts must be a non-empty list of DNS names")
        else:
            for host in hosts:
                if not isinstance(host, str) or not HOSTNAME_RE.match(host):
                    errors.append(
                        f"{pre}: host {host!r} is not a valid DNS name (wildcards are not "
                        "supported: list each name)"
                    )
                elif host.lower() in seen_hosts:
                    errors.append(
                        f"{pre}: host {host} is also claimed by service {seen_hosts[host.lower()]!r}"
                    )
                else:
                    seen_hosts[host.lower()] = name
        health = svc.get("health_path", "/")
        if not isinstance(health, str) or not health.startswith("/"):
            errors.append(f"{pre}: health_path must start with /, got {health!r}")
        if svc.get("rule") is not None:
            try:
                parse_rule(svc["rule"], HTTP_MATCHERS)
            except ValueError as exc:
                errors.append("{}: rule {!r} does not parse: {}".format(pre, svc["rule"], exc))
    return errors, warnings


def build_dynamic_config(
    services,
    node,
    mesh_addresses,
    mesh_port=8000,
    public_entrypoints=("web", "websecure"),
    secure_entrypoints=("websecure",),
    mesh_entrypoint="mesh",
    health_interval="10s",
    health_timeout="3s",
    failover_status=("502-504",),
    local_address="127.0.0.1",
    cert_resolver=None,
    middlewares=None,
    api_host=None,
    api_url=None,
    extra=None,
    mesh_keepalive=False,
    reserved_ports=(),
):
    """Build the dynamic config of ``node`` from the registry (pure function).

    Public entrypoints: a failover service (local backend first, then the
    health-checked pool of peers' ``mesh`` entrypoints) when the node runs the
    service; the peers' pool alone when it does not. The mesh entrypoint routes
    to local backends only, so a request hops at most once. ``mesh_keepalive``
    reuses connections to peers (see MESH_TRANSPORT above for the trade-off).
    ``reserved_ports`` are Traefik's own ports, which no tcp service may take.
    """
    services = services or {}
    errors = validate_registry(services, mesh_addresses, reserved_ports)[0]
    services = resolve_placement(services, list(mesh_addresses))
    if node not in mesh_addresses:
        errors.append(
            "node {!r} is not in the inventory's node list ({})".format(
                node, ", ".join(sorted(mesh_addresses)) or "empty"
            )
        )
    for peer, address in sorted(mesh_addresses.items()):
        if not isinstance(address, str) or not address:
            errors.append(
                f"node {peer!r} has no mesh address: run the wireguard role first (it "
                "sets wireguard_mesh_address)"
            )
    if errors:
        raise ConfigError(errors)

    http = {"routers": {}, "services": {}, "middlewares": dict(middlewares or {})}
    tcp = {"routers": {}, "services": {}}
    tls_router = {"certResolver": cert_resolver} if cert_resolver else {}
    health = {"interval": health_interval, "timeout": health_timeout}

    for name in sorted(services):
        svc = services[name]
        run_on = [str(n) for n in svc["nodes"]]
        peers = sorted(n for n in run_on if n != node)
        local = node in run_on
        if svc.get("protocol", "http") == "tcp":
            if local:
                servers = [{"address": f"{_url_host(local_address)}:{svc['port']}"}]
                body = {"servers": servers}
            else:
                servers = [
                    {"address": f"{_url_host(mesh_addresses[p])}:{svc['port']}"} for p in peers
                ]
                body = {"servers": servers, "healthCheck": dict(health)}
            tcp["services"][name] = {"loadBalancer": body}
            tcp["routers"][name] = {
                "entryPoints": [f"tcp-{svc['entry_port']}"],
                "rule": "HostSNI(`*`)",
                "service": name,
            }
            continue

        rule = svc.get("rule") or _host_rule(svc["hosts"])
        check = dict(health, path=svc.get("health_path", "/"))
        local_name, peers_name = name + "-local", name + "-peers"
        if local:
            http["services"][local_name] = {
                "loadBalancer": {
                    "servers": [{"url": f"http://{_url_host(local_address)}:{svc['port']}"}],
                    "healthCheck": check,
                }
            }
        if peers:
            # The peer's mesh router matches on Host: probe with the service's name.
            peer_check = dict(check, hostname=svc["hosts"][0])
            http["services"][peers_name] = {
                "loadBalancer": {
                    "servers": [
                        {"url": f"http://{_url_host(mesh_addresses[p])}:{mesh_port}"} for p in peers
                    ],
                    "healthCheck": peer_check,
                    "serversTransport": MESH_TRANSPORT,
                }
            }
            transport = {"forwardingTimeouts": {"dialTimeout": MESH_DIAL_TIMEOUT}}
            if not mesh_keepalive:
                transport["maxIdleConnsPerHost"] = -1
            http.setdefault("serversTransports", {})[MESH_TRANSPORT] = transport
            http["middlewares"][RETRY_MIDDLEWARE] = {"retry": {"attempts": RETRY_ATTEMPTS}}
        if local and peers:
            failover = {"service": local_name, "fallback": peers_name}
            if failover_status:
                failover["errors"] = {"status": list(failover_status)}
            http["services"][name] = {"failover": failover}
            public_target = name
        else:
            public_target = local_name if local else peers_name
        for ep in public_entrypoints:
            router = {"entryPoints": [ep], "rule": rule, "service": public_target}
            chain = ([RETRY_MIDDLEWARE] if peers else []) + list(svc.get("middlewares") or [])
            if chain:
                router["middlewares"] = chain
            if ep in secure_entrypoints:
                router["tls"] = dict(tls_router)
            _add_router(http["routers"], f"{name}-{ep}", router, errors)
        if local:
            router = {"entryPoints": [mesh_entrypoint], "rule": rule, "service": local_name}
            _add_router(http["routers"], f"{name}-{mesh_entrypoint}", router, errors)

    if api_host:
        if not api_url:
            errors.append("api_host is set but api_url (the primary's API) is not")
        else:
            http["services"].setdefault(
                "hostmesh-api",
                {
                    "loadBalancer": {
                        "servers": [{"url": api_url}],
                        "healthCheck": dict(health, path="/api/health"),
                    }
                },
            )
            for ep in secure_entrypoints:
                _add_router(
                    http["routers"],
                    f"hostmesh-api-{ep}",
                    {
                        "entryPoints": [ep],
                        "rule": f"Host(`{api_host}`)",
                        "service": "hostmesh-api",
                        "tls": dict(tls_router),
                    },
                    errors,
                )

    config = {}
    for key, section in (("http", http), ("tcp", tcp)):
        section = {k: v for k, v in section.items() if v}
        if section:
            config[key] = section
    if extra:
        merge_errors = _merge(config, extra)
        errors.extend(merge_errors)
    if errors:
        raise ConfigError(errors)
    return config


def _add_router(routers, name, router, errors):
    if name in routers:
        errors.append(f"duplicate router name {name!r}")
    routers[name] = router


def _merge(config, extra):
    """Merge user-given raw config (e.g. middlewares, tls); clashes are errors."""
    errors = []
    if not isinstance(extra, dict):
        return ["extra config must be a mapping"]
    for top, sections in extra.items():
        if top == "tls":
            config["tls"] = sections
            continue
        if not isinstance(sections, dict):
            errors.append(f"extra config {top} must be a mapping")
            continue
        for kind, items in sections.items():
            target = config.setdefault(top, {}).setdefault(kind, {})
            for name, value in (items or {}).items():
                if name in target:
                    errors.append(
                        f"duplicate {top} {kind[:-1]} name {name!r} (from the extra config)"
                    )
                target[name] = value
    return errors


def render(config):
    """Serialise deterministically. JSON is valid YAML, so a .yml file works."""
    return json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
