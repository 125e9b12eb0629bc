"""The agent's OpenAPI 3.0 document (served at /openapi.json, no secrets in it)."""

from __future__ import annotations

from copy import deepcopy

from hostmesh import __version__
from hostmesh.agent.apps import HEALTH as APP_HEALTH
from hostmesh.agent.apps import MAX_APPS, STATES
from hostmesh.module_utils._names import ID_RE, NAME_RE

_ID = {"type": "string", "pattern": f"^{ID_RE.pattern}$"}
_NAME = {"type": "string", "pattern": f"^{NAME_RE.pattern}$",
         "description": "unique ignoring case; not all, ungrouped, localhost, hostmesh_* "
                        "(groups of the inventory) or an IP address"}
_IP = {"type": "string", "nullable": True, "description": "IPv4 or IPv6 address"}
_TS = {"type": "string", "format": "date-time", "nullable": True}
_LABELS = {"type": "object", "additionalProperties": {"type": "string", "maxLength": 255},
           "maxProperties": 64}
_KEY = {"type": "string", "minLength": 32, "maxLength": 256, "pattern": "^[\\x21-\\x7e]+$",
        "description": "the node's API key (32 random bytes, e.g. hex); stored hashed"}
_ENDPOINT = {"type": "string", "maxLength": 2048,
             "description": "http://<wireguard_ip>:<agent port>: the node's mesh address "
                            "(inside the primary's MESH_SUBNET, equal to wireguard_ip, which "
                            "it fills when absent) and the cluster's agent port; the primary "
                            "checks a node nowhere else"}

APP = {
    "type": "object", "required": ["name", "container", "image", "state", "health"],
    "description": "one app container of a node, read from its Docker Engine (containers "
                   "labelled hostmesh.app); never its environment",
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$",
                 "description": "the app (hostmesh_services key, label hostmesh.app)"},
        "container": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"},
        "image": {"type": "string", "maxLength": 512, "nullable": True},
        "state": {"type": "string", "enum": list(STATES)},
        "health": {"type": "string", "enum": list(APP_HEALTH),
                   "description": "Docker's health check; none when the container has none"},
    },
}
_APPS = {"type": "array", "maxItems": MAX_APPS, "nullable": True,
         "items": {"$ref": "#/components/schemas/App"}}
REPLICA = {
    "type": "object",
    "required": ["node", "node_id", "node_status", "container", "image", "state", "health",
                 "reported_at"],
    "properties": {"node": {"type": "string"}, "node_id": {"type": "string"},
                   "node_status": {"type": "string",
                                   "enum": ["online", "offline", "unreachable"]},
                   "container": {"type": "string"},
                   "image": {"type": "string", "nullable": True},
                   "state": {"type": "string", "enum": list(STATES)},
                   "health": {"type": "string", "enum": list(APP_HEALTH)},
                   "reported_at": _TS},
}
APPS_VIEW = {
    "type": "object", "required": ["apps", "nodes"],
    "properties": {
        "apps": {"type": "array", "description": "every app some node reported, by name",
                 "items": {"type": "object", "required": ["name", "running", "replicas"],
                           "properties": {
                               "name": {"type": "string"},
                               "running": {"type": "integer", "minimum": 0,
                                           "description": "replicas in state running"},
                               "replicas": {"type": "array",
                                            "items": {"$ref": "#/components/schemas/"
                                                              "AppReplica"}}}}},
        "nodes": {"type": "array", "description": "every node and the apps it reported",
                  "items": {"type": "object",
                            "required": ["id", "name", "status", "is_primary", "apps_at",
                                         "apps"],
                            "properties": {
                                "id": {"type": "string"}, "name": {"type": "string"},
                                "status": {"type": "string"},
                                "is_primary": {"type": "boolean"}, "apps_at": _TS,
                                "apps": {"type": "array", "nullable": True,
                                         "items": {"type": "string"},
                                         "description": "app names; null: the node has "
                                                        "not reported its apps"}}}},
    },
}

NODE = {
    "type": "object",
    "required": ["id", "name", "api_endpoint", "is_primary", "status", "last_seen",
                 "consecutive_failures", "last_health_check", "created_at", "updated_at",
                 "wireguard_ip", "public_ip", "labels", "version"],
    "properties": {
        "id": {"type": "string"}, "name": {"type": "string"},
        "api_endpoint": {"type": "string"}, "is_primary": {"type": "boolean"},
        "status": {"type": "string", "enum": ["online", "offline", "unreachable"]},
        "last_seen": _TS, "consecutive_failures": {"type": "integer", "minimum": 0},
        "last_health_check": _TS, "created_at": _TS, "updated_at": _TS,
        "wireguard_ip": _IP, "public_ip": _IP, "labels": _LABELS,
        "version": {"type": "string", "nullable": True},
        "stats": {"type": "object", "nullable": True,
                  "additionalProperties": {"type": "number"},
                  "description": "the node's CPU, memory and disk from its last heartbeat "
                                 "(cpu_percent, cpu_count, memory_percent, "
                                 "memory_total_bytes, memory_used_bytes, disk_percent, "
                                 "disk_total_bytes, disk_used_bytes, load_1m, "
                                 "uptime_seconds); null until one arrives"},
        "stats_at": _TS,
        "apps": {**_APPS, "description": "the node's app containers from its last report "
                                         "(heartbeat; the primary reads its own); null "
                                         "until one arrives, [] for none"},
        "apps_at": _TS,
    },
}
REGISTERED = deepcopy(NODE)
REGISTERED["required"] = NODE["required"] + ["primary_id", "primary_key_sha256"]
REGISTERED["properties"].update({
    "primary_id": {"type": "string"},
    "primary_key_sha256": {"type": "array", "items": {"type": "string"},
                           "description": "SHA-256 of the primary's key: a secondary pins it "
                                          "(with primary_id) at its first registration and "
                                          "refuses another primary afterwards"},
})
NODE_INPUT = {
    "type": "object",
    "properties": {
        "id": _ID, "name": _NAME, "api_endpoint": _ENDPOINT, "api_key": _KEY,
        "wireguard_ip": _IP, "public_ip": _IP, "labels": _LABELS,
        "version": {"type": "string", "maxLength": 64, "nullable": True},
    },
}
REGISTER_INPUT = deepcopy(NODE_INPUT)
REGISTER_INPUT["required"] = ["name", "api_endpoint", "api_key", "token"]
REGISTER_INPUT["properties"]["token"] = {
    "type": "string", "maxLength": 512,
    "description": "registration token or one-time invite (not needed to re-register a node "
                   "that proves its current key)"}
CREATE_INPUT = deepcopy(NODE_INPUT)
CREATE_INPUT["required"] = ["name", "api_endpoint", "api_key"]
ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
HEALTH = {
    "type": "object", "required": ["status", "service", "role", "node_id", "version"],
    "properties": {"status": {"type": "string", "enum": ["healthy"]},
                   "service": {"type": "string"},
                   "role": {"type": "string", "enum": ["primary", "secondary"]},
                   "node_id": {"type": "string"}, "name": {"type": "string"},
                   "version": {"type": "string"}, "registered": {"type": "boolean"},
                   "caller_verified": {
                       "type": "boolean",
                       "description": "a secondary, when the caller sent "
                                      "X-Hostmesh-Primary-Proof: whether it is a fresh proof "
                                      "of the pinned primary for this node"}},
}
STATS = {
    "type": "object", "required": ["cpu", "memory", "disk", "load", "uptime_seconds"],
    "properties": {"cpu": {"type": "object"}, "memory": {"type": "object"},
                   "disk": {"type": "object"}, "load": {"type": "object"},
                   "uptime_seconds": {"type": "number"}, "time": {"type": "number"},
                   "node_id": {"type": "string"}, "name": {"type": "string"}},
}
CHECK = {
    "type": "object", "required": ["node", "check"],
    "properties": {
        "node": {"$ref": "#/components/schemas/Node"},
        "check": {"type": "object", "required": ["ok", "status", "duration_ms"],
                  "properties": {"ok": {"type": "boolean"}, "status": {"type": "string"},
                                 "consecutive_failures": {"type": "integer"},
                                 "duration_ms": {"type": "number"},
                                 "reason": {"type": "string", "nullable": True}}},
    },
}
INVITE = {"type": "object", "required": ["id", "token", "expires_at"],
          "properties": {"id": {"type": "string"},
                         "token": {"type": "string", "description": "shown once"},
                         "expires_at": {"type": "string", "format": "date-time"}}}


_CERT_INFO = {
    "version": {"type": "string", "pattern": "^[0-9a-f]{16}$",
                "description": "first 16 hex digits of the chain's SHA-256"},
    "serial": {"type": "string", "description": "the leaf's serial number, hex"},
    "not_after": {"type": "integer", "description": "end of validity, Unix seconds"},
    "names": {"type": "array", "items": {"type": "string"}},
}


def _json(schema_name: str) -> dict:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}}


def _resp(description: str, schema_name: str = "Error") -> dict:
    return {"description": description, "content": _json(schema_name)}


def _errors(*codes: int) -> dict:
    text = {400: "invalid request", 401: "authentication failed (the same answer for an "
                                         "unknown node id and a wrong key)",
            403: "a registration that does not come from the mesh address it registers",
            404: "not found", 409: "conflict", 413: "body too large", 429: "rate limited"}
    return {str(c): _resp(text[c]) for c in codes}


_NODE_ID_PARAM = {"name": "node_id", "in": "path", "required": True, "schema": _ID}
_ADMIN = [{"adminBearer": []}]
_NODE = [{"nodeId": [], "nodeKey": []}]


def document(role: str = "primary") -> dict:
    """The OpenAPI document for a primary (full API) or a secondary (health + stats)."""
    paths: dict = {
        "/api/health": {"get": {
            "summary": "liveness of this agent", "operationId": "health", "security": [],
            "responses": {"200": _resp("healthy", "Health")}}},
        "/api/system/stats": {"get": {
            "summary": "cpu, memory, disk, load, uptime read from /proc",
            "operationId": "systemStats",
            "security": _NODE + _ADMIN if role == "primary" else [{"primaryProof": []}]
            + _ADMIN,
            "responses": {"200": _resp("statistics", "Stats"), **_errors(401, 404)}}},
    }
    if role == "primary":
        def body(name: str) -> dict:
            return {"required": True, "content": _json(name)}

        paths.update({
            "/api/nodes/register": {"post": {
                "summary": "auto-registration (token or invite; re-registration proves the key)",
                "operationId": "registerNode", "security": [],
                "requestBody": body("RegisterInput"),
                "responses": {"201": _resp("registered", "Registered"),
                              "200": _resp("re-registered", "Registered"),
                              **_errors(400, 401, 403, 409, 413, 429)}}},
            "/api/nodes": {
                "get": {"summary": "all nodes (never a key)", "operationId": "listNodes",
                        "security": _ADMIN,
                        "responses": {
                            "200": {"description": "nodes", "content": {
                                "application/json": {"schema": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/Node"}}}}},
                            **_errors(401)}},
                "post": {"summary": "manual registration", "operationId": "createNode",
                         "security": _ADMIN, "requestBody": body("CreateInput"),
                         "responses": {"201": _resp("created", "Node"),
                                       **_errors(400, 401, 409, 413)}}},
            "/api/apps": {"get": {
                "summary": "what runs where: the app containers every node reported (never "
                           "a container's environment)",
                "operationId": "listApps", "security": _ADMIN,
                "responses": {"200": _resp("apps and nodes", "AppsView"), **_errors(401)}}},
            "/api/nodes/{node_id}": {
                "parameters": [_NODE_ID_PARAM],
                "get": {"summary": "one node", "operationId": "getNode", "security": _ADMIN,
                        "responses": {"200": _resp("node", "Node"), **_errors(401, 404)}},
                "put": {"summary": "edit a node (api_key rotates with a grace period)",
                        "operationId": "updateNode", "security": _ADMIN,
                        "requestBody": body("NodeInput"),
                        "responses": {"200": _resp("updated", "Node"),
                                      **_errors(400, 401, 404, 409, 413)}},
                "delete": {"summary": "remove a node", "operationId": "deleteNode",
                           "security": _ADMIN,
                           "responses": {"204": {"description": "deleted"},
                                         **_errors(401, 404, 409)}}},
            "/api/nodes/{node_id}/heartbeat": {"post": {
                "summary": "a secondary is alive", "operationId": "heartbeat",
                "security": _NODE, "parameters": [_NODE_ID_PARAM],
                "requestBody": {"required": False, "content": _json("HeartbeatInput")},
                "responses": {"200": _resp("recorded", "HeartbeatAnswer"),
                              **_errors(400, 401, 404, 409, 413)}}},
            "/api/nodes/{node_id}/check": {"post": {
                "summary": "health check now, bypassing backoff", "operationId": "checkNode",
                "security": _ADMIN, "parameters": [_NODE_ID_PARAM],
                "responses": {"200": _resp("check result", "CheckResult"),
                              **_errors(401, 404)}}},
            "/api/tls/certificates": {"get": {
                "summary": "the cluster's certificate sets: version, serial, end of validity "
                           "(never a key); a registered node's key only",
                "operationId": "listCertificates", "security": _NODE,
                "responses": {"200": _resp("certificate sets", "CertificateSets"),
                              **_errors(401)}}},
            "/api/tls/certificates/{set}": {"get": {
                "summary": "one set's current chain and private key, for a registered "
                           "node's Traefik (a node's key only; never an admin's, never "
                           "logged; Cache-Control: no-store)",
                "operationId": "getCertificate", "security": _NODE,
                "parameters": [{"name": "set", "in": "path", "required": True,
                                "schema": {"type": "string",
                                           "pattern": "^[a-z0-9][a-z0-9.-]{0,252}$"}}],
                "responses": {"200": _resp("the pair", "CertificateBundle"),
                              **_errors(401, 404, 429)}}},
            "/api/invites": {"post": {
                "summary": "one-time registration invite", "operationId": "createInvite",
                "security": _ADMIN,
                "requestBody": {"required": False, "content": _json("InviteInput")},
                "responses": {"201": _resp("invite (token shown once)", "Invite"),
                              **_errors(400, 401, 413)}}},
        })
    return {
        "openapi": "3.0.3",
        "info": {"title": f"hostmesh agent ({role})", "version": __version__,
                 "description": "Node agent API of hostmesh.cluster. Errors are "
                                "{\"error\": \"...\"}."},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "adminBearer": {"type": "http", "scheme": "bearer",
                                "description": "ADMIN_TOKEN of the primary"},
                "nodeId": {"type": "apiKey", "in": "header", "name": "X-Node-ID"},
                "nodeKey": {"type": "apiKey", "in": "header", "name": "X-Node-API-Key"},
                "primaryProof": {
                    "type": "apiKey", "in": "header", "name": "X-Hostmesh-Primary-Proof",
                    "description": "the primary's proof for one call to one node: "
                                   "'v1 id=<primary id> node=<node id> ts=<unix seconds> "
                                   "nonce=<32 hex> sig=<hex HMAC-SHA256, keyed with the hex "
                                   "SHA-256 of the node's key, of 'hostmesh-primary-proof-v1', "
                                   "method, path, primary id, node id, ts and nonce joined by "
                                   "newlines>'; accepted once, within 60 s"},
            },
            "schemas": {
                "Node": NODE, "Registered": REGISTERED, "NodeInput": NODE_INPUT,
                "RegisterInput": REGISTER_INPUT, "CreateInput": CREATE_INPUT, "Error": ERROR,
                "Health": HEALTH, "Stats": STATS, "App": APP, "AppReplica": REPLICA,
                "AppsView": APPS_VIEW, "CheckResult": CHECK, "Invite": INVITE,
                "InviteInput": {"type": "object", "properties": {
                    "ttl_seconds": {"type": "number", "minimum": 1}}},
                "HeartbeatInput": {"type": "object", "properties": {
                    "version": {"type": "string", "maxLength": 64, "nullable": True},
                    "wireguard_ip": {**_IP, "description": "may repeat the registered mesh "
                                                           "address, never change it (409)"},
                    "public_ip": _IP,
                    "stats": {"type": "object", "nullable": True,
                              "additionalProperties": {"type": "number"},
                              "description": "the node's CPU, memory and disk: percentages "
                                             "0-100, byte counts, cpu_count, load_1m, "
                                             "uptime_seconds (unknown keys are dropped; a "
                                             "value out of range is refused with 400)"},
                    "apps": {**_APPS, "description": "the node's app containers (at most "
                                                     f"{MAX_APPS}; [] for none; unknown keys "
                                                     "of an item are dropped, a bad value "
                                                     "is refused with 400 and nothing is "
                                                     "recorded); absent or null: unchanged"}}},
                "CertificateSets": {"type": "object", "required": ["sets"], "properties": {
                    "sets": {"type": "object", "additionalProperties": {
                        "type": "object",
                        "required": ["version", "serial", "not_after", "names"],
                        "properties": {**_CERT_INFO}}}}},
                "CertificateBundle": {
                    "type": "object",
                    "required": ["set", "version", "serial", "not_after", "names",
                                 "fullchain", "key"],
                    "properties": {
                        "set": {"type": "string"}, **_CERT_INFO,
                        "fullchain": {"type": "string",
                                      "description": "PEM: the leaf, then its issuers"},
                        "key": {"type": "string", "description": "PEM private key of the "
                                                                 "leaf (a secret)"}}},
                "HeartbeatAnswer": {"type": "object", "required": ["status", "node_id"],
                                    "properties": {"status": {"type": "string"},
                                                   "node_id": {"type": "string"},
                                                   "tls": {
                                                       "type": "object",
                                                       "additionalProperties": {
                                                           "type": "string"},
                                                       "description": "the current version "
                                                       "of each certificate set (16 hex "
                                                       "digits); fetch a set from "
                                                       "/api/tls/certificates/{set} when "
                                                       "it differs from yours"},
                                                   "offline_nodes": {
                                                       "type": "array", "maxItems": 256,
                                                       "items": {"type": "string"},
                                                       "description": "names of the "
                                                       "nodes the primary sees offline or "
                                                       "unreachable; empty while half or "
                                                       "more of the cluster is down; "
                                                       "Traefik's peer lists leave them "
                                                       "out (issue 17)"},
                                                   "primary_id": {"type": "string"},
                                                   "primary_key_sha256": {
                                                       "type": "array",
                                                       "items": {"type": "string"}}}},
            },
        },
    }
