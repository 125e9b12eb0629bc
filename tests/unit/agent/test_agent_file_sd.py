"""Prometheus follows the registry (issue 17): the primary's file_sd writer."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import stat
import sys
from pathlib import Path

import pytest

from hostmesh.agent import config, file_sd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_agent_api import ADMIN, KEY1, KEY2, make, register

SUBNET = ipaddress.ip_network("10.50.0.0/24")


def read(path):
    return json.loads(path.read_text())


def by_name(groups):
    return {g["labels"]["instance"]: g["targets"] for g in groups}


def test_only_checked_names_and_mesh_addresses_become_targets():
    rows = [("node2", "10.50.0.2"), ("node1", "10.50.0.1"), ("evil", "203.0.113.9"),
            ("bad name", "10.50.0.7"), ("v6", "fd00::1"), ("noaddr", None),
            ("garbage", "10.50.0.2:80"), ("lo", "127.0.0.1"), (None, "10.50.0.8")]
    agents, traefik, skipped = file_sd.build_targets(rows, subnet=SUBNET, agent_port=8080,
                                                     traefik_port=8090)
    assert agents == [{"targets": ["10.50.0.1:8080"], "labels": {"instance": "node1"}},
                      {"targets": ["10.50.0.2:8080"], "labels": {"instance": "node2"}}]
    assert by_name(traefik) == {"node1": ["10.50.0.1:8090"], "node2": ["10.50.0.2:8090"]}
    assert sorted(skipped) == sorted(["evil", "<invalid name>", "v6", "noaddr", "garbage",
                                      "lo", "<invalid name>"])
    six = file_sd.build_targets([("v6", "fd00::1")], subnet=ipaddress.ip_network("fd00::/64"),
                                agent_port=8080, traefik_port=None)
    assert six[0][0]["targets"] == ["[fd00::1]:8080"] and six[1] == []


def test_settings():
    assert file_sd.load_settings({}, True) is None
    on = file_sd.load_settings({"PROMETHEUS_SD_DIR": "/var/lib/sd",
                                "PROMETHEUS_SD_TRAEFIK_PORT": "8090"}, True)
    assert on == file_sd.FileSdSettings(Path("/var/lib/sd"), 8090)
    # a secondary has no registry: nothing to write
    assert file_sd.load_settings({"PROMETHEUS_SD_DIR": "/var/lib/sd"}, False) is None
    for env, match in (({"PROMETHEUS_SD_DIR": "sd"}, "absolute"),
                       ({"PROMETHEUS_SD_DIR": "/sd", "PROMETHEUS_SD_TRAEFIK_PORT": "0"}, "port"),
                       ({"PROMETHEUS_SD_DIR": "/sd", "PROMETHEUS_SD_TRAEFIK_PORT": "x"}, "port")):
        with pytest.raises(file_sd.FileSdInvalid, match=match):
            file_sd.load_settings(env, True)


def test_a_bad_setting_stops_the_agent_before_it_starts(tmp_path):
    with pytest.raises(config.ConfigError, match="PROMETHEUS_SD_DIR"):
        make(tmp_path, PROMETHEUS_SD_DIR="relative/dir")


def test_registration_admin_change_and_removal_reach_the_files(tmp_path, caplog, monkeypatch):
    """The real API changes the registry; the primary's duty (file_sd.run) follows it."""
    sd = tmp_path / "sd"
    sd.mkdir()
    api, client = make(tmp_path / "data", PROMETHEUS_SD_DIR=str(sd),
                       PROMETHEUS_SD_TRAEFIK_PORT="8090", NODE_WIREGUARD_IP="10.50.0.1")
    # the primary's own row, as server.build writes it (make() leaves the address out)
    api.registry.upsert_self(api.cfg.node_id, api.cfg.node_name, api.cfg.api_endpoint,
                             api.cfg.api_key, "t", api.cfg.wireguard_ip, None, {})
    admin = {"Authorization": f"Bearer {ADMIN}"}
    file_sd_interval = 0.05
    monkeypatch.setattr(file_sd, "INTERVAL", file_sd_interval)

    async def scenario():
        task = asyncio.create_task(file_sd.run(api))

        async def settle():
            await asyncio.sleep(file_sd_interval * 4)

        await settle()
        assert by_name(read(sd / "agents.json")) == {"node1": ["10.50.0.1:8080"]}
        node2 = register(client, wireguard_ip="10.50.0.2").json()  # from 10.50.0.2
        created = client.post("/api/nodes", headers=admin, json={
            "name": "node3", "api_endpoint": "http://10.50.0.3:8080", "api_key": KEY2,
            "wireguard_ip": "10.50.0.3"})
        assert created.status_code == 201, created.text
        await settle()
        assert by_name(read(sd / "agents.json")) == {
            "node1": ["10.50.0.1:8080"], "node2": ["10.50.0.2:8080"],
            "node3": ["10.50.0.3:8080"]}
        assert by_name(read(sd / "traefik.json"))["node3"] == ["10.50.0.3:8090"]
        # an admin moves node3; then deletes node2
        moved = client.put(f"/api/nodes/{created.json()['id']}", headers=admin,
                           json={"api_endpoint": "http://10.50.0.33:8080",
                                 "wireguard_ip": "10.50.0.33"})
        assert moved.status_code == 200, moved.text
        assert client.delete(f"/api/nodes/{node2['id']}", headers=admin).status_code == 204
        await settle()
        assert by_name(read(sd / "agents.json")) == {
            "node1": ["10.50.0.1:8080"], "node3": ["10.50.0.33:8080"]}
        # heartbeats change rows all the time: the files are not rewritten for them
        before = (sd / "agents.json").stat().st_mtime_ns
        api.registry.db.execute("UPDATE nodes SET last_seen=last_seen+1")
        await settle()
        assert (sd / "agents.json").stat().st_mtime_ns == before
        # a file removed by hand comes back
        (sd / "traefik.json").unlink()
        await settle()
        assert by_name(read(sd / "traefik.json")) == {
            "node1": ["10.50.0.1:8090"], "node3": ["10.50.0.33:8090"]}
        # a row that bypassed the API's checks is still left out (logged once)
        api.registry.db.execute("UPDATE nodes SET wireguard_ip='198.51.100.3' WHERE name='node3'")
        await settle()
        await settle()
        assert by_name(read(sd / "agents.json")) == {"node1": ["10.50.0.1:8080"]}
        task.cancel()

    try:
        with caplog.at_level(logging.INFO, logger="hostmesh.agent"):
            asyncio.run(scenario())
    finally:
        api.registry.close()
    for name in ("agents.json", "traefik.json"):
        assert stat.S_IMODE((sd / name).stat().st_mode) == 0o640
    assert sorted(p.name for p in sd.iterdir()) == ["agents.json", "traefik.json"]
    left_out = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert left_out == [
        "prometheus targets: left out nodes=node3 reason=no_mesh_address_in_MESH_SUBNET"]
    text = (sd / "agents.json").read_text() + (sd / "traefik.json").read_text()
    assert KEY1 not in text and KEY2 not in text and ADMIN not in text


def test_traefik_off_removes_its_file_and_an_unwritable_dir_is_only_logged(tmp_path, caplog,
                                                                         monkeypatch):
    sd = tmp_path / "sd"
    sd.mkdir()
    (sd / "traefik.json").write_text("[]")
    api, _client = make(tmp_path / "data", PROMETHEUS_SD_DIR=str(sd), NODE_WIREGUARD_IP="10.50.0.1")
    missing = tmp_path / "missing"
    monkeypatch.setattr(file_sd, "INTERVAL", 0.02)
    api2, _client2 = make(tmp_path / "data2", PROMETHEUS_SD_DIR=str(missing),
                          NODE_WIREGUARD_IP="10.50.0.1")

    async def scenario():
        tasks = [asyncio.create_task(file_sd.run(a)) for a in (api, api2)]
        await asyncio.sleep(0.2)
        for task in tasks:
            task.cancel()

    try:
        with caplog.at_level(logging.WARNING, logger="hostmesh.agent"):
            asyncio.run(scenario())
    finally:
        api.registry.close()
        api2.registry.close()
    assert sorted(p.name for p in sd.iterdir()) == ["agents.json"]
    assert not missing.exists()
    failures = [r.getMessage() for r in caplog.records if "not written" in r.getMessage()]
    assert len(failures) == 1 and str(missing) in failures[0]  # once, not every INTERVAL


def test_off_by_default_and_on_secondaries(tmp_path):
    api, _ = make(tmp_path / "p")
    sec, _ = make(tmp_path / "s", primary=False, PROMETHEUS_SD_DIR=str(tmp_path / "sd"))
    try:
        assert api.cfg.file_sd is None and sec.cfg.file_sd is None
        asyncio.run(asyncio.wait_for(file_sd.run(api), 1))  # returns at once
    finally:
        api.registry.close()
