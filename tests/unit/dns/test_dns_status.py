"""The DDNS updater's status file (hostmesh.dns.status): strict reading, no token in it."""

from __future__ import annotations

import json

import pytest

from hostmesh.dns import status

GOOD = {"format": 1, "last_attempt": 100.5, "last_success": 90.0, "last_error": "x",
        "last_error_at": 100.5, "consecutive_failures": 2, "exit_code": 1}


def test_a_good_status_reads_back(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(GOOD))
    assert status.read(path) == {"last_attempt": 100.5, "last_success": 90.0,
                                 "last_error_at": 100.5, "last_error": "x",
                                 "consecutive_failures": 2}


@pytest.mark.parametrize(("change", "match"), [
    ({"format": 2}, "format must be 1"),
    ({"last_attempt": None}, "last_attempt must be a time"),
    ({"last_attempt": "yesterday"}, "last_attempt must be a time"),
    ({"last_success": -1}, "last_success must be a time"),
    ({"last_success": True}, "last_success must be a time"),
    ({"consecutive_failures": -3}, "consecutive_failures"),
    ({"consecutive_failures": 1.5}, "consecutive_failures"),
    ({"last_error": 7}, "last_error must be a string"),
])
def test_wrong_fields_are_refused_saying_which(tmp_path, change, match):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({**GOOD, **change}))
    with pytest.raises(status.StatusInvalid, match=match):
        status.read(path)


@pytest.mark.parametrize("raw", [b"", b"[1]", b"\xff\xfe", b"{" + b" " * 20000 + b"}",
                                 b'{"last_attempt": NaN, "format": 1}'])
def test_garbage_is_refused(tmp_path, raw):
    path = tmp_path / "s.json"
    path.write_bytes(raw)
    with pytest.raises(status.StatusInvalid):
        status.read(path)


def test_the_error_is_one_short_line_without_the_token(tmp_path):
    token = "cf-" + "k" * 40
    path = tmp_path / "s.json"
    doc = status.record(path, ok=False, now=5.0, exit_code=1,
                        error=f"HTTP 400\nfor token {token}" + " more" * 200, secret=token)
    assert token not in path.read_text()
    assert doc["last_error"].startswith("HTTP 400 for token <token> more")
    assert len(doc["last_error"]) == status.MAX_ERROR and "\n" not in doc["last_error"]
    assert doc["consecutive_failures"] == 1 and doc["last_success"] is None
    doc = status.record(path, ok=True, now=6.0, exit_code=0)
    assert (doc["consecutive_failures"], doc["last_success"], doc["last_attempt"]) == (0, 6.0, 6.0)
