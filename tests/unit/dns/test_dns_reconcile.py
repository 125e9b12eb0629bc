"""Pure planning logic of hostmesh.module_utils._dns_reconcile (no API)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hostmesh.module_utils._dns_reconcile import (
    InvalidSpec,
    Record,
    Scope,
    Spec,
    desired_records,
    owner_of,
    plan_changes,
    validate_spec,
)

DATA = Path(__file__).parent / "data"


def make_spec(**over) -> Spec:
    base = {
        "zone": "example.org",
        "cluster": "lab",
        "names": ["example.org", "*.example.org"],
        "nodes": {"node1": {"ipv4": "203.0.113.1"}, "node2": {"ipv4": "203.0.113.2"}},
    }
    base.update(over)
    return Spec(**base)


def rec(name, content, node, *, rtype="A", ttl=300, proxied=False, rid=None, cluster="lab"):
    comment = node if node is None or ":" in node else f"hostmesh:{cluster}:{node}"
    return Record(name, rtype, content, ttl, proxied, comment or "", rid)


@pytest.mark.parametrize("case", json.loads((DATA / "invalid_specs.json").read_text()),
                         ids=lambda c: c["id"])
def test_invalid_specs_say_what_is_wrong(case):
    with pytest.raises(InvalidSpec, match=case["error"].replace("(", r"\(")):
        validate_spec(make_spec(**case["spec"]))


def test_names_are_normalised_and_deduplicated():
    spec = validate_spec(make_spec(names=["Example.org.", "@", "*.EXAMPLE.org"]))
    assert spec.names == ["example.org", "*.example.org"]


def test_proxied_forces_automatic_ttl():
    assert validate_spec(make_spec(proxied=True, ttl=300)).ttl == 1


def test_desired_has_one_record_per_node_name_and_family():
    spec = validate_spec(make_spec(nodes={"n1": {"ipv4": "192.0.2.1", "ipv6": "2001:DB8::1"}}))
    got = {(r.name, r.type, r.content, r.comment) for r in desired_records(spec)}
    assert got == {
        ("example.org", "A", "192.0.2.1", "hostmesh:lab:n1"),
        ("*.example.org", "A", "192.0.2.1", "hostmesh:lab:n1"),
        ("example.org", "AAAA", "2001:db8::1", "hostmesh:lab:n1"),
        ("*.example.org", "AAAA", "2001:db8::1", "hostmesh:lab:n1"),
    }


@pytest.mark.parametrize(("comment", "owner"), [
    ("hostmesh:lab:node1", "node1"),
    ("hostmesh:lab:", None),
    ("hostmesh:lab2:node1", None),
    ("Hostmesh:lab:node1", None),
    ("hostmesh:lab:node1 ", None),
    ("hostmesh:lab:node 1", None),
    ("x hostmesh:lab:node1", None),
    ("", None),
    (None, None),
])
def test_ownership_is_an_exact_comment_match(comment, owner):
    assert owner_of(comment, "lab") == owner


def test_first_converge_creates_everything():
    spec = validate_spec(make_spec())
    plan = plan_changes([], desired_records(spec), spec)
    assert len(plan.creates) == 4 and not plan.updates and not plan.deletes


def test_in_sync_is_a_noop():
    spec = validate_spec(make_spec())
    existing = [replace(r, id=f"id{i}") for i, r in enumerate(desired_records(spec))]
    plan = plan_changes(existing, desired_records(spec), spec)
    assert not plan.changed and len(plan.unchanged) == 4


def test_changed_ip_is_updated_in_place():
    spec = validate_spec(make_spec())
    existing = [replace(r, id=f"id{i}") for i, r in enumerate(desired_records(spec))]
    spec2 = validate_spec(make_spec(nodes={"node1": {"ipv4": "203.0.113.1"},
                                           "node2": {"ipv4": "203.0.113.99"}}))
    plan = plan_changes(existing, desired_records(spec2), spec2)
    assert not plan.creates and not plan.deletes
    assert sorted((b.id, b.content, a.id, a.content) for b, a in plan.updates) == sorted(
        (r.id, "203.0.113.2", r.id, "203.0.113.99") for r in existing if r.comment.endswith("node2"))


def test_foreign_records_are_never_touched():
    spec = validate_spec(make_spec(nodes={}))
    foreign = [
        rec("example.org", "198.51.100.1", None, rid="f1"),
        rec("example.org", "198.51.100.2", "hostmesh:other:node1", rid="f2"),
        rec("example.org", "198.51.100.3", "node1", cluster="other", rid="f3"),
        rec("example.org", "198.51.100.4", "managed by terraform", rid="f4"),
        rec("example.org", "198.51.100.5", "HOSTMESH:LAB:node1", rid="f5"),
    ]
    plan = plan_changes(foreign, [], spec)
    assert not plan.changed


def test_removed_node_loses_exactly_its_records():
    spec = validate_spec(make_spec())
    existing = [replace(r, id=f"id{i}") for i, r in enumerate(desired_records(spec))]
    spec2 = validate_spec(make_spec(nodes={"node1": {"ipv4": "203.0.113.1"}}))
    plan = plan_changes(existing, desired_records(spec2), spec2)
    assert {r.comment for r in plan.deletes} == {"hostmesh:lab:node2"}
    assert len(plan.deletes) == 2 and not plan.updates and not plan.creates


def test_duplicates_keep_the_matching_one_and_delete_the_rest():
    spec = validate_spec(make_spec(names=["example.org"], nodes={"node1": {"ipv4": "203.0.113.1"}}))
    existing = [rec("example.org", "203.0.113.7", "node1", rid="a"),
                rec("example.org", "203.0.113.1", "node1", rid="b")]
    plan = plan_changes(existing, desired_records(spec), spec)
    assert [r.id for r in plan.unchanged] == ["b"] and [r.id for r in plan.deletes] == ["a"]


def test_renamed_name_reuses_the_record():
    spec = validate_spec(make_spec(names=["www.example.org"], nodes={"node1": {"ipv4": "203.0.113.1"}}))
    existing = [rec("old.example.org", "203.0.113.1", "node1", rid="a")]
    plan = plan_changes(existing, desired_records(spec), spec)
    assert [(b.id, a.name) for b, a in plan.updates] == [("a", "www.example.org")]
    assert not plan.creates and not plan.deletes


def test_node_scope_touches_only_that_nodes_records_and_types():
    spec = validate_spec(make_spec(nodes={"node1": {"ipv4": "203.0.113.50"}},
                                   scope=Scope(node="node1", types=frozenset({"A"}))))
    existing = [
        rec("example.org", "203.0.113.1", "node1", rid="a"),
        rec("example.org", "2001:db8::1", "node1", rtype="AAAA", rid="a6"),
        rec("example.org", "203.0.113.2", "node2", rid="b"),
    ]
    plan = plan_changes(existing, desired_records(spec), spec)
    assert [(b.id, a.content) for b, a in plan.updates] == [("a", "203.0.113.50")]
    assert [r.id for r in plan.creates] == [None]  # *.example.org for node1
    assert not plan.deletes


def test_node_scope_refuses_other_nodes():
    with pytest.raises(InvalidSpec, match="scoped to node node1"):
        validate_spec(make_spec(scope=Scope(node="node1")))


def test_diff_lists_before_and_after():
    spec = validate_spec(make_spec(names=["example.org"], nodes={"node1": {"ipv4": "203.0.113.9"}}))
    existing = [rec("example.org", "203.0.113.1", "node1", rid="a")]
    diff = plan_changes(existing, desired_records(spec), spec).diff("example.org", "lab")
    assert "203.0.113.1" in diff["before"] and "203.0.113.9" not in diff["before"]
    assert "203.0.113.9" in diff["after"] and "203.0.113.1" not in diff["after"]
