"""Client for the hostmesh agent HTTP API (stdlib only).

One implementation of the protocol, shared by the `node` module, the `nodes`
inventory plugin, `hostmesh` commands and the tests. Errors are typed so each
caller can turn them into its own kind of failure (AnsibleError, fail_json,
exit code) with a message that says what is wrong and how to fix it.
Secrets (admin token, node key) are never part of any message.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any


class HostmeshAPIError(Exception):
    """Base error; `url` is the request URL (never carries a secret)."""

    def __init__(self, message: str, url: str = "", status: int | None = None):
        super().__init__(message)
        self.url = url
        self.status = status


class PrimaryUnreachable(HostmeshAPIError):
    """Connection refused, timeout, DNS or TLS failure."""


class AuthRejected(HostmeshAPIError):
    """401/403: the token or node key was refused."""


class NotFound(HostmeshAPIError):
    """404."""


class Conflict(HostmeshAPIError):
    """409: for example a node name already taken by another id."""


class RateLimited(HostmeshAPIError):
    """429: too many attempts from this address (registration)."""


class BadResponse(HostmeshAPIError):
    """The server answered something that is not the expected JSON."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: the request carries credentials (admin token, node key)
    that must reach the configured URL and nothing else."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # urllib then raises HTTPError with the 3xx status


@dataclass
class Credentials:
    """Either an admin bearer token, or a node id + key, or nothing."""

    admin_token: str | None = None
    node_id: str | None = None
    node_api_key: str | None = None

    def headers(self) -> dict[str, str]:
        if self.admin_token:
            return {"Authorization": f"Bearer {self.admin_token}"}
        if self.node_id and self.node_api_key:
            return {"X-Node-ID": self.node_id, "X-Node-API-Key": self.node_api_key}
        return {}


class AgentClient:
    """Talks to one agent (usually the primary) at `url`."""

    def __init__(
        self,
        url: str,
        credentials: Credentials | None = None,
        *,
        timeout: float = 5.0,
        validate_certs: bool = True,
        ca_path: str | None = None,
    ):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise HostmeshAPIError(
                f"invalid API URL {url!r}: expected http(s)://host[:port]", url=url
            )
        self.url = url.rstrip("/")
        self.credentials = credentials or Credentials()
        self.timeout = timeout
        self._ssl = None
        if parsed.scheme == "https":
            self._ssl = ssl.create_default_context(cafile=ca_path)
            if not validate_certs:
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE
        handlers: list = [_NoRedirect()]
        if self._ssl is not None:
            handlers.append(urllib.request.HTTPSHandler(context=self._ssl))
        self._opener = urllib.request.build_opener(*handlers)

    # -- transport -----------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """Send one request; return (status, decoded JSON or None).

        Raises a typed HostmeshAPIError for transport failures and for
        401/403/404/409 and other 4xx/5xx answers.
        """
        url = self.url + path
        data = None
        all_headers = {"Accept": "application/json", **self.credentials.headers()}
        if headers:
            all_headers.update(headers)
        if body is not None:
            data = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=all_headers)
        try:
            try:
                with self._opener.open(req, timeout=self.timeout) as resp:
                    status, raw = resp.status, resp.read()
            except urllib.error.HTTPError as exc:
                status, raw = exc.code, exc.read()
                if 300 <= status < 400:
                    raise HostmeshAPIError(
                        f"{method} {path}: {self.url} answered a redirect (HTTP {status}) "
                        f"to {_redact(exc.headers.get('Location', '?'))}; hostmesh never "
                        "follows a redirect, so the credentials go nowhere else: set the "
                        "API URL to the agent's own address",
                        url=url,
                        status=status,
                    ) from None
        # HTTPException: the agent went away in the middle of an answer
        # (IncompleteRead, RemoteDisconnected), including an error answer's body.
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise PrimaryUnreachable(
                f"cannot reach the hostmesh API at {self.url}: {reason}; check that the "
                "agent runs there and that this machine can reach its address",
                url=url,
            ) from None
        payload = _decode(raw, url, status)
        if status >= 400:
            _raise_for_status(status, payload, url, method, path)
        return status, payload

    # -- endpoints -----------------------------------------------------

    def health(self) -> dict:
        return self._expect_dict(self.request("GET", "/api/health")[1], "/api/health")

    def list_nodes(self) -> list[dict]:
        payload = self.request("GET", "/api/nodes")[1]
        # hostmesh answers a bare list; accept {"nodes": [...]} wrappers too.
        if isinstance(payload, dict) and isinstance(payload.get("nodes"), list):
            payload = payload["nodes"]
        if not isinstance(payload, list) or not all(isinstance(n, dict) for n in payload):
            raise BadResponse(
                f"unexpected answer from {self.url}/api/nodes: expected a JSON list of "
                f"node objects, got {type(payload).__name__}",
                url=self.url + "/api/nodes",
            )
        return payload

    def get_node(self, node_id: str) -> dict:
        path = f"/api/nodes/{urllib.parse.quote(node_id, safe='')}"
        return self._expect_dict(self.request("GET", path)[1], path)

    def find_node(self, name: str) -> dict | None:
        """Return the node called `name`, or None."""
        return next((n for n in self.list_nodes() if n.get("name") == name), None)

    def create_node(self, fields: dict) -> dict:
        return self._expect_dict(self.request("POST", "/api/nodes", fields)[1], "/api/nodes")

    def update_node(self, node_id: str, fields: dict) -> dict:
        path = f"/api/nodes/{urllib.parse.quote(node_id, safe='')}"
        return self._expect_dict(self.request("PUT", path, fields)[1], path)

    def delete_node(self, node_id: str) -> None:
        self.request("DELETE", f"/api/nodes/{urllib.parse.quote(node_id, safe='')}")

    def check_node(self, node_id: str) -> dict:
        path = f"/api/nodes/{urllib.parse.quote(node_id, safe='')}/check"
        return self._expect_dict(self.request("POST", path)[1], path)

    def create_invite(self, ttl_seconds: int | None = None) -> dict:
        body = {} if ttl_seconds is None else {"ttl_seconds": ttl_seconds}
        return self._expect_dict(self.request("POST", "/api/invites", body)[1], "/api/invites")

    def register(self, fields: dict) -> tuple[int, dict]:
        """POST /api/nodes/register; returns (201 new | 200 re-registered, body)."""
        status, payload = self.request("POST", "/api/nodes/register", fields)
        return status, self._expect_dict(payload, "/api/nodes/register")

    def heartbeat(self, node_id: str, fields: dict | None = None) -> dict:
        path = f"/api/nodes/{urllib.parse.quote(node_id, safe='')}/heartbeat"
        return self._expect_dict(self.request("POST", path, fields or {})[1], path)

    def system_stats(self) -> dict:
        return self._expect_dict(self.request("GET", "/api/system/stats")[1], "/api/system/stats")

    def _expect_dict(self, payload: Any, path: str) -> dict:
        if not isinstance(payload, dict):
            raise BadResponse(
                f"unexpected answer from {self.url}{path}: expected a JSON object, "
                f"got {type(payload).__name__}",
                url=self.url + path,
            )
        return payload


def _redact(location: str) -> str:
    """A redirect target for a message: no user:password, no query, one line."""
    try:
        parts = urllib.parse.urlsplit(location)
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        text = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        text = "?"
    return text.replace("\r", "").replace("\n", "")[:200]


def _decode(raw: bytes, url: str, status: int) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        snippet = raw[:120].decode("utf-8", "replace")
        raise BadResponse(
            f"{url} answered HTTP {status} with something that is not JSON "
            f"(starts with {snippet!r}); is this URL a hostmesh agent?",
            url=url,
            status=status,
        ) from None


def _raise_for_status(status: int, payload: Any, url: str, method: str, path: str) -> None:
    detail = ""
    if isinstance(payload, dict):
        detail = str(payload.get("error") or payload.get("detail") or "")
    where = f"{method} {path}"
    if status in (401, 403):
        # the server's reason never contains the secret itself
        raise AuthRejected(
            f"{where}: credentials rejected by {url.split('/api')[0]} (HTTP {status})"
            f"{': ' + detail if detail else ''}; check the admin token or node key",
            url=url,
            status=status,
        )
    if status == 429:
        raise RateLimited(
            f"{where}: too many attempts (HTTP 429); retry later", url=url, status=status
        )
    if status == 404:
        raise NotFound(f"{where}: not found (HTTP 404){': ' + detail if detail else ''}",
                       url=url, status=status)
    if status == 409:
        raise Conflict(f"{where}: conflict (HTTP 409){': ' + detail if detail else ''}",
                       url=url, status=status)
    raise HostmeshAPIError(
        f"{where}: HTTP {status}{': ' + detail if detail else ''}", url=url, status=status
    )
