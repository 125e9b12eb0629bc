# Private to the collection: may change without notice.
"""Check a whole Traefik dynamic config before it is written.

Every router's service, middlewares and entrypoints exist, rules and backend
URLs parse, each service has exactly one kind, composite services reference
existing services without loops. Standard library only (runs on the nodes).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from ansible_collections.hostmesh.cluster.plugins.module_utils._traefik_rules import (
    HTTP_MATCHERS,
    TCP_MATCHERS,
    parse_rule,
)

HTTP_SERVICE_KINDS = ("loadBalancer", "weighted", "mirroring", "failover")
TCP_SERVICE_KINDS = ("loadBalancer", "weighted")
DURATION_RE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$")
STATUS_RE = re.compile(r"^[1-5]\d\d(?:-[1-5]\d\d)?$")


class ConfigError(ValueError):
    """Invalid registry or dynamic config; ``errors`` lists every problem found."""

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__("; ".join(self.errors))


def _check_url(url):
    """Return None when ``url`` is a usable backend URL, else the reason."""
    if not isinstance(url, str):
        return "URL must be a string"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"URL {url!r} does not parse ({exc})"
    if parts.scheme not in ("http", "https", "h2c"):
        return f"URL {url!r} needs scheme http, https or h2c"
    if not parts.hostname:
        return f"URL {url!r} has no host"
    if port is not None and not 0 < port < 65536:
        return f"URL {url!r} has an invalid port"
    return None


def _check_address(address):
    if not isinstance(address, str) or ":" not in address:
        return f"address {address!r} must be host:port"
    host, port = address.rsplit(":", 1)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        return f"address {address!r} must be host:port with a port 1-65535"
    return None


def is_port(value):
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536


def _local_ref(name):
    """A reference to another provider (``api@internal``) is not ours to check."""
    return "@" not in name


def validate_dynamic_config(config, entrypoints=None):
    """Return the list of problems of a Traefik dynamic config (empty when valid).

    Checks that every router's service, middlewares and entrypoints exist, that
    rules and backend URLs parse, that each service has exactly one kind and
    that composite services (failover, weighted, mirroring) reference existing
    services without cycles.
    """
    errors = []
    if not isinstance(config, dict):
        return [f"the dynamic config must be a mapping, got {type(config).__name__}"]
    unknown = set(config) - {"http", "tcp", "udp", "tls"}
    if unknown:
        errors.append("unknown top-level keys: {}".format(", ".join(sorted(unknown))))
    for proto, kinds, matchers in (
        ("http", HTTP_SERVICE_KINDS, HTTP_MATCHERS),
        ("tcp", TCP_SERVICE_KINDS, TCP_MATCHERS),
    ):
        section = config.get(proto) or {}
        if not isinstance(section, dict):
            errors.append(f"{proto} must be a mapping")
            continue
        routers = section.get("routers") or {}
        services = section.get("services") or {}
        middlewares = section.get("middlewares") or {}
        transports = section.get("serversTransports") or {}
        for name, svc in services.items():
            errors.extend(_check_service(proto, name, svc, kinds, services))
            transport = (
                (svc.get("loadBalancer") or {}).get("serversTransport")
                if isinstance(svc, dict)
                else None
            )
            if transport and _local_ref(transport) and transport not in transports:
                errors.append(
                    f"{proto} service {name!r} uses serversTransport {transport!r}, which does "
                    "not exist"
                )
        errors.extend(_check_cycles(proto, services))
        for name, router in routers.items():
            where = f"{proto} router {name!r}"
            if not isinstance(router, dict):
                errors.append(f"{where} must be a mapping")
                continue
            target = router.get("service")
            if not isinstance(target, str) or not target:
                errors.append(f"{where} has no service")
            elif _local_ref(target) and target not in services:
                errors.append(f"{where} uses service {target!r}, which does not exist")
            for mw in router.get("middlewares") or []:
                if _local_ref(mw) and mw not in middlewares:
                    errors.append(f"{where} uses middleware {mw!r}, which does not exist")
            eps = router.get("entryPoints")
            if not eps or not isinstance(eps, list):
                errors.append(f"{where} needs a non-empty entryPoints list")
            elif entrypoints is not None:
                for ep in eps:
                    if ep not in entrypoints:
                        errors.append(
                            "{} uses entrypoint {!r}, which the static config does not define "
                            "(defined: {})".format(where, ep, ", ".join(sorted(entrypoints)))
                        )
            try:
                parse_rule(router.get("rule"), matchers)
            except ValueError as exc:
                errors.append(
                    "{}: rule {!r} does not parse: {}".format(where, router.get("rule"), exc)
                )
    return errors


def _check_service(proto, name, svc, kinds, services):
    where = f"{proto} service {name!r}"
    if not isinstance(svc, dict):
        return [f"{where} must be a mapping"]
    present = [k for k in svc if k in kinds]
    if len(present) != 1 or len(svc) != 1:
        return [
            "{} must have exactly one of {}, has {}".format(
                where, ", ".join(kinds), ", ".join(sorted(svc)) or "nothing"
            )
        ]
    kind = present[0]
    body = svc[kind]
    errors = []
    if not isinstance(body, dict):
        return [f"{where}: {kind} must be a mapping"]
    if kind == "loadBalancer":
        servers = body.get("servers")
        if not servers or not isinstance(servers, list):
            errors.append(f"{where} has no servers")
        for server in servers or []:
            key = "url" if proto == "http" else "address"
            value = server.get(key) if isinstance(server, dict) else None
            problem = _check_url(value) if proto == "http" else _check_address(value)
            if problem:
                errors.append(f"{where}: {problem}")
        health = body.get("healthCheck")
        if health is not None:
            for key in ("interval", "timeout"):
                value = health.get(key)
                if value is not None and not (isinstance(value, str) and DURATION_RE.match(value)):
                    errors.append(
                        f"{where}: healthCheck {key} {value!r} is not a duration like 2s or 500ms"
                    )
            path = health.get("path")
            if proto == "http" and path is not None and not str(path).startswith("/"):
                errors.append(f"{where}: healthCheck path {path!r} must start with /")
    else:
        for ref in _references(kind, body):
            if _local_ref(ref) and ref not in services:
                errors.append(f"{where} references service {ref!r}, which does not exist")
        if kind == "failover":
            for key in ("service", "fallback"):
                if not body.get(key):
                    errors.append(f"{where}: failover needs {key}")
            for status in (body.get("errors") or {}).get("status") or []:
                if not STATUS_RE.match(str(status)):
                    errors.append(
                        f"{where}: failover status {status!r} is not a code or range like 502-504"
                    )
    return errors


def _references(kind, body):
    if kind == "failover":
        return [r for r in (body.get("service"), body.get("fallback")) if r]
    if kind == "weighted":
        return [s.get("name") for s in body.get("services") or [] if isinstance(s, dict)]
    if kind == "mirroring":
        refs = [body.get("service")] if body.get("service") else []
        return refs + [m.get("name") for m in body.get("mirrors") or [] if isinstance(m, dict)]
    return []


def _check_cycles(proto, services):
    graph = {}
    for name, svc in services.items():
        if isinstance(svc, dict) and len(svc) == 1:
            kind, body = next(iter(svc.items()))
            if isinstance(body, dict):
                graph[name] = [r for r in _references(kind, body) if r in services]
    errors, state = [], {}

    def visit(node, trail):
        state[node] = 1
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                errors.append(
                    "{} services form a loop: {}".format(proto, " -> ".join(trail + [node, nxt]))
                )
            elif nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    return errors
