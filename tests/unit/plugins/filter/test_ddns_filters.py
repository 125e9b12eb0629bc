"""plugins/filter/ddns.py: the ddns role asks the reconciler's and the updater's own code."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "collections"))

from ansible_collections.hostmesh.cluster.plugins.filter import ddns
from ansible_collections.hostmesh.cluster.plugins.module_utils import _public_ip

NODES = ["node1", "node2", "node3"]


def errors(zone="example.org", cluster="lab", names=("example.org", "*.example.org"),
           nodes=NODES, ttl=300, proxied=False, state="present"):
    return ddns.ddns_spec_errors(zone, cluster, list(names) if not isinstance(names, str)
                                 else names, nodes, ttl, proxied, state)


def test_valid_settings_have_no_error():
    assert errors() == []
    assert errors(zone="Example.org.", names=["EXAMPLE.org", "@"], ttl="1") == []


@pytest.mark.parametrize("kwargs,expected", [
    ({"zone": ""}, "zone '' is not a domain name"),
    ({"zone": "localhost"}, "is not a domain name"),
    ({"names": ["x.other.org"]}, "name 'x.other.org' is not inside zone 'example.org'"),
    ({"names": []}, "names is empty"),
    ({"names": "example.org"}, "names must be a list"),
    ({"cluster": "a:b"}, "cluster 'a:b' cannot be used in the owner comment"),
    ({"cluster": "a b"}, "without ':' or spaces"),
    ({"ttl": 5}, "ttl 5 is invalid"),
    ({"ttl": 90000}, "ttl 90000 is invalid"),
    ({"ttl": "soon"}, "ttl 'soon' is invalid"),
    ({"nodes": ["n" * 100]}, "cannot be used in the owner comment"),
], ids=["no-zone", "bare-zone", "outside", "no-names", "names-str", "colon", "space", "ttl-low",
        "ttl-high", "ttl-text", "long-node"])
def test_each_rule_is_the_reconcilers(kwargs, expected):
    (message,) = errors(**kwargs)
    assert expected in message


def test_removing_records_needs_no_names():
    assert errors(names=[], state="absent") == []
    assert errors(zone="", names=[], state="absent") == []


def test_many_nodes_get_distinct_stand_in_addresses():
    assert errors(nodes=[f"node{i}" for i in range(300)]) == []


@pytest.mark.parametrize("body,version,ip", [
    ("fl=1\nh=cloudflare.com\nip=203.0.113.7\nts=1\n", 4, "203.0.113.7"),
    ("198.51.100.3\n", 4, "198.51.100.3"),
    ("ip=2001:db8::1", 6, "2001:db8::1"),
    ("ip=2001:db8::1", 0, "2001:db8::1"),
])
def test_detected_ip_reads_trace_and_plain_answers(body, version, ip):
    assert ddns.detected_ip(body, version, "node2") == ip


@pytest.mark.parametrize("body,version,match", [
    ("<html>oops</html>", 4, "node2: the detector's answer holds no IP address"),
    ("ip=2001:db8::1", 4, "node2: the detector answered 2001:db8::1, which is not an IPv4"),
    ("fl=1\nts=2\n", 4, "holds no IP address"),
])
def test_detected_ip_never_guesses(body, version, match):
    with pytest.raises(AnsibleFilterError, match=match):
        ddns.detected_ip(body, version, "node2")


def test_one_parser_for_the_role_and_the_node_side_updater():
    from hostmesh.dns import detect

    # the updater's parser is the collection's file, shipped in the agent's wheel
    one = (ROOT / "plugins" / "module_utils" / "_public_ip.py").resolve()
    for fn in (detect.parse_detector_body, _public_ip.parse_detector_body):
        assert Path(fn.__code__.co_filename).resolve() == one
    assert detect.DetectionFailed.__name__ == "DetectionFailed"
    assert detect.DetectionFailed.__module__.endswith("module_utils._public_ip")


def test_the_role_has_no_jinja_copy_of_these_rules():
    publish = (ROOT / "roles" / "ddns" / "tasks" / "publish.yml").read_text()
    settings = (ROOT / "roles" / "ddns" / "tasks" / "settings.yml").read_text()
    assert "hostmesh.cluster.detected_ip" in publish and "regex_search" not in publish
    assert "hostmesh.cluster.ddns_spec_errors" in settings
    assert "ddns_zone is match" not in settings and "86400" not in settings
