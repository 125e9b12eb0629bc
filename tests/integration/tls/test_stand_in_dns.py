"""The lab's Cloudflare stand-in answers DNS for its zones from the records it holds.

A real server process (python -m tests.cloudflare_server --dns-listen) on
loopback; records are written through the v4 API (the official SDK's wire
format) and read back with real DNS queries over UDP and TCP (dnspython).
"""

from __future__ import annotations

import json
import socket
import struct
import urllib.request

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.cloudflare_server.app import zone_id_for
from tests.cloudflare_server.harness import CloudflareServer

TOKEN = "dns-test-token-0123456789"


@pytest.fixture(scope="module")
def cf():
    with CloudflareServer(zones=("lab.test", "sub.lab.test", "other.test"), token=TOKEN,
                          dns=True) as server:
        yield server


@pytest.fixture(autouse=True)
def clean(cf):
    cf.wipe()
    yield


def api(cf, method: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(f"{cf.base_url}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {TOKEN}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def create(cf, zone: str, **rec) -> str:
    return api(cf, "POST", f"/zones/{zone_id_for(zone)}/dns_records", rec)["result"]["id"]


def ask(cf, name: str, rtype: str = "A", tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rtype)
    if tcp:
        return dns.query.tcp(query, "127.0.0.1", port=cf.dns_port, timeout=5)
    return dns.query.udp(query, "127.0.0.1", port=cf.dns_port, timeout=5)


def values(resp: dns.message.Message, rtype: str = "A") -> list[str]:
    out = []
    for rrset in resp.answer:
        if rrset.rdtype == dns.rdatatype.from_text(rtype):
            out += [r.to_text() for r in rrset]
    return sorted(out)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_a_records_from_the_api_answer_at_once(cf, tcp):
    create(cf, "lab.test", type="A", name="whoami.lab.test", content="10.231.1.11",
           comment="hostmesh:lab:node1")
    create(cf, "lab.test", type="A", name="whoami", content="10.231.1.12", ttl=300)
    resp = ask(cf, "whoami.lab.test", tcp=tcp)
    assert resp.rcode() == dns.rcode.NOERROR
    assert resp.flags & dns.flags.AA
    assert values(resp) == ["10.231.1.11", "10.231.1.12"]
    ttls = sorted(rrset.ttl for rrset in resp.answer)
    assert ttls == [60], ttls  # one RRset; automatic TTL (1) is 60 on the wire, min wins


def test_txt_created_and_deleted_through_the_api(cf):
    rid = create(cf, "lab.test", type="TXT", name="_acme-challenge.lab.test",
                 content='"abc-DEF_123"', ttl=60)
    create(cf, "lab.test", type="TXT", name="_acme-challenge", content="second-token", ttl=60)
    assert values(ask(cf, "_acme-challenge.lab.test", "TXT"), "TXT") == [
        '"abc-DEF_123"', '"second-token"']
    api(cf, "DELETE", f"/zones/{zone_id_for('lab.test')}/dns_records/{rid}")
    assert values(ask(cf, "_acme-challenge.lab.test", "TXT"), "TXT") == ['"second-token"']


def test_wildcard_answers_only_names_without_records(cf):
    create(cf, "lab.test", type="A", name="*.lab.test", content="10.231.1.11")
    create(cf, "lab.test", type="TXT", name="_acme-challenge.lab.test", content="tok")
    assert values(ask(cf, "anything.lab.test")) == ["10.231.1.11"]
    resp = ask(cf, "anything.lab.test")
    assert resp.answer[0].name.to_text() == "anything.lab.test."
    # the name exists (a TXT record): the wildcard does not stand for it (RFC 4592)
    nodata = ask(cf, "_acme-challenge.lab.test")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    assert nodata.authority[0].rdtype == dns.rdatatype.SOA


def test_nxdomain_nodata_and_refused(cf):
    create(cf, "lab.test", type="A", name="node1.lab.test", content="10.231.1.11")
    nx = ask(cf, "missing.lab.test")
    assert nx.rcode() == dns.rcode.NXDOMAIN
    assert nx.authority and nx.authority[0].rdtype == dns.rdatatype.SOA
    nodata = ask(cf, "node1.lab.test", "AAAA")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer
    # not a resolver: a name outside every zone is refused
    assert ask(cf, "example.com").rcode() == dns.rcode.REFUSED
    # the apex has SOA and NS
    assert values(ask(cf, "lab.test", "SOA"), "SOA")
    assert values(ask(cf, "lab.test", "NS"), "NS") == ["ada.ns.cloudflare.com.",
                                                       "bob.ns.cloudflare.com."]


def test_longest_zone_wins(cf):
    create(cf, "lab.test", type="A", name="x.sub.lab.test", content="10.0.0.1")
    create(cf, "sub.lab.test", type="A", name="x.sub.lab.test", content="10.0.0.2")
    assert values(ask(cf, "x.sub.lab.test")) == ["10.0.0.2"]


def test_cname_and_case_insensitive(cf):
    create(cf, "other.test", type="A", name="target.other.test", content="192.0.2.7")
    create(cf, "other.test", type="CNAME", name="www.other.test", content="target.other.test")
    resp = ask(cf, "WWW.Other.TEST")
    # names compare case-insensitively (compression may point into the question's spelling)
    assert [v.lower() for v in values(resp, "CNAME")] == ["target.other.test."]
    assert resp.rcode() == dns.rcode.NOERROR and resp.flags & dns.flags.AA


def test_long_txt_truncates_over_udp_and_answers_over_tcp(cf):
    for i in range(12):
        create(cf, "lab.test", type="TXT", name="big.lab.test", content=f"{i:02d}" + "x" * 60)
    udp = ask(cf, "big.lab.test", "TXT")
    assert udp.flags & dns.flags.TC
    assert len(values(ask(cf, "big.lab.test", "TXT", tcp=True), "TXT")) == 12
    # dnspython's resolver retries over TCP by itself
    full = dns.query.udp_with_fallback(dns.message.make_query("big.lab.test", "TXT"),
                                       "127.0.0.1", port=cf.dns_port, timeout=5)[0]
    assert len(values(full, "TXT")) == 12


def test_garbage_gets_formerr_or_nothing_and_the_server_stays_up(cf):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    try:
        sock.sendto(b"\x12\x34" + b"\xff" * 30, ("127.0.0.1", cf.dns_port))
        data, _ = sock.recvfrom(4096)
        assert struct.unpack("!H", data[:2])[0] == 0x1234
        assert dns.rcode.from_flags(struct.unpack("!H", data[2:4])[0], 0) == dns.rcode.FORMERR
        sock.sendto(b"\x00", ("127.0.0.1", cf.dns_port))  # too short: no answer at all
    finally:
        sock.close()
    create(cf, "lab.test", type="A", name="still.lab.test", content="10.0.0.9")
    assert values(ask(cf, "still.lab.test")) == ["10.0.0.9"]
