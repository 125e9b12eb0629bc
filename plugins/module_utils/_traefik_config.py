# Private to the collection: may change without notice.
"""Render and validate Traefik dynamic configuration from the hostmesh service
registry, and write it atomically (last known good stays on failure).

Stand-alone on purpose: it runs on the nodes under the system Python (used by
the ``traefik_config`` module), so it imports only the standard library.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from urllib.parse import urlsplit

HTTP_MATCHERS = {
    "Host": (1, 1),
    "HostRegexp": (1, 1),
    "Path": (1, 1),
    "PathPrefix": (1, 1),
    "PathRegexp": (1, 1),
    "Method": (1, 1),
    "Header": (2, 2),
    "HeaderRegexp": (2, 2),
    "Query": (1, 2),
    "QueryRegexp": (1, 2),
    "ClientIP": (1, 1),
}
TCP_MATCHERS = {
    "HostSNI": (1, 1),
    "HostSNIRegexp": (1, 1),
    "ClientIP": (1, 1),
    "ALPN": (1, 1),
}
SERVICE_KEYS = {
    "hosts",
    "port",
    "nodes",
    "health_path",
    "protocol",
    "entry_port",
    "rule",
    "middlewares",
}
HTTP_SERVICE_KINDS = ("loadBalancer", "weighted", "mirroring", "failover")
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
TCP_SERVICE_KINDS = ("loadBalancer", "weighted")
NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?$")
HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)
DURATION_RE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$")
STATUS_RE = re.compile(r"^[1-5]\d\d(?:-[1-5]\d\d)?$")


class ConfigError(ValueError):
    """Invalid registry or dynamic config; ``errors`` lists every problem found."""

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__("; ".join(self.errors))


# --------------------------------------------------------------------------- rules
_TOKEN_RE = re.compile(
    r"\s*(?:(?P<op>&&|\|\||[!(),])|(?P<str>`[^`]*`|\"(?:[^\"\\]|\\.)*\")|(?P<id>[A-Za-z]+))"
)


def _tokenize(rule):
    tokens, pos = [], 0
    rule = rule.rstrip()
    while pos < len(rule):
        match = _TOKEN_RE.match(rule, pos)
        if not match or match.end() == pos:
            raise ValueError(f"unexpected character {rule[pos : pos + 1]!r} at offset {pos}")
        pos = match.end()
        kind = match.lastgroup
        tokens.append((kind, match.group(kind)))
    return tokens


def parse_rule(rule, matchers=None):
    """Check a Traefik v3 router rule; return the list of (matcher, args).

    Raises ValueError saying what is wrong. Grammar: matcher calls with
    backtick- or double-quoted arguments combined by ``&&``, ``||``, ``!`` and
    parentheses.
    """
    matchers = HTTP_MATCHERS if matchers is None else matchers
    if not isinstance(rule, str) or not rule.strip():
        raise ValueError("rule is empty")
    tokens = _tokenize(rule)
    found = []
    pos = [0]

    def peek():
        return tokens[pos[0]] if pos[0] < len(tokens) else (None, None)

    def take(kind=None, value=None):
        tok = peek()
        if tok[0] is None:
            raise ValueError("rule ends too early")
        if (kind and tok[0] != kind) or (value and tok[1] != value):
            raise ValueError(f"expected {value or kind}, found {tok[1]!r}")
        pos[0] += 1
        return tok

    def expr():
        term()
        while peek() == ("op", "||"):
            take()
            term()

    def term():
        factor()
        while peek() == ("op", "&&"):
            take()
            factor()

    def factor():
        tok = peek()
        if tok == ("op", "!"):
            take()
            factor()
        elif tok == ("op", "("):
            take()
            expr()
            take("op", ")")
        elif tok[0] == "id":
            name = take()[1]
            if name not in matchers:
                raise ValueError(
                    "unknown matcher {} (known: {})".format(name, ", ".join(sorted(matchers)))
                )
            take("op", "(")
            args = []
            if peek() != ("op", ")"):
                args.append(take("str")[1][1:-1])
                while peek() == ("op", ","):
                    take()
                    args.append(take("str")[1][1:-1])
            take("op", ")")
            low, high = matchers[name]
            if not low <= len(args) <= high:
                raise ValueError(f"{name} takes {high} argument(s), got {len(args)}")
            if any(not a for a in args):
                raise ValueError(f"{name} has an empty argument")
            found.append((name, args))
        elif tok[0] is None:
            raise ValueError("rule ends too early")
        else:
            raise ValueError(f"expected a matcher, found {tok[1]!r}")

    expr()
    if pos[0] != len(tokens):
        raise ValueError(f"unexpected {tokens[pos[0]][1]!r} after the end of the rule")
    return found


# --------------------------------------------------------------------------- checks
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


def _is_port(value):
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


# --------------------------------------------------------------------------- registry
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
        if not _is_port(svc.get("port")):
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
            if not _is_port(entry):
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
):
    """Build the dynamic config of ``node`` from the registry (pure function).

    Public entrypoints: a failover service (local backend first, then the
    health-checked pool of peers' ``mesh`` entrypoints) when the node runs the
    service; the peers' pool alone when it does not. The mesh entrypoint routes
    to local backends only, so a request hops at most once. ``mesh_keepalive``
    reuses connections to peers (see MESH_TRANSPORT above for the trade-off).
    """
    services = services or {}
    errors = validate_registry(services, mesh_addresses)[0]
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


# --------------------------------------------------------------------------- output
def render(config):
    """Serialise deterministically. JSON is valid YAML, so a .yml file works."""
    return json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def read_text(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def write_atomic(path, content, mode=0o644):
    """Write ``content`` to ``path`` via a temp file + rename in the same dir.

    The temp name ends in ``.tmp`` so Traefik's file provider (which reads
    only .yml/.yaml/.toml) never loads a half-written file. An existing file's
    mode and ownership carry over to the new one.
    """
    try:
        current = os.stat(path)
    except FileNotFoundError:
        current = None
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        if current is not None:
            os.chmod(tmp, current.st_mode & 0o7777)
            if os.geteuid() == 0:
                os.chown(tmp, current.st_uid, current.st_gid)
        else:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
