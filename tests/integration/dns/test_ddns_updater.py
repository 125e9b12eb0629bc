"""`hostmesh ddns sync` as a real process: detection from the local trace endpoint."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hostmesh.module_utils._dns_reconcile import Reconciler, Spec, make_client

from tests.cloudflare_server.harness import TEST_TOKEN, TEST_ZONE

HOSTMESH = str(Path(sys.executable).with_name("hostmesh"))
NAMES = [TEST_ZONE, f"*.{TEST_ZONE}"]


@pytest.fixture
def env_file(tmp_path, cf):
    token = tmp_path / "token"
    token.write_text(TEST_TOKEN + "\n")
    token.chmod(0o600)
    conf = tmp_path / "ddns.env"
    conf.write_text(
        "# written like the ddns role writes it\n"
        f"DDNS_ZONE={TEST_ZONE}\nDDNS_NAMES={','.join(NAMES)}\nDDNS_CLUSTER=lab\n"
        f"NODE_NAME=node2\nDDNS_TTL=300\nDDNS_PROXIED=false\n"
        f"DDNS_DETECTOR_URL={cf.trace_url}\nDDNS_TOKEN_FILE={token}\n"
        f"CLOUDFLARE_BASE_URL={cf.base_url}\nDDNS_TIMEOUT=5\nDDNS_RETRIES=1\n"
    )
    return conf


def sync(conf, *extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("CLOUDFLARE_API_TOKEN", "CLOUDFLARE_BASE_URL")}
    return subprocess.run([HOSTMESH, "ddns", "sync", "--config", str(conf), *extra],
                          check=False, capture_output=True, text=True, env=env, timeout=60)


def cluster_converge(cf):
    nodes = {f"node{i}": {"ipv4": f"203.0.113.{10 + i}"} for i in (1, 2, 3)}
    spec = Spec(zone=TEST_ZONE, cluster="lab", names=NAMES, nodes=nodes)
    Reconciler(make_client(TEST_TOKEN, cf.base_url)).converge(spec)


def by_node(cf):
    out: dict[str, set] = {}
    for r in cf.records():
        out.setdefault(r["comment"], set()).add((r["name"], r["type"], r["content"], r["id"]))
    return out


def test_ip_change_is_followed_for_this_node_only(cf, env_file):
    cluster_converge(cf)
    before = by_node(cf)
    cf.control("trace", {"ip": "198.18.0.2"})
    run = sync(env_file)
    assert run.returncode == 0, run.stderr
    assert "updated" in run.stderr and "198.18.0.2" in run.stderr
    after = by_node(cf)
    assert {(n, c) for n, _, c, _ in after["hostmesh:lab:node2"]} == {
        (n, "198.18.0.2") for n in NAMES}
    # same ids: patched in place
    assert {i for *_, i in after["hostmesh:lab:node2"]} == {i for *_, i in before["hostmesh:lab:node2"]}
    for other in ("hostmesh:lab:node1", "hostmesh:lab:node3"):
        assert after[other] == before[other]
    # idempotency
    cf.reset_stats()
    run = sync(env_file)
    assert run.returncode == 0 and "in sync" in run.stderr, run.stderr
    assert cf.writes() == []
    assert len(cf.reads()) == 2


def test_first_sync_detects_the_callers_address(cf, env_file):
    run = sync(env_file)
    assert run.returncode == 0, run.stderr
    # The trace endpoint echoes the client address: loopback here, 10.231.x in the lab.
    assert {(r["name"], r["content"], r["comment"]) for r in cf.records()} == {
        (n, "127.0.0.1", "hostmesh:lab:node2") for n in NAMES}


def test_detector_down_deletes_nothing_and_fails_loudly(cf, env_file):
    cluster_converge(cf)
    before = by_node(cf)
    cf.control("trace", {"down": True})
    cf.reset_stats()
    run = sync(env_file)
    assert run.returncode == 3
    assert "public IP detection failed" in run.stderr and "records left unchanged" in run.stderr
    assert "HTTP 503" in run.stderr
    assert cf.writes() == [] and by_node(cf) == before


def test_detector_unreachable_deletes_nothing(cf, env_file):
    cluster_converge(cf)
    before = by_node(cf)
    run = sync(env_file, "--detector-url", "http://127.0.0.1:9/cdn-cgi/trace")
    assert run.returncode == 3 and "unreachable" in run.stderr
    assert by_node(cf) == before


def test_dry_run_changes_nothing(cf, env_file):
    cluster_converge(cf)
    before = by_node(cf)
    cf.control("trace", {"ip": "198.18.0.9"})
    run = sync(env_file, "--dry-run")
    assert run.returncode == 0 and "would change" in run.stderr
    assert by_node(cf) == before


def test_bad_token_exits_1_without_printing_it(cf, env_file, tmp_path):
    bad = tmp_path / "bad"
    bad.write_text("definitely-wrong-token")
    run = sync(env_file, "--token-file", str(bad))
    assert run.returncode == 1 and "rejected the API token" in run.stderr
    assert "definitely-wrong-token" not in run.stderr + run.stdout


def test_missing_settings_exit_2(tmp_path):
    conf = tmp_path / "empty.env"
    conf.write_text("")
    run = sync(conf)
    assert run.returncode == 2 and "missing settings" in run.stderr and "--zone" in run.stderr


def status_of(path):
    return json.loads(path.read_text())


def test_each_run_records_its_outcome_for_the_agent(cf, env_file, tmp_path):
    """Issue 17: the status file the agent exports (hostmesh.dns.status)."""
    status = tmp_path / "state" / "status.json"
    status.parent.mkdir()
    env_file.write_text(env_file.read_text() + f"DDNS_STATUS_FILE={status}\n")
    token = TEST_TOKEN
    start = time.time()
    run = sync(env_file)
    assert run.returncode == 0, run.stderr
    first = status_of(status)
    assert stat.S_IMODE(status.stat().st_mode) == 0o640
    assert first["format"] == 1 and first["consecutive_failures"] == 0
    assert first["exit_code"] == 0 and first["last_error"] is None
    assert start <= first["last_success"] == first["last_attempt"] <= time.time()

    # Cloudflare refuses the token: counted, the last success kept, the token never written
    bad = tmp_path / "bad"
    bad.write_text("definitely-wrong-token\n")
    for expected in (1, 2):
        run = sync(env_file, "--token-file", str(bad))
        assert run.returncode == 1
        doc = status_of(status)
        assert doc["consecutive_failures"] == expected and doc["exit_code"] == 1
        assert doc["last_success"] == first["last_success"]
        assert doc["last_attempt"] > first["last_attempt"]
        assert doc["last_error"].startswith("DNS update failed:") and "token" in doc["last_error"]
        text = status.read_text()
        assert "definitely-wrong-token" not in text and token not in text

    # detection fails: counted too, with its own reason
    cf.control("trace", {"down": True})
    run = sync(env_file)
    assert run.returncode == 3
    doc = status_of(status)
    assert doc["consecutive_failures"] == 3
    assert doc["last_error"].startswith("public IP detection failed")
    assert doc["last_error_at"] == doc["last_attempt"]

    # a dry run records nothing; a good run resets the count and keeps the last error
    cf.control("trace", {"down": False})
    assert sync(env_file, "--dry-run").returncode == 0
    assert status_of(status) == doc
    assert sync(env_file).returncode == 0
    back = status_of(status)
    assert back["consecutive_failures"] == 0 and back["last_success"] == back["last_attempt"]
    assert back["last_error"] == doc["last_error"]
    assert list(status.parent.iterdir()) == [status]  # no temp file left behind


def test_a_bad_configuration_is_recorded_and_an_unwritable_status_only_logged(tmp_path):
    status = tmp_path / "status.json"
    conf = tmp_path / "ddns.env"
    conf.write_text(f"DDNS_ZONE=example.org\nDDNS_STATUS_FILE={status}\n")
    run = sync(conf)
    assert run.returncode == 2
    doc = status_of(status)
    assert doc["consecutive_failures"] == 1 and doc["last_success"] is None
    assert doc["last_error"].startswith("configuration error: missing settings")
    # a previous file that is not a status counts as no history
    status.write_text("{not json")
    assert sync(conf).returncode == 2 and status_of(status)["consecutive_failures"] == 1
    # a directory it cannot write: the run's own result stands, one clear line
    run = sync(conf, "--status-file", str(tmp_path / "missing" / "status.json"))
    assert run.returncode == 2
    assert "cannot record the outcome in" in run.stderr and "writable" in run.stderr
