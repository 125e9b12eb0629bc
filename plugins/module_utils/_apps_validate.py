# Private to the collection: may change without notice.
"""Container apps in the service registry: placement and validation.

A ``hostmesh_services`` entry becomes an app when it carries ``container:``.
Placement is either ``nodes: [...]`` (as for every service, unchanged) or
``replicas: N``, placed by :func:`place_replicas` from three inputs: the
inventory's nodes, the nodes the primary reports online (``None``: not known,
every node counts as online) and where the replicas were placed last (the apps
role's record). The rule, in order of preference:

1. nodes that already hold a replica and are online keep it;
2. missing replicas go to online nodes;
3. only when too few nodes are online: nodes that are not online (those that
   held a replica first), rather than failing.

While half or more of the nodes are not online the view is not used at all
(every node counts as online), as for the routes and DNS: the primary may be the
one cut off.

Within each step nodes are taken in the app's rendezvous order (highest hash
of (app name, node name) first), so that different apps spread over different
nodes and, with nothing recorded and every node online, the placement is the
plain rendezvous placement of earlier versions. Scaling down drops the replicas
last in that order. ``resolve_placement`` turns ``replicas`` into ``nodes`` so
that Traefik's config (traefik_config) and the apps role agree on where an app
runs when given the same inputs.

Standard library only (runs on the nodes).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

CONTAINER_KEYS = {
    "image",
    "command",
    "env",
    "port",
    "volumes",
    "healthcheck",
    "restart_policy",
    "health_timeout",
}
RESTART_POLICIES = ("no", "on-failure", "always", "unless-stopped")
# [registry[:port]/]path[:tag][@sha256:<64 hex>]
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
IMAGE_RE = re.compile(
    r"^(?:(?P<registry>[A-Za-z0-9.-]+(?::[0-9]+)?)/)?"
    rf"(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)
VOLUME_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# The apps role's placement record: {"hostmesh_apps_placement": 1, "apps": {app: [nodes]}}
PLACEMENT_FORMAT = 1


def _int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def rank(name, nodes):
    """``nodes`` in the order app ``name`` prefers them: highest hash of (name, node) first."""
    return sorted(
        nodes,
        key=lambda n: hashlib.sha256(f"{name}\0{n}".encode()).hexdigest(),
        reverse=True,
    )


def rendezvous(name, nodes, count):
    """The ``count`` nodes with the highest hash of (name, node), in inventory order."""
    chosen = set(rank(name, nodes)[:count])
    return [n for n in nodes if n in chosen]


def place_replicas(name, count, nodes, online=None, current=()):
    """(nodes of ``count`` replicas of app ``name`` in inventory order, notes).

    ``nodes``: the inventory's nodes; ``online``: the nodes the primary reports online
    (``None``: not known, every node counts as online); ``current``: the nodes that hold a
    replica now (the record). Notes say why a replica moves or lands on a node that is not
    online; they are empty when nothing needs saying.
    """
    nodes = list(nodes)
    known = set(nodes)
    up = known if online is None else known & set(online)
    held = known & set(current or ())
    # sorted() is stable: within each step the rendezvous order is kept.
    order = sorted(rank(name, sorted(nodes)), key=lambda n: (n not in up, n not in held))
    chosen = set(order[:count])
    notes = []
    new = [n for n in nodes if n in chosen - held]
    for node in sorted(set(current or ()) - chosen):
        if node not in known:
            why = "is not in the inventory any more"
        elif node not in up:
            why = "is not online (the primary's view)"
        else:  # scaled down: nothing to say
            continue
        notes.append(
            "app {!r}: {} {}, its replica {}".format(
                name, node, why, "moves to " + ", ".join(new) if new else "is not kept"
            )
        )
    down = [n for n in nodes if n in chosen - up]
    if down:
        notes.append(
            "app {!r}: only {} of its {} replicas fit on nodes the primary reports online; "
            "{} {} one although not online (bring nodes back or lower replicas)".format(
                name, count - len(down), count, ", ".join(down),
                "gets" if len(down) == 1 else "get",
            )
        )
    return [n for n in nodes if n in chosen], notes


def is_app(svc):
    return isinstance(svc, dict) and svc.get("container") is not None


def trusted_view(online, nodes):
    """(``online``, None), or (None, why) when the view is not used for placement.

    The same guard as the routes' and DNS's use of the primary's view: while half or more
    of the nodes are not online, the primary may be the one cut off; moving replicas then
    could move them all onto it. Every node then counts as online.
    """
    if online is None or not nodes:
        return online, None
    down = [n for n in nodes if n not in set(online)]
    if down and 2 * len(down) >= len(nodes):
        return None, (
            "apps: the primary reports {} of the {} nodes not online ({}); with half or more "
            "down it may be the one cut off, so its view is not used for placement: replicas "
            "stay where they were placed, missing ones go to nodes in rendezvous order".format(
                len(down), len(nodes), ", ".join(down)
            )
        )
    return online, None


def plan_placement(services, nodes, online=None, placed=None):
    """(copy of the registry with ``replicas`` replaced by the ``nodes`` it places on, notes).

    ``online``: the nodes the primary reports online, ``None`` when not known; ``placed``:
    app name -> nodes of its replicas as last recorded (see :func:`read_placement`).
    Entries that are not valid keep no ``replicas`` and get no ``nodes`` (the validators
    name them).
    """
    if not isinstance(services, dict):
        return services, []
    nodes = list(nodes)
    placed = placed or {}
    out, notes = {}, []
    online, doubt = trusted_view(online, nodes)
    if doubt and any(isinstance(s, dict) and s.get("nodes") is None
                     and s.get("replicas") is not None for s in services.values()):
        notes.append(doubt)
    for name, svc in services.items():
        if isinstance(svc, dict) and svc.get("nodes") is None and svc.get("replicas") is not None:
            replicas = svc["replicas"]
            chosen = []
            if _int(replicas) and 0 < replicas <= len(nodes):
                current = placed.get(name) if isinstance(name, str) else None
                chosen, why = place_replicas(
                    name, replicas, nodes, online, current if isinstance(current, list) else ()
                )
                notes.extend(why)
            svc = {k: v for k, v in svc.items() if k != "replicas"}
            if chosen:
                svc["nodes"] = chosen
        out[name] = svc
    return out, notes


def resolve_placement(services, nodes, online=None, placed=None):
    """A copy of the registry with ``replicas`` replaced by the ``nodes`` it places on."""
    return plan_placement(services, nodes, online, placed)[0]


def read_placement(data):
    """App name -> nodes, from a placement record (parsed JSON); raises ValueError when malformed.

    A record is ``{"hostmesh_apps_placement": 1, "apps": {"<app>": ["node1", ...]}}``;
    ``None`` (no record yet) is an empty one.
    """
    if data is None:
        return {}
    problem = None
    apps = data.get("apps") if isinstance(data, dict) else None
    if not isinstance(data, dict) or data.get("hostmesh_apps_placement") != PLACEMENT_FORMAT:
        problem = ("not a placement record (expected an object with hostmesh_apps_placement: "
                   f"{PLACEMENT_FORMAT} and apps)")
    elif not isinstance(apps, dict):
        problem = "apps must be an object of app name to a list of node names"
    else:
        for name, nodes in apps.items():
            if not (isinstance(nodes, list) and all(isinstance(n, str) and n for n in nodes)
                    and len(set(nodes)) == len(nodes)):
                problem = f"apps.{name} must be a list of distinct node names"
                break
    if problem:
        raise ValueError(problem)
    return {name: list(nodes) for name, nodes in apps.items()}


def placement_record(services, resolved):
    """The record of where the ``replicas`` entries of ``services`` were placed (``resolved``)."""
    apps = {}
    for name, svc in (services or {}).items():
        if not (isinstance(svc, dict) and svc.get("nodes") is None
                and svc.get("replicas") is not None):
            continue
        nodes = (resolved.get(name) or {}).get("nodes")
        if isinstance(nodes, list) and nodes:
            apps[name] = list(nodes)
    return {"hostmesh_apps_placement": PLACEMENT_FORMAT, "apps": apps}


def parse_image(image):
    """(registry or None, path, tag or None, digest or None), or None when it does not parse."""
    if not isinstance(image, str):
        return None
    match = IMAGE_RE.match(image)
    if not match:
        return None
    registry = match.group("registry")
    path = match.group("path")
    # "name:tag" without a slash before the colon is path + tag, not a registry.
    if registry and "." not in registry and ":" not in registry and registry != "localhost":
        path = f"{registry}/{path}"
        registry = None
    return registry, path, match.group("tag"), match.group("digest")


def _check_placement(pre, name, svc, nodes):
    errors = []
    replicas = svc.get("replicas")
    if replicas is None:
        return errors
    if svc.get("nodes") is not None:
        errors.append(
            f"{pre}: set either nodes or replicas, not both (nodes pins the app, replicas spreads "
            "it over the cluster)"
        )
    elif not _int(replicas) or replicas < 1:
        errors.append(f"{pre}: replicas must be a positive integer, got {replicas!r}")
    elif replicas > len(nodes):
        errors.append(
            "{}: replicas {} is more than the {} nodes of the cluster ({}); lower "
            "hostmesh_services.{}.replicas or add nodes".format(
                pre, replicas, len(nodes), ", ".join(sorted(nodes)) or "none", name
            )
        )
    return errors


def _check_volume(pre, volume):
    if not isinstance(volume, str) or volume.count(":") not in (1, 2):
        message = (f"{pre}: volume {volume!r} must be SOURCE:TARGET[:ro|rw] "
                   "(SOURCE a volume name or an absolute path)")
        return [message]
    parts = volume.split(":")
    source, target = parts[0], parts[1]
    errors = []
    if not (source.startswith("/") or VOLUME_NAME_RE.match(source)):
        errors.append(
            f"{pre}: volume source {source!r} must be a name (letters, digits, . _ -) or an "
            "absolute path"
        )
    if not target.startswith("/"):
        errors.append(f"{pre}: volume target {target!r} must be an absolute path in the container")
    if len(parts) == 3 and parts[2] not in ("ro", "rw"):
        errors.append(f"{pre}: volume mode {parts[2]!r} must be ro or rw")
    return errors


def _check_container(pre, ctr):
    if not isinstance(ctr, dict):
        return [f"{pre}: container must be a mapping (image, command, env, ...)"]
    errors = []
    extra = set(ctr) - CONTAINER_KEYS
    if extra:
        errors.append(
            "{}: container has unknown keys {} (known: {})".format(
                pre, ", ".join(sorted(map(str, extra))), ", ".join(sorted(CONTAINER_KEYS))
            )
        )
    image = ctr.get("image")
    if parse_image(image) is None:
        errors.append(
            f"{pre}: container.image {image!r} is not an image reference like "
            "registry.example.org:5000/team/app:1.2 or ...@sha256:<digest>"
        )
    command = ctr.get("command")
    if command is not None and not (
        isinstance(command, str)
        or (isinstance(command, list) and all(isinstance(c, str) for c in command))
    ):
        errors.append(f"{pre}: container.command must be a string or a list of strings")
    env = ctr.get("env")
    if env is not None:
        if not isinstance(env, dict):
            errors.append(f"{pre}: container.env must be a mapping of NAME: value")
        else:
            for key, value in env.items():
                if not isinstance(key, str) or not ENV_NAME_RE.match(key):
                    errors.append(f"{pre}: container.env name {key!r} is not a variable name")
                elif isinstance(value, (dict, list)) or value is None:
                    # Never show the value: it may be a secret.
                    errors.append(f"{pre}: container.env.{key} must be a string or number")
    port = ctr.get("port")
    if port is not None and not (_int(port) and 0 < port < 65536):
        errors.append(f"{pre}: container.port must be an integer 1-65535, got {port!r}")
    volumes = ctr.get("volumes")
    if volumes is not None:
        if not isinstance(volumes, list):
            errors.append(f"{pre}: container.volumes must be a list of SOURCE:TARGET[:ro|rw]")
        else:
            for volume in volumes:
                errors.extend(_check_volume(pre, volume))
    policy = ctr.get("restart_policy", "unless-stopped")
    if policy not in RESTART_POLICIES:
        errors.append(
            "{}: container.restart_policy must be one of {}, got {!r}".format(
                pre, ", ".join(RESTART_POLICIES), policy
            )
        )
    health = ctr.get("healthcheck")
    if health is not None and not (isinstance(health, dict) and health.get("test")):
        errors.append(
            f"{pre}: container.healthcheck must be a mapping with test (Docker's HEALTHCHECK), "
            "e.g. {test: [CMD, /app/check], interval: 5s}"
        )
    timeout = ctr.get("health_timeout", 60)
    if not (_int(timeout) and timeout > 0):
        errors.append(f"{pre}: container.health_timeout must be a positive number of seconds")
    return errors


def validate_apps(services, nodes, reserved_ports=(), online=None, placed=None):
    """Problems of the registry's apps (empty when valid); every message names the app.

    ``nodes`` are the cluster's node names; ``reserved_ports`` are host ports that no
    app may publish (Traefik's, the agent's). Ports are checked where the replicas are
    placed with ``online`` and ``placed`` (see :func:`plan_placement`).
    """
    errors = []
    if not isinstance(services, dict):
        return errors
    nodes = list(nodes)
    for name in sorted(services, key=str):
        svc = services[name]
        if not isinstance(svc, dict):
            continue
        pre = f"app {name!r}"
        errors.extend(_check_placement(pre, name, svc, nodes))
        if is_app(svc):
            errors.extend(_check_container(pre, svc["container"]))
            if svc.get("nodes") is None and svc.get("replicas") is None:
                errors.append(f"{pre}: set nodes: [...] or replicas: N (where the app runs)")
    resolved = resolve_placement(services, nodes, online, placed)
    taken = {}  # (node, port) -> service name
    for name in sorted(resolved, key=str):
        svc = resolved[name]
        if not isinstance(svc, dict) or not isinstance(svc.get("nodes"), list):
            continue
        port = svc.get("port")
        if not _int(port):
            continue
        if is_app(svc) and port in reserved_ports:
            errors.append(
                "app {name!r}: port {port} is used by the cluster itself ({used}); choose another "
                "hostmesh_services.{name}.port".format(
                    name=name, port=port, used=", ".join(str(p) for p in sorted(reserved_ports))
                )
            )
            continue
        for node in svc["nodes"]:
            other = taken.get((node, port))
            if other is not None and (is_app(svc) or is_app(resolved[other])):
                errors.append(
                    f"app {name!r}: port {port} on {node} is already taken by {other!r}; give "
                    f"hostmesh_services.{name}.port another port"
                )
                break
            taken[(node, port)] = name
    return errors


def _plain_copy(value):
    """A copy of nested mappings and lists as plain dicts and lists.

    Not copy.deepcopy: with ansible-core 2.19 the registry arrives as lazy containers,
    and a deep copy also copies their template engine, whose filters then fail to load
    ("'dict' object is not callable") when a value such as an image reference holds a
    filter (ansible/ansible#85773). Reading the values through the containers
    templates them where they were defined.
    """
    if isinstance(value, Mapping):
        return {key: _plain_copy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_copy(item) for item in value]
    return value


def app_plan(services, nodes, online=None, placed=None):
    """Per app: resolved nodes and the container settings with defaults filled in.

    ``online`` and ``placed`` as for :func:`plan_placement`.
    """
    plan = {}
    resolved = resolve_placement(services or {}, list(nodes), online, placed)
    for name, svc in sorted(resolved.items()):
        if not is_app(svc):
            continue
        ctr = _plain_copy(svc["container"])
        ctr.setdefault("port", svc.get("port"))
        ctr.setdefault("restart_policy", "unless-stopped")
        ctr.setdefault("health_timeout", 60)
        # Docker wants strings; a number in YAML is meant as its text.
        ctr["env"] = {k: str(v) for k, v in (ctr.get("env") or {}).items()}
        ctr.setdefault("volumes", [])
        ctr["command"] = ctr.get("command")
        ctr["healthcheck"] = ctr.get("healthcheck")
        # Named volumes are the app's own: hostmesh-<app>-<name> (removed with apps_purge).
        mounts, named = [], []
        for volume in ctr["volumes"]:
            source, rest = volume.split(":", 1)
            if not source.startswith("/"):
                source = f"hostmesh-{name}-{source}"
                named.append(source)
            mounts.append(f"{source}:{rest}")
        ctr["mounts"] = mounts
        ctr["named_volumes"] = named
        plan[name] = {
            "nodes": list(svc.get("nodes") or []),
            "port": svc.get("port"),
            "protocol": svc.get("protocol", "http"),
            "health_path": svc.get("health_path", "/"),
            "container": ctr,
        }
    return plan
