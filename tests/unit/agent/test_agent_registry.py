"""SQLite registry: migrations, WAL, uniqueness, key rotation, invites; security helpers."""

from __future__ import annotations

import hashlib
import sqlite3
import time

import pytest

from hostmesh.agent import security
from hostmesh.agent.registry import MIGRATIONS, DatabaseError, NameTaken, Registry

KEY1, KEY2 = "a" * 64, "b" * 64


@pytest.fixture
def registry(tmp_path):
    reg = Registry(tmp_path / "hostmesh.db")
    reg.upsert_self("prim", "primary", "http://10.50.0.1:8080", "p" * 64, "0.1.0", None, None,
                    {})
    yield reg
    reg.close()


def add(reg, node_id="n1", name="node1", key=KEY1, **extra):
    return reg.insert_node({"id": node_id, "name": name, "api_endpoint": "http://x:1", **extra},
                           key)


def test_migrations_wal_and_version(registry, tmp_path):
    assert registry.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert registry.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert (tmp_path / "hostmesh.db").stat().st_mode & 0o777 == 0o600
    assert registry.migrate() == len(MIGRATIONS)  # idempotent


def test_newer_schema_is_refused(tmp_path):
    db = sqlite3.connect(tmp_path / "x.db")
    db.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(DatabaseError, match="upgrade the agent"):
        Registry(tmp_path / "x.db")


def test_not_a_database(tmp_path):
    (tmp_path / "x.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DatabaseError, match="DATABASE_PATH"):
        Registry(tmp_path / "x.db")


def test_primary_lists_itself_online(registry):
    (node,) = registry.list_nodes()
    assert node["is_primary"] is True and node["status"] == "online"
    assert set(node) == {"id", "name", "api_endpoint", "is_primary", "status", "last_seen",
                         "consecutive_failures", "last_health_check", "created_at",
                         "updated_at", "wireguard_ip", "public_ip", "labels", "version",
                         "stats", "stats_at", "apps", "apps_at"}
    assert node["created_at"].endswith("Z")


def test_primary_row_follows_its_config(registry):
    add(registry, name="node9")
    registry.upsert_self("prim", "node9", "http://10.50.0.1:8080", "q" * 64, "0.2", None, None,
                         {"a": "b"})  # renamed to a name a secondary had: it gives way
    names = {n["name"]: n for n in registry.list_nodes()}
    assert list(names) == ["node9"] and names["node9"]["is_primary"]
    assert registry.key_state("prim").key_hash == security.sha256_hex("q" * 64)


def test_names_are_unique(registry):
    add(registry)
    with pytest.raises(NameTaken):
        add(registry, node_id="n2")
    add(registry, node_id="n2", name="node2")
    with pytest.raises(NameTaken):
        registry.update_node("n2", {"name": "node1"})
    assert registry.count() == 3


def test_only_hashes_at_rest(registry, tmp_path):
    add(registry)
    registry.create_invite("i1", "invite-secret-value", 60)
    registry.db.execute("PRAGMA wal_checkpoint(FULL)")
    raw = (tmp_path / "hostmesh.db").read_bytes()
    for secret in (KEY1, "p" * 64, "invite-secret-value"):
        assert secret.encode() not in raw
    assert security.sha256_hex(KEY1).encode() in raw


def test_key_rotation_grace(registry):
    add(registry)
    registry.update_node("n1", {}, new_key=KEY2, grace=60)
    state = registry.key_state("n1")
    now = time.time()
    assert state.valid_hashes(now) == [security.sha256_hex(KEY2), security.sha256_hex(KEY1)]
    assert state.valid_hashes(now + 61) == [security.sha256_hex(KEY2)]
    # the same key again is not a rotation: the grace entry is kept as it was
    registry.update_node("n1", {}, new_key=KEY2, grace=0)
    assert registry.key_state("n1").prev_key_hash == security.sha256_hex(KEY1)


def test_check_results_and_heartbeat(registry):
    add(registry)

    def status(failures):
        return "online" if failures < 3 else "offline"

    for expected in (1, 2, 3):
        assert registry.record_check("n1", False, status)[1] == expected
    assert registry.get_node("n1")["status"] == "offline"
    registry.heartbeat("n1", {"version": "9"})
    node = registry.get_node("n1")
    assert (node["status"], node["consecutive_failures"], node["version"]) == ("online", 0, "9")
    assert registry.record_check("prim", False, status) is None  # never checks itself
    assert registry.record_check("gone", True, status) is None


def test_invites_one_time_and_expiring(registry):
    registry.create_invite("i1", "tok1", 60)
    registry.create_invite("i2", "tok2", 0.01)
    time.sleep(0.05)
    assert registry.consume_invite("tok1", "n1") is True
    assert registry.consume_invite("tok1", "n2") is False
    assert registry.consume_invite("tok2", "n3") is False
    assert registry.consume_invite("nope", "n4") is False


def test_transaction_rolls_back_invite_on_name_conflict(registry):
    add(registry)
    registry.create_invite("i1", "tok1", 60)
    with pytest.raises(NameTaken), registry.transaction():
        assert registry.consume_invite("tok1", "n2")
        add(registry, node_id="n2")  # name node1 taken
    assert registry.consume_invite("tok1", "n3") is True  # the invite was not spent


def test_delete(registry):
    add(registry)
    assert registry.delete_node("n1") and not registry.delete_node("n1")
    assert not registry.delete_node("prim")


def test_matches_constant_time_helper():
    h = hashlib.sha256(b"x" * 40).hexdigest()
    assert security.matches("x" * 40, [h]) and security.matches("x" * 40, ["0" * 64, h])
    assert not security.matches("y" * 40, [h])
    assert not security.matches("", [h]) and not security.matches(None, [h])
    assert not security.matches("x" * 40, [])
    assert security.matches("\ud800" * 40, [security.sha256_hex("\ud800" * 40)])


@pytest.mark.parametrize(("key", "ok"), [("a" * 32, True), ("a" * 31, False), ("a" * 257, False),
                                         ("a b" * 20, False), (42, False), ("é" * 40, False)])
def test_key_problem(key, ok):
    assert (security.key_problem(key) is None) is ok


def test_new_secret_is_32_bytes():
    secret = security.new_secret()
    assert len(secret) == 43 and security.key_problem(secret) is None
    assert secret != security.new_secret()


def test_rate_limiter_window():
    limiter = security.RateLimiter(2, 10)
    assert limiter.allow("a", 0)[0] and limiter.allow("a", 1)[0]
    allowed, retry = limiter.allow("a", 2)
    assert not allowed and retry == pytest.approx(8)
    assert limiter.allow("b", 2)[0]  # per address
    assert limiter.allow("a", 10.5)[0]  # the window slid


def test_rate_limiter_memory_is_bounded():
    limiter = security.RateLimiter(1, 10, max_clients=100)
    for i in range(1000):
        limiter.allow(f"10.0.{i // 256}.{i % 256}", 0)
    assert len(limiter._hits) <= 100


def test_write_private(tmp_path):
    security.write_private(tmp_path / "f", "secret\n")
    assert (tmp_path / "f").read_text() == "secret\n"
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_repeat_filter_bounds_identical_and_total_lines(monkeypatch):
    import logging

    from hostmesh.agent import security

    clock = [1000.0]
    monkeypatch.setattr(security.time, "monotonic", lambda: clock[0])
    filt = security.RepeatFilter(burst=3, window=60, total=10)

    def record(msg, level=logging.WARNING):
        return logging.LogRecord("hostmesh.agent", level, __file__, 1, msg, (), None)

    passed = [filt.filter(record("accept failed")) for _ in range(1000)]
    assert passed.count(True) == 3
    assert all(filt.filter(record("info line", logging.INFO)) for _ in range(100))
    # a thousand different messages: at most `total` per window in all
    passed = [filt.filter(record(f"auth rejected path=/x{i}")) for i in range(500)]
    assert passed.count(True) == 10 - 3
    clock[0] += 61
    again = record("accept failed")
    assert filt.filter(again)
    text = again.getMessage()
    assert "log rate limit: 493 warnings/errors dropped" in text
    assert "suppressed 997 identical messages" in text
