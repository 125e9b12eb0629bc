"""HTTP API of the agent (Starlette): the primary's node API and a secondary's API.

Every answer is JSON; errors are `{"error": "..."}` saying what is wrong and
how to fix it. No key, token or hash of a node key appears in an answer or a
log line (the primary's key hash, which secondaries pin to recognise it, is the
one exception, and a hash of 32 random bytes reveals nothing).

Node authentication answers the same 401 for an unknown node id and for a wrong
key, so the API does not tell which ids exist.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hostmesh import __version__
from hostmesh.agent import security, validate
from hostmesh.agent.apps import AppsInvalid, check_heartbeat_apps
from hostmesh.agent.config import Config
from hostmesh.agent.health import HealthChecker
from hostmesh.agent.metrics import Metrics
from hostmesh.agent.openapi import document
from hostmesh.agent.registry import Registry, RegistryError
from hostmesh.agent.stats import StatsInvalid, SystemStats, check_heartbeat_stats

log = logging.getLogger("hostmesh.agent")


# One answer for every refused registration, so that it does not tell whether an id
# exists (the log says which case it was)
REGISTRATION_REFUSED = ("authentication required: a new node needs a valid registration token "
                        "or unused invite (body field token); an existing node needs its "
                        "current key (body api_key or header X-Node-API-Key)")
_NO_NODE = "0" * 64  # compared against when the id is unknown: same work, same answer


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def read_json(request: Request, limit: int, *, required: bool = True) -> dict:
    """The request body as a JSON object, at most `limit` bytes."""
    check_length(request.headers.get("content-length"), limit)
    raw = bytearray()
    try:
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limit:
                raise ApiError(413, f"request body larger than {limit} bytes")
    except ClientDisconnect:  # gone, or cut by REQUEST_TIMEOUT: nobody reads the answer
        raise ApiError(400, "client disconnected before sending the whole body") from None
    return parse_json(raw, required)


def check_length(length: str | None, limit: int) -> None:
    if length is not None:
        if not length.isdigit():
            raise ApiError(400, "invalid Content-Length header")
        if int(length) > limit:
            raise ApiError(413, f"request body larger than {limit} bytes")


_COMPACT = json.JSONEncoder(separators=(",", ":"))


def parse_json(raw: bytes | bytearray, required: bool) -> dict:
    if raw == b"{}":  # what most heartbeats carry
        return {}
    if not raw.strip():
        if required:
            raise ApiError(400, "request body must be a JSON object")
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


def loggable(text: str, limit: int = 200) -> str:
    """A request-controlled string made safe for a key=value log line (no newline/space)."""
    escaped = text.encode("unicode_escape", "backslashreplace").decode("ascii")
    return escaped.replace(" ", "%20").replace('"', "%22")[:limit]


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _sep, value = auth.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


class AgentAPI:
    """State shared by the handlers of one agent process."""

    def __init__(self, cfg: Config, registry: Registry | None = None):
        self.cfg = cfg
        self.registry = registry
        self.stats = SystemStats(disk_path=str(cfg.data_dir))
        self.rate = security.RateLimiter(cfg.registration_rate_limit,
                                         cfg.registration_rate_window)
        self.metrics = Metrics(cfg, registry)
        self.checker = HealthChecker(cfg, registry) if registry is not None else None
        if self.checker is not None:
            self.checker.metrics = self.metrics
        self.primary_key_hash = security.sha256_hex(cfg.api_key)
        self.openapi = document(cfg.role)
        # a secondary: hashes of the primary keys it trusts (env + learned)
        self.trusted_primary_hashes: list[str] = list(cfg.primary_key_hashes)
        self.primary_id: str | None = None  # a secondary: the pinned primary's id
        self.verifier = security.ProofVerifier()
        self.registered = False
        # issue 15: the issuer's certificate bundles, handed to authenticated nodes
        self.tls_source = None
        tls = getattr(cfg, "tls", None)  # hostmesh.tls.agent.TlsSettings
        if cfg.is_primary and tls is not None and tls.enabled(True):
            from hostmesh.tls.agent import Source

            self.tls_source = Source(tls.export_dir, log)
        self.tls_rate = security.RateLimiter(12, 60.0)
        # issue 17: the nodes this primary sees offline, in every heartbeat answer
        self.routing_view = None
        if registry is not None:
            from hostmesh.agent.routing import PrimaryView

            self.routing_view = PrimaryView(registry)

    # -- auth ------------------------------------------------------------

    def deny(self, request: Request, reason: str, node: str | None = None,
             answer: str | None = None) -> ApiError:
        return self.deny_raw(request.method, request.url.path, client_address(request), reason,
                             node, answer)

    @staticmethod
    def deny_raw(method: str, path: str, client: str, reason: str,
                 node: str | None = None, answer: str | None = None) -> ApiError:
        """Log why (`reason`), answer 401 with `answer` (default: the reason)."""
        log.warning("auth rejected method=%s path=%s client=%s%s reason=%s", method,
                    loggable(path), client, f" node={node}" if node else "",
                    reason.replace(" ", "_"))
        return ApiError(401, answer or "authentication required: " + reason.replace("_", " "),
                        {"WWW-Authenticate": 'Bearer realm="hostmesh"'})

    def require_admin(self, request: Request) -> None:
        token = bearer(request)
        if token is None:
            raise self.deny(request, "no admin bearer token (Authorization: Bearer ...)")
        if not security.matches(token, self.cfg.admin_token_hashes):
            raise self.deny(request, "wrong admin token")

    def is_admin(self, request: Request) -> bool:
        token = bearer(request)
        return token is not None and security.matches(token, self.cfg.admin_token_hashes)

    def node_auth(self, request: Request, node_id: str | None = None) -> str:
        """Check X-Node-ID / X-Node-API-Key against the registry; returns the node id."""
        return self.check_node_key(
            node_id, request.headers.get("x-node-id"), request.headers.get("x-node-api-key"),
            request.method, request.url.path, client_address(request))

    def check_node_key(self, node_id: str | None, header_id: str | None, key: str | None,
                       method: str, path: str, client: str) -> str:
        node_id = node_id or header_id
        if not key or not node_id:
            raise self.deny_raw(method, path, client,
                                "missing X-Node-ID / X-Node-API-Key headers")
        if header_id is not None and header_id != node_id:
            raise self.deny_raw(method, path, client,
                                "X-Node-ID does not match the node in the path")
        state = self.registry.key_state(node_id) if validate.ID_RE.fullmatch(node_id) else None
        # the same answer (and the same work) for an unknown id and a wrong key
        hashes = state.valid_hashes(time.time()) if state is not None else [_NO_NODE]
        if not security.matches(key, hashes) or state is None:
            raise self.deny_raw(method, path, client, "unknown node or wrong node key",
                                loggable(node_id, 64))
        return node_id

    def primary_proof_problem(self, request: Request) -> str | None:
        """A secondary: None when the request carries a valid proof of the primary."""
        return self.verifier.verify(
            request.headers.get(security.PROOF_HEADER.lower()), request.method,
            request.url.path, self.cfg.node_id,
            [self.cfg.api_key, self.cfg.previous_api_key or ""], self.primary_id)

    # -- endpoints common to both roles ----------------------------------

    async def health(self, request: Request) -> Response:
        body = {"status": "healthy", "service": "hostmesh", "role": self.cfg.role,
                "node_id": self.cfg.node_id, "name": self.cfg.node_name,
                "version": __version__}
        if not self.cfg.is_primary:
            body["registered"] = self.registered
            if request.headers.get(security.PROOF_HEADER.lower()):
                body["caller_verified"] = self.primary_proof_problem(request) is None
        return JSONResponse(body)

    async def openapi_json(self, request: Request) -> Response:
        return JSONResponse(self.openapi)

    async def metrics_text(self, request: Request) -> Response:
        """Prometheus metrics: the metrics token or the admin token (see metrics.py)."""
        token = bearer(request)
        if token is None:
            raise self.deny(request, "no bearer token (Authorization: Bearer <metrics token>; "
                                     "Prometheus: authorization.credentials_file)")
        if not security.matches(token, self.cfg.metrics_token_hashes
                                + self.cfg.admin_token_hashes):
            raise self.deny(request, "wrong metrics token")
        body, content_type = self.metrics.render()
        return Response(body, media_type=content_type)

    async def system_stats(self, request: Request) -> Response:
        if self.cfg.is_primary:
            if not self.is_admin(request):
                self.node_auth(request)
        elif not self.is_admin(request):
            problem = self.primary_proof_problem(request)
            if problem:
                raise self.deny(request, "only the primary (with its proof header "
                                         f"{security.PROOF_HEADER}) or an admin may read "
                                         f"stats: {problem}")
        snapshot = await asyncio.to_thread(self.stats.snapshot)
        snapshot.update(node_id=self.cfg.node_id, name=self.cfg.node_name)
        return JSONResponse(snapshot)

    # -- primary: registration and heartbeats -----------------------------

    def _primary_info(self) -> dict:
        return {"primary_id": self.cfg.node_id, "primary_key_sha256": [self.primary_key_hash]}

    async def register(self, request: Request) -> Response:
        client = client_address(request)
        allowed, retry = self.rate.allow(client)
        if not allowed:
            log.warning("registration rate-limited client=%s", client)
            raise ApiError(429, "too many registration attempts from this address; retry later",
                           {"Retry-After": str(max(1, int(retry + 0.999)))})
        body = await read_json(request, self.cfg.max_body_bytes)
        try:
            fields = validate.node_fields(body, partial=False)
            token = validate.token(body.get("token"))
        except validate.Invalid as exc:
            raise ApiError(400, str(exc)) from None
        key = fields.pop("api_key")
        self.check_endpoint(fields)
        self.check_source(fields, client)
        node_id = fields.setdefault("id", str(uuid.uuid4()))
        state = self.registry.key_state(node_id)
        if state is not None:
            if node_id == self.cfg.node_id:
                raise ApiError(409, "this id belongs to the primary")
            # re-registration: the caller must prove the node's *current* key (a previous
            # key, still valid for heartbeats during the grace period, proves nothing here)
            proof = request.headers.get("x-node-api-key")
            hashes = [state.key_hash]
            if not (security.matches(key, hashes) or security.matches(proof, hashes)):
                raise self.deny(request, "re-registering an existing node needs its current "
                                         "key (send it in X-Node-API-Key)", node_id,
                                REGISTRATION_REFUSED)
            current = self.registry.get_node(node_id) or {}
            if str(current.get("name", "")).lower() != fields["name"].lower():
                # a node cannot rename itself: it would take a planned node's name ahead
                raise ApiError(409, f"node {node_id} is registered as "
                                    f"{current.get('name')!r}, not {fields['name']!r}; a node "
                                    "is renamed by an admin (PUT /api/nodes/{id}), or set "
                                    "NODE_NAME back")
            try:
                node = self.registry.update_node(node_id, fields, new_key=key,
                                                 grace=self.cfg.key_grace_seconds,
                                                 mark_online=True)
            except RegistryError as exc:
                raise ApiError(409, f"{exc}; choose another NODE_NAME or delete that node") \
                    from None
            log.info("node re-registered node=%s id=%s client=%s", fields["name"], node_id,
                     client)
            return JSONResponse({**node, **self._primary_info()}, status_code=200)
        if token is None:
            raise self.deny(request, "no registration token or invite in the body (token)",
                            answer=REGISTRATION_REFUSED)
        by_token = security.matches(token, self.cfg.registration_token_hashes)
        try:
            with self.registry.transaction():
                if not by_token and not self.registry.consume_invite(token, node_id):
                    raise self.deny(request, "registration token or invite is wrong, used "
                                             "or expired", answer=REGISTRATION_REFUSED)
                node = self.registry.insert_node(fields, key)
        except RegistryError as exc:
            raise ApiError(409, f"{exc}; choose another NODE_NAME or delete that node") from None
        log.info("node registered node=%s id=%s client=%s via=%s", fields["name"], node_id,
                 client, "token" if by_token else "invite")
        return JSONResponse({**node, **self._primary_info()}, status_code=201)

    def check_endpoint(self, fields: dict) -> None:
        """api_endpoint must be http://<wireguard_ip>:<agent port> inside MESH_SUBNET."""
        try:
            validate.mesh_endpoint(fields, subnet=self.cfg.mesh_subnet,
                                   port=self.cfg.agent_port,
                                   allow_loopback=self.cfg.allow_loopback_endpoints)
        except validate.Invalid as exc:
            raise ApiError(400, str(exc)) from None

    def check_source(self, fields: dict, client: str) -> None:
        """A registration comes from the mesh address it registers.

        WireGuard lets a peer send only from its own mesh address, so a token holder
        can register (or claim an id for) no address but its own, and every address
        holds one node: nobody can take a planned node's id or address ahead of it.
        With ALLOW_LOOPBACK_ENDPOINTS a loopback caller may register a loopback endpoint.
        """
        wg = fields.get("wireguard_ip")
        try:
            source = ipaddress.ip_address(client)
        except ValueError:
            source = None
        if self.cfg.allow_loopback_endpoints and source is not None and source.is_loopback:
            return
        if wg is None or source is None or source != ipaddress.ip_address(wg):
            raise ApiError(403, f"registration for mesh address {wg} must come from that "
                                f"address (it came from {client}); a node registers itself "
                                "over the mesh (PRIMARY_NODE_URL on the primary's mesh "
                                "address)")

    async def heartbeat(self, request: Request) -> Response:
        node_id = request.path_params["node_id"]
        self.node_auth(request, node_id)
        body = await read_json(request, self.cfg.max_body_bytes, required=False)
        return JSONResponse(self.record_heartbeat(node_id, body))

    def record_heartbeat(self, node_id: str, body: dict) -> dict:
        fields = {}
        try:
            for key, check in (("version", validate.version),
                               ("wireguard_ip", lambda v: validate.ip(v, "wireguard_ip")),
                               ("public_ip", lambda v: validate.ip(v, "public_ip"))):
                if key in body:
                    fields[key] = check(body[key])
            if "stats" in body:
                fields["stats"] = check_heartbeat_stats(body["stats"])
            if "apps" in body:
                fields["apps"] = check_heartbeat_apps(body["apps"])
        except (validate.Invalid, StatsInvalid, AppsInvalid) as exc:
            raise ApiError(400, str(exc)) from None
        if "wireguard_ip" in fields:
            # a heartbeat may repeat the mesh address, never change it
            claimed = fields.pop("wireguard_ip")
            state = self.registry.key_state(node_id)
            stored = state.wireguard_ip if state is not None else None
            if claimed is not None and (stored is None or ipaddress.ip_address(claimed)
                                        != ipaddress.ip_address(stored)):
                raise ApiError(409, f"wireguard_ip: this heartbeat says {claimed}, the "
                                    f"registry has {stored}; a node's mesh address is set "
                                    "by its registration or an admin, never by a heartbeat "
                                    "(restart the agent to register again)")
        self.registry.heartbeat(node_id, fields)
        self.metrics.heartbeats.inc()
        answer = {"status": "ok", "node_id": node_id, **self._primary_info()}
        if self.tls_source is not None:
            versions = self.tls_source.versions()
            if versions:  # the node fetches a set only when its version changed
                answer["tls"] = versions
        if self.routing_view is not None:
            answer["offline_nodes"] = self.routing_view.offline_nodes()
        return answer

    async def heartbeat_asgi(self, node_id: str, scope, receive) -> tuple[int, dict, dict]:
        """The heartbeat on raw ASGI: the hot path of a big cluster skips the router and
        Request objects (same checks, same answers as `heartbeat`)."""
        headers = {}
        for name, value in scope["headers"]:
            if name in (b"x-node-id", b"x-node-api-key", b"content-length"):
                headers[name] = value.decode("latin-1")
        client = scope["client"][0] if scope.get("client") else "unknown"
        try:
            self.check_node_key(node_id, headers.get(b"x-node-id"),
                                headers.get(b"x-node-api-key"), "POST", scope["path"], client)
            limit = self.cfg.max_body_bytes
            check_length(headers.get(b"content-length"), limit)
            raw = bytearray()
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    raise ApiError(400, "client disconnected")
                raw += message.get("body", b"")
                if len(raw) > limit:
                    raise ApiError(413, f"request body larger than {limit} bytes")
                if not message.get("more_body"):
                    break
            return 200, self.record_heartbeat(node_id, parse_json(raw, False)), {}
        except ApiError as exc:
            return exc.status, {"error": exc.message}, exc.headers or {}

    # -- primary: certificates for the nodes' Traefik (issue 15) ---------------

    def _tls_source(self):
        if self.tls_source is None:
            raise ApiError(404, "this primary hands out no certificates: the tls role's "
                                "agent sync is off (tls_agent_sync), or the issuer has not "
                                "left any for the agent yet (ACME_EXPORT_DIR)")
        return self.tls_source

    async def tls_certificates(self, request: Request) -> Response:
        """Versions of every set (no key): a registered node's key only."""
        self.node_auth(request)
        source = self._tls_source()
        sets = await asyncio.to_thread(source.summary)
        return JSONResponse({"sets": sets}, headers={"Cache-Control": "no-store"})

    async def tls_certificate(self, request: Request) -> Response:
        """One set's chain and key, to a registered node (it serves HTTPS for these names).
        Never to an admin token, never logged; at most 12 per node per minute."""
        node_id = self.node_auth(request)
        name = request.path_params["name"]
        source = self._tls_source()
        allowed, retry = self.tls_rate.allow(node_id)
        if not allowed:
            log.warning("tls fetch rate-limited node=%s", loggable(node_id, 64))
            raise ApiError(429, "too many certificate fetches from this node; a node fetches "
                                "a set only when the heartbeat answer offers a new version",
                           {"Retry-After": str(max(1, int(retry + 0.999)))})
        from hostmesh.tls.bundle import SET_RE

        doc = await asyncio.to_thread(source.get, name) if SET_RE.fullmatch(name) else None
        if doc is None:
            raise ApiError(404, f"no certificate set {loggable(name, 64)!r}; the sets are in "
                                "GET /api/tls/certificates")
        log.info("tls pair handed out set=%s version=%s node=%s client=%s", doc["set"],
                 doc["version"], loggable(node_id, 64), client_address(request))
        return JSONResponse(doc, headers={"Cache-Control": "no-store"})

    # -- primary: admin ----------------------------------------------------

    def _path_id(self, request: Request) -> str:
        node_id = request.path_params["node_id"]
        if not validate.ID_RE.fullmatch(node_id):
            raise ApiError(404, f"no node with id {node_id!r}")
        return node_id

    async def list_nodes(self, request: Request) -> Response:
        self.require_admin(request)
        return JSONResponse(self.registry.list_nodes())

    async def list_apps(self, request: Request) -> Response:
        """What runs where: every app with its replicas, and what each node reported."""
        self.require_admin(request)
        return JSONResponse(apps_view(self.registry.list_nodes()))

    async def get_node(self, request: Request) -> Response:
        self.require_admin(request)
        node = self.registry.get_node(self._path_id(request))
        if node is None:
            raise ApiError(404, "no such node")
        return JSONResponse(node)

    async def create_node(self, request: Request) -> Response:
        self.require_admin(request)
        body = await read_json(request, self.cfg.max_body_bytes)
        try:
            fields = validate.node_fields(body, partial=False)
        except validate.Invalid as exc:
            raise ApiError(400, str(exc)) from None
        key = fields.pop("api_key")
        self.check_endpoint(fields)
        fields.setdefault("id", str(uuid.uuid4()))
        if self.registry.key_state(fields["id"]) is not None:
            raise ApiError(409, f"node {fields['id']} exists; use PUT /api/nodes/{{id}}")
        try:
            node = self.registry.insert_node(fields, key)
        except RegistryError as exc:
            raise ApiError(409, str(exc)) from None
        log.info("node created node=%s id=%s by=admin", node["name"], node["id"])
        return JSONResponse(node, status_code=201)

    async def update_node(self, request: Request) -> Response:
        self.require_admin(request)
        node_id = self._path_id(request)
        body = await read_json(request, self.cfg.max_body_bytes)
        try:
            fields = validate.node_fields(body, partial=True)
        except validate.Invalid as exc:
            raise ApiError(400, str(exc)) from None
        if "id" in fields and fields.pop("id") != node_id:
            raise ApiError(400, "id: cannot change a node's id; delete and create it instead")
        if node_id == self.cfg.node_id:
            raise ApiError(409, "the primary's own record comes from its environment "
                                "(NODE_NAME, NODE_API_KEY, ...); change it there")
        key = fields.pop("api_key", None)
        if "api_endpoint" in fields or "wireguard_ip" in fields:
            current = self.registry.get_node(node_id)
            if current is None:
                raise ApiError(404, "no such node")
            # a new endpoint alone moves the node's mesh address with it
            stored_wg = None if "api_endpoint" in fields else current["wireguard_ip"]
            merged = {"api_endpoint": fields.get("api_endpoint", current["api_endpoint"]),
                      "wireguard_ip": fields.get("wireguard_ip", stored_wg)}
            self.check_endpoint(merged)
            fields["api_endpoint"] = merged["api_endpoint"]
            if merged["wireguard_ip"] is not None:
                fields["wireguard_ip"] = merged["wireguard_ip"]
        try:
            node = self.registry.update_node(node_id, fields, new_key=key,
                                             grace=self.cfg.key_grace_seconds)
        except RegistryError as exc:
            raise ApiError(409, str(exc)) from None
        if node is None:
            raise ApiError(404, "no such node")
        log.info("node updated node=%s id=%s by=admin fields=%s", node["name"], node_id,
                 ",".join(sorted(list(fields) + (["api_key"] if key else []))) or "none")
        return JSONResponse(node)

    async def delete_node(self, request: Request) -> Response:
        self.require_admin(request)
        node_id = self._path_id(request)
        if node_id == self.cfg.node_id:
            raise ApiError(409, "the primary cannot delete itself")
        if not self.registry.delete_node(node_id):
            raise ApiError(404, "no such node")
        log.info("node deleted id=%s by=admin", node_id)
        return Response(status_code=204)

    async def check_node(self, request: Request) -> Response:
        self.require_admin(request)
        node_id = self._path_id(request)
        node = self.registry.get_node(node_id)
        if node is None:
            raise ApiError(404, "no such node")
        if node["is_primary"]:
            result = {"ok": True, "status": "online", "consecutive_failures": 0,
                      "duration_ms": 0.0, "reason": None}
        else:
            result = await self.checker.check(node_id, node["name"], node["api_endpoint"])
            if result is None:
                raise ApiError(404, "no such node")
        return JSONResponse({"node": self.registry.get_node(node_id), "check": result})

    async def create_invite(self, request: Request) -> Response:
        self.require_admin(request)
        body = await read_json(request, self.cfg.max_body_bytes, required=False)
        try:
            ttl = validate.seconds(body.get("ttl_seconds", self.cfg.invite_default_ttl),
                                   "ttl_seconds", 1, self.cfg.invite_max_ttl)
        except validate.Invalid as exc:
            raise ApiError(400, str(exc)) from None
        invite_id = str(uuid.uuid4())
        token = security.new_secret()
        expires = self.registry.create_invite(invite_id, token, ttl)
        log.info("invite created id=%s ttl_seconds=%g", invite_id, ttl)
        from hostmesh.agent.registry import iso

        # the one answer that carries a secret: the invite, shown once, to an admin
        return JSONResponse({"id": invite_id, "token": token, "expires_at": iso(expires)},
                            status_code=201)

    async def not_primary(self, request: Request) -> Response:
        raise ApiError(404, f"this node is a secondary; the node API is on the primary "
                            f"({self.cfg.primary_url})")


def apps_view(nodes: list[dict]) -> dict:
    """GET /api/apps from the node records: apps by name with their replicas, and per node
    what it reported (apps null: the node has not reported, e.g. an older agent)."""
    apps: dict[str, list[dict]] = {}
    for node in nodes:
        for app in node.get("apps") or []:
            apps.setdefault(app["name"], []).append({
                "node": node["name"], "node_id": node["id"], "node_status": node["status"],
                "container": app["container"], "image": app["image"], "state": app["state"],
                "health": app["health"], "reported_at": node["apps_at"]})
    return {
        "apps": [{"name": name, "running": sum(r["state"] == "running" for r in replicas),
                  "replicas": sorted(replicas, key=lambda r: (r["node"], r["container"]))}
                 for name, replicas in sorted(apps.items())],
        "nodes": [{"id": n["id"], "name": n["name"], "status": n["status"],
                   "is_primary": n["is_primary"], "apps_at": n["apps_at"],
                   "apps": None if n.get("apps") is None
                   else sorted({a["name"] for a in n["apps"]})}
                  for n in sorted(nodes, key=lambda n: n["name"])],
    }


def build_app(api: AgentAPI, background=None) -> Starlette:
    """The Starlette app; `background(api)` is an async callable run for the app's lifetime."""
    cfg = api.cfg
    routes = [
        Route("/api/health", api.health, methods=["GET"]),
        Route("/openapi.json", api.openapi_json, methods=["GET"]),
        Route("/metrics", api.metrics_text, methods=["GET"]),
        Route("/api/system/stats", api.system_stats, methods=["GET"]),
    ]
    if cfg.is_primary:
        routes += [
            Route("/api/nodes/register", api.register, methods=["POST"]),
            Route("/api/nodes", api.list_nodes, methods=["GET"]),
            Route("/api/apps", api.list_apps, methods=["GET"]),
            Route("/api/nodes", api.create_node, methods=["POST"]),
            Route("/api/nodes/{node_id}", api.get_node, methods=["GET"]),
            Route("/api/nodes/{node_id}", api.update_node, methods=["PUT"]),
            Route("/api/nodes/{node_id}", api.delete_node, methods=["DELETE"]),
            Route("/api/nodes/{node_id}/heartbeat", api.heartbeat, methods=["POST"]),
            Route("/api/nodes/{node_id}/check", api.check_node, methods=["POST"]),
            Route("/api/invites", api.create_invite, methods=["POST"]),
            Route("/api/tls/certificates", api.tls_certificates, methods=["GET"]),
            Route("/api/tls/certificates/{name}", api.tls_certificate, methods=["GET"]),
        ]
    else:
        routes += [Route("/api/nodes{rest:path}", api.not_primary,
                         methods=["GET", "POST", "PUT", "DELETE"]),
                   Route("/api/invites", api.not_primary, methods=["POST"]),
                   Route("/api/apps", api.not_primary, methods=["GET"]),
                   Route("/api/tls{rest:path}", api.not_primary, methods=["GET"])]

    async def on_api_error(request: Request, exc: ApiError) -> Response:
        return error(exc.status, exc.message, exc.headers)

    async def on_http_error(request: Request, exc: HTTPException) -> Response:
        messages = {404: "no such endpoint; see /openapi.json",
                    405: "method not allowed on this endpoint; see /openapi.json"}
        return error(exc.status_code, messages.get(exc.status_code, str(exc.detail)),
                     getattr(exc, "headers", None))

    async def on_crash(request: Request, exc: Exception) -> Response:
        log.error("internal error method=%s path=%s error=%s", request.method,
                  loggable(request.url.path), type(exc).__name__)
        return error(500, "internal error; see the agent's log")

    @asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(background(api)) if background else None
        try:
            yield
        finally:
            if task:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={ApiError: on_api_error, HTTPException: on_http_error,
                                        Exception: on_crash})
    return HeartbeatFastPath(app, api) if cfg.is_primary else app


class HeartbeatFastPath:
    """ASGI wrapper answering POST /api/nodes/{id}/heartbeat without the Starlette stack."""

    def __init__(self, app: Starlette, api: AgentAPI):
        self.app = app
        self.api = api

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and scope["method"] == "POST" \
                and path.startswith("/api/nodes/") and path.endswith("/heartbeat"):
            node_id = path[len("/api/nodes/"):-len("/heartbeat")]
            if node_id and "/" not in node_id:
                try:
                    status, payload, headers = await self.api.heartbeat_asgi(
                        node_id, scope, receive)
                except Exception as exc:  # noqa: BLE001 - answered like the crash handler
                    log.error("internal error method=POST path=%s error=%s", loggable(path),
                              type(exc).__name__)
                    status, payload, headers = 500, {"error": "internal error; see the "
                                                              "agent's log"}, {}
                body = _COMPACT.encode(payload).encode()
                raw_headers = [(b"content-type", b"application/json"),
                               (b"content-length", str(len(body)).encode())]
                raw_headers += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
                await send({"type": "http.response.start", "status": status,
                            "headers": raw_headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
