# Private to the collection: may change without notice.
"""Desired-state logic of `hostmesh.cluster.node`, over an injected API client.

The client is `hostmesh.module_utils._agent_client.AgentClient` (the one client of the agent
API); tests pass the same class pointed at a real agent, or a fake with the
same methods. Nothing here ever puts an API key into a message or a diff.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

# fields the module manages and compares (api_key is write-only on the primary)
FIELDS = ("name", "api_endpoint", "wireguard_ip", "public_ip", "labels")


class NodeError(Exception):
    """A user-facing error (conflict, missing option); never carries a secret."""


@dataclass
class Outcome:
    changed: bool = False
    node: dict | None = None
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)
    key_updated: bool = False


def _public(node: dict | None) -> dict:
    """The managed, non-secret fields of a node record (for diffs and results)."""
    if not node:
        return {}
    out = {k: node.get(k) for k in ("id",) + FIELDS}
    out["labels"] = dict(node.get("labels") or {})
    return out


class NodeManager:
    def __init__(self, client, *, check_mode: bool = False):
        self.client = client
        self.check_mode = check_mode

    def find(self, name: str, node_id: str | None) -> dict | None:
        """The node with `node_id` (when given) else the one called `name`."""
        nodes = self.client.list_nodes()
        if node_id:
            by_id = next((n for n in nodes if n.get("id") == node_id), None)
            other = next(
                (n for n in nodes if n.get("name") == name and n.get("id") != node_id), None
            )
            if other is not None:
                raise NodeError(
                    f"node name {name!r} is taken by another node (id {other.get('id')}); "
                    "choose another name, or remove that node first (state=absent)"
                )
            return by_id
        return next((n for n in nodes if n.get("name") == name), None)

    def present(
        self,
        want: dict,
        *,
        node_id: str | None = None,
        api_key: str | None = None,
        update_key: str = "on_create",
    ) -> Outcome:
        """Create the node or update the fields of `want` that differ."""
        name = want["name"]
        current = self.find(name, node_id)
        out = Outcome(before=_public(current))
        if current is not None and current.get("is_primary"):
            raise NodeError(
                f"{name!r} is the primary; its record comes from its own environment "
                "(the node_agent role), not from this module"
            )
        if current is None:
            if not api_key:
                raise NodeError(f"node {name!r} does not exist; api_key is required to create it")
            if not want.get("api_endpoint"):
                raise NodeError(
                    f"node {name!r} does not exist; api_endpoint is required to create it"
                )
            body = {k: v for k, v in want.items() if v is not None}
            body["api_key"] = api_key
            if node_id:
                body["id"] = node_id
            out.changed = out.key_updated = True
            if self.check_mode:
                out.node = {k: v for k, v in body.items() if k != "api_key"}
                out.node.setdefault("id", node_id)
            else:
                out.node = self.client.create_node(body)
            out.after = _public(out.node)
            return out

        changes = {}
        for key in FIELDS:
            value = want.get(key)
            if value is None:
                continue
            have = current.get(key)
            if key == "labels":
                have = dict(have or {})
            if value != have:
                changes[key] = value
        if api_key and update_key == "always":
            changes["api_key"] = api_key
            out.key_updated = True
        if not changes:
            out.node = current
            out.after = out.before
            return out
        out.changed = True
        if self.check_mode:
            out.node = {**current, **{k: v for k, v in changes.items() if k != "api_key"}}
        else:
            out.node = self.client.update_node(current["id"], changes)
        out.after = _public(out.node)
        if out.key_updated:
            # the key never appears in a diff; its change is marked instead
            out.before["api_key"] = "(previous key)"
            out.after["api_key"] = "(new key)"
        return out

    def absent(self, name: str, node_id: str | None = None) -> Outcome:
        nodes = self.client.list_nodes()
        if node_id:
            current = next((n for n in nodes if n.get("id") == node_id), None)
        else:
            current = next((n for n in nodes if n.get("name") == name), None)
        out = Outcome(before=_public(current))
        if current is None:
            return out
        if current.get("is_primary"):
            raise NodeError(f"{current.get('name')!r} is the primary; it cannot be removed")
        out.changed = True
        if not self.check_mode:
            self.client.delete_node(current["id"])
        return out


# A field whose name matches this is never returned by node_info (a primary
# other than hostmesh, Selfhostly for one, sends each node's api_key).
_SECRET_FIELD = re.compile(
    r"(^|_)(api_?key|private_?key|key_hash|token|secret|password|passwd)(_|$)|(^|_)hash$",
    re.IGNORECASE,
)


def strip_secrets(node: dict) -> dict:
    """A node record without any field that could hold a credential."""
    return {k: v for k, v in node.items() if not _SECRET_FIELD.search(str(k))}


def node_info(client, *, name: str | None = None, node_id: str | None = None) -> dict:
    """Read-only view of the registry: every node, or the one called `name` / with `node_id`.

    Returns {"nodes": [...sorted by name...], "node": <record or None when asked for one>}.
    Records never carry a key.
    """
    if node_id:
        try:
            found = [client.get_node(node_id)]
        except Exception as exc:  # the client's NotFound (HTTP 404): no such node
            if getattr(exc, "status", None) != 404:
                raise
            found = []
    else:
        found = client.list_nodes()
        if name:
            found = [n for n in found if n.get("name") == name]
    nodes = sorted(
        (strip_secrets(n) for n in found), key=lambda n: (str(n.get("name") or ""), str(n.get("id")))
    )
    out: dict = {"nodes": nodes}
    if name or node_id:
        out["node"] = nodes[0] if nodes else None
    return out


def connection_argument_spec() -> dict:
    """The options that say how to reach the primary (doc fragment _primary_api)."""
    return {
        "url": {"type": "str", "default": "http://127.0.0.1:8080"},
        "token": {"type": "str", "no_log": True},
        "validate_certs": {"type": "bool", "default": True},
        "ca_path": {"type": "path"},
        "timeout": {"type": "float", "default": 5},
    }


def admin_token(params: dict) -> str | None:
    """The admin token of a module's connection options: `token`, else the
    HOSTMESH_ADMIN_TOKEN environment variable (None: neither is set)."""
    return params["token"] or os.environ.get("HOSTMESH_ADMIN_TOKEN")


def token_rejected(url: str) -> str:
    """What a module says when the primary at `url` answers 401 to the admin token."""
    return (
        f"the primary at {url} rejected the admin token; use the cluster's "
        "admin_token (hostmesh.cluster.secret) or HOSTMESH_ADMIN_TOKEN"
    )


def make_client(client_class, credentials_class, params: dict, token: str | None):
    """The one API client for a module's connection options (no credentials without a token)."""
    return client_class(
        params["url"],
        credentials_class(admin_token=token) if token else None,
        timeout=params["timeout"],
        validate_certs=params["validate_certs"],
        ca_path=params["ca_path"],
    )
