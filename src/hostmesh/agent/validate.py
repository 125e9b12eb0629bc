"""Validation of request bodies: strict types, bounded sizes, clear messages."""

from __future__ import annotations

import ipaddress
import math
import re
from urllib.parse import urlsplit

from hostmesh.agent import security
from hostmesh.agent.config import ID_RE, NAME_RE, name_problem

# used with fullmatch only: `$` would let a trailing newline through
_LABEL_KEY = re.compile(r"[A-Za-z0-9_.-]{1,63}")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")
_URL_CHARS = re.compile(r"[\x21-\x7e]+")
MAX_LABELS = 64


class Invalid(Exception):
    """A request field is wrong; the message says which and what is expected."""


def node_id(value: object, field: str = "id") -> str:
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        raise Invalid(f"{field}: expected 1-64 letters, digits, '.', '_' or '-' "
                      "(starting with a letter or digit)")
    return value


def name(value: object) -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise Invalid("name: expected 1-63 letters, digits, '.', '_' or '-' "
                      "(starting with a letter or digit), e.g. the inventory hostname")
    problem = name_problem(value)
    if problem:
        raise Invalid(f"name: {problem}")
    return value


def endpoint(value: object) -> str:
    if isinstance(value, str) and len(value) <= 2048 and _URL_CHARS.fullmatch(value):
        try:
            parts = urlsplit(value)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            ok = False
        if ok and not parts.query and not parts.fragment and not parts.username:
            return value.rstrip("/")
    raise Invalid("api_endpoint: expected an http(s) URL without query or credentials, "
                  "e.g. http://10.50.0.2:8080")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def mesh_endpoint(fields: dict, *, subnet, port: int, allow_loopback: bool) -> None:
    """Check that `fields["api_endpoint"]` belongs to the node: http://<wireguard_ip>:<port>.

    The primary checks a node only at its mesh address and the agent port, so it never
    sends requests to an address a caller picked (metadata services, other hosts'
    ports). `fields["wireguard_ip"]` is filled from the endpoint when absent. With
    `allow_loopback` (ALLOW_LOOPBACK_ENDPOINTS, for tests on one machine) an
    endpoint on a loopback address is accepted on any port.
    """
    parts = urlsplit(fields["api_endpoint"])
    host = parts.hostname or ""
    if allow_loopback and _loopback(host):
        return
    example = f"http://{next(subnet.hosts(), '10.50.0.2')}:{port}"
    wg = fields.get("wireguard_ip")
    try:
        address = ipaddress.ip_address(host)
        explicit_port = parts.port
    except ValueError:
        address, explicit_port = None, None
    if parts.scheme != "http" or address is None or parts.path not in ("", "/") \
            or explicit_port != port or address not in subnet \
            or (wg is not None and ipaddress.ip_address(wg) != address):
        raise Invalid(
            f"api_endpoint: must be http://<the node's wireguard_ip>:{port} (e.g. {example}),"
            f" with the address inside the mesh ({subnet}) and equal to wireguard_ip "
            f"(got {fields['api_endpoint']!r}, wireguard_ip {wg!r}); the primary checks a "
            "node only at its mesh address and agent port")
    fields["wireguard_ip"] = str(address)


def api_key(value: object) -> str:
    problem = security.key_problem(value)
    if problem:
        raise Invalid(f"api_key {problem}")
    return value  # type: ignore[return-value]


def ip(value: object, field: str) -> str | None:
    if value is None:
        return None
    if not security.is_ip(value):
        raise Invalid(f"{field}: expected an IPv4 or IPv6 address or null")
    return value  # type: ignore[return-value]


def labels(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_LABELS:
        raise Invalid(f"labels: expected an object of at most {MAX_LABELS} string values, "
                      'e.g. {"zone": "eu"}')
    for key, item in value.items():
        if not _LABEL_KEY.fullmatch(key) or not isinstance(item, str) or len(item) > 255 \
                or not _PRINTABLE.fullmatch(item):
            raise Invalid("labels: keys are 1-63 letters, digits, '.', '_' or '-'; values "
                          "printable strings of at most 255 characters")
    return dict(value)


def version(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 64 or not _PRINTABLE.fullmatch(value):
        raise Invalid("version: expected a printable string of at most 64 characters")
    return value


def token(value: object, field: str = "token") -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= 512 or not _URL_CHARS.fullmatch(value):
        raise Invalid(f"{field}: expected a printable string of at most 512 characters")
    return value


def seconds(value: object, field: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not low <= value <= high:
        raise Invalid(f"{field}: expected a number of seconds between {low:g} and {high:g}")
    return float(value)


def node_fields(body: dict, *, partial: bool) -> dict:
    """Validate the node fields of a registration, creation (partial=False) or update."""
    out: dict = {}
    checks = {
        "id": node_id, "name": name, "api_endpoint": endpoint, "api_key": api_key,
        "wireguard_ip": lambda v: ip(v, "wireguard_ip"),
        "public_ip": lambda v: ip(v, "public_ip"), "labels": labels, "version": version,
    }
    for key, check in checks.items():
        if key in body:
            out[key] = check(body[key])
    if not partial:
        missing = [k for k in ("name", "api_endpoint", "api_key") if k not in out]
        if missing:
            raise Invalid(f"missing required field(s): {', '.join(missing)}")
    return out
