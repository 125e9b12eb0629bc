# Copyright: hostmesh contributors
# Apache License 2.0 (see LICENSE)
"""Filters of the hostmesh.cluster.apps role: the registry's apps, planned in Python.

The rules live in plugins/module_utils/_apps_validate.py (the same code the
traefik_config module runs, so routes and containers agree on placement);
these are thin adapters from inventory data to it.
"""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.hostmesh.cluster.plugins.module_utils._apps_validate import (
    app_plan,
    is_app,
    parse_image,
    resolve_placement,
    validate_apps,
)


def apps_plan(services, nodes):
    """Per app: nodes, port, protocol, health_path and container settings (defaults filled)."""
    if not isinstance(services, dict):
        raise AnsibleFilterError("hostmesh_services must be a mapping")
    return app_plan(services, list(nodes or []))


def apps_errors(services, nodes, reserved_ports=None):
    """Problems of the registry's apps, each naming the app (empty when valid)."""
    if not isinstance(services, dict):
        return ["hostmesh_services must be a mapping of service name to settings"]
    return validate_apps(services, list(nodes or []), set(reserved_ports or []))


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
            "apps_errors": apps_errors,
            "apps_image_ref": apps_image_ref,
            "apps_routing": apps_routing,
            "apps_containers": apps_containers,
        }
