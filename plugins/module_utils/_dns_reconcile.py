"""The one DNS reconciler: make the records a hostmesh cluster owns equal to the desired set.

Used by the `hostmesh.cluster.cloudflare_dns` module (whole cluster, on the
controller) and by `hostmesh ddns sync` (one node's own records, on the node).

Ownership is an exact match on the record comment ``hostmesh:<cluster>:<node>``
(comments, not tags: tags need a paid Cloudflare plan). Records whose comment
is anything else are never changed or deleted. An owned record is kept and
patched in place; every change goes out in one atomic ``dns_records/batch``
call, so a refused change leaves the zone exactly as it was.

Reads per converge: one zone lookup plus ``ceil(owned / per_page)`` record
pages; pagination stops at ``result_info.total_pages`` (the SDK's
auto-pagination would ask for one more, empty page).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

COMMENT_PREFIX = "hostmesh"
DEFAULT_PER_PAGE = 500
DEFAULT_MAX_RETRIES = 3
MAX_COMMENT_LENGTH = 100  # Cloudflare's free-plan limit for record comments

# Cloudflare error codes that mean "this token is not accepted at all".
TOKEN_REJECTED_CODES = {1000, 6003, 6111, 9106, 9109, 10001}
# ... and the one that means "accepted, but not allowed to do this".
PERMISSION_CODES = {10000, 9300}


# ---------------------------------------------------------------- errors


class DNSError(Exception):
    """Base class; the message says what failed and how to fix it (never a secret)."""


class InvalidSpec(DNSError):
    """The desired state itself is wrong (bad name, IP, ttl, node without address)."""


class TokenRejected(DNSError):
    """Cloudflare did not accept the API token (invalid, expired, revoked)."""


class PermissionMissing(DNSError):
    """The token is valid but lacks a permission on this zone."""


class ZoneNotFound(DNSError):
    """No zone of that name is visible to the token."""


class RateLimited(DNSError):
    """Still 429 after the bounded number of retries."""


class BatchRefused(DNSError):
    """Cloudflare refused the batch; none of its changes were applied."""


class APIUnavailable(DNSError):
    """The API could not be reached or answered with a server error."""


# ---------------------------------------------------------------- data


@dataclass(frozen=True)
class Record:
    """One A/AAAA record as hostmesh sees it."""

    name: str
    type: str
    content: str
    ttl: int
    proxied: bool
    comment: str
    id: str | None = None

    def key(self) -> tuple[str, str, str]:
        return (self.comment, self.name, self.type)

    def same_value(self, other: Record) -> bool:
        return (self.name, self.type, self.content, self.ttl, self.proxied, self.comment) == (
            other.name, other.type, other.content, other.ttl, other.proxied, other.comment)

    def line(self) -> str:
        """One diff line; stable ordering makes diffs readable."""
        return (f"{self.name} {self.type} {self.content} ttl={self.ttl} "
                f"proxied={str(self.proxied).lower()} comment={self.comment}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class NodeAddresses:
    ipv4: str | None = None
    ipv6: str | None = None


@dataclass(frozen=True)
class Scope:
    """Which owned records a run may touch.

    ``node=None`` means every node of the cluster (the Ansible module);
    a node name restricts to that node's own records (`hostmesh ddns sync`).
    ``types`` restricts the record types (sync leaves AAAA alone without IPv6).
    """

    node: str | None = None
    types: frozenset[str] = frozenset({"A", "AAAA"})


@dataclass
class Spec:
    """What the zone should hold for one cluster."""

    zone: str
    cluster: str
    names: list[str]
    nodes: dict[str, NodeAddresses]
    ttl: int = 300
    proxied: bool = False
    scope: Scope = field(default_factory=Scope)


@dataclass
class Plan:
    creates: list[Record] = field(default_factory=list)
    updates: list[tuple[Record, Record]] = field(default_factory=list)  # (before, after)
    deletes: list[Record] = field(default_factory=list)
    unchanged: list[Record] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.creates or self.updates or self.deletes)

    def diff(self, zone: str, cluster: str) -> dict[str, str]:
        before = sorted([r.line() for r in self.unchanged] + [b.line() for b, _after in self.updates]
                        + [r.line() for r in self.deletes])
        after = sorted([r.line() for r in self.unchanged] + [a.line() for _before, a in self.updates]
                       + [r.line() for r in self.creates])
        header = f"cloudflare:{zone} records owned by hostmesh:{cluster}"
        return {
            "before_header": header,
            "after_header": header,
            "before": "".join(f"{line}\n" for line in before),
            "after": "".join(f"{line}\n" for line in after),
        }


@dataclass
class Result:
    changed: bool
    zone_id: str
    plan: Plan
    created: list[dict]
    updated: list[dict]
    deleted: list[dict]
    records: list[dict]  # the owned records in scope after the run (or as planned in check mode)
    diff: dict[str, str]
    api_calls: dict[str, int]


# ---------------------------------------------------------------- pure logic


def owner_comment(cluster: str, node: str) -> str:
    return f"{COMMENT_PREFIX}:{cluster}:{node}"


def cluster_prefix(cluster: str) -> str:
    return f"{COMMENT_PREFIX}:{cluster}:"


def owner_of(comment: str | None, cluster: str) -> str | None:
    """The node owning a record of this cluster, or None when the record is not ours."""
    prefix = cluster_prefix(cluster)
    if not comment or not comment.startswith(prefix):
        return None
    node = comment[len(prefix):]
    if not node or node != node.strip() or any(c.isspace() for c in node):
        return None
    return node


def normalise_name(name: str, zone: str) -> str:
    n = str(name).strip().rstrip(".").lower()
    if n == "@":
        n = zone
    if n != zone and not n.endswith("." + zone):
        raise InvalidSpec(
            f"name {name!r} is not inside zone {zone!r}: give the full name, "
            f"e.g. {zone!r} or '*.{zone}'"
        )
    return n


def validate_spec(spec: Spec) -> Spec:
    """Check and normalise a Spec; raise InvalidSpec saying what to fix."""
    zone = str(spec.zone or "").strip().rstrip(".").lower()
    if not zone or "." not in zone:
        raise InvalidSpec(f"zone {spec.zone!r} is not a domain name: set zone to e.g. 'example.org'")
    cluster = str(spec.cluster or "")
    if not cluster or ":" in cluster or any(c.isspace() for c in cluster):
        raise InvalidSpec(
            f"cluster {cluster!r} cannot be used in the owner comment hostmesh:<cluster>:<node>: "
            "use a non-empty name without ':' or spaces"
        )
    names: list[str] = []
    for name in spec.names or []:
        n = normalise_name(name, zone)
        if n not in names:
            names.append(n)
    if spec.nodes and not names:
        raise InvalidSpec("names is empty: list the public names, e.g. ['example.org', '*.example.org']")
    ttl = spec.ttl
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not (ttl == 1 or 30 <= ttl <= 86400):
        raise InvalidSpec(f"ttl {ttl!r} is invalid: use 1 (automatic) or 30..86400 seconds")
    if spec.proxied:
        ttl = 1  # Cloudflare stores proxied records with automatic TTL
    nodes: dict[str, NodeAddresses] = {}
    seen: dict[tuple[str, str], str] = {}
    for node, addrs in (spec.nodes or {}).items():
        node = str(node)
        comment = owner_comment(cluster, node)
        if not node or any(c.isspace() for c in node) or len(comment) > MAX_COMMENT_LENGTH:
            raise InvalidSpec(
                f"node name {node!r} cannot be used in the owner comment {comment!r}: "
                f"use a name without spaces, comment at most {MAX_COMMENT_LENGTH} characters"
            )
        if isinstance(addrs, Mapping):
            unknown = set(addrs) - {"ipv4", "ipv6"}
            if unknown:
                raise InvalidSpec(f"node {node}: unknown keys {sorted(unknown)}; only ipv4 and ipv6")
            addrs = NodeAddresses(addrs.get("ipv4") or None, addrs.get("ipv6") or None)
        v4 = _ip(addrs.ipv4, 4, node) if addrs.ipv4 else None
        v6 = _ip(addrs.ipv6, 6, node) if addrs.ipv6 else None
        if not v4 and not v6:
            raise InvalidSpec(
                f"node {node} has neither ipv4 nor ipv6: give it an address "
                "(hostmesh_public_ip) or leave it out of nodes"
            )
        for fam, ip in (("A", v4), ("AAAA", v6)):
            if ip and (fam, ip) in seen:
                raise InvalidSpec(
                    f"nodes {seen[(fam, ip)]} and {node} both have {ip}: Cloudflare refuses two "
                    "identical records under one name; give each node its own address"
                )
            if ip:
                seen[(fam, ip)] = node
        nodes[node] = NodeAddresses(v4, v6)
    if spec.scope.node is not None and set(nodes) - {spec.scope.node}:
        raise InvalidSpec(f"a run scoped to node {spec.scope.node} can only publish that node")
    return replace(spec, zone=zone, cluster=cluster, names=names, nodes=nodes, ttl=ttl)


def _ip(value: str, version: int, node: str) -> str:
    try:
        ip = ipaddress.ip_address(str(value).strip())
    except ValueError as exc:
        raise InvalidSpec(f"node {node}: {value!r} is not an IP address") from exc
    if ip.version != version:
        key = "ipv4" if version == 4 else "ipv6"
        raise InvalidSpec(f"node {node}: {value!r} is not an IPv{version} address (key {key})")
    return str(ip)


def desired_records(spec: Spec) -> list[Record]:
    out = []
    for node in sorted(spec.nodes):
        addrs = spec.nodes[node]
        for name in spec.names:
            for rtype, ip in (("A", addrs.ipv4), ("AAAA", addrs.ipv6)):
                if ip and rtype in spec.scope.types:
                    out.append(Record(name, rtype, ip, spec.ttl, spec.proxied,
                                      owner_comment(spec.cluster, node)))
    return out


def in_scope(record: Record, spec: Spec) -> bool:
    """True when this run owns and may touch ``record``."""
    node = owner_of(record.comment, spec.cluster)
    if node is None or record.type not in spec.scope.types:
        return False
    return spec.scope.node is None or node == spec.scope.node


def plan_changes(existing: Iterable[Record], desired: Iterable[Record], spec: Spec) -> Plan:
    """Compute creates/updates/deletes; only records in scope are ever considered."""
    plan = Plan()
    owned = [r for r in existing if in_scope(r, spec)]
    by_key: dict[tuple, list[Record]] = {}
    for rec in sorted(owned, key=lambda r: (r.key(), r.content, r.id or "")):
        by_key.setdefault(rec.key(), []).append(rec)
    leftovers: list[Record] = []
    pending: list[Record] = []
    for want in desired:
        have = by_key.pop(want.key(), [])
        if not have:
            pending.append(want)
            continue
        # Prefer the record already holding the right value, so a rerun is a no-op.
        have.sort(key=lambda r: (not r.same_value(want), r.content != want.content, r.id or ""))
        keep, extra = have[0], have[1:]
        if keep.same_value(want):
            plan.unchanged.append(keep)
        else:
            plan.updates.append((keep, replace(want, id=keep.id)))
        leftovers.extend(extra)
    for recs in by_key.values():
        leftovers.extend(recs)
    # Reuse an owned record of the same node and type (e.g. a renamed name) in place.
    for want in pending:
        match = next((r for r in leftovers if r.comment == want.comment and r.type == want.type), None)
        if match is None:
            plan.creates.append(want)
        else:
            leftovers.remove(match)
            plan.updates.append((match, replace(want, id=match.id)))
    plan.deletes.extend(sorted(leftovers, key=lambda r: (r.key(), r.content)))
    return plan


# ---------------------------------------------------------------- the API side


def make_client(api_token: str | None, api_base_url: str | None = None, *,
                max_retries: int = DEFAULT_MAX_RETRIES, timeout: float = 30.0):
    """Build the official SDK client (the SDK honours CLOUDFLARE_BASE_URL when no URL is given).

    Rate limits are retried by the SDK itself, ``max_retries`` times, waiting what
    ``Retry-After`` says (when at most 60 s, else its own capped backoff).
    """
    try:
        import cloudflare
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise DNSError(
            "the Cloudflare SDK is not installed: pip install cloudflare "
            "into the Python that runs this"
        ) from exc
    if not api_token:
        raise TokenRejected(
            "no Cloudflare API token: set api_token (or CLOUDFLARE_API_TOKEN) to a token "
            "with Zone:Read and DNS:Edit on the zone"
        )
    kwargs: dict[str, Any] = {"api_token": api_token, "max_retries": max_retries, "timeout": timeout}
    if api_base_url:
        kwargs["base_url"] = api_base_url
    return cloudflare.Cloudflare(**kwargs)


class Reconciler:
    """Reads the zone, plans, and applies the plan in one batch through the SDK."""

    def __init__(self, client, *, per_page: int = DEFAULT_PER_PAGE):
        self.client = client
        self.per_page = per_page
        self.calls: dict[str, int] = {"reads": 0, "writes": 0}

    # -- reading
    def find_zone(self, zone: str) -> str:
        self.calls["reads"] += 1
        page = self._call(lambda: self.client.zones.list(name=zone, per_page=50),
                          f"looking up zone {zone}", zone=zone)
        for z in page.result or []:
            if z.name == zone:
                return z.id
        raise ZoneNotFound(
            f"zone {zone} not found: no zone of that name is visible to this API token; "
            "check the zone name (the apex, e.g. 'example.org') and that the token covers it "
            "with Zone:Read"
        )

    def list_owned(self, zone_id: str, spec: Spec) -> list[Record]:
        """Every record whose comment starts with the cluster's (or node's) owner comment."""
        if spec.scope.node is not None:
            flt = {"exact": owner_comment(spec.cluster, spec.scope.node)}
        else:
            flt = {"startswith": cluster_prefix(spec.cluster)}
        out: list[Record] = []
        page_no = 1
        while True:
            self.calls["reads"] += 1
            page = self._call(
                lambda p=page_no: self.client.dns.records.list(
                    zone_id=zone_id, comment=flt, per_page=self.per_page, page=p),
                f"listing records of zone {spec.zone}", zone=spec.zone)
            items = page.result or []
            for item in items:
                if item.type in ("A", "AAAA"):
                    out.append(_from_sdk(item))
            info = page.result_info
            total_pages = getattr(info, "total_pages", None) if info is not None else None
            if total_pages is not None:
                if page_no >= int(total_pages):
                    break
            elif len(items) < self.per_page:
                break
            page_no += 1
        return out

    # -- writing
    def apply(self, zone_id: str, plan: Plan, spec: Spec) -> Any:
        body: dict[str, list] = {}
        if plan.deletes:
            body["deletes"] = [{"id": r.id} for r in plan.deletes]
        if plan.updates:
            body["patches"] = [_patch(before, after) for before, after in plan.updates]
        if plan.creates:
            body["posts"] = [_post(r) for r in plan.creates]
        self.calls["writes"] += 1
        n = len(plan.deletes) + len(plan.updates) + len(plan.creates)
        return self._call(lambda: self.client.dns.records.batch(zone_id=zone_id, **body),
                          f"applying {n} record changes to zone {spec.zone} in one batch",
                          zone=spec.zone, batch=True)

    def converge(self, spec: Spec, *, check_mode: bool = False) -> Result:
        spec = validate_spec(spec)
        zone_id = self.find_zone(spec.zone)
        existing = self.list_owned(zone_id, spec)
        plan = plan_changes(existing, desired_records(spec), spec)
        created = [r.as_dict() for r in plan.creates]
        updated = [dict(after.as_dict(), before=_brief(before)) for before, after in plan.updates]
        deleted = [r.as_dict() for r in plan.deletes]
        if plan.changed and not check_mode:
            response = self.apply(zone_id, plan, spec)
            posts = list(getattr(response, "posts", None) or [])
            for item, made in zip(created, posts):
                item["id"] = getattr(made, "id", None)
        final = [r.as_dict() for r in plan.unchanged] + [
            {k: v for k, v in u.items() if k != "before"} for u in updated] + created
        final.sort(key=lambda r: (r["name"], r["type"], r["comment"], r["content"]))
        return Result(
            changed=plan.changed, zone_id=zone_id, plan=plan, created=created, updated=updated,
            deleted=deleted, records=final, diff=plan.diff(spec.zone, spec.cluster),
            api_calls=dict(self.calls),
        )

    # -- errors
    def _call(self, fn, doing: str, *, zone: str, batch: bool = False):
        import cloudflare

        try:
            return fn()
        except cloudflare.APIStatusError as exc:
            raise _translate(exc, doing, zone, batch) from None
        except cloudflare.APIConnectionError as exc:
            raise APIUnavailable(
                f"cannot reach the Cloudflare API while {doing} ({type(exc).__name__}: {exc}); "
                "check api_base_url / CLOUDFLARE_BASE_URL and the network"
                + ("; nothing was applied" if batch else "")
            ) from None


def _translate(exc, doing: str, zone: str, batch: bool) -> DNSError:
    status = exc.status_code
    errors = []
    body = exc.body if isinstance(exc.body, dict) else {}
    for err in body.get("errors") or []:
        if isinstance(err, dict):
            errors.append((err.get("code"), str(err.get("message", ""))))
    codes = {c for c, _msg in errors}
    detail = "; ".join(f"{c} {m}".strip() for c, m in errors) or f"HTTP {status}"
    nothing = " Nothing was applied." if batch else ""
    if status == 429:
        retry = exc.response.headers.get("retry-after", "?")
        return RateLimited(
            f"Cloudflare rate limited the requests while {doing} (HTTP 429, Retry-After {retry} s) "
            f"and retries were exhausted ({detail}); wait a few minutes and run again.{nothing}"
        )
    if codes & TOKEN_REJECTED_CODES or status == 401:
        return TokenRejected(
            f"Cloudflare rejected the API token while {doing} ({detail}): the token is invalid, "
            "expired or revoked; set api_token / CLOUDFLARE_API_TOKEN to a valid API token "
            f"(not a Global API Key).{nothing}"
        )
    if status == 403 or codes & PERMISSION_CODES:
        need = "DNS:Edit" if batch else "Zone:Read and DNS:Read"
        return PermissionMissing(
            f"the API token lacks a permission while {doing} ({detail}): give it {need} on "
            f"zone {zone} (Cloudflare dashboard > API Tokens > Edit).{nothing}"
        )
    if status == 404 and not batch:
        return ZoneNotFound(f"zone {zone} not found while {doing} ({detail})")
    if status >= 500:
        return APIUnavailable(f"Cloudflare answered HTTP {status} while {doing} ({detail}); "
                              f"try again later.{nothing}")
    if batch:
        return BatchRefused(
            f"Cloudflare refused the batch while {doing} ({detail}); nothing was applied: "
            "the batch is atomic. Fix the conflict (e.g. a CNAME or identical record not owned by "
            "this cluster under one of the names) and run again."
        )
    return DNSError(f"Cloudflare refused the request while {doing} (HTTP {status}: {detail})")


def _from_sdk(item) -> Record:
    ttl = getattr(item, "ttl", 1)
    return Record(
        name=str(item.name).lower(),
        type=str(item.type),
        content=str(ipaddress.ip_address(item.content)) if item.type in ("A", "AAAA") else item.content,
        ttl=int(ttl) if ttl is not None else 1,
        proxied=bool(getattr(item, "proxied", False)),
        comment=getattr(item, "comment", None) or "",
        id=item.id,
    )


def _post(r: Record) -> dict:
    return {"type": r.type, "name": r.name, "content": r.content, "ttl": r.ttl,
            "proxied": r.proxied, "comment": r.comment}


def _patch(before: Record, after: Record) -> dict:
    body: dict[str, Any] = {"id": before.id, "type": after.type}
    for key in ("name", "content", "ttl", "proxied", "comment"):
        if getattr(before, key) != getattr(after, key):
            body[key] = getattr(after, key)
    return body


def _brief(r: Record) -> dict:
    return {"name": r.name, "content": r.content, "ttl": r.ttl, "proxied": r.proxied}
