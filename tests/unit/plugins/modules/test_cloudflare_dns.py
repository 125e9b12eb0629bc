"""hostmesh.cluster.cloudflare_dns: the module's front end against the local Cloudflare server."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
for p in (str(ROOT), str(ROOT / "collections")):
    if p not in sys.path:
        sys.path.insert(0, p)

from ansible.module_utils.testing import patch_module_args
from ansible_collections.hostmesh.cluster.plugins.modules import cloudflare_dns

from tests.cloudflare_server.harness import (
    TEST_READ_TOKEN,
    TEST_TOKEN,
    TEST_ZONE,
    CloudflareServer,
)

NODES = {"node1": {"ipv4": "203.0.113.10"}, "node2": {"ipv4": "203.0.113.11", "ipv6": "2001:db8::11"}}


@pytest.fixture(scope="module")
def server():
    with CloudflareServer(zones=[TEST_ZONE], token=TEST_TOKEN, read_token=TEST_READ_TOKEN) as srv:
        yield srv


@pytest.fixture
def cf(server, monkeypatch):
    server.wipe()
    monkeypatch.delenv("CLOUDFLARE_API_TOKEN", raising=False)
    monkeypatch.delenv("CLOUDFLARE_BASE_URL", raising=False)
    return server


def run_module(args: dict, capsys, *, check=False, diff=False) -> tuple[int, dict]:
    if check:
        args = dict(args, _ansible_check_mode=True)
    if diff:
        args = dict(args, _ansible_diff=True)
    with patch_module_args(args), pytest.raises(SystemExit) as exc:
        cloudflare_dns.main()
    out = capsys.readouterr().out
    return exc.value.code, json.loads(out)


def base(cf, **over):
    args = {"api_token": TEST_TOKEN, "api_base_url": cf.base_url, "zone": TEST_ZONE,
            "cluster": "lab", "names": [TEST_ZONE, f"*.{TEST_ZONE}"], "nodes": NODES,
            "max_retries": 0, "timeout": 10}
    args.update(over)
    return args


def test_present_then_idempotent(cf, capsys):
    rc, res = run_module(base(cf), capsys)
    assert rc == 0 and res["changed"] and len(res["created"]) == 6
    assert all(r["id"] for r in res["created"])
    assert TEST_TOKEN not in json.dumps(res)
    rc, res = run_module(base(cf), capsys, diff=True)
    assert rc == 0 and not res["changed"] and res["api_calls"] == {"reads": 2, "writes": 0}
    assert res["diff"]["before"] == res["diff"]["after"]


def test_removed_node_loses_exactly_its_records(cf, capsys):
    cf.seed([{"type": "A", "name": TEST_ZONE, "content": "198.51.100.1", "ttl": 300,
              "comment": "hostmesh:other:node2"}])
    run_module(base(cf), capsys)
    rc, res = run_module(base(cf, nodes={"node1": NODES["node1"]}), capsys)
    assert rc == 0 and res["changed"] and not res["created"] and not res["updated"]
    assert {d["comment"] for d in res["deleted"]} == {"hostmesh:lab:node2"}
    assert len(res["deleted"]) == 4  # A + AAAA under both names
    assert sorted(r["comment"] for r in cf.records()) == [
        "hostmesh:lab:node1", "hostmesh:lab:node1", "hostmesh:other:node2"]
    rc, res = run_module(base(cf, nodes={"node1": NODES["node1"]}), capsys)
    assert rc == 0 and not res["changed"]


def test_check_mode_and_diff(cf, capsys):
    rc, res = run_module(base(cf), capsys, check=True, diff=True)
    assert rc == 0 and res["changed"] and res["api_calls"]["writes"] == 0
    assert "hostmesh:lab:node2" in res["diff"]["after"] and res["diff"]["before"] == ""
    assert cf.records() == []


def test_token_from_environment(cf, capsys, monkeypatch):
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", TEST_TOKEN)
    args = base(cf)
    del args["api_token"]
    rc, res = run_module(args, capsys)
    assert rc == 0 and res["changed"]


def test_base_url_from_environment(cf, capsys, monkeypatch):
    monkeypatch.setenv("CLOUDFLARE_BASE_URL", cf.base_url)
    args = base(cf)
    del args["api_base_url"]
    rc, res = run_module(args, capsys)
    assert rc == 0 and res["changed"]


def test_absent_removes_owned_records(cf, capsys):
    cf.seed([{"type": "A", "name": TEST_ZONE, "content": "198.51.100.1", "ttl": 300}])
    run_module(base(cf), capsys)
    rc, res = run_module(base(cf, state="absent", nodes={}), capsys)
    assert rc == 0 and len(res["deleted"]) == 6
    assert [r["content"] for r in cf.records()] == ["198.51.100.1"]


@pytest.mark.parametrize(("over", "error", "match"), [
    ({"api_token": "wrong"}, "TokenRejected", "rejected the API token"),
    ({"api_token": TEST_READ_TOKEN}, "PermissionMissing", "DNS:Edit"),
    ({"zone": "missing.test", "names": ["missing.test"]}, "ZoneNotFound", "zone missing.test not found"),
    ({"nodes": {"node1": {}}}, "InvalidSpec", "neither ipv4 nor ipv6"),
    ({"names": ["www.elsewhere.test"]}, "InvalidSpec", "not inside zone"),
])
def test_errors_are_clear_and_change_nothing(cf, capsys, over, error, match):
    rc, res = run_module(base(cf, **over), capsys)
    assert rc == 1 and res["failed"] and res["error"] == error
    assert match in res["msg"]
    assert TEST_TOKEN not in res["msg"] and TEST_READ_TOKEN not in res["msg"]
    assert cf.records() == []
    # only the read-only token gets as far as the (refused) batch
    assert len(cf.writes()) == (1 if error == "PermissionMissing" else 0)


def test_documentation_matches_the_argument_spec():
    import yaml

    doc = yaml.safe_load(cloudflare_dns.DOCUMENTATION)
    assert set(doc["options"]) == {
        "api_token", "api_base_url", "zone", "cluster", "names", "nodes", "ttl", "proxied",
        "state", "max_retries", "timeout"}
    yaml.safe_load(cloudflare_dns.EXAMPLES)
    assert set(yaml.safe_load(cloudflare_dns.RETURN)) >= {"created", "updated", "deleted"}
