"""The local Cloudflare v4 server itself: envelope, auth, pagination, atomic batch, 429."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.cloudflare_server.app import zone_id_for
from tests.cloudflare_server.harness import TEST_READ_TOKEN, TEST_TOKEN, TEST_ZONE

ZID = zone_id_for(TEST_ZONE)


def call(cf, method, path, body=None, token=TEST_TOKEN):
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(f"{cf.base_url}{path}", method=method, headers=headers,
                                 data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read()), resp.headers
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), err.headers


def a(name, ip, comment=None):
    return {"type": "A", "name": name, "content": ip, "ttl": 300, "comment": comment}


def test_envelope_and_zone_lookup(cf):
    status, body, _ = call(cf, "GET", f"/zones?name={TEST_ZONE}")
    assert status == 200 and body["success"] and body["errors"] == [] and body["messages"] == []
    assert body["result"][0]["id"] == ZID
    assert body["result_info"] == {"page": 1, "per_page": 100, "count": 1, "total_count": 1,
                                   "total_pages": 1}


@pytest.mark.parametrize(("token", "status", "code"), [
    (None, 400, 9106), ("wrong", 401, 9109)])
def test_bad_tokens(cf, token, status, code):
    got, body, _ = call(cf, "GET", "/zones", token=token)
    assert got == status and not body["success"] and body["errors"][0]["code"] == code


def test_read_only_token_cannot_write(cf):
    status, body, _ = call(cf, "POST", f"/zones/{ZID}/dns_records", a(TEST_ZONE, "192.0.2.1"),
                           token=TEST_READ_TOKEN)
    assert status == 403 and body["errors"][0]["code"] == 10000
    assert call(cf, "GET", f"/zones/{ZID}/dns_records", token=TEST_READ_TOKEN)[0] == 200


def test_crud_and_comment_filters(cf):
    _, made, _ = call(cf, "POST", f"/zones/{ZID}/dns_records", a("www", "192.0.2.1", "Hostmesh:x:1"))
    rid = made["result"]["id"]
    assert made["result"]["name"] == f"www.{TEST_ZONE}"
    call(cf, "POST", f"/zones/{ZID}/dns_records", a("api", "192.0.2.2"))
    _, got, _ = call(cf, "GET", f"/zones/{ZID}/dns_records?comment.startswith=hostmesh:x:")
    assert [r["id"] for r in got["result"]] == [rid]  # case-insensitive like Cloudflare
    _, got, _ = call(cf, "GET", f"/zones/{ZID}/dns_records?comment.absent")
    assert [r["content"] for r in got["result"]] == ["192.0.2.2"]
    _, got, _ = call(cf, "PATCH", f"/zones/{ZID}/dns_records/{rid}", {"content": "192.0.2.9"})
    assert got["result"]["content"] == "192.0.2.9" and got["result"]["id"] == rid
    assert call(cf, "DELETE", f"/zones/{ZID}/dns_records/{rid}")[0] == 200
    assert call(cf, "GET", f"/zones/{ZID}/dns_records/{rid}")[1]["errors"][0]["code"] == 81044


def test_pagination_reports_total_pages(cf):
    cf.seed([a(f"h{i}", f"192.0.2.{i + 1}") for i in range(12)])
    _, page3, _ = call(cf, "GET", f"/zones/{ZID}/dns_records?per_page=5&page=3")
    assert len(page3["result"]) == 2
    assert page3["result_info"] == {"page": 3, "per_page": 5, "count": 2, "total_count": 12,
                                    "total_pages": 3}


def test_batch_is_all_or_nothing(cf):
    cf.seed([a("keep", "192.0.2.1", "c"), {"type": "CNAME", "name": "cn", "content": "x.test",
                                           "ttl": 300}])
    before = cf.records()
    keep = next(r for r in before if r["type"] == "A")
    status, body, _ = call(cf, "POST", f"/zones/{ZID}/dns_records/batch", {
        "deletes": [{"id": keep["id"]}],
        "posts": [a("new", "192.0.2.5"), a("cn", "192.0.2.6")],  # second conflicts with the CNAME
    })
    assert status == 400 and body["errors"][0]["code"] == 81053
    assert cf.records() == before
    status, body, _ = call(cf, "POST", f"/zones/{ZID}/dns_records/batch", {
        "deletes": [{"id": keep["id"]}],
        "patches": [{"id": "nope", "content": "192.0.2.7"}]})
    assert status == 404 and cf.records() == before
    status, body, _ = call(cf, "POST", f"/zones/{ZID}/dns_records/batch", {
        "deletes": [{"id": keep["id"]}], "posts": [a("new", "192.0.2.5")]})
    assert status == 200 and len(body["result"]["deletes"]) == 1 and len(body["result"]["posts"]) == 1


def test_identical_record_and_tags_are_refused(cf):
    call(cf, "POST", f"/zones/{ZID}/dns_records", a("www", "192.0.2.1"))
    assert call(cf, "POST", f"/zones/{ZID}/dns_records", a("www", "192.0.2.1"))[1]["errors"][0][
        "code"] == 81058
    body = dict(a("t", "192.0.2.3"), tags=["x:y"])
    assert call(cf, "POST", f"/zones/{ZID}/dns_records", body)[0] == 400


def test_rate_limit_on_demand(cf):
    cf.control("rate_limit", {"count": 1, "retry_after": 7})
    status, body, headers = call(cf, "GET", "/zones")
    assert status == 429 and headers["Retry-After"] == "7" and body["errors"][0]["code"] == 971
    assert call(cf, "GET", "/zones")[0] == 200
