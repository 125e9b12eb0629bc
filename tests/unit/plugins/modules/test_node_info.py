"""hostmesh.cluster.node_info against a real primary agent on loopback.

The read logic (module_utils/_node.py: node_info) through the real client; the
module itself through ansible-playbook, in check mode and at -vvv, for its
results, its error messages and the token never showing.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys

import pytest
from ansible_collections.hostmesh.cluster.plugins.module_utils._node import (
    node_info,
    strip_secrets,
)
from test_node import ADMIN, BIN, ROOT, free_port, manager, primary  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def registered(primary):  # noqa: F811 (the fixture imported above)
    url, _ = primary
    made = []
    for name, ip in (("ni-b", "10.9.1.3"), ("ni-a", "10.9.1.2")):
        out = manager(url).present(
            {"name": name, "api_endpoint": f"http://{ip}:8080", "wireguard_ip": ip,
             "labels": {"zone": "eu"}},
            api_key=secrets.token_urlsafe(32),
        )
        made.append(out.node)
    yield url, {n["name"]: n for n in made}
    for name in ("ni-a", "ni-b"):
        manager(url).absent(name)


def test_every_node_sorted_by_name_and_one_by_name_or_id(registered):
    url, made = registered
    client = manager(url).client
    every = node_info(client)
    names = [n["name"] for n in every["nodes"]]
    assert names == sorted(names) and {"primary1", "ni-a", "ni-b"} <= set(names)
    assert "node" not in every
    assert next(n for n in every["nodes"] if n["name"] == "primary1")["is_primary"] is True

    by_name = node_info(client, name="ni-a")
    assert by_name["node"]["id"] == made["ni-a"]["id"]
    assert by_name["nodes"] == [by_name["node"]]
    assert by_name["node"]["wireguard_ip"] == "10.9.1.2"

    by_id = node_info(client, node_id=made["ni-b"]["id"])
    assert by_id["node"]["name"] == "ni-b"

    assert node_info(client, name="no-such-node") == {"nodes": [], "node": None}
    assert node_info(client, node_id="no-such-id") == {"nodes": [], "node": None}


def test_records_never_carry_a_key():
    class Primary:  # a primary that (wrongly) sends keys, as Selfhostly does
        def list_nodes(self):
            return [{"id": "1", "name": "x", "api_key": "k", "key_hash": "h", "token": "t",
                     "status": "online"}]

    out = node_info(Primary())
    assert out["nodes"] == [{"id": "1", "name": "x", "status": "online"}]
    assert strip_secrets({"api_endpoint": "e", "apiKey": "k", "private_key": "p"}) == {
        "api_endpoint": "e"}


PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Read the registry
      hostmesh.cluster.node_info: {args}
      register: r
    - name: Show the result
      ansible.builtin.debug:
        msg: "RESULT={{{{ r | to_json }}}}"
"""


def play(tmp_path, args: dict, *extra):
    path = tmp_path / "play.yml"
    path.write_text(PLAY.format(args=json.dumps(args)))
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", "-vvv", str(path),
         "-e", f"ansible_python_interpreter={sys.executable}", *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    result = None
    for line in proc.stdout.splitlines():
        if '"msg": "RESULT=' in line:
            result = json.loads(json.loads("{" + line.strip().rstrip(",") + "}")["msg"][7:])
    return proc, result


def test_module_read_only_in_check_mode_and_token_never_shown(registered, tmp_path):
    url, made = registered
    proc, r = play(tmp_path, {"url": url, "token": ADMIN, "name": "ni-b"}, "--check")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "changed=0" in proc.stdout
    assert r["node"]["id"] == made["ni-b"]["id"] and r["node"]["status"]
    assert ADMIN not in proc.stdout + proc.stderr
    assert "api_key" not in json.dumps(r)

    proc, r = play(tmp_path, {"url": url, "token": ADMIN, "gather_subset": ["nodes", "health"]})
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert r["health"]["status"] == "healthy" and r["health"]["role"] == "primary"
    assert {"primary1", "ni-a", "ni-b"} <= {n["name"] for n in r["nodes"]}
    assert "node" not in r
    assert ADMIN not in proc.stdout + proc.stderr

    # health alone: no token needed, none sent
    proc, r = play(tmp_path, {"url": url, "gather_subset": ["health"]})
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert r["health"]["status"] == "healthy" and "nodes" not in r


@pytest.mark.parametrize(
    "args,message",
    [
        ({}, "no admin token"),
        ({"token": "not-the-token-" + "x" * 20}, "rejected the admin token"),
        ({"token": ADMIN, "name": "a", "id": "b"}, "mutually exclusive"),
        ({"token": ADMIN, "name": "a", "gather_subset": ["health"]}, "add nodes to gather_subset"),
        ({"token": ADMIN, "url": "UNREACHABLE"}, "cannot reach the hostmesh API"),
    ],
    ids=["no-token", "wrong-token", "name-and-id", "name-without-nodes", "unreachable"],
)
def test_module_errors_are_clear(registered, tmp_path, args, message):
    url, _ = registered
    args = {"url": url, **args}
    if args["url"] == "UNREACHABLE":
        args["url"] = f"http://127.0.0.1:{free_port()}"
        args["timeout"] = 1
    proc, _ = play(tmp_path, args)
    assert proc.returncode != 0
    assert message in proc.stdout, proc.stdout[-3000:]
    assert ADMIN not in proc.stdout + proc.stderr
