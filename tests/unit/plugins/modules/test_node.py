"""hostmesh.cluster.node against a real primary agent on loopback.

The manager (module_utils/_node.py) is driven through the real client
(hostmesh.module_utils._agent_client.AgentClient); the module itself through ansible-playbook,
for check mode, diff, no_log and its error messages.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "collections"))

from ansible_collections.hostmesh.cluster.plugins.module_utils._agent_client import (
    AgentClient,
    AuthRejected,
    Credentials,
    PrimaryUnreachable,
)
from ansible_collections.hostmesh.cluster.plugins.module_utils._node import (
    NodeError,
    NodeManager,
)

BIN = Path(sys.executable).parent
ADMIN = secrets.token_urlsafe(32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def primary(tmp_path_factory):
    data = tmp_path_factory.mktemp("primary")
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "NODE_IS_PRIMARY": "true",
        "NODE_NAME": "primary1",
        "NODE_ID": "primary1-id",
        "NODE_API_KEY": secrets.token_urlsafe(32),
        "SERVER_ADDRESS": f"127.0.0.1:{port}",
        "NODE_API_ENDPOINT": f"http://127.0.0.1:{port}",
        # the nodes here and in test_node_info live on the mesh 10.9.0.0/16, agent port 8080: the only
        # endpoints a primary accepts
        "MESH_SUBNET": "10.9.0.0/16",
        "SERVER_PORT": "8080",
        "DATA_DIR": str(data),
        "ADMIN_TOKEN": ADMIN,
        "REGISTRATION_TOKEN": secrets.token_urlsafe(32),
        "HEALTH_CHECK_INTERVAL": "3600",
    }
    log = (data / "agent.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "hostmesh"), "agent", "--env-file", "/dev/null"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    client = AgentClient(url, timeout=1)
    for _ in range(100):
        try:
            client.health()
            break
        except PrimaryUnreachable:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("agent did not start: " + (data / "agent.log").read_text()[-2000:])
    yield url, data
    proc.terminate()
    proc.wait(10)


def manager(url, check_mode=False, token=ADMIN):
    return NodeManager(AgentClient(url, Credentials(admin_token=token)), check_mode=check_mode)


def test_create_update_remove_idempotent(primary):
    url, data = primary
    key = secrets.token_urlsafe(32)
    want = {
        "name": "n-a",
        "api_endpoint": "http://10.9.0.2:8080",
        "labels": {"zone": "eu"},
        "wireguard_ip": None,
        "public_ip": None,
    }
    # check mode: reports the creation, creates nothing
    dry = manager(url, check_mode=True).present(want, api_key=key)
    assert dry.changed and dry.before == {}
    assert manager(url).client.find_node("n-a") is None

    made = manager(url).present(want, api_key=key)
    assert made.changed and made.node["name"] == "n-a" and made.node["labels"] == {"zone": "eu"}
    again = manager(url).present(want, api_key=key)
    assert not again.changed, "present (idempotency)"
    assert key not in json.dumps(made.node) + json.dumps(made.after)

    want2 = {**want, "api_endpoint": "http://10.9.0.3:8080"}
    upd = manager(url).present(want2)
    assert upd.changed and upd.before["api_endpoint"] == "http://10.9.0.2:8080"
    assert upd.after["api_endpoint"] == "http://10.9.0.3:8080"
    assert not manager(url).present(want2).changed

    # the key is write-only: on_create never resends it, always does (rotation)
    new_key = secrets.token_urlsafe(32)
    rot = manager(url).present(want2, api_key=new_key, update_key="always")
    assert rot.changed and rot.key_updated and rot.after["api_key"] == "(new key)"
    assert new_key not in json.dumps(rot.after)
    # the primary stores hashes only
    db = b"".join(p.read_bytes() for p in Path(data).glob("hostmesh.db*"))
    assert key.encode() not in db and new_key.encode() not in db and ADMIN.encode() not in db

    gone = manager(url).absent("n-a")
    assert gone.changed
    assert not manager(url).absent("n-a").changed, "absent (idempotency)"


def test_errors_are_clear(primary):
    url, _ = primary
    with pytest.raises(NodeError, match="api_key is required"):
        manager(url).present({"name": "n-b", "api_endpoint": "http://10.9.0.4:8080"})
    manager(url).present(
        {"name": "n-b", "api_endpoint": "http://10.9.0.4:8080"}, api_key=secrets.token_urlsafe(32)
    )
    with pytest.raises(NodeError, match="taken by another node"):
        manager(url).present({"name": "n-b"}, node_id="other-id", api_key=secrets.token_urlsafe(32))
    with pytest.raises(NodeError, match="is the primary"):
        manager(url).present({"name": "primary1", "api_endpoint": "http://x:1"})
    with pytest.raises(AuthRejected):
        manager(url, token="wrong-" + secrets.token_urlsafe(32)).present({"name": "n-b"})
    with pytest.raises(PrimaryUnreachable):
        NodeManager(
            AgentClient(
                f"http://127.0.0.1:{free_port()}", Credentials(admin_token=ADMIN), timeout=1
            )
        ).present({"name": "n-b"})
    manager(url).absent("n-b")


PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: Manage the node
      hostmesh.cluster.node:
        url: {url}
        token: {token}
        name: n-mod
        api_endpoint: http://10.9.0.9:8080
        api_key: {key}
        state: {state}
      register: r
    - name: Show the result
      ansible.builtin.debug:
        var: r
"""


def play(tmp_path, url, *args, state="present", token=ADMIN, key=None):
    key = key or secrets.token_urlsafe(32)
    path = tmp_path / "play.yml"
    path.write_text(PLAY.format(url=url, token=token, key=key, state=state))
    proc = subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            "localhost,",
            "-c",
            "local",
            "-vvv",
            str(path),
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return proc, key


def test_module_check_diff_and_no_secret_in_output(primary, tmp_path):
    url, _ = primary
    proc, key = play(tmp_path, url, "--check", "--diff")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "changed=1" in proc.stdout
    assert key not in proc.stdout and ADMIN not in proc.stdout
    assert manager(url).client.find_node("n-mod") is None
    proc, key = play(tmp_path, url, "--diff")
    assert proc.returncode == 0 and "changed=1" in proc.stdout
    assert key not in proc.stdout and ADMIN not in proc.stdout
    proc, _ = play(tmp_path, url, "--diff", key=key)
    assert proc.returncode == 0 and "changed=0" in proc.stdout, "present (idempotency)"
    proc, _ = play(tmp_path, url, state="absent")
    assert proc.returncode == 0 and "changed=1" in proc.stdout
    proc, _ = play(tmp_path, url, token="not-the-token-" + secrets.token_urlsafe(8))
    assert proc.returncode != 0 and "rejected the admin token" in proc.stdout
    proc, _ = play(tmp_path, f"http://127.0.0.1:{free_port()}")
    assert proc.returncode != 0 and "cannot reach the hostmesh API" in proc.stdout
