"""The node's DDNS updater in GET /metrics (issue 17): from the status file that
`hostmesh ddns sync` writes (hostmesh.dns.status), on primaries and secondaries."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import yaml

from hostmesh.agent import security
from hostmesh.dns import status

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_agent_api import make

METRICS = "metrics-token-" + "d" * 40
SCRAPE = {"Authorization": f"Bearer {METRICS}"}
TOKEN = "cf-token-" + "t" * 40


def scrape(client) -> str:
    resp = client.get("/metrics", headers=SCRAPE)
    assert resp.status_code == 200
    return resp.text


def ddns_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("hostmesh_ddns_")]


@pytest.mark.parametrize("primary", [True, False])
def test_the_updaters_outcome_is_exported(tmp_path, primary):
    path = tmp_path / "ddns" / "status.json"
    path.parent.mkdir()
    api, client = make(tmp_path / "data", primary=primary, DDNS_STATUS_FILE=str(path),
                       METRICS_TOKEN_SHA256=security.sha256_hex(METRICS))
    try:
        # no updater on this node: no series at all (not zeros an alert would read)
        assert ddns_lines(scrape(client)) == []
        status.record(path, ok=True, now=1764590000.5, exit_code=0)
        status.record(path, ok=False, now=1764590300.25, exit_code=1,
                      error=f"Cloudflare refused {TOKEN}", secret=TOKEN)
        text = scrape(client)
        assert ddns_lines(text) == [
            "hostmesh_ddns_status_ok 1.0",
            "hostmesh_ddns_last_attempt_timestamp_seconds 1.76459030025e+09",
            "hostmesh_ddns_last_success_timestamp_seconds 1.7645900005e+09",
            "hostmesh_ddns_consecutive_failures 1.0",
        ]
        assert TOKEN not in text and "refused" not in text  # the error stays in the file
        # never succeeded yet: no success timestamp, the failures count
        path.unlink()
        status.record(path, ok=False, now=10.0, exit_code=3, error="detection failed")
        assert ddns_lines(scrape(client)) == [
            "hostmesh_ddns_status_ok 1.0",
            "hostmesh_ddns_last_attempt_timestamp_seconds 10.0",
            "hostmesh_ddns_consecutive_failures 1.0",
        ]
    finally:
        if api.registry is not None:
            api.registry.close()


def test_a_corrupt_or_unreadable_file_is_one_log_line_and_status_ok_0(tmp_path, caplog):
    path = tmp_path / "status.json"
    _api, client = make(tmp_path / "data", primary=False, DDNS_STATUS_FILE=str(path),
                       METRICS_TOKEN_SHA256=security.sha256_hex(METRICS))
    with caplog.at_level(logging.INFO, logger="hostmesh.agent"):
        path.write_text('{"format": 1, "last_attempt": "soon", "consecutive_failures": 0}')
        for _ in range(3):
            assert ddns_lines(scrape(client)) == ["hostmesh_ddns_status_ok 0.0"]
        path.write_text("not json at all")
        assert ddns_lines(scrape(client)) == ["hostmesh_ddns_status_ok 0.0"]
        path.unlink()
        path.mkdir()  # read fails with an OSError
        assert ddns_lines(scrape(client)) == ["hostmesh_ddns_status_ok 0.0"]
        path.rmdir()
        status.record(path, ok=True, now=20.0, exit_code=0)
        assert ddns_lines(scrape(client))[0] == "hostmesh_ddns_status_ok 1.0"
    messages = [r.getMessage() for r in caplog.records if "ddns status" in r.getMessage()]
    assert len(messages) == 4, messages  # one per distinct problem, then "readable again"
    assert "last_attempt must be a time" in messages[0] and str(path) in messages[0]
    assert "not JSON" in messages[1]
    assert "Is a directory" in messages[2]
    assert messages[3] == f"ddns status readable again file={path}"


def test_the_agents_default_is_where_the_ddns_role_has_the_updater_write(tmp_path):
    role = Path(__file__).resolve().parents[3] / "roles" / "ddns"
    status_dir = yaml.safe_load((role / "vars" / "main.yml").read_text())["_ddns_status_dir"]
    api, _ = make(tmp_path, primary=False)
    assert api.cfg.ddns_status_file == f"{status_dir}/status.json"
    env = (role / "templates" / "ddns.env.j2").read_text()
    assert "DDNS_STATUS_FILE={{ _ddns_status_dir }}/status.json" in env
    unit = (role / "templates" / "hostmesh-ddns.service.j2").read_text()
    assert "ReadWritePaths=-{{ _ddns_status_dir }}" in unit
