"""The reconciler through the real official SDK against the local Cloudflare server.

Each behaviour runs twice, "X" then "X (idempotency)", counting the requests the
server received.
"""

from __future__ import annotations

import pytest
from hostmesh.module_utils._dns_reconcile import (
    BatchRefused,
    PermissionMissing,
    RateLimited,
    Reconciler,
    Spec,
    TokenRejected,
    ZoneNotFound,
    make_client,
)

from tests.cloudflare_server.harness import TEST_READ_TOKEN as READ_TOKEN
from tests.cloudflare_server.harness import TEST_TOKEN as TOKEN
from tests.cloudflare_server.harness import TEST_ZONE as ZONE

NAMES = [ZONE, f"*.{ZONE}"]
NODES = {f"node{i}": {"ipv4": f"203.0.113.{10 + i}"} for i in (1, 2, 3)}
FOREIGN = [
    {"type": "A", "name": ZONE, "content": "198.51.100.1", "ttl": 300},  # no comment
    {"type": "A", "name": f"*.{ZONE}", "content": "198.51.100.2", "ttl": 300,
     "comment": "hostmesh:other:node1"},  # another cluster
    {"type": "A", "name": ZONE, "content": "198.51.100.3", "ttl": 120,
     "comment": "hostmesh:lab:node1 (by hand)"},  # not an exact owner comment
]


def converge(cf, nodes=NODES, *, token=TOKEN, check=False, retries=0, per_page=500, **over):
    spec = Spec(zone=over.pop("zone", ZONE), cluster=over.pop("cluster", "lab"),
                names=over.pop("names", NAMES), nodes=nodes, **over)
    client = make_client(token, cf.base_url, max_retries=retries, timeout=10)
    cf.reset_stats()
    return Reconciler(client, per_page=per_page).converge(spec, check_mode=check)


def ours(cf, cluster="lab"):
    return sorted((r["name"], r["type"], r["content"], r["comment"], r["id"])
                  for r in cf.records() if (r["comment"] or "").startswith(f"hostmesh:{cluster}:")
                  and r["comment"].count(" ") == 0)


def foreign(cf):
    return sorted((r["name"], r["content"], r["comment"], r["ttl"], r["modified_on"])
                  for r in cf.records() if r["content"].startswith("198.51.100."))


def test_first_converge_then_rerun_makes_zero_writes(cf):
    cf.seed(FOREIGN)
    before_foreign = foreign(cf)
    result = converge(cf)
    assert result.changed and len(result.created) == 6
    assert len(cf.writes()) == 1 and cf.writes()[0]["kind"] == "batch"
    assert len(ours(cf)) == 6
    # idempotency
    result = converge(cf)
    assert not result.changed
    assert cf.writes() == []
    assert len(cf.reads()) == 2  # zone lookup + one page
    assert foreign(cf) == before_foreign


def test_changed_ip_makes_one_in_place_update_call(cf):
    cf.seed(FOREIGN)
    converge(cf)
    ids_before = {(n, c): i for n, _, _, c, i in ours(cf)}
    moved = dict(NODES, node2={"ipv4": "203.0.113.99"})
    result = converge(cf, moved)
    assert result.changed and not result.created and not result.deleted
    assert len(result.updated) == 2 and {u["before"]["content"] for u in result.updated} == {
        "203.0.113.12"}
    writes = cf.writes()
    assert [w["kind"] for w in writes] == ["batch"]
    ids_after = {(n, c): i for n, _, _, c, i in ours(cf)}
    assert ids_after == ids_before  # same records, patched in place
    assert {(n, ct) for n, _, ct, c, _ in ours(cf) if c.endswith("node2")} == {
        (ZONE, "203.0.113.99"), (f"*.{ZONE}", "203.0.113.99")}
    # idempotency
    assert not converge(cf, moved).changed and cf.writes() == []


def test_removed_node_loses_exactly_its_records(cf):
    cf.seed(FOREIGN)
    converge(cf)
    before_foreign = foreign(cf)
    two = {k: v for k, v in NODES.items() if k != "node3"}
    result = converge(cf, two)
    assert {d["comment"] for d in result.deleted} == {"hostmesh:lab:node3"}
    assert len(result.deleted) == 2 and len(cf.writes()) == 1
    assert {c for _, _, _, c, _ in ours(cf)} == {"hostmesh:lab:node1", "hostmesh:lab:node2"}
    assert foreign(cf) == before_foreign
    # idempotency
    assert not converge(cf, two).changed and cf.writes() == []


def test_check_mode_writes_nothing_and_reports_the_plan(cf):
    result = converge(cf, check=True)
    assert result.changed and len(result.created) == 6
    assert cf.writes() == [] and ours(cf) == []
    assert result.diff["before"] == "" and result.diff["after"].count("\n") == 6
    converge(cf)
    result = converge(cf, dict(NODES, node1={"ipv4": "203.0.113.77"}), check=True)
    assert result.changed and len(result.updated) == 2 and cf.writes() == []
    assert "203.0.113.77" in result.diff["after"] and "203.0.113.77" not in result.diff["before"]


def test_ipv6_ttl_and_proxied_follow_the_spec(cf):
    nodes = {"node1": {"ipv4": "203.0.113.11", "ipv6": "2001:db8::11"}}
    converge(cf, nodes, ttl=120)
    got = {(r["name"], r["type"], r["ttl"], r["proxied"]) for r in cf.records()}
    assert got == {(n, t, 120, False) for n in NAMES for t in ("A", "AAAA")}
    result = converge(cf, nodes, ttl=120, proxied=True)
    assert len(result.updated) == 4
    assert {(r["ttl"], r["proxied"]) for r in cf.records()} == {(1, True)}
    # idempotency
    assert not converge(cf, nodes, ttl=120, proxied=True).changed and cf.writes() == []


def test_state_absent_removes_only_this_clusters_records(cf):
    cf.seed(FOREIGN)
    converge(cf)
    converge(cf, {"node1": {"ipv4": "203.0.113.200"}}, cluster="prod")
    before_foreign = foreign(cf)
    result = converge(cf, {}, names=[])
    assert len(result.deleted) == 6 and ours(cf) == []
    assert len(ours(cf, "prod")) == 2 and foreign(cf) == before_foreign
    # idempotency
    assert not converge(cf, {}, names=[]).changed and cf.writes() == []


def test_another_cluster_sharing_the_names_is_never_touched(cf):
    converge(cf, {"node1": {"ipv4": "203.0.113.200"}}, cluster="prod")
    prod = ours(cf, "prod")
    converge(cf)
    converge(cf, {"node1": {"ipv4": "203.0.113.1"}})
    assert ours(cf, "prod") == prod


def test_invalid_token_fails_clearly_and_changes_nothing(cf):
    converge(cf)
    state = ours(cf)
    with pytest.raises(TokenRejected, match="rejected the API token.*9109") as info:
        converge(cf, {}, token="not-a-valid-token")
    assert "not-a-valid-token" not in str(info.value)
    assert cf.writes() == [] and ours(cf) == state


def test_read_only_token_reports_the_missing_permission(cf):
    with pytest.raises(PermissionMissing, match="DNS:Edit on zone example.org.*Nothing was applied"):
        converge(cf, token=READ_TOKEN)
    assert ours(cf) == []


def test_unknown_zone_is_a_clear_error(cf):
    with pytest.raises(ZoneNotFound, match="zone nosuch.example not found"):
        converge(cf, zone="nosuch.example", names=["nosuch.example"])
    assert cf.writes() == []


def test_refused_batch_applies_nothing(cf):
    # A CNAME owned by someone else at one of the names: Cloudflare refuses A records there.
    cf.seed([{"type": "CNAME", "name": f"api.{ZONE}", "content": "elsewhere.test", "ttl": 300}])
    converge(cf, names=[ZONE])
    state = ours(cf)
    with pytest.raises(BatchRefused, match="81053.*nothing was applied"):
        converge(cf, dict(NODES, node1={"ipv4": "203.0.113.50"}), names=[ZONE, f"api.{ZONE}"])
    assert ours(cf) == state  # the node1 update in the same batch did not happen either


def test_rate_limit_is_retried_as_retry_after_says(cf):
    cf.control("rate_limit", {"count": 2, "retry_after": 1})
    result = converge(cf, retries=3)
    assert result.changed and len(ours(cf)) == 6
    log = cf.stats()["log"]
    assert [e["kind"] for e in log[:3]] == ["zones"] * 3
    assert log[1]["t"] - log[0]["t"] >= 0.9  # waited the Retry-After


def test_rate_limit_beyond_the_retries_fails_and_applies_nothing(cf):
    cf.control("rate_limit", {"count": 10, "retry_after": 0.1})
    with pytest.raises(RateLimited, match="HTTP 429.*retries were exhausted"):
        converge(cf, retries=2)
    assert len(cf.stats()["log"]) == 3 and ours(cf) == []


@pytest.mark.parametrize("per_page", [5, 7, 100])
def test_pagination_stops_at_total_pages(cf, per_page):
    nodes = {f"n{i:03}": {"ipv4": f"10.9.{i // 200}.{i % 200 + 1}"} for i in range(20)}
    converge(cf, nodes)
    result = converge(cf, nodes, per_page=per_page)
    assert not result.changed and len(result.records) == 40
    pages = -(-40 // per_page)
    assert len(cf.reads()) == 1 + pages  # never an extra empty page
