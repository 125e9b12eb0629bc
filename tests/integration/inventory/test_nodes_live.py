"""hostmesh.cluster.nodes against a real primary with real secondaries.

Real `hostmesh agent` processes on 127.8.x.y, the real `ansible-inventory`,
`ansible` and `ansible-doc` commands, real HTTP. Each test builds what it
needs and always stops its processes.
"""

from __future__ import annotations

import http.server
import json
import secrets
import shutil
import sys
import threading
import time
from pathlib import Path

import pytest
from livecluster import (
    ANSIBLE,
    ANSIBLE_INVENTORY,
    REPO,
    Cluster,
    ansible_env,
    group_hosts,
    inventory_list,
    plain,
    run,
    write_cfg,
)

DATA = REPO / "tests" / "unit" / "plugins" / "inventory" / "data"


@pytest.fixture
def cluster(tmp_path):
    """primary + node2 (labels gpu, zone=eu) + node3, all registered and online."""
    c = Cluster(tmp_path / "cluster", net=1)
    try:
        c.start_primary(NODE_WIREGUARD_IP="10.50.0.1", NODE_PUBLIC_IP="203.0.113.1")
        c.start_secondary("node2", 2, NODE_WIREGUARD_IP="10.50.0.2", NODE_LABELS="gpu=true,zone=eu")
        c.start_secondary("node3", 3, NODE_WIREGUARD_IP="10.50.0.3", NODE_LABELS="zone=us")
        c.wait_for(
            lambda n: (
                {"node2", "node3"} <= set(n) and all(x["status"] == "online" for x in n.values())
            ),
            what="node2 and node3 registered and online",
        )
        yield c
    finally:
        c.stop()


def test_list_and_graph(cluster, tmp_path):
    cfg = write_cfg(tmp_path / "lab.hostmesh.yml", cluster.primary.url)
    env = ansible_env(cluster.admin_token)
    data = inventory_list(cfg, env)
    assert group_hosts(data, "hostmesh_online") == ["node2", "node3", "primary"]
    assert group_hosts(data, "hostmesh_offline") == []
    assert group_hosts(data, "hostmesh_primary") == ["primary"]
    assert group_hosts(data, "hostmesh_secondary") == ["node2", "node3"]
    assert group_hosts(data, "hostmesh_nodes") == ["node2", "node3", "primary"]
    assert group_hosts(data, "hostmesh_label_gpu") == ["node2"]
    assert group_hosts(data, "hostmesh_label_zone_eu") == ["node2"]
    assert group_hosts(data, "hostmesh_label_zone_us") == ["node3"]
    hv = data["_meta"]["hostvars"]
    ids = {n["name"]: n["id"] for n in cluster.api("GET", "/api/nodes")}
    assert hv["node2"]["ansible_host"] == "10.50.0.2"
    assert hv["node2"]["hostmesh_node_id"] == ids["node2"]
    assert hv["node2"]["hostmesh_status"] == "online"
    assert hv["node2"]["hostmesh_is_primary"] is False
    assert hv["node2"]["hostmesh_consecutive_failures"] == 0
    assert hv["node2"]["hostmesh_api_endpoint"] == cluster.agents["node2"].url
    assert hv["node2"]["hostmesh_wireguard_ip"] == "10.50.0.2"
    assert hv["node2"]["hostmesh_labels"] == {"gpu": "true", "zone": "eu"}
    assert hv["node2"]["hostmesh_last_seen"]
    assert hv["primary"]["hostmesh_is_primary"] is True
    assert hv["primary"]["hostmesh_public_ip"] == "203.0.113.1"
    for host in hv.values():
        assert not any("key" in k or "token" in k for k in host)

    res = run([ANSIBLE_INVENTORY, "-i", str(cfg), "--graph"], env)
    assert res.returncode == 0, res.stderr
    graph = res.stdout
    assert "@hostmesh_online:" in graph and "@hostmesh_primary:" in graph
    online = graph.split("@hostmesh_online:")[1].split("@")[0]
    assert all(f"|--{h}" in online for h in ("primary", "node2", "node3"))


def test_stopped_secondary_moves_to_offline(cluster, tmp_path):
    cfg = write_cfg(tmp_path / "lab.hostmesh.yml", cluster.primary.url)
    env = ansible_env(cluster.admin_token)
    cluster.agents["node3"].stop()
    cluster.wait_for(lambda n: n["node3"]["status"] == "offline", what="node3 offline")
    data = inventory_list(cfg, env)
    assert group_hosts(data, "hostmesh_online") == ["node2", "primary"]
    assert group_hosts(data, "hostmesh_offline") == ["node3"]
    assert data["_meta"]["hostvars"]["node3"]["hostmesh_consecutive_failures"] >= 3

    # statuses filter: only the healthy ones
    cfg_online = write_cfg(
        tmp_path / "online.hostmesh.yml", cluster.primary.url, statuses=["online"]
    )
    data = inventory_list(cfg_online, env)
    assert sorted(data["_meta"]["hostvars"]) == ["node2", "primary"]

    cluster.wait_for(lambda n: n["node3"]["status"] == "unreachable", what="node3 unreachable")
    data = inventory_list(cfg, env)
    assert group_hosts(data, "hostmesh_unreachable") == ["node3"]
    assert group_hosts(data, "hostmesh_offline") == []

    # it comes back: its startup heartbeat makes it online at once
    cluster.agents["node3"].start()
    cluster.wait_for(lambda n: n["node3"]["status"] == "online", what="node3 online again")
    assert group_hosts(inventory_list(cfg, env), "hostmesh_online") == ["node2", "node3", "primary"]


def test_ping_reaches_every_online_node(cluster, tmp_path):
    """`ansible -i cfg hostmesh_online -m ping`: here every 'node' is this machine (local)."""
    cfg = write_cfg(
        tmp_path / "lab.hostmesh.yml",
        cluster.primary.url,
        compose={
            "ansible_connection": "'local'",
            "ansible_python_interpreter": repr(sys.executable),
        },
    )
    cluster.agents["node3"].stop()
    cluster.wait_for(lambda n: n["node3"]["status"] == "offline", what="node3 offline")
    res = run(
        [ANSIBLE, "-i", str(cfg), "hostmesh_online", "-m", "ansible.builtin.ping"],
        ansible_env(cluster.admin_token),
    )
    assert res.returncode == 0, res.stdout + res.stderr
    lines = [ln for ln in res.stdout.splitlines() if "| SUCCESS" in ln]
    assert sorted(ln.split()[0] for ln in lines) == ["node2", "primary"]
    assert "node3" not in res.stdout


def test_compose_groups_keyed_groups_filters(cluster, tmp_path):
    cfg = write_cfg(
        tmp_path / "lab.hostmesh.yml",
        cluster.primary.url,
        ansible_host_source="api_endpoint",
        compose={
            "mesh_url": "'http://' ~ hostmesh_wireguard_ip ~ ':8000'",
            "zone": "hostmesh_labels.zone | default('none')",
        },
        groups={"gpu_nodes": "'gpu' in hostmesh_labels"},
        keyed_groups=[
            {"key": "hostmesh_labels.zone | default('none')", "prefix": "zone"},
            {"key": "hostmesh_status", "prefix": "status"},
        ],
        filters=[{"exclude": "inventory_hostname == 'node3'"}],
        strict=True,
    )
    data = inventory_list(cfg, ansible_env(cluster.admin_token))
    hv = data["_meta"]["hostvars"]
    assert sorted(hv) == ["node2", "primary"]
    assert hv["node2"]["ansible_host"] == "127.8.1.2"
    assert hv["node2"]["mesh_url"] == "http://10.50.0.2:8000"
    assert hv["node2"]["zone"] == "eu" and hv["primary"]["zone"] == "none"
    assert group_hosts(data, "gpu_nodes") == ["node2"]
    assert group_hosts(data, "zone_eu") == ["node2"]
    assert group_hosts(data, "zone_none") == ["primary"]
    assert group_hosts(data, "status_online") == ["node2", "primary"]


def test_api_values_are_not_templated(cluster, tmp_path):
    marker = tmp_path / "pwned"
    evil = "{{ lookup('ansible.builtin.pipe', 'touch " + str(marker) + "') }}"
    cluster.api(
        "POST",
        "/api/nodes",
        {
            "name": "evil",
            "api_endpoint": "http://127.8.1.99:9",
            "api_key": secrets.token_hex(32),
            "labels": {"note": evil},
            "version": "{{ 6 * 7 }}",
        },
    )
    cfg = write_cfg(
        tmp_path / "lab.hostmesh.yml",
        cluster.primary.url,
        compose={
            "ansible_connection": "'local'",
            "ansible_python_interpreter": repr(sys.executable),
            "note_copy": "hostmesh_labels.note",
        },
    )
    env = ansible_env(cluster.admin_token)
    raw = inventory_list(cfg, env, raw=True)["_meta"]["hostvars"]["evil"]
    # ansible-inventory shows values marked unsafe as {"__ansible_unsafe": ...}
    assert raw["hostmesh_labels"]["note"] == {"__ansible_unsafe": evil}
    assert raw["note_copy"] == {"__ansible_unsafe": evil}
    assert raw["hostmesh_version"] == {"__ansible_unsafe": "{{ 6 * 7 }}"}
    res = run(
        [
            ANSIBLE,
            "-i",
            str(cfg),
            "evil",
            "-m",
            "ansible.builtin.debug",
            "-a",
            json.dumps(
                {"msg": "{{ hostmesh_labels.note }} {{ hostmesh_version }} {{ note_copy }}"}
            ),
        ],
        env,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "{{ 6 * 7 }}" in res.stdout and "42" not in res.stdout
    assert not marker.exists()


# -- errors, secrets ---------------------------------------------------------------------


def test_wrong_token_is_rejected_and_never_shown(cluster, tmp_path):
    wrong = "wrong-token-Zq8vX1pL0mN4bT7yR2sK"
    cfg = write_cfg(tmp_path / "lab.hostmesh.yml", cluster.primary.url)
    res = run([ANSIBLE_INVENTORY, "-i", str(cfg), "--list", "-vvv"], ansible_env(wrong))
    out = res.stdout + res.stderr
    assert "admin token rejected" in out
    assert wrong not in out
    # and with the right token, -vvv output never shows it either
    res = run(
        [ANSIBLE_INVENTORY, "-i", str(cfg), "--list", "-vvvv"], ansible_env(cluster.admin_token)
    )
    assert res.returncode == 0, res.stderr
    assert cluster.admin_token not in res.stdout + res.stderr
    res = run(
        [
            ANSIBLE,
            "-i",
            str(cfg),
            "primary",
            "-m",
            "ansible.builtin.debug",
            "-a",
            "var=hostvars[inventory_hostname]",
            "-vvv",
            "-c",
            "local",
        ],
        ansible_env(cluster.admin_token),
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert cluster.admin_token not in res.stdout + res.stderr


def test_token_in_config_templated_and_vaulted(cluster, tmp_path):
    secret = tmp_path / "admin_token"
    secret.write_text(cluster.admin_token + "\n")
    cfg = write_cfg(
        tmp_path / "lab.hostmesh.yml",
        cluster.primary.url,
        token="{{ lookup('ansible.builtin.file', '" + str(secret) + "') }}",
    )
    assert "primary" in inventory_list(cfg, ansible_env())["_meta"]["hostvars"]

    vault_pass = tmp_path / "vault-pass"
    vault_pass.write_text("correct horse battery staple\n")
    res = run(
        [
            str(Path(ANSIBLE).parent / "ansible-vault"),
            "encrypt_string",
            "--vault-password-file",
            str(vault_pass),
            "--name",
            "token",
            cluster.admin_token,
        ],
        ansible_env(),
    )
    assert res.returncode == 0, res.stderr
    cfg = tmp_path / "vault.hostmesh.yml"
    cfg.write_text(f"plugin: hostmesh.cluster.nodes\nurl: {cluster.primary.url}\n" + res.stdout)
    assert cluster.admin_token not in cfg.read_text()
    data = inventory_list(cfg, ansible_env(), "--vault-password-file", str(vault_pass))
    assert group_hosts(data, "hostmesh_primary") == ["primary"]


def test_node_credentials(cluster, tmp_path):
    """X-Node-ID / X-Node-API-Key: accepted by a Selfhostly primary; hostmesh wants admin."""
    node2 = cluster.agents["node2"]
    node_id = (node2.data_dir / "node_id").read_text().strip()
    key = (node2.data_dir / "node_api_key").read_text().strip()
    cfg = write_cfg(
        tmp_path / "lab.hostmesh.yml", cluster.primary.url, node_id=node_id, node_api_key=key
    )
    res = run([ANSIBLE_INVENTORY, "-i", str(cfg), "--list", "-vvv"], ansible_env())
    out = res.stdout + res.stderr
    assert key not in out
    # a hostmesh primary lists nodes for the admin only (Selfhostly accepts node keys)
    assert "node credentials (node_id/node_api_key) rejected" in out
    assert "node2" not in res.stdout


def test_unreachable_primary_and_cache(cluster, tmp_path):
    cache_dir = tmp_path / "cache"
    opts = {
        "cache": True,
        "cache_plugin": "ansible.builtin.jsonfile",
        "cache_connection": str(cache_dir),
        "cache_timeout": 600,
        "timeout": 2,
    }
    cfg = write_cfg(tmp_path / "cached.hostmesh.yml", cluster.primary.url, **opts)
    nocache = write_cfg(tmp_path / "nocache.hostmesh.yml", cluster.primary.url, timeout=2)
    env = ansible_env(cluster.admin_token)
    first = inventory_list(cfg, env)
    assert group_hosts(first, "hostmesh_online") == ["node2", "node3", "primary"]
    cached = "".join(p.read_text() for p in cache_dir.iterdir())
    assert cluster.admin_token not in cached and "api_key" not in cached

    url = cluster.primary.url
    cluster.stop()

    # no cache: an error that names the URL and the cause, quickly
    started = time.monotonic()
    res = run([ANSIBLE_INVENTORY, "-i", str(nocache), "--list"], env)
    assert time.monotonic() - started < 30
    assert url in res.stderr and "unreachable" in res.stderr
    assert "refused" in res.stderr.lower()
    assert cluster.admin_token not in res.stdout + res.stderr
    # ansible-inventory only warns about a failed source; the inventory is empty
    assert "node2" not in res.stdout

    # warm cache: used without asking the primary
    assert inventory_list(cfg, env) == first
    # refresh forced while the primary is down: the cached list, with a warning
    res = run([ANSIBLE_INVENTORY, "-i", str(cfg), "--list", "--flush-cache"], env)
    assert res.returncode == 0, res.stderr
    assert plain(json.loads(res.stdout)) == first
    assert "cached node list" in res.stderr and url in res.stderr


def test_silent_primary_does_not_hang(tmp_path):
    """A primary that accepts the connection and never answers fails within the timeout."""
    import socket

    sock = socket.socket()
    sock.bind(("127.8.2.1", 0))
    sock.listen(16)
    held = []

    def accept_and_hold():
        while True:
            try:
                held.append(sock.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept_and_hold, daemon=True).start()
    try:
        url = f"http://127.8.2.1:{sock.getsockname()[1]}"
        cfg = write_cfg(tmp_path / "x.hostmesh.yml", url, timeout=1)
        started = time.monotonic()
        res = run([ANSIBLE_INVENTORY, "-i", str(cfg), "--list"], ansible_env("t" * 40))
        assert time.monotonic() - started < 20
        assert url in res.stderr and "unreachable" in res.stderr
        assert "timed out" in res.stderr
        assert held, "the plugin never connected"
    finally:
        sock.close()
        for conn in held:
            conn.close()


class _Static(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def static_server(tmp_path):
    """A real HTTP server answering GET /api/nodes with a file we choose."""
    root = tmp_path / "www"
    (root / "api").mkdir(parents=True)

    def handler(*args, **kwargs):
        return _Static(*args, directory=str(root), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.8.3.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root / "api" / "nodes", f"http://127.8.3.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_selfhostly_primary_without_credentials(static_server, tmp_path):
    answer, url = static_server
    shutil.copy(DATA / "selfhostly_nodes.json", answer)
    cfg = write_cfg(tmp_path / "selfhostly.hostmesh.yml", url)
    data = inventory_list(cfg, ansible_env())
    hv = data["_meta"]["hostvars"]
    assert group_hosts(data, "hostmesh_online") == ["primary"]
    assert group_hosts(data, "hostmesh_offline") == ["worker-1"]
    assert group_hosts(data, "hostmesh_primary") == ["primary"]
    assert hv["primary"]["ansible_host"] == "192.168.1.10"
    assert hv["worker-1"]["ansible_host"] == "worker1.home.example"
    assert "must-never-leak" not in json.dumps(data)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("<html><body>Welcome to nginx</body></html>", "could not parse the answer"),
        ('{"nodes": 3}', "could not parse the answer"),
        ('[{"status": "online"}]', "neither a name nor an id"),
    ],
)
def test_malformed_answers(static_server, tmp_path, body, message):
    answer, url = static_server
    answer.write_text(body)
    cfg = write_cfg(tmp_path / "bad.hostmesh.yml", url)
    res = run([ANSIBLE_INVENTORY, "-i", str(cfg), "--list"], ansible_env("t" * 40))
    assert message in res.stderr, res.stderr
    assert "t" * 40 not in res.stderr


def test_hostile_records_are_skipped_and_the_inventory_still_loads(static_server, tmp_path):
    """A primary (hostile, or from before the agent's name rules) answers records named
    like groups and localhost: each is skipped with a warning, the rest is the inventory."""
    answer, url = static_server
    good = {"id": "g1", "name": "web1", "status": "online", "wireguard_ip": "10.50.0.2"}
    answer.write_text(json.dumps([
        {"id": "b1", "name": "all", "status": "online"},
        {"id": "b2", "name": "hostmesh_online", "status": "online"},
        {"id": "b3", "name": "localhost", "status": "online", "wireguard_ip": "10.50.0.3"},
        {"id": "b4", "name": "ungrouped", "status": "offline"},
        good,
        {**good, "id": "b5", "name": "WEB1", "wireguard_ip": "10.50.0.5"},
        {"id": "b6", "name": "web6", "status": "online", "wireguard_ip": "x -oProxyCommand=y"},
    ]))
    cfg = write_cfg(tmp_path / "hostile.hostmesh.yml", url)
    res = run([ANSIBLE_INVENTORY, "-i", str(cfg), "--list"], ansible_env("t" * 40))
    assert res.returncode == 0, res.stderr
    data = plain(json.loads(res.stdout))
    assert sorted(data["_meta"]["hostvars"]) == ["web1"]
    assert data["_meta"]["hostvars"]["web1"]["ansible_host"] == "10.50.0.2"
    assert group_hosts(data, "hostmesh_online") == ["web1"]
    err = " ".join(res.stderr.split())
    assert err.count("skipping node #") == 5, err
    assert "ignoring case" in err


# -- without the hostmesh package ------------------------------------------------------------

# The plugin needs nothing but ansible-core: its API client is the collection's own
# module_utils. Hide the hostmesh package to prove it.
_BLOCK = (
    "import sys; sys.modules['hostmesh'] = None; "
    "from ansible.cli.{mod} import main; sys.argv = {argv!r}; main()"
)


def test_works_without_the_hostmesh_package(cluster, tmp_path):
    python = str(Path(ANSIBLE).parent / "python")
    doc = run(
        [
            python,
            "-c",
            _BLOCK.format(
                mod="doc", argv=["ansible-doc", "-t", "inventory", "hostmesh.cluster.nodes"]
            ),
        ],
        ansible_env(),
    )
    assert doc.returncode == 0, doc.stderr
    assert "ansible_host_source" in doc.stdout and "HOSTMESH_ADMIN_TOKEN" in doc.stdout

    cfg = write_cfg(tmp_path / "x.hostmesh.yml", cluster.primary.url)
    res = run(
        [
            python,
            "-c",
            _BLOCK.format(mod="inventory", argv=["ansible-inventory", "-i", str(cfg), "--list"]),
        ],
        ansible_env(cluster.admin_token),
    )
    assert res.returncode == 0, res.stderr
    hosts = json.loads(res.stdout)["_meta"]["hostvars"]
    assert sorted(hosts) == ["node2", "node3", "primary"]


def test_only_hostmesh_yml_files_are_read(cluster, tmp_path):
    cfg = write_cfg(tmp_path / "lab.yml", cluster.primary.url)
    res = run([ANSIBLE_INVENTORY, "-i", str(cfg), "--list"], ansible_env(cluster.admin_token))
    assert "node2" not in res.stdout
