"""Unit tests of the pure logic of hostmesh.cluster.nodes (no network).

The client is replaced by a fake that returns recorded /api/nodes answers
(data/*.json) or raises the client's own typed errors; everything else is the
real plugin driven through its real parse() with a real config file, real
InventoryData, real Templar and the real jsonfile cache plugin. The tests
against a running primary live in tests/integration/inventory/.
"""

from __future__ import annotations

import copy
import json
import pathlib

import pytest
from ansible.errors import AnsibleError
from ansible.inventory.data import InventoryData
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import inventory_loader
from ansible_collections.hostmesh.cluster.plugins.module_utils._agent_client import (
    AuthRejected,
    BadResponse,
    Credentials,
    PrimaryUnreachable,
)

REPO = pathlib.Path(__file__).resolve().parents[4]
DATA = pathlib.Path(__file__).parent / "data"
TOKEN = "s3cr3t-admin-token-0123456789abcdef"



def load(name):
    return json.loads((DATA / name).read_text())


class FakeClient:
    """Stands in for hostmesh.module_utils._agent_client.AgentClient: list_nodes() only."""

    def __init__(self, nodes=None, error=None, url="http://10.231.1.11:8080"):
        self.nodes, self.error, self.url, self.calls = nodes, error, url, 0

    def list_nodes(self):
        self.calls += 1
        if self.error is not None:
            raise self.error
        return copy.deepcopy(self.nodes)


def write_cfg(tmp_path, name="test.hostmesh.yml", **options):
    cfg = {"plugin": "hostmesh.cluster.nodes", "url": "http://10.231.1.11:8080", **options}
    path = tmp_path / name
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def run(tmp_path, client, flush=False, **options):
    """parse() a config with `options`, the API answered by `client`; return the inventory.

    flush=True is what --flush-cache does: parse(cache=False).
    """
    path = write_cfg(tmp_path, **options)
    plugin = inventory_loader.get("hostmesh.cluster.nodes")
    plugin._create_client = lambda: client
    inventory = InventoryData()
    plugin.parse(inventory, DataLoader(), str(path), cache=not flush)
    if plugin.get_option("cache"):
        plugin.update_cache_if_changed()
    return inventory


def group_hosts(inventory, group):
    return (
        sorted(h.name for h in inventory.groups[group].get_hosts())
        if group in inventory.groups
        else None
    )


def hostvars(inventory, host):
    return inventory.get_host(host).get_vars()


# -- verify_file -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "accepted"),
    [
        ("lab.hostmesh.yml", True),
        ("lab.hostmesh.yaml", True),
        ("hostmesh.yml", False),  # no ".hostmesh.yml" suffix
        ("lab.yml", False),
        ("lab.hostmesh.json", False),
    ],
)
def test_verify_file(tmp_path, name, accepted):
    path = tmp_path / name
    path.write_text("plugin: hostmesh.cluster.nodes\n")
    assert inventory_loader.get("hostmesh.cluster.nodes").verify_file(str(path)) is accepted


def test_verify_file_missing(tmp_path):
    assert not inventory_loader.get("hostmesh.cluster.nodes").verify_file(
        str(tmp_path / "absent.hostmesh.yml")
    )


# -- groups and host variables ---------------------------------------------


def test_groups_from_hostmesh_answer(tmp_path):
    inv = run(tmp_path, FakeClient(load("hostmesh_nodes.json")))
    assert group_hosts(inv, "hostmesh_online") == ["node1"]
    assert group_hosts(inv, "hostmesh_offline") == ["node2"]
    assert group_hosts(inv, "hostmesh_unreachable") == ["node3"]
    assert group_hosts(inv, "hostmesh_primary") == ["node1"]
    assert group_hosts(inv, "hostmesh_secondary") == ["node2", "node3"]
    assert group_hosts(inv, "hostmesh_nodes") == ["node1", "node2", "node3"]
    # labels: list entries, "k=v" strings and mappings all become groups
    assert group_hosts(inv, "hostmesh_label_edge") == ["node1"]
    assert group_hosts(inv, "hostmesh_label_zone_eu_1") == ["node1"]
    assert group_hosts(inv, "hostmesh_label_gpu") == ["node2"]
    assert group_hosts(inv, "hostmesh_label_zone_eu_2") == ["node2"]


def test_hostvars_from_hostmesh_answer(tmp_path):
    inv = run(tmp_path, FakeClient(load("hostmesh_nodes.json")))
    node1 = hostvars(inv, "node1")
    assert node1["ansible_host"] == "10.50.0.1"
    assert node1["hostmesh_node_id"] == "a1f0c6de-5b1e-4c1e-9f3a-000000000001"
    assert node1["hostmesh_name"] == "node1"
    assert node1["hostmesh_status"] == "online"
    assert node1["hostmesh_is_primary"] is True
    assert node1["hostmesh_last_seen"] == "2026-11-23T17:00:00Z"
    assert node1["hostmesh_consecutive_failures"] == 0
    assert node1["hostmesh_api_endpoint"] == "http://10.50.0.1:8080"
    assert node1["hostmesh_wireguard_ip"] == "10.50.0.1"
    assert node1["hostmesh_public_ip"] == "203.0.113.10"
    assert node1["hostmesh_labels"] == ["edge", "zone=eu-1"]
    assert node1["hostmesh_version"] == "0.1.0"
    assert "id" not in node1 and "hostmesh_id" not in node1
    node2 = hostvars(inv, "node2")
    assert node2["ansible_host"] == "10.50.0.2"  # CIDR suffix stripped
    assert node2["hostmesh_labels"] == {"gpu": "true", "zone": "eu-2"}
    assert node2["hostmesh_consecutive_failures"] == 4
    # node3 has an empty wireguard_ip: falls back to the api_endpoint host
    assert hostvars(inv, "node3")["ansible_host"] == "fd00::3"


def test_selfhostly_answer(tmp_path):
    """Selfhostly: no wireguard_ip/labels, api_key in every record (must never surface)."""
    client = FakeClient(load("selfhostly_nodes.json"))
    inv = run(tmp_path, client)
    assert group_hosts(inv, "hostmesh_online") == ["primary"]
    assert group_hosts(inv, "hostmesh_offline") == ["worker-1"]
    assert group_hosts(inv, "hostmesh_primary") == ["primary"]
    assert group_hosts(inv, "hostmesh_secondary") == ["worker-1"]
    primary, worker = hostvars(inv, "primary"), hostvars(inv, "worker-1")
    assert primary["ansible_host"] == "192.168.1.10"
    assert worker["ansible_host"] == "worker1.home.example"
    assert worker["hostmesh_labels"] == {}
    assert worker["hostmesh_last_seen"] == "2025-06-01T11:40:00Z"
    for hv in (primary, worker):
        assert not any("api_key" in k for k in hv)
        assert "must-never-leak" not in json.dumps(hv)


@pytest.mark.parametrize(
    "case", load("ansible_host_cases.json"), ids=lambda c: f"{c['source']}-{c['node']}"
)
def test_ansible_host_source(tmp_path, case):
    node = {"id": "x1", "name": "n1", "status": "online", **case["node"]}
    inv = run(tmp_path, FakeClient([node]), ansible_host_source=case["source"])
    assert hostvars(inv, "n1").get("ansible_host") == case["expected"]


def test_empty_cluster_still_has_the_groups(tmp_path):
    inv = run(tmp_path, FakeClient([]))
    for group in (
        "hostmesh_online",
        "hostmesh_offline",
        "hostmesh_unreachable",
        "hostmesh_primary",
        "hostmesh_secondary",
        "hostmesh_nodes",
    ):
        assert group_hosts(inv, group) == []


def test_node_without_name_uses_id_and_without_status_is_unknown(tmp_path):
    inv = run(tmp_path, FakeClient([{"id": "abc", "api_endpoint": "http://192.0.2.1:8080"}]))
    assert hostvars(inv, "abc")["hostmesh_status"] == "unknown"
    assert group_hosts(inv, "hostmesh_unknown") == ["abc"]
    assert group_hosts(inv, "hostmesh_secondary") == ["abc"]


def test_duplicate_names_keep_the_first(tmp_path):
    nodes = [
        {"id": "1", "name": "twin", "status": "online"},
        {"id": "2", "name": "twin", "status": "offline"},
    ]
    inv = run(tmp_path, FakeClient(nodes))
    assert hostvars(inv, "twin")["hostmesh_node_id"] == "1"
    assert group_hosts(inv, "hostmesh_offline") == []


# -- unsafe values -----------------------------------------------------------


def test_api_values_are_never_templated(tmp_path):
    evil = "{{ lookup('ansible.builtin.pipe', 'touch " + str(tmp_path / "pwned") + "') }}"
    nodes = [
        {
            "id": "e1",
            "name": "evil",
            "status": "online",
            "labels": [evil],
            "version": "{{ 7 * 6 }}",
            "api_endpoint": "http://192.0.2.9:8080",
        }
    ]
    # compose touches the values: a template inside them must stay text
    inv = run(
        tmp_path,
        FakeClient(nodes),
        compose={"label_copy": "hostmesh_labels[0]", "version_copy": "hostmesh_version"},
    )
    hv = hostvars(inv, "evil")
    assert hv["label_copy"] == evil
    assert hv["version_copy"] == "{{ 7 * 6 }}"
    assert hv["hostmesh_labels"] == [evil]
    assert not (tmp_path / "pwned").exists()


# -- statuses and filters -------------------------------------------------------


def test_statuses_filter(tmp_path):
    inv = run(tmp_path, FakeClient(load("hostmesh_nodes.json")), statuses=["online", "offline"])
    assert sorted(inv.hosts) == ["node1", "node2"]
    assert group_hosts(inv, "hostmesh_unreachable") == []


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ([], ["node1", "node2", "node3"]),
        ([{"include": "hostmesh_is_primary"}, {"exclude": True}], ["node1"]),
        ([{"exclude": "hostmesh_consecutive_failures > 10"}], ["node1", "node2"]),
        (
            [
                {"exclude": "'gpu' in hostmesh_labels"},
                {"include": "inventory_hostname != 'node3'"},
                {"exclude": True},
            ],
            ["node1"],
        ),
        ([{"include": "hostmesh_status == 'offline'"}, {"exclude": "true"}], ["node2"]),
    ],
)
def test_filters(tmp_path, filters, expected):
    inv = run(tmp_path, FakeClient(load("hostmesh_nodes.json")), filters=filters)
    assert sorted(inv.hosts) == expected


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        (["hostmesh_is_primary"], "filters[1] must be a mapping"),
        ([{"include": "a", "exclude": "b"}], "exactly one key"),
        ([{"keep": "a"}], "exactly one key"),
        ([{"include": 3}], "must be a Jinja2 condition"),
        ([{"include": "hostmesh_status ==="}], "could not evaluate filter condition"),
    ],
)
def test_bad_filters(tmp_path, filters, message):
    with pytest.raises(AnsibleError, match=message.replace("[", r"\[").replace("]", r"\]")):
        run(tmp_path, FakeClient(load("hostmesh_nodes.json")), filters=filters)


# -- constructed -----------------------------------------------------------------


def test_compose_groups_keyed_groups(tmp_path):
    inv = run(
        tmp_path,
        FakeClient(load("hostmesh_nodes.json")),
        compose={"ansible_port": "2222", "mesh_url": "'http://' ~ ansible_host ~ ':8000'"},
        groups={"flaky": "hostmesh_consecutive_failures > 0"},
        keyed_groups=[
            {"key": "hostmesh_status", "prefix": "status"},
            {"key": "hostmesh_labels", "prefix": "lbl"},
        ],
    )
    assert hostvars(inv, "node1")["ansible_port"] == 2222
    assert hostvars(inv, "node1")["mesh_url"] == "http://10.50.0.1:8000"
    assert group_hosts(inv, "flaky") == ["node2", "node3"]
    assert group_hosts(inv, "status_online") == ["node1"]
    assert group_hosts(inv, "status_unreachable") == ["node3"]
    assert group_hosts(inv, "lbl_edge") == ["node1"]


def test_strict_reports_bad_compose(tmp_path):
    with pytest.raises(AnsibleError, match="no_such_var"):
        run(
            tmp_path,
            FakeClient(load("hostmesh_nodes.json")),
            strict=True,
            compose={"x": "no_such_var + 1"},
        )
    inv = run(
        tmp_path,
        FakeClient(load("hostmesh_nodes.json")),
        strict=False,
        compose={"x": "no_such_var + 1"},
    )
    assert "x" not in hostvars(inv, "node1")


def test_label_group_prefix(tmp_path):
    inv = run(tmp_path, FakeClient(load("hostmesh_nodes.json")), label_group_prefix="label_")
    assert group_hosts(inv, "label_edge") == ["node1"]
    assert "hostmesh_label_edge" not in inv.groups


# -- errors ------------------------------------------------------------------------


def test_unreachable_names_url_and_cause(tmp_path):
    err = PrimaryUnreachable(
        "cannot reach the hostmesh API at http://10.231.1.11:8080: [Errno 111] Connection "
        "refused; check that the agent runs there and that this machine can reach its address",
        url="http://10.231.1.11:8080/api/nodes",
    )
    with pytest.raises(AnsibleError) as info:
        run(tmp_path, FakeClient(error=err))
    text = str(info.value)
    assert "http://10.231.1.11:8080" in text and "unreachable" in text
    assert "Connection refused" in text


def test_auth_rejected(tmp_path):
    err = AuthRejected(
        "GET /api/nodes: credentials rejected (HTTP 401)",
        url="http://10.231.1.11:8080/api/nodes",
        status=401,
    )
    with pytest.raises(AnsibleError, match="admin token rejected") as info:
        run(tmp_path, FakeClient(error=err), token=TOKEN)
    assert TOKEN not in str(info.value)


def test_bad_json(tmp_path):
    err = BadResponse(
        "http://10.231.1.11:8080/api/nodes answered HTTP 200 with something "
        "that is not JSON (starts with '<html>')",
        url="x",
        status=200,
    )
    with pytest.raises(AnsibleError, match="could not parse the answer"):
        run(tmp_path, FakeClient(error=err))


GOOD = {"id": "g1", "name": "good", "status": "online", "wireguard_ip": "10.50.0.2"}


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (["not", "an", "object"], "is a list, not an object"),
        ({"status": "online"}, "neither a name nor an id"),
        ({"id": "x1", "name": "all"}, "group name or localhost"),
        ({"id": "x2", "name": "ungrouped"}, "group name or localhost"),
        ({"id": "x3", "name": "localhost", "wireguard_ip": "10.50.0.9"}, "localhost"),
        ({"id": "x4", "name": "LocalHost"}, "localhost"),
        ({"id": "x5", "name": "hostmesh_online"}, "group name"),
        ({"id": "x6", "name": "hostmesh_nodes"}, "group name"),
        ({"id": "x7", "name": "hostmesh_label_gpu"}, "group name"),
        ({"id": "x8", "name": "hostmesh_app_web"}, "group name"),
        ({"id": "x9", "name": "web1\n"}, "not a host name"),
        ({"id": "y1", "name": "a b"}, "not a host name"),
        ({"id": "y2", "name": "web9", "wireguard_ip": "10.0.0.1 -o ProxyCommand=x"},
         "not an address"),
    ],
)
def test_a_bad_record_is_skipped_with_a_warning(tmp_path, capsys, bad, message):
    inv = run(tmp_path, FakeClient([bad, GOOD]))
    assert sorted(inv.hosts) == ["good"]
    assert group_hosts(inv, "hostmesh_online") == ["good"]
    err = " ".join(capsys.readouterr().err.split())
    assert "skipping node #0" in err and message in err, err


def test_names_differing_in_case_keep_the_first(tmp_path, capsys):
    inv = run(tmp_path, FakeClient([GOOD, {**GOOD, "id": "g2", "name": "GOOD"}]))
    assert sorted(inv.hosts) == ["good"]
    assert hostvars(inv, "good")["hostmesh_node_id"] == "g1"
    assert "ignoring case" in " ".join(capsys.readouterr().err.split())


# -- cache -----------------------------------------------------------------------------


def cache_options(tmp_path):
    return {
        "cache": True,
        "cache_plugin": "ansible.builtin.jsonfile",
        "cache_connection": str(tmp_path / "cache"),
        "cache_timeout": 3600,
    }


def test_cache_is_used_and_holds_no_secret(tmp_path):
    client = FakeClient(load("selfhostly_nodes.json"))
    run(tmp_path, client, token=TOKEN, **cache_options(tmp_path))
    assert client.calls == 1
    files = list((tmp_path / "cache").iterdir())
    assert len(files) == 1
    text = files[0].read_text()
    assert TOKEN not in text and "must-never-leak" not in text and "api_key" not in text
    # warm cache: the primary is not asked again
    client2 = FakeClient(error=AssertionError("must not be called"))
    inv = run(tmp_path, client2, token=TOKEN, **cache_options(tmp_path))
    assert client2.calls == 0
    assert group_hosts(inv, "hostmesh_online") == ["primary"]


def test_cache_refresh_asks_the_primary(tmp_path):
    run(tmp_path, FakeClient(load("hostmesh_nodes.json")), **cache_options(tmp_path))
    fresh = FakeClient(load("hostmesh_nodes.json")[:1])
    inv = run(tmp_path, fresh, flush=True, **cache_options(tmp_path))  # --flush-cache
    assert fresh.calls == 1 and sorted(inv.hosts) == ["node1"]
    # and the refreshed list is what the cache now holds
    inv = run(tmp_path, FakeClient(error=AssertionError("no call")), **cache_options(tmp_path))
    assert sorted(inv.hosts) == ["node1"]


def test_cache_stands_in_for_an_unreachable_primary(tmp_path, capsys):
    run(tmp_path, FakeClient(load("hostmesh_nodes.json")), **cache_options(tmp_path))
    down = FakeClient(
        error=PrimaryUnreachable(
            "cannot reach the hostmesh API at x: timed out; check that", url="x"
        )
    )
    inv = run(tmp_path, down, flush=True, **cache_options(tmp_path))
    assert down.calls == 1
    assert sorted(inv.hosts) == ["node1", "node2", "node3"]
    assert "cached node list" in capsys.readouterr().err


def test_cache_key_depends_on_url(tmp_path):
    run(tmp_path, FakeClient(load("hostmesh_nodes.json")), **cache_options(tmp_path))
    other = FakeClient(load("selfhostly_nodes.json"))
    inv = run(tmp_path, other, url="http://10.231.1.12:8080", **cache_options(tmp_path))
    assert other.calls == 1 and sorted(inv.hosts) == ["primary", "worker-1"]


def test_no_cache_when_disabled(tmp_path):
    client = FakeClient(load("hostmesh_nodes.json"))
    run(tmp_path, client, cache_connection=str(tmp_path / "cache"))
    run(tmp_path, client, cache_connection=str(tmp_path / "cache"))
    assert client.calls == 2
    assert not (tmp_path / "cache").exists()


# -- building the real client from options -------------------------------------------------


def make_client(tmp_path, **options):
    """Read a config like parse() does and build the real client, without any request."""
    path = write_cfg(tmp_path, **options)
    plugin = inventory_loader.get("hostmesh.cluster.nodes")
    plugin.loader, plugin.inventory, plugin._vars = DataLoader(), InventoryData(), {}
    plugin._read_config_data(str(path))
    return plugin._create_client()


def test_client_admin_token_and_timeout(tmp_path):
    client = make_client(tmp_path, token=TOKEN, timeout=1.5)
    assert client.credentials == Credentials(admin_token=TOKEN)
    assert client.timeout == 1.5
    assert client.url == "http://10.231.1.11:8080"


def test_client_token_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HOSTMESH_ADMIN_TOKEN", TOKEN)
    assert make_client(tmp_path).credentials.admin_token == TOKEN


def test_client_token_templated(tmp_path):
    secret = tmp_path / "admin_token"
    secret.write_text(TOKEN + "\n")
    client = make_client(
        tmp_path, token="{{ lookup('ansible.builtin.file', '" + str(secret) + "') }}"
    )
    assert client.credentials.admin_token == TOKEN


def test_client_node_credentials(tmp_path, monkeypatch):
    monkeypatch.delenv("HOSTMESH_ADMIN_TOKEN", raising=False)
    client = make_client(tmp_path, node_id="n-1", node_api_key="k" * 64)
    assert client.credentials.headers() == {"X-Node-ID": "n-1", "X-Node-API-Key": "k" * 64}


def test_client_no_credentials(tmp_path, monkeypatch):
    monkeypatch.delenv("HOSTMESH_ADMIN_TOKEN", raising=False)
    assert make_client(tmp_path).credentials.headers() == {}


def test_client_half_node_credentials(tmp_path, monkeypatch):
    monkeypatch.delenv("HOSTMESH_ADMIN_TOKEN", raising=False)
    with pytest.raises(AnsibleError, match="node_api_key is missing"):
        make_client(tmp_path, node_id="n-1")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": "10.231.1.11:8080"}, "invalid API URL"),
        ({"timeout": 0}, "timeout must be > 0"),
        ({"ca_path": "/nonexistent/ca.pem", "url": "https://10.231.1.11"}, "check ca_path"),
    ],
)
def test_client_bad_options(tmp_path, options, message):
    with pytest.raises(AnsibleError, match=message):
        make_client(tmp_path, **options)


def test_missing_url(tmp_path):
    path = tmp_path / "x.hostmesh.yml"
    path.write_text("plugin: hostmesh.cluster.nodes\n")
    plugin = inventory_loader.get("hostmesh.cluster.nodes")
    with pytest.raises(AnsibleError, match="url"):
        plugin.parse(InventoryData(), DataLoader(), str(path))


def test_wrong_plugin_name(tmp_path):
    path = tmp_path / "x.hostmesh.yml"
    path.write_text("plugin: something.else\nurl: http://127.0.0.1:1\n")
    plugin = inventory_loader.get("hostmesh.cluster.nodes")
    with pytest.raises(AnsibleError, match="Incorrect plugin name"):
        plugin.parse(InventoryData(), DataLoader(), str(path))
