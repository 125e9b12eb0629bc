"""Configuration parsing: defaults, env file, hashes, backoff table, clear errors."""

from __future__ import annotations

import hashlib
import os

import pytest

from hostmesh.agent import config
from hostmesh.agent.config import ConfigError


def primary_env(tmp_path, **extra):
    return {"NODE_IS_PRIMARY": "true", "NODE_NAME": "node1", "DATA_DIR": str(tmp_path),
            "NODE_WIREGUARD_IP": "10.50.0.1", **extra}


def secondary_env(tmp_path, **extra):
    return {"NODE_NAME": "node2", "DATA_DIR": str(tmp_path),
            "PRIMARY_NODE_URL": "http://10.50.0.1:8080",
            "SERVER_ADDRESS": "10.50.0.2:8080", **extra}


def test_primary_defaults(tmp_path):
    cfg = config.load(primary_env(tmp_path))
    assert cfg.is_primary and cfg.role == "primary"
    # the mesh address and loopback, never every address
    assert cfg.listen == [("10.50.0.1", 8080), ("127.0.0.1", 8080)]
    assert cfg.api_endpoint == "http://10.50.0.1:8080" and cfg.agent_port == 8080
    assert cfg.database_path == tmp_path / "hostmesh.db"
    assert [(r.min_failures, r.interval, r.status) for r in cfg.backoff_table] == [
        (0, 7, "online"), (1, 1, "online"), (2, 5, "offline"), (4, 30, "offline"),
        (6, 120, "offline"), (8, 300, "offline"), (11, 900, "unreachable"),
        (21, 1800, "unreachable")]
    assert cfg.heartbeat_interval == 5 and cfg.startup_heartbeat_delay == 2
    assert cfg.health_check_timeout == 2
    assert cfg.key_grace_seconds == 300


@pytest.mark.parametrize(("failures", "status", "interval"), [
    (0, "online", 7), (1, "online", 1), (2, "offline", 5), (3, "offline", 5),
    (4, "offline", 30), (6, "offline", 120), (8, "offline", 300), (10, "offline", 300),
    (11, "unreachable", 900),
    (20, "unreachable", 900), (21, "unreachable", 1800), (500, "unreachable", 1800)])
def test_backoff_table_matches_design(tmp_path, failures, status, interval):
    row = config.load(primary_env(tmp_path)).backoff_for(failures)
    assert (row.status, row.interval) == (status, interval)


def test_health_check_interval_sets_first_row(tmp_path):
    cfg = config.load(primary_env(tmp_path, HEALTH_CHECK_INTERVAL="5"))
    assert cfg.backoff_table[0].interval == 5 and cfg.backoff_table[2].interval == 5


def test_backoff_table_override(tmp_path):
    cfg = config.load(primary_env(tmp_path, BACKOFF_TABLE="0:0.1:online, 2:0.5:unreachable"))
    assert cfg.backoff_for(1).status == "online" and cfg.backoff_for(2).interval == 0.5


@pytest.mark.parametrize("table", ["1:30:online", "0:30:sleepy", "0:x:online", "0:30",
                                   "0:30:online,0:60:offline", "0:0:online", ""])
def test_bad_backoff_table(table):
    with pytest.raises(ConfigError, match="BACKOFF_TABLE"):
        config.parse_backoff(table)


def test_hashes_plain_and_sha256_lists(tmp_path):
    h = hashlib.sha256(b"second").hexdigest()
    cfg = config.load(primary_env(tmp_path, ADMIN_TOKEN="first,", ADMIN_TOKEN_SHA256=h.upper(),
                                  REGISTRATION_TOKEN_SHA256=f"{h}, {h}"))
    assert cfg.admin_token_hashes == [hashlib.sha256(b"first").hexdigest(), h]
    assert cfg.registration_token_hashes == [h, h]


def test_bad_hash_is_reported_without_value(tmp_path):
    with pytest.raises(ConfigError, match="ADMIN_TOKEN_SHA256") as err:
        config.load(primary_env(tmp_path, ADMIN_TOKEN_SHA256="not-a-hash-secretvalue"))
    assert "secretvalue" not in str(err.value)


def test_secondary_requires_primary_url(tmp_path):
    env = secondary_env(tmp_path)
    del env["PRIMARY_NODE_URL"]
    with pytest.raises(ConfigError, match="PRIMARY_NODE_URL is not set"):
        config.load(env)


def test_secondary_on_all_addresses_needs_endpoint(tmp_path):
    with pytest.raises(ConfigError, match="NODE_API_ENDPOINT"):
        config.load(secondary_env(tmp_path, SERVER_ADDRESS="0.0.0.0:8080",
                                  ALLOW_PUBLIC_API="true"))
    cfg = config.load(secondary_env(tmp_path))
    assert cfg.api_endpoint == "http://10.50.0.2:8080"


def test_no_mesh_address_fails_with_how_to_fix_it(tmp_path):
    env = secondary_env(tmp_path)
    del env["SERVER_ADDRESS"]
    with pytest.raises(ConfigError, match="no mesh address to listen on") as err:
        config.load(env)
    assert "NODE_WIREGUARD_IP" in str(err.value) and "SERVER_ADDRESS" in str(err.value)


@pytest.mark.parametrize("address", ["0.0.0.0:8080", "[::]:8080", ":8080",
                                     "10.50.0.2:8080,0.0.0.0:8080"])
def test_wildcard_needs_allow_public_api(tmp_path, address):
    with pytest.raises(ConfigError, match="ALLOW_PUBLIC_API=true") as err:
        config.load(secondary_env(tmp_path, SERVER_ADDRESS=address))
    assert "public" in str(err.value)
    cfg = config.load(secondary_env(tmp_path, SERVER_ADDRESS=address, ALLOW_PUBLIC_API="true",
                                    NODE_WIREGUARD_IP="10.50.0.2"))
    assert cfg.allow_public_api


def test_server_address_list_and_port(tmp_path):
    cfg = config.load(secondary_env(tmp_path, SERVER_ADDRESS="10.50.0.2:9000, [fd00::2]:9000,"
                                    "127.0.0.1:9000"))
    assert cfg.listen == [("10.50.0.2", 9000), ("fd00::2", 9000), ("127.0.0.1", 9000)]
    assert cfg.agent_port == 9000 and cfg.api_endpoint == "http://10.50.0.2:9000"
    env = secondary_env(tmp_path, NODE_WIREGUARD_IP="10.50.0.5", SERVER_PORT="9100")
    del env["SERVER_ADDRESS"]
    cfg = config.load(env)
    assert cfg.listen == [("10.50.0.5", 9100), ("127.0.0.1", 9100)]
    assert cfg.api_endpoint == "http://10.50.0.5:9100"


@pytest.mark.parametrize("url", ["http://203.0.113.5:8080", "http://primary.example.org:8080",
                                 "http://10.60.0.1:8080"])
def test_secondary_reaches_the_primary_over_the_mesh_only(tmp_path, url):
    with pytest.raises(ConfigError, match="PRIMARY_NODE_URL") as err:
        config.load(secondary_env(tmp_path, PRIMARY_NODE_URL=url))
    assert "MESH_SUBNET=10.50.0.0/24" in str(err.value)


def test_mesh_subnet(tmp_path):
    cfg = config.load(secondary_env(tmp_path, MESH_SUBNET="10.60.0.0/16",
                                    PRIMARY_NODE_URL="http://10.60.3.1:8080"))
    assert str(cfg.mesh_subnet) == "10.60.0.0/16"
    for url in ("http://127.0.0.1:8080", "http://[::1]:8080", "http://localhost:8080"):
        assert config.load(secondary_env(tmp_path, PRIMARY_NODE_URL=url)).primary_url == url
    with pytest.raises(ConfigError, match="MESH_SUBNET"):
        config.load(secondary_env(tmp_path, MESH_SUBNET="ten"))
    with pytest.raises(ConfigError, match="outside MESH_SUBNET"):
        config.load(secondary_env(tmp_path, NODE_WIREGUARD_IP="192.168.1.2"))


@pytest.mark.parametrize(("name", "value"), [
    ("NODE_IS_PRIMARY", "maybe"), ("SERVER_ADDRESS", "8080"), ("SERVER_ADDRESS", "h:99999"),
    ("HEARTBEAT_INTERVAL", "soon"), ("HEARTBEAT_INTERVAL", "-1"), ("HEARTBEAT_INTERVAL", "nan"),
    ("NODE_NAME", "bad name"), ("NODE_NAME", "node2\nx"), ("NODE_NAME", "localhost"),
    ("NODE_NAME", "hostmesh_online"), ("NODE_ID", "../etc"), ("NODE_ID", "id\nx"),
    ("NODE_API_KEY", "short"), ("TRUSTED_PROXIES", "a proxy"), ("SERVER_PORT", "http"),
    ("PRIMARY_NODE_URL", "10.50.0.1:8080"), ("REGISTRATION_RATE_LIMIT", "lots"),
    ("NODE_WIREGUARD_IP", "10.50.0.300"), ("NODE_LABELS", "a b=c"), ("LOG_LEVEL", "LOUD"),
])
def test_bad_values_name_the_variable(tmp_path, name, value):
    with pytest.raises(ConfigError, match=name):
        config.load(secondary_env(tmp_path, **{name: value}))


def test_ipv6_address_and_labels(tmp_path):
    cfg = config.load(secondary_env(tmp_path, SERVER_ADDRESS="[fd00::2]:8080",
                                    NODE_LABELS="zone=eu,gpu", MESH_SUBNET="fd00::/64",
                                    PRIMARY_NODE_URL="http://[fd00::1]:8080"))
    assert (cfg.host, cfg.port) == ("fd00::2", 8080)
    assert cfg.api_endpoint == "http://[fd00::2]:8080"
    assert cfg.labels == {"zone": "eu", "gpu": "true"}


def test_finish_generates_and_persists_id_and_key(tmp_path):
    cfg = config.finish(config.load(secondary_env(tmp_path / "d")))
    assert set(cfg.generated) == {"NODE_ID", "NODE_API_KEY"}
    again = config.finish(config.load(secondary_env(tmp_path / "d")))
    assert (again.node_id, again.api_key) == (cfg.node_id, cfg.api_key)
    assert again.generated == []
    for name in ("node_id", "node_api_key"):
        assert os.stat(tmp_path / "d" / name).st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "d").st_mode & 0o777 == 0o700


def test_env_values_win_over_generated(tmp_path):
    cfg = config.finish(config.load(secondary_env(tmp_path, NODE_ID="fixed-id",
                                                  NODE_API_KEY="k" * 40)))
    assert (cfg.node_id, cfg.api_key, cfg.generated) == ("fixed-id", "k" * 40, [])


def test_read_env_file(tmp_path):
    path = tmp_path / "agent.env"
    path.write_text("# comment\n\nexport NODE_NAME=node3\nADMIN_TOKEN='quoted value'\n"
                    'EMPTY=\nURL="http://x:1"\n')
    assert config.read_env_file(path) == {"NODE_NAME": "node3", "ADMIN_TOKEN": "quoted value",
                                          "EMPTY": "", "URL": "http://x:1"}
    path.chmod(0o644)
    assert "chmod 600" in config.env_file_mode_warning(path)
    for fine in (0o600, 0o640, 0o400):
        path.chmod(fine)
        assert config.env_file_mode_warning(path) is None


def test_env_file_bad_line_does_not_echo_it(tmp_path):
    path = tmp_path / "agent.env"
    path.write_text("NODE_NAME=ok\nthis line holds s3cret\n")
    with pytest.raises(ConfigError, match=":2: expected KEY=VALUE") as err:
        config.read_env_file(path)
    assert "s3cret" not in str(err.value)


def test_environment_wins_over_env_file(tmp_path, monkeypatch):
    from hostmesh.agent.main import load_environment

    path = tmp_path / "agent.env"
    path.write_text("NODE_NAME=fromfile\nNODE_ID=file-id\n")
    path.chmod(0o600)
    monkeypatch.setenv("NODE_NAME", "fromenv")
    env, warnings = load_environment(str(path))
    assert env["NODE_NAME"] == "fromenv" and env["NODE_ID"] == "file-id" and warnings == []
    with pytest.raises(ConfigError, match="does not exist"):
        load_environment(str(tmp_path / "missing.env"))
