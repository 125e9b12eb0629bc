"""The Cloudflare v4 API subset hostmesh uses, faithful enough for the official SDK.

Implements zones (list/get), dns_records (list/get/create/update/patch/delete
and the atomic ``batch``), the ``success/errors/messages/result/result_info``
envelope, page/per_page pagination with ``total_pages``, comment filters
(``comment.exact`` / ``startswith`` / ...), API-token auth with edit and
read-only tokens, and a ``/cdn-cgi/trace`` echo answering ``ip=<client>``.

Test-only controls live under ``/_hm/`` (no auth; loopback and lab use only):
request counters, injected 429s with Retry-After, an overridden trace IP, a
state dump and a reset.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

API_PREFIX = "/client/v4"
MAX_PER_PAGE = 5_000_000  # Cloudflare's documented maximum for dns_records
SUPPORTED_TYPES = {"A", "AAAA", "CNAME", "TXT", "MX", "NS"}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def zone_id_for(name: str) -> str:
    """Deterministic 32-hex zone id, so scripts can predict it."""
    return hashlib.md5(name.encode()).hexdigest()


class APIError(Exception):
    """An error answered in the Cloudflare envelope."""

    def __init__(self, status: int, code: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.errors = [{"code": code, "message": message}]
        self.headers = headers or {}


@dataclass
class Token:
    value: str
    can_edit: bool = True
    zones: set[str] | None = None  # None: every zone


@dataclass
class State:
    """Everything the server holds; guarded by ``lock``."""

    zones: dict[str, dict] = field(default_factory=dict)  # zone id -> zone
    records: dict[str, dict[str, dict]] = field(default_factory=dict)  # zone id -> id -> rec
    tokens: dict[str, Token] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    log: list[dict] = field(default_factory=list)
    rate_limit_remaining: int = 0
    rate_limit_retry_after: float = 1.0
    trace_ip: str | None = None
    trace_down: bool = False
    state_file: str | None = None  # records survive a restart when set
    lock: threading.RLock = field(default_factory=threading.RLock)

    def save(self) -> None:
        if not self.state_file:
            return
        tmp = f"{self.state_file}.tmp"
        with open(tmp, "w") as fh:
            json.dump({"records": self.records}, fh)
        os.replace(tmp, self.state_file)

    def load(self) -> None:
        if not self.state_file or not os.path.exists(self.state_file):
            return
        with open(self.state_file) as fh:
            saved = json.load(fh)
        for zid, recs in saved.get("records", {}).items():
            if zid in self.zones:
                self.records[zid] = recs

    def add_zone(self, name: str) -> dict:
        zid = zone_id_for(name)
        if zid not in self.zones:
            self.zones[zid] = {
                "id": zid,
                "name": name,
                "status": "active",
                "paused": False,
                "type": "full",
                "development_mode": 0,
                "name_servers": ["ada.ns.cloudflare.com", "bob.ns.cloudflare.com"],
                "original_name_servers": [],
                "original_registrar": None,
                "original_dnshost": None,
                "created_on": _now(),
                "modified_on": _now(),
                "activated_on": _now(),
                "meta": {},
                "owner": {"id": None, "type": "user", "email": None},
                "account": {"id": "0" * 32, "name": "hostmesh lab"},
                "permissions": ["#dns_records:edit", "#dns_records:read", "#zone:read"],
                "plan": {"id": "0" * 32, "name": "Free Website", "is_subscribed": False},
            }
            self.records[zid] = {}
        return self.zones[zid]


# ---------------------------------------------------------------- helpers


def envelope(result: Any, *, result_info: dict | None = None, status: int = 200) -> Response:
    body: dict[str, Any] = {"success": True, "errors": [], "messages": [], "result": result}
    if result_info is not None:
        body["result_info"] = result_info
    return JSONResponse(body, status_code=status)


def error_response(err: APIError) -> Response:
    body = {"success": False, "errors": err.errors, "messages": [], "result": None}
    return JSONResponse(body, status_code=err.status, headers=err.headers)


def _paginate(items: list, query) -> tuple[list, dict]:
    try:
        page = int(query.get("page", 1))
        per_page = int(float(query.get("per_page", 100)))
    except ValueError as exc:
        raise APIError(400, 1004, "page and per_page must be numbers") from exc
    if page < 1 or per_page < 1 or per_page > MAX_PER_PAGE:
        raise APIError(400, 1004, f"per_page must be within 1..{MAX_PER_PAGE}, page >= 1")
    total = len(items)
    total_pages = max(1, -(-total // per_page)) if total else 0
    chunk = items[(page - 1) * per_page : page * per_page]
    info = {
        "page": page,
        "per_page": per_page,
        "count": len(chunk),
        "total_count": total,
        "total_pages": total_pages,
    }
    return chunk, info


def _comment_filter(query) -> list:
    """Comment filters of the list endpoint (case-insensitive, as Cloudflare's)."""
    tests = []
    plain = query.get("comment")
    if plain is not None:
        plain = plain.lower()
        tests.append(lambda c, v=plain: c == v)
    for op in ("exact", "startswith", "endswith", "contains"):
        val = query.get(f"comment.{op}")
        if val is None:
            continue
        val = val.lower()
        if op == "exact":
            tests.append(lambda c, v=val: c == v)
        elif op == "startswith":
            tests.append(lambda c, v=val: c.startswith(v))
        elif op == "endswith":
            tests.append(lambda c, v=val: c.endswith(v))
        else:
            tests.append(lambda c, v=val: v in c)
    if "comment.present" in query:
        tests.append(lambda c: c != "")
    if "comment.absent" in query:
        tests.append(lambda c: c == "")
    return tests


def _name_filter(query) -> list:
    tests = []
    for key in ("name", "name.exact"):
        wanted = query.get(key)
        if wanted is not None:
            wanted = wanted.lower()
            tests.append(lambda n, v=wanted: n == v)
    return tests


class RecordValidator:
    """Checks one record body the way Cloudflare does (the subset hostmesh meets)."""

    def __init__(self, zone: dict):
        self.zone = zone

    def normalise(self, body: dict, *, base: dict | None = None) -> dict:
        if not isinstance(body, dict):
            raise APIError(400, 9207, "Request body is invalid.")
        rec = copy.deepcopy(base) if base else {}
        for key in ("type", "name", "content", "ttl", "proxied", "comment", "tags", "settings"):
            if key in body:
                rec[key] = body[key]
        rtype = rec.get("type")
        if rtype not in SUPPORTED_TYPES:
            raise APIError(400, 9000, f"DNS record type {rtype!r} is invalid.")
        name = str(rec.get("name") or "").rstrip(".").lower()
        zname = self.zone["name"]
        if name == "@":
            name = zname
        if not name:
            raise APIError(400, 9005, "DNS record name is required.")
        if name != zname and not name.endswith("." + zname):
            name = f"{name}.{zname}"
        rec["name"] = name
        content = str(rec.get("content") or "")
        if rtype == "A":
            try:
                ipaddress.IPv4Address(content)
            except ValueError as exc:
                raise APIError(400, 9005, f"Content for A record is invalid: {content!r}") from exc
        elif rtype == "AAAA":
            try:
                content = str(ipaddress.IPv6Address(content))
            except ValueError as exc:
                raise APIError(400, 9005, f"Content for AAAA record is invalid: {content!r}") from exc
        elif not content:
            raise APIError(400, 9005, "DNS record content is required.")
        rec["content"] = content
        ttl = rec.get("ttl", 1)
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not (ttl == 1 or 30 <= ttl <= 86400):
            raise APIError(400, 9021, "Invalid TTL. Must be between 30 and 86400 or 1 for automatic.")
        rec["ttl"] = ttl
        proxied = rec.get("proxied", False)
        if not isinstance(proxied, bool):
            raise APIError(400, 9003, "proxied must be a boolean.")
        rec["proxied"] = proxied
        if proxied:
            rec["ttl"] = 1  # proxied records always have automatic TTL on Cloudflare
        comment = rec.get("comment")
        if comment is None:
            comment = ""
        if not isinstance(comment, str) or len(comment) > 100:
            raise APIError(400, 9102, "DNS record comment must be a string of at most 100 characters.")
        rec["comment"] = comment
        tags = rec.get("tags") or []
        if tags:
            # As on Cloudflare's free plan: tags need a paid plan.
            raise APIError(400, 9101, "DNS record tags are not available on this zone's plan.")
        rec["tags"] = []
        rec["settings"] = rec.get("settings") or {}
        return rec


def _conflicts(records: dict[str, dict], rec: dict, self_id: str | None) -> APIError | None:
    """Cloudflare's A/AAAA/CNAME exclusivity and the identical-record rule."""
    for other in records.values():
        if other["id"] == self_id or other["name"] != rec["name"]:
            continue
        exclusive = ("A", "AAAA", "CNAME")
        if ("CNAME" in (rec["type"], other["type"]) and rec["type"] in exclusive
                and other["type"] in exclusive):
            return APIError(400, 81053, "An A, AAAA, or CNAME record with that host already exists.")
        if other["type"] == rec["type"] and other["content"] == rec["content"]:
            return APIError(400, 81058, "An identical record already exists.")
    return None


def _public(rec: dict, zone: dict) -> dict:
    out = {
        "id": rec["id"],
        "zone_id": zone["id"],
        "zone_name": zone["name"],
        "name": rec["name"],
        "type": rec["type"],
        "content": rec["content"],
        "proxiable": rec["type"] in ("A", "AAAA", "CNAME"),
        "proxied": rec["proxied"],
        "ttl": rec["ttl"],
        "settings": rec["settings"],
        "meta": {},
        "comment": rec["comment"] or None,
        "tags": rec["tags"],
        "created_on": rec["created_on"],
        "modified_on": rec["modified_on"],
    }
    if rec.get("comment_modified_on"):
        out["comment_modified_on"] = rec["comment_modified_on"]
    return out


# ---------------------------------------------------------------- the app


def create_app(state: State | None = None) -> Starlette:
    """Build the ASGI app around ``state`` (a fresh one when omitted)."""
    st = state or State()

    def authorise(request: Request, *, write: bool, zone_id: str | None = None) -> Token:
        header = request.headers.get("authorization", "")
        if not header:
            raise APIError(400, 9106, "Missing X-Auth-Key, X-Auth-Email or Authorization headers")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value:
            raise APIError(400, 6111, "Invalid format for Authorization header")
        token = None
        for candidate in st.tokens.values():
            if secrets.compare_digest(candidate.value.encode(), value.encode()):
                token = candidate
        if token is None:
            raise APIError(401, 9109, "Invalid access token")
        if zone_id is not None and token.zones is not None:
            zone = st.zones.get(zone_id)
            if zone is None or zone["name"] not in token.zones:
                raise APIError(403, 10000, "Authentication error")
        if write and not token.can_edit:
            raise APIError(403, 10000, "Authentication error")
        return token

    def zone_or_404(zone_id: str) -> dict:
        zone = st.zones.get(zone_id)
        if zone is None:
            raise APIError(
                404, 7003, f"Could not route to /zones/{zone_id}, perhaps your object identifier is invalid?"
            )
        return zone

    async def json_body(request: Request) -> Any:
        raw = await request.body()
        try:
            return json.loads(raw or b"{}")
        except ValueError as exc:
            raise APIError(400, 9207, "Request body is invalid JSON.") from exc

    def counted(kind: str):
        def deco(handler):
            async def wrapped(request: Request) -> Response:
                with st.lock:
                    key = f"{request.method} {kind}"
                    st.counts[key] = st.counts.get(key, 0) + 1
                    st.log.append(
                        {"method": request.method, "kind": kind, "path": request.url.path,
                         "query": str(request.url.query), "t": time.time()}
                    )
                    if st.rate_limit_remaining > 0:
                        st.rate_limit_remaining -= 1
                        retry = st.rate_limit_retry_after
                        raise_err = APIError(
                            429, 971,
                            "Please wait and consider throttling your request speed",
                            headers={"Retry-After": str(int(retry)) if float(retry).is_integer()
                                     else str(retry)},
                        )
                        return error_response(raise_err)
                    try:
                        return await handler(request)
                    except APIError as err:
                        return error_response(err)
            return wrapped
        return deco

    # -- zones
    @counted("zones")
    async def list_zones(request: Request) -> Response:
        token = authorise(request, write=False)
        name = request.query_params.get("name")
        zones = sorted(st.zones.values(), key=lambda z: z["name"])
        if token.zones is not None:
            zones = [z for z in zones if z["name"] in token.zones]
        if name:
            zones = [z for z in zones if z["name"] == name.lower().rstrip(".")]
        chunk, info = _paginate(zones, request.query_params)
        return envelope(chunk, result_info=info)

    @counted("zone")
    async def get_zone(request: Request) -> Response:
        zid = request.path_params["zone_id"]
        authorise(request, write=False, zone_id=zid)
        return envelope(zone_or_404(zid))

    # -- records
    @counted("dns_records")
    async def list_records(request: Request) -> Response:
        zid = request.path_params["zone_id"]
        authorise(request, write=False, zone_id=zid)
        zone = zone_or_404(zid)
        q = request.query_params
        items = list(st.records[zid].values())
        ctests = _comment_filter(q)
        ntests = _name_filter(q)
        if q.get("type"):
            items = [r for r in items if r["type"] == q.get("type")]
        if q.get("content"):
            items = [r for r in items if r["content"] == q.get("content")]
        items = [r for r in items if all(t(r["comment"].lower()) for t in ctests)]
        items = [r for r in items if all(t(r["name"]) for t in ntests)]
        order = q.get("order", "type")
        if order not in ("type", "name", "content", "ttl", "proxied"):
            raise APIError(400, 1004, f"order must be type, name, content, ttl or proxied, not {order}")
        items.sort(key=lambda r: (r[order], r["name"], r["type"], r["content"], r["id"]),
                   reverse=q.get("direction") == "desc")
        chunk, info = _paginate(items, q)
        return envelope([_public(r, zone) for r in chunk], result_info=info)

    @counted("dns_record")
    async def get_record(request: Request) -> Response:
        zid, rid = request.path_params["zone_id"], request.path_params["record_id"]
        authorise(request, write=False, zone_id=zid)
        zone = zone_or_404(zid)
        rec = st.records[zid].get(rid)
        if rec is None:
            raise APIError(404, 81044, "Record does not exist.")
        return envelope(_public(rec, zone))

    def _apply(zid: str, ops: dict) -> dict:
        """Validate every operation against a copy, then swap it in: all or nothing."""
        zone = st.zones[zid]
        work = copy.deepcopy(st.records[zid])
        validator = RecordValidator(zone)
        out: dict[str, list] = {"deletes": [], "patches": [], "puts": [], "posts": []}
        now = _now()
        for item in ops.get("deletes") or []:
            rid = item.get("id") if isinstance(item, dict) else None
            if rid not in work:
                raise APIError(404, 81044, f"Record does not exist. (delete of id {rid!r})")
            out["deletes"].append(_public(work.pop(rid), zone))
        for kind in ("patches", "puts"):
            for item in ops.get(kind) or []:
                rid = item.get("id") if isinstance(item, dict) else None
                if rid not in work:
                    raise APIError(404, 81044, f"Record does not exist. ({kind[:-2]} of id {rid!r})")
                old = work[rid]
                body = {k: v for k, v in item.items() if k != "id"}
                base = old if kind == "patches" else {"type": old["type"]}
                rec = validator.normalise(body, base=base)
                err = _conflicts(work, rec, rid)
                if err:
                    raise err
                rec.update(id=rid, created_on=old["created_on"], modified_on=now)
                if rec["comment"] != old["comment"]:
                    rec["comment_modified_on"] = now
                work[rid] = rec
                out[kind].append(_public(rec, zone))
        for item in ops.get("posts") or []:
            rec = validator.normalise(item)
            err = _conflicts(work, rec, None)
            if err:
                raise err
            rid = secrets.token_hex(16)
            rec.update(id=rid, created_on=now, modified_on=now)
            work[rid] = rec
            out["posts"].append(_public(rec, zone))
        st.records[zid] = work
        st.save()
        return out

    @counted("dns_records")
    async def create_record(request: Request) -> Response:
        zid = request.path_params["zone_id"]
        authorise(request, write=True, zone_id=zid)
        zone_or_404(zid)
        body = await json_body(request)
        return envelope(_apply(zid, {"posts": [body]})["posts"][0])

    @counted("dns_record")
    async def change_record(request: Request) -> Response:
        zid, rid = request.path_params["zone_id"], request.path_params["record_id"]
        authorise(request, write=True, zone_id=zid)
        zone_or_404(zid)
        if request.method == "DELETE":
            _apply(zid, {"deletes": [{"id": rid}]})
            return envelope({"id": rid})
        body = await json_body(request)
        if not isinstance(body, dict):
            raise APIError(400, 9207, "Request body is invalid.")
        kind = "patches" if request.method == "PATCH" else "puts"
        return envelope(_apply(zid, {kind: [dict(body, id=rid)]})[kind][0])

    @counted("batch")
    async def batch(request: Request) -> Response:
        zid = request.path_params["zone_id"]
        authorise(request, write=True, zone_id=zid)
        zone_or_404(zid)
        body = await json_body(request)
        if not isinstance(body, dict) or set(body) - {"deletes", "patches", "puts", "posts"}:
            raise APIError(400, 9207, "Batch body takes only deletes, patches, puts and posts.")
        for key, val in body.items():
            if val is not None and not isinstance(val, list):
                raise APIError(400, 9207, f"Batch field {key} must be a list.")
        return envelope(_apply(zid, body))

    # -- trace echo (no auth, like Cloudflare's /cdn-cgi/trace)
    @counted("trace")
    async def trace(request: Request) -> Response:
        if st.trace_down:
            return PlainTextResponse("trace disabled by the test\n", status_code=503)
        ip = st.trace_ip or (request.client.host if request.client else "")
        lines = [
            "fl=0f0",
            f"h={request.headers.get('host', '')}",
            f"ip={ip}",
            f"ts={time.time():.3f}",
            f"visit_scheme={request.url.scheme}",
            f"uag={request.headers.get('user-agent', '')}",
            "colo=LAB",
            "http=http/1.1",
            "loc=XX",
            "tls=off",
            "warp=off",
        ]
        return PlainTextResponse("\n".join(lines) + "\n")

    # -- test controls
    async def control(request: Request) -> Response:
        what = request.path_params["what"]
        with st.lock:
            if request.method == "GET" and what == "stats":
                return JSONResponse({"counts": st.counts, "log": st.log})
            if request.method == "GET" and what == "state":
                return JSONResponse(
                    {z["name"]: [_public(r, z) for r in st.records[zid].values()]
                     for zid, z in st.zones.items()}
                )
            if request.method != "POST":
                return JSONResponse({"error": "unknown control"}, status_code=404)
            body = json.loads(await request.body() or b"{}")
            if what == "reset_stats":
                st.counts.clear()
                st.log.clear()
            elif what == "rate_limit":
                st.rate_limit_remaining = int(body.get("count", 1))
                st.rate_limit_retry_after = float(body.get("retry_after", 1))
            elif what == "trace":
                st.trace_ip = body.get("ip")
                st.trace_down = bool(body.get("down", False))
            elif what == "zone":
                st.add_zone(body["name"])
            elif what == "token":
                st.tokens[body["value"]] = Token(
                    body["value"], bool(body.get("can_edit", True)),
                    set(body["zones"]) if body.get("zones") is not None else None,
                )
            elif what == "records":
                # Seed records directly (e.g. foreign ones) without counting API calls.
                zid = zone_id_for(body["zone"])
                zone = st.zones[zid]
                now = _now()
                for item in body.get("records", []):
                    rec = RecordValidator(zone).normalise(item)
                    rec.update(id=secrets.token_hex(16), created_on=now, modified_on=now)
                    st.records[zid][rec["id"]] = rec
                st.save()
            elif what == "wipe":
                for zid in st.records:
                    st.records[zid] = {}
                st.counts.clear()
                st.log.clear()
                st.rate_limit_remaining = 0
                st.trace_ip = None
                st.trace_down = False
                st.save()
            else:
                return JSONResponse({"error": f"unknown control {what}"}, status_code=404)
        return JSONResponse({"ok": True})

    async def not_found(request: Request) -> Response:
        return error_response(APIError(404, 7003, f"No route for {request.url.path}"))

    p = API_PREFIX
    routes = [
        Route(f"{p}/zones", list_zones, methods=["GET"]),
        Route(f"{p}/zones/{{zone_id}}", get_zone, methods=["GET"]),
        Route(f"{p}/zones/{{zone_id}}/dns_records", list_records, methods=["GET"]),
        Route(f"{p}/zones/{{zone_id}}/dns_records", create_record, methods=["POST"]),
        Route(f"{p}/zones/{{zone_id}}/dns_records/batch", batch, methods=["POST"]),
        Route(f"{p}/zones/{{zone_id}}/dns_records/{{record_id}}", get_record, methods=["GET"]),
        Route(f"{p}/zones/{{zone_id}}/dns_records/{{record_id}}", change_record,
              methods=["PUT", "PATCH", "DELETE"]),
        Route("/cdn-cgi/trace", trace, methods=["GET"]),
        Route("/_hm/{what}", control, methods=["GET", "POST"]),
        Route("/{path:path}", not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ]
    app = Starlette(routes=routes)
    app.state.hm = st
    return app
