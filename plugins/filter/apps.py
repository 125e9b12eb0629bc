# Copyright: hostmesh contributors
# Apache License 2.0 (see LICENSE)
"""Filters of the hostmesh.cluster.apps role: the registry's apps, planned in Python.

The rules live in plugins/module_utils/_apps_validate.py (the same code the
traefik_config module runs, so routes and containers agree on placement);
these are thin adapters from inventory data to it.
"""

from __future__ import annotations

import json

from ansible.errors import AnsibleFilterError
from ansible.utils.display import Display
from ansible_collections.hostmesh.cluster.plugins.module_utils._apps_validate import (
    app_plan,
    is_app,
    parse_image,
    placement_record,
    plan_placement,
    read_placement,
    resolve_placement,
    validate_apps,
)

display = Display()


def _node_names(value, what):
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(n, str) for n in value):
        raise AnsibleFilterError(f"{what} must be a list of node names, got {value!r}"[:300])
    return list(value)


def _placed(value):
    if value is None:
        return {}
    try:
        return read_placement({"hostmesh_apps_placement": 1, "apps": value})
    except ValueError as exc:
        raise AnsibleFilterError(f"placed: {exc}") from None


def apps_plan(services, nodes, online=None, placed=None):
    """Per app: nodes, port, protocol, health_path and container settings (defaults filled).

    ``online``: the nodes the primary reports online (None: not known); ``placed``: app ->
    nodes as recorded (apps_placement_read). Notes on moved replicas become warnings; two
    apps placed on the same node and port are an error naming them.
    """
    if not isinstance(services, dict):
        raise AnsibleFilterError("hostmesh_services must be a mapping")
    nodes = list(nodes or [])
    online = _node_names(online, "online")
    placed = _placed(placed)
    resolved, notes = plan_placement(services, nodes, online, placed)
    for note in notes:
        display.warning(note)
    errors = [e for e in validate_apps(resolved, nodes) if " is already taken by " in e]
    if errors:
        raise AnsibleFilterError(
            "hostmesh_services: {} (where the replicas are placed now; nothing was changed)".format(
                "; ".join(errors)
            )
        )
    return app_plan(resolved, nodes)


def apps_online_nodes(result):
    """The nodes online in hostmesh.cluster.node_info's registered result; None when not known.

    A skipped task (not asked) gives None; a failed or unreachable one gives None with a
    warning saying why and what the placement does instead.
    """
    if not isinstance(result, dict) or result.get("skipped"):
        return None
    nodes = result.get("nodes")
    if not isinstance(nodes, list):
        display.warning(
            "apps: the primary's node list could not be read ({}); replicas stay where they "
            "were placed and missing ones go to nodes in rendezvous order as if every node "
            "were online".format(str(result.get("msg") or "no answer")[:300])
        )
        return None
    return sorted(
        n["name"] for n in nodes
        if isinstance(n, dict) and n.get("status") == "online" and isinstance(n.get("name"), str)
    )


def apps_placement_read(text, path="the placement record"):
    """App -> nodes from the text of the apps placement record ('' or None: no record yet)."""
    if text is None or not str(text).strip():
        return {}
    try:
        return read_placement(json.loads(str(text)))
    except ValueError as exc:
        raise AnsibleFilterError(
            f"{path}: {exc}; fix it, or remove it to place every replica afresh"
        ) from None


def apps_placement_record(plan, services):
    """The placement record of the apps of ``services`` that use replicas, from ``plan``."""
    if not isinstance(plan, dict) or not isinstance(services, dict):
        raise AnsibleFilterError("apps_placement_record needs the apps plan and the registry")
    return placement_record(services, plan)


def apps_errors(services, nodes, reserved_ports=None, placed=None):
    """Problems of the registry's apps, each naming the app (empty when valid).

    ``placed``: app -> nodes as recorded (ports are checked where the replicas stay).
    """
    if not isinstance(services, dict):
        return ["hostmesh_services must be a mapping of service name to settings"]
    return validate_apps(services, list(nodes or []), set(reserved_ports or []),
                         placed=_placed(placed))


def apps_image_ref(image):
    """{registry, path, reference} of an image (reference: digest, else tag, else latest)."""
    parsed = parse_image(image)
    if parsed is None:
        raise AnsibleFilterError(f"{image!r} is not an image reference")
    registry, path, tag, digest = parsed
    return {"registry": registry or "", "path": path, "reference": digest or tag or "latest"}


def apps_routing(services, nodes, routed, drain_node="", drain_apps=None):
    """The registry as Traefik should route it now: apps only where a replica is ready.

    ``routed`` lists, per node of ``nodes`` (same order), the apps with a ready replica
    there; ``drain_node`` is taken out of ``drain_apps``' routes. Services that are not
    apps stay as they are; an app with no ready replica gets no route.
    """
    nodes = list(nodes or [])
    routed = [list(r or []) for r in (routed or [])]
    if len(routed) != len(nodes):
        raise AnsibleFilterError("routed must have one list per node")
    drain_apps = set(drain_apps or [])
    out = {}
    for name, svc in resolve_placement(services or {}, nodes).items():
        if not is_app(svc):
            out[name] = svc
            continue
        ready = [
            n
            for n, apps in zip(nodes, routed)
            if name in apps and not (n == drain_node and name in drain_apps)
        ]
        if ready:
            out[name] = dict(svc, nodes=ready)
    return out


def apps_containers(containers):
    """App name -> running (bool), from community.docker.docker_host_info's containers."""
    out = {}
    for ctr in containers or []:
        labels = ctr.get("Labels") or {}
        name = labels.get("hostmesh.app")
        if name:
            out[name] = ctr.get("State") == "running"
    return out


class FilterModule:
    def filters(self):
        return {
            "apps_plan": apps_plan,
            "apps_online_nodes": apps_online_nodes,
            "apps_placement_read": apps_placement_read,
            "apps_placement_record": apps_placement_record,
            "apps_errors": apps_errors,
            "apps_image_ref": apps_image_ref,
            "apps_routing": apps_routing,
            "apps_containers": apps_containers,
        }
