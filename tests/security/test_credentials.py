"""Credentials stay where they belong: no redirect with credentials, no re-registration
or rotation with a replaced key, no secret on a command line in the docs."""

from __future__ import annotations

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from agent_harness import ADMIN_TOKEN, REGISTRATION_TOKEN, free_port, node_key
from attack_helpers import call
from hostmesh.module_utils._agent_client import AgentClient, Credentials, HostmeshAPIError

REPO = Path(__file__).resolve().parents[2]


def test_the_client_never_follows_a_redirect_with_credentials(cluster):
    """Attack: something answering at the API URL redirects the admin's request to a
    listener of its own, which would receive the Authorization header."""
    primary = cluster.primary()
    received: list[dict] = []

    class Collector(BaseHTTPRequestHandler):
        def do_GET(self):
            received.append(dict(self.headers.items()))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"[]")

        def log_message(self, *args):
            pass

    collector = ThreadingHTTPServer(("127.0.0.88", free_port("127.0.0.88")), Collector)

    class Redirector(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.88:{collector.server_address[1]}"
                                         f"{self.path}")
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *args):
            pass

    redirector = ThreadingHTTPServer(("127.0.0.87", free_port("127.0.0.87")), Redirector)
    for server in (collector, redirector):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.87:{redirector.server_address[1]}"
        with pytest.raises(HostmeshAPIError, match="never follows a redirect") as err:
            AgentClient(url, Credentials(admin_token=ADMIN_TOKEN)).list_nodes()
        assert ADMIN_TOKEN not in str(err.value)
        with pytest.raises(HostmeshAPIError, match="redirect"):
            AgentClient(url, Credentials(node_id="n", node_api_key=node_key("n"))).heartbeat("n")
        assert received == []
    finally:
        for server in (collector, redirector):
            server.shutdown()
            server.server_close()
    # the real primary still answers the same client directly
    assert AgentClient(primary.url, Credentials(admin_token=ADMIN_TOKEN)).list_nodes()


def test_a_replaced_key_cannot_register_again_or_rotate_during_its_grace_period(cluster):
    """Attack: a stolen key that the admin just replaced is still valid for the grace
    period; with it, re-register with a key of one's own and take the node back."""
    primary = cluster.primary(KEY_GRACE_SECONDS="300")
    old, new, mine = node_key("g-old"), node_key("g-new"), node_key("g-mine")
    status, node, _hdrs = call(primary, "POST", "/api/nodes/register", {
        "name": "graced", "api_endpoint": "http://127.0.0.99:9", "api_key": old,
        "token": REGISTRATION_TOKEN})
    assert status == 201
    node_id = node["id"]
    primary.admin().update_node(node_id, {"api_key": new})  # the admin rotates the key
    body = {"id": node_id, "name": "graced", "api_endpoint": "http://127.0.0.99:9"}
    # the old key as proof, a key of the attacker's in the body: refused
    status, answer, _hdrs = call(primary, "POST", "/api/nodes/register", {**body, "api_key": mine},
                                 headers={"X-Node-ID": node_id, "X-Node-API-Key": old})
    assert status == 401, answer
    # the old key itself in the body (re-registering with it): refused too
    status, answer, _hdrs = call(primary, "POST", "/api/nodes/register", {**body, "api_key": old})
    assert status == 401, answer
    # the node's heartbeats with the old key still pass (that is what the grace is for)
    status, _body, _hdrs = call(primary, "POST", f"/api/nodes/{node_id}/heartbeat", {},
                                headers={"X-Node-ID": node_id, "X-Node-API-Key": old})
    assert status == 200
    # the new key works, the attacker's does not
    for key, expected in ((new, 200), (mine, 401)):
        status, _body, _hdrs = call(primary, "POST", f"/api/nodes/{node_id}/heartbeat", {},
                                    headers={"X-Node-ID": node_id, "X-Node-API-Key": key})
        assert status == expected
    assert call(primary, "POST", "/api/nodes/register", {**body, "api_key": new})[0] == 200


# A secret in an `ansible ... -a '...'` or `-e` argument, or a KEY=secret assignment in a
# shell line, ends up in the shell history and in `ps` for everyone on the machine.
_ARG_SECRET = re.compile(
    r"\b(value|token|api_token|api_key|password|secret)=(?!\s|['\"]?\{\{|@|\$\(|<file)"
    r"[^\s'\"]+", re.IGNORECASE)


def _command_lines(text: str):
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip().lstrip("$# ").strip("`")
        if re.match(r"(ansible(-playbook|-inventory)?|hostmesh|curl|make)\b", stripped) \
                or re.search(r"`(ansible|ansible-playbook|curl|hostmesh) [^`]*`", line):
            yield number, line


@pytest.mark.parametrize("doc", sorted(
    str(p.relative_to(REPO)) for p in [REPO / "README.md", *REPO.glob("docs/*.md"),
                                       REPO / "src" / "hostmesh" / "agent" / "README.md",
                                       *REPO.glob("roles/*/README.md"),
                                       *REPO.glob("roles/*/tasks/*.yml")]
    if p.exists()))
def test_no_secret_on_a_command_line_in_the_docs(doc):
    """The README put the Cloudflare token on a command line (`value=<token>`)."""
    text = (REPO / doc).read_text(encoding="utf-8")
    bad = [f"{doc}:{n}: {line.strip()}" for n, line in _command_lines(text)
           if _ARG_SECRET.search(line)]
    assert not bad, "secret on a command line:\n" + "\n".join(bad)
