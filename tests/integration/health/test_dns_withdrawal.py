"""Health-aware DNS on the primary against the local Cloudflare v4 API on loopback.

A real registry (SQLite) and the real reconciler and SDK talk to
tests/cloudflare_server; each pass of the withdrawer is driven with explicit
clock values so the hysteresis is tested exactly.
"""

from __future__ import annotations

import asyncio
import logging
import stat
from types import SimpleNamespace

import pytest

from hostmesh.agent import config
from hostmesh.agent.dns_withdrawal import STATE_FILE, DnsWithdrawal, load_settings
from hostmesh.agent.metrics import Metrics
from hostmesh.agent.registry import Registry
from tests.cloudflare_server.harness import TEST_TOKEN, TEST_ZONE

NAMES = [TEST_ZONE, f"*.{TEST_ZONE}"]
ADDRESS = {"node1": "203.0.113.1", "node2": "203.0.113.2", "node3": "203.0.113.3"}


def records_for(node: str, cluster: str = "hostmesh", names=NAMES) -> list[dict]:
    return [{"type": "A", "name": name, "content": ADDRESS[node], "ttl": 300,
             "comment": f"hostmesh:{cluster}:{node}"} for name in names]


def published(cf) -> set[tuple[str, str, str]]:
    return {(r["name"], r["content"], r.get("comment") or "") for r in cf.records()
            if r["type"] == "A"}


@pytest.fixture
def lab(tmp_path, cf):
    token = tmp_path / "cf-token"
    token.write_text(TEST_TOKEN + "\n")
    token.chmod(0o600)
    env = {"NODE_IS_PRIMARY": "true", "NODE_NAME": "node1", "NODE_ID": "node1",
           "NODE_API_KEY": "k" * 64, "DATA_DIR": str(tmp_path), "SERVER_ADDRESS":
           "127.0.0.1:8080", "DNS_WITHDRAWAL": "true", "DNS_ZONE": TEST_ZONE,
           "DNS_API_TOKEN_FILE": str(token), "DNS_API_BASE_URL": cf.base_url}
    cfg = config.load(env)
    registry = Registry(cfg.database_path)
    registry.upsert_self("node1", "node1", "http://127.0.0.1:8080", "k" * 64, "t", None, None,
                         {})
    for node in ("node2", "node3"):
        registry.insert_node({"id": node, "name": node,
                              "api_endpoint": "http://127.0.0.1:1"}, "x" * 64)
    for node in ADDRESS:
        cf.seed(records_for(node))
    # records this cluster does not own: never touched
    cf.seed([{"type": "A", "name": TEST_ZONE, "content": "198.51.100.9", "ttl": 300,
              "comment": "someone else"},
             {"type": "A", "name": TEST_ZONE, "content": "198.51.100.3", "ttl": 300,
              "comment": "hostmesh:other:node3"}])
    metrics = Metrics(cfg, registry)
    lab = SimpleNamespace(cfg=cfg, registry=registry, metrics=metrics, env=env, tmp=tmp_path,
                          dns=DnsWithdrawal(cfg.dns, registry, tmp_path, metrics))
    yield lab
    registry.close()


def set_status(registry, node: str, status: str) -> None:
    registry.db.execute("UPDATE nodes SET status=? WHERE name=?", (status, node))


def run(dns, now: float) -> None:
    asyncio.run(dns.run_once(now))


def test_offline_node_is_withdrawn_after_the_hold_and_restored_when_online(lab, cf, caplog):
    caplog.set_level(logging.INFO, "hostmesh.agent")
    everything = published(cf)
    run(lab.dns, 1000)  # all online: nothing to do, nothing read from Cloudflare
    assert cf.writes() == [] and cf.reads() == []
    set_status(lab.registry, "node3", "offline")
    run(lab.dns, 1001)
    run(lab.dns, 1010)  # offline for 9 s: below DNS_WITHDRAW_AFTER (10 s)
    assert published(cf) == everything and cf.writes() == []
    run(lab.dns, 1011.5)
    node3 = {(n, ADDRESS["node3"], "hostmesh:hostmesh:node3") for n in NAMES}
    assert published(cf) == everything - node3
    assert len(cf.writes()) == 1  # one atomic batch
    assert "dns records withdrawn node=node3 reason=offline_for_10s records=2" in caplog.text
    state = lab.tmp / STATE_FILE
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert TEST_TOKEN not in state.read_text() and TEST_TOKEN not in caplog.text
    # back online at 1020: restored only once online for 10 s AND 30 s after the last change
    set_status(lab.registry, "node3", "online")
    run(lab.dns, 1020)
    run(lab.dns, 1035)
    assert published(cf) == everything - node3
    run(lab.dns, 1042)
    assert published(cf) == everything
    assert "dns records restored node=node3 reason=online_for_22s records=2" in caplog.text
    assert not state.exists() or state.read_text().strip() == "{}"
    text = lab.metrics.render()[0].decode()
    assert 'hostmesh_dns_changes_total{action="withdraw"} 2.0' in text
    assert 'hostmesh_dns_changes_total{action="restore"} 2.0' in text


def test_half_the_cluster_offline_withdraws_nothing(lab, cf, caplog):
    everything = published(cf)
    set_status(lab.registry, "node2", "offline")
    set_status(lab.registry, "node3", "unreachable")
    for now in (1000, 1020, 1100, 2000):
        run(lab.dns, now)
    assert published(cf) == everything and cf.writes() == []
    assert "dns withdrawal held node=node2 guard=half_cluster_offline offline=2 nodes=3" \
        in caplog.text
    # one of them back: the other is withdrawn after its hold
    set_status(lab.registry, "node2", "online")
    run(lab.dns, 2001)
    assert {r[1] for r in published(cf)} >= {ADDRESS["node1"], ADDRESS["node2"]}
    assert (TEST_ZONE, ADDRESS["node3"], "hostmesh:hostmesh:node3") not in published(cf)


def test_the_last_record_of_a_name_stays(lab, cf, caplog):
    cf.seed(records_for("node3", names=[f"only.{TEST_ZONE}"]))
    set_status(lab.registry, "node3", "offline")
    run(lab.dns, 1000)
    run(lab.dns, 1011)
    left = published(cf)
    assert (f"only.{TEST_ZONE}", ADDRESS["node3"], "hostmesh:hostmesh:node3") in left
    assert (TEST_ZONE, ADDRESS["node3"], "hostmesh:hostmesh:node3") not in left
    assert "guard=last_record_of_name name=only.example.org" in caplog.text


def test_foreign_records_are_never_touched(lab, cf):
    set_status(lab.registry, "node3", "offline")
    run(lab.dns, 1000)
    run(lab.dns, 1011)
    left = published(cf)
    assert (TEST_ZONE, "198.51.100.9", "someone else") in left
    assert (TEST_ZONE, "198.51.100.3", "hostmesh:other:node3") in left


def test_a_restarted_primary_restores_what_it_withdrew(lab, cf):
    everything = published(cf)
    set_status(lab.registry, "node3", "offline")
    run(lab.dns, 1000)
    run(lab.dns, 1011)
    assert published(cf) != everything
    again = DnsWithdrawal(lab.cfg.dns, lab.registry, lab.tmp, None)  # a new process
    set_status(lab.registry, "node3", "online")
    run(again, 2000)
    run(again, 2011)
    assert published(cf) == everything


def test_cloudflare_down_is_counted_and_retried(lab, cf, caplog, tmp_path):
    env = dict(lab.env, DNS_API_BASE_URL="http://127.0.0.1:9/client/v4")
    broken = DnsWithdrawal(config.load(env).dns, lab.registry, tmp_path / "b", lab.metrics)
    (tmp_path / "b").mkdir()
    set_status(lab.registry, "node3", "offline")
    run(broken, 1000)
    run(broken, 1011)
    assert "dns update failed withdraw=node3" in caplog.text
    assert TEST_TOKEN not in caplog.text
    assert broken.withdrawn == {}
    assert "hostmesh_dns_failures_total 1.0" in lab.metrics.render()[0].decode()


@pytest.mark.parametrize(("change", "message"), [
    ({"DNS_ZONE": ""}, "needs DNS_ZONE"),
    ({"DNS_API_TOKEN_FILE": ""}, "needs DNS_API_TOKEN_FILE"),
    ({"DNS_API_TOKEN_FILE": "/nonexistent/token"}, "DNS_API_TOKEN_FILE=/nonexistent/token"),
    ({"DNS_WITHDRAWAL": "maybe"}, "not a boolean"),
    ({"DNS_WITHDRAW_AFTER": "soon"}, "DNS_WITHDRAW_AFTER"),
    ({"DNS_CLUSTER": "a:b"}, "DNS_CLUSTER"),
])
def test_bad_settings_say_what_to_fix(lab, change, message):
    with pytest.raises(config.ConfigError, match=message):
        config.load({**lab.env, **change})


def test_token_file_readable_by_others_is_refused(lab):
    token = lab.tmp / "cf-token"
    token.chmod(0o644)
    with pytest.raises(config.ConfigError, match="chmod 600"):
        config.load(lab.env)


def test_off_by_default_and_never_on_a_secondary(lab):
    assert load_settings({}, True) is None
    with pytest.raises(config.ConfigError, match="primary only"):
        env = {k: v for k, v in lab.env.items() if k != "NODE_IS_PRIMARY"}
        config.load({**env, "PRIMARY_NODE_URL": "http://127.0.0.1:8080"})
