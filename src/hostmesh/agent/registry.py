"""The primary's node registry: SQLite in WAL mode with versioned migrations.

One connection, used only from the event loop thread: every write is a short
transaction committed before the HTTP answer is sent, so a 201 means the row
is in the WAL. `synchronous=NORMAL` keeps commits durable across a process
crash (kill -9); only an OS crash/power loss may drop the last transactions,
which heartbeats and re-registration repair by themselves.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from hostmesh.agent import security

# Each entry upgrades the schema by one version (PRAGMA user_version).
MIGRATIONS: list[str] = [
    # 1: nodes + invites
    """
    CREATE TABLE nodes (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        api_endpoint TEXT NOT NULL,
        is_primary INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL DEFAULT 'online',
        key_hash TEXT NOT NULL,
        prev_key_hash TEXT,
        prev_key_expires REAL,
        last_seen REAL,
        consecutive_failures INTEGER NOT NULL DEFAULT 0,
        last_health_check REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        wireguard_ip TEXT,
        public_ip TEXT,
        labels TEXT NOT NULL DEFAULT '{}',
        version TEXT
    );
    CREATE TABLE invites (
        id TEXT PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        used_at REAL,
        used_by TEXT
    );
    """,
    # 2: the health checker scans non-primary nodes on every tick
    "CREATE INDEX nodes_is_primary ON nodes (is_primary);",
    # 3: names are unique case-insensitively and mesh addresses unique (checked in
    # the writing transactions; plain indexes so an older database with such
    # duplicates still opens, and the admin can clean it up)
    """
    CREATE INDEX nodes_name_nocase ON nodes (name COLLATE NOCASE);
    CREATE INDEX nodes_wireguard_ip ON nodes (wireguard_ip);
    """,
    # 4 (issue 17): the node's own CPU/memory/disk from its last heartbeat (JSON) and when
    """
    ALTER TABLE nodes ADD COLUMN stats TEXT;
    ALTER TABLE nodes ADD COLUMN stats_at REAL;
    """,
    # 5 (issue 16): the node's app containers from its last report (JSON list) and when
    """
    ALTER TABLE nodes ADD COLUMN apps TEXT;
    ALTER TABLE nodes ADD COLUMN apps_at REAL;
    """,
]

PUBLIC_FIELDS = (
    "id", "name", "api_endpoint", "is_primary", "status", "last_seen", "consecutive_failures",
    "last_health_check", "created_at", "updated_at", "wireguard_ip", "public_ip", "labels",
    "version", "stats", "stats_at", "apps", "apps_at",
)
_SELECT = ", ".join(PUBLIC_FIELDS)
_HEARTBEAT = ("UPDATE nodes SET status='online', consecutive_failures=0, last_seen=? "
              "WHERE id=? AND is_primary=0")


class RegistryError(Exception):
    """Base for registry errors that map to an HTTP status."""

    status = 400


class NameTaken(RegistryError):
    status = 409


class AddressTaken(RegistryError):
    status = 409


class DatabaseError(Exception):
    """The database file cannot be opened or migrated."""


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


@dataclass
class KeyState:
    key_hash: str
    prev_key_hash: str | None
    prev_key_expires: float | None
    wireguard_ip: str | None = None

    def valid_hashes(self, now: float) -> list[str]:
        hashes = [self.key_hash]
        if self.prev_key_hash and (self.prev_key_expires or 0) > now:
            hashes.append(self.prev_key_hash)
        return hashes


class Registry:
    def __init__(self, path: Path):
        self.path = path
        self._keys: dict[str, KeyState] = {}
        try:
            # one thread at a time uses it (the event loop), though not always the thread
            # that opened it (tests, servers that start the loop elsewhere)
            self.db = sqlite3.connect(str(path), isolation_level=None, timeout=10,
                                      check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.migrate()
        except sqlite3.DatabaseError as exc:
            raise DatabaseError(
                f"cannot open the database {path}: {exc}; check DATABASE_PATH and that the "
                "file is a hostmesh SQLite database (restore it from backup if it is corrupt)"
            ) from None
        try:
            path.chmod(0o600)
        except OSError:
            pass

    # -- schema ----------------------------------------------------------

    def migrate(self) -> int:
        current = self.db.execute("PRAGMA user_version").fetchone()[0]
        if current > len(MIGRATIONS):
            raise DatabaseError(
                f"database {self.path} has schema version {current}, newer than this agent "
                f"knows ({len(MIGRATIONS)}); upgrade the agent"
            )
        for version in range(current + 1, len(MIGRATIONS) + 1):
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[version - 1].split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute(f"PRAGMA user_version={version}")
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        return len(MIGRATIONS)

    def close(self) -> None:
        self.db.close()

    # -- reads -----------------------------------------------------------

    @staticmethod
    def _public(row: tuple) -> dict:
        node = dict(zip(PUBLIC_FIELDS, row))
        node["is_primary"] = bool(node["is_primary"])
        for key in ("last_seen", "last_health_check", "created_at", "updated_at", "stats_at",
                    "apps_at"):
            node[key] = iso(node[key])
        try:
            node["labels"] = json.loads(node["labels"] or "{}")
        except ValueError:
            node["labels"] = {}
        try:
            node["stats"] = json.loads(node["stats"]) if node["stats"] else None
        except ValueError:
            node["stats"] = None
        try:
            node["apps"] = json.loads(node["apps"]) if node["apps"] else None
        except ValueError:
            node["apps"] = None
        return node

    def list_nodes(self) -> list[dict]:
        rows = self.db.execute(f"SELECT {_SELECT} FROM nodes ORDER BY is_primary DESC, name")
        return [self._public(r) for r in rows]

    def get_node(self, node_id: str) -> dict | None:
        row = self.db.execute(f"SELECT {_SELECT} FROM nodes WHERE id=?", (node_id,)).fetchone()
        return self._public(row) if row else None

    def key_state(self, node_id: str) -> KeyState | None:
        # cached for existing nodes only (heartbeats are the hot path); every write that
        # changes a key or removes a node drops the entry, so a miss just reads again
        state = self._keys.get(node_id)
        if state is None:
            row = self.db.execute(
                "SELECT key_hash, prev_key_hash, prev_key_expires, wireguard_ip FROM nodes "
                "WHERE id=?",
                (node_id,)).fetchone()
            if row is None:
                return None
            state = self._keys[node_id] = KeyState(*row)
        return state

    def id_by_name(self, name: str) -> str | None:
        """The node whose name equals `name` ignoring case (names are unique that way)."""
        row = self.db.execute("SELECT id FROM nodes WHERE name=? COLLATE NOCASE",
                              (name,)).fetchone()
        return row[0] if row else None

    def id_by_address(self, wireguard_ip: str) -> str | None:
        row = self.db.execute("SELECT id FROM nodes WHERE wireguard_ip=?",
                              (wireguard_ip,)).fetchone()
        return row[0] if row else None

    def _check_unique(self, node_id: str, fields: dict) -> None:
        if "name" in fields:
            other = self.id_by_name(fields["name"])
            if other is not None and other != node_id:
                raise NameTaken(f"name {fields['name']!r} is already used by node {other} "
                                "(names are compared ignoring case)")
        if fields.get("wireguard_ip"):
            other = self.id_by_address(fields["wireguard_ip"])
            if other is not None and other != node_id:
                raise AddressTaken(f"mesh address {fields['wireguard_ip']} is already used by "
                                   f"node {other}")

    def check_targets(self) -> list[tuple[str, str, str, int, float | None, float | None]]:
        """(id, name, api_endpoint, consecutive_failures, last_health_check, last_seen) of
        secondaries."""
        return self.db.execute(
            "SELECT id, name, api_endpoint, consecutive_failures, last_health_check, last_seen "
            "FROM nodes WHERE is_primary=0"
        ).fetchall()

    def count(self) -> int:
        return self.db.execute("SELECT count(*) FROM nodes").fetchone()[0]

    # -- writes ----------------------------------------------------------

    def upsert_self(self, node_id: str, name: str, endpoint: str, key: str, version: str,
                    wireguard_ip: str | None, public_ip: str | None, labels: dict) -> None:
        """Write the primary's own row from its configuration (always online)."""
        self._keys.clear()
        now = time.time()
        with self._tx():
            # a node that used to hold our name (or an old primary row) gives way
            self.db.execute("DELETE FROM nodes WHERE (name=? COLLATE NOCASE AND id<>?) "
                            "OR (is_primary=1 AND id<>?) OR (wireguard_ip=? AND id<>?)",
                            (name, node_id, node_id, wireguard_ip, node_id))
            self.db.execute(
                "INSERT INTO nodes (id, name, api_endpoint, is_primary, status, key_hash, "
                "last_seen, created_at, updated_at, wireguard_ip, public_ip, labels, version) "
                "VALUES (?, ?, ?, 1, 'online', ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET name=excluded.name, "
                "api_endpoint=excluded.api_endpoint, is_primary=1, status='online', "
                "consecutive_failures=0, key_hash=excluded.key_hash, last_seen=excluded.last_seen, "
                "updated_at=excluded.updated_at, wireguard_ip=excluded.wireguard_ip, "
                "public_ip=excluded.public_ip, labels=excluded.labels, version=excluded.version",
                (node_id, name, endpoint, security.sha256_hex(key), now, now, now, wireguard_ip,
                 public_ip, json.dumps(labels, sort_keys=True), version),
            )

    def insert_node(self, fields: dict, key: str) -> dict:
        """Insert a new secondary; raises NameTaken."""
        now = time.time()
        with self._tx():
            self._check_unique(fields["id"], fields)
            self.db.execute(
                "INSERT INTO nodes (id, name, api_endpoint, is_primary, status, key_hash, "
                "last_seen, created_at, updated_at, wireguard_ip, public_ip, labels, version) "
                "VALUES (?, ?, ?, 0, 'online', ?, ?, ?, ?, ?, ?, ?, ?)",
                (fields["id"], fields["name"], fields["api_endpoint"], security.sha256_hex(key),
                 now, now, now, fields.get("wireguard_ip"), fields.get("public_ip"),
                 json.dumps(fields.get("labels") or {}, sort_keys=True), fields.get("version")),
            )
        return self.get_node(fields["id"])

    def update_node(self, node_id: str, fields: dict, *, new_key: str | None = None,
                    grace: float = 0.0, mark_online: bool = False) -> dict | None:
        """Update metadata (and the key, keeping the old hash valid for `grace` seconds)."""
        now = time.time()
        with self._tx():
            state = self.key_state(node_id)
            if state is None:
                return None
            self._check_unique(node_id, fields)
            sets, args = [], []
            for key in ("name", "api_endpoint", "wireguard_ip", "public_ip", "version"):
                if key in fields:
                    sets.append(f"{key}=?")
                    args.append(fields[key])
            if "labels" in fields:
                sets.append("labels=?")
                args.append(json.dumps(fields["labels"] or {}, sort_keys=True))
            if new_key is not None:
                self._keys.pop(node_id, None)
                new_hash = security.sha256_hex(new_key)
                if new_hash != state.key_hash:
                    sets += ["key_hash=?", "prev_key_hash=?", "prev_key_expires=?"]
                    args += [new_hash, state.key_hash, now + grace]
            if mark_online:
                sets += ["status='online'", "consecutive_failures=0", "last_seen=?"]
                args.append(now)
            sets.append("updated_at=?")
            args.append(now)
            self.db.execute(f"UPDATE nodes SET {', '.join(sets)} WHERE id=?", (*args, node_id))
        self._keys.pop(node_id, None)
        return self.get_node(node_id)

    def heartbeat(self, node_id: str, fields: dict) -> None:
        """A node is alive; `fields` may refresh its version and public address only
        (its mesh address comes from registration or the admin, never a heartbeat)."""
        now = time.time()
        if not fields:
            self.db.execute(_HEARTBEAT, (now, node_id))
            return
        sets = ["status='online'", "consecutive_failures=0", "last_seen=?"]
        args: list = [now]
        for key in ("version", "public_ip"):
            if key in fields:
                sets.append(f"{key}=?")
                args.append(fields[key])
        if fields.get("stats") is not None:  # validated by the API (stats.check_heartbeat_stats)
            sets += ["stats=?", "stats_at=?"]
            args += [json.dumps(fields["stats"], sort_keys=True, separators=(",", ":")), now]
        if fields.get("apps") is not None:  # validated by the API (apps.check_heartbeat_apps)
            sets += ["apps=?", "apps_at=?"]
            args += [json.dumps(fields["apps"], sort_keys=True, separators=(",", ":")), now]
        self.db.execute(f"UPDATE nodes SET {', '.join(sets)} WHERE id=? AND is_primary=0",
                        (*args, node_id))

    def record_own_stats(self, node_id: str, stats: dict) -> None:
        """The primary's own CPU/memory/disk on its own row (it sends itself no heartbeat)."""
        self.db.execute("UPDATE nodes SET stats=?, stats_at=? WHERE id=? AND is_primary=1",
                        (json.dumps(stats, sort_keys=True, separators=(",", ":")), time.time(),
                         node_id))

    def record_own_apps(self, node_id: str, apps: list[dict]) -> None:
        """The primary's own app containers on its own row (it sends itself no heartbeat)."""
        self.db.execute("UPDATE nodes SET apps=?, apps_at=? WHERE id=? AND is_primary=1",
                        (json.dumps(apps, sort_keys=True, separators=(",", ":")), time.time(),
                         node_id))

    def record_check(self, node_id: str, ok: bool, status_for_failures) -> tuple[str, int] | None:
        """Store a health check result; returns (status, consecutive_failures)."""
        now = time.time()
        with self._tx():
            row = self.db.execute(
                "SELECT consecutive_failures FROM nodes WHERE id=? AND is_primary=0", (node_id,)
            ).fetchone()
            if row is None:
                return None
            failures = 0 if ok else row[0] + 1
            status = "online" if ok else status_for_failures(failures)
            if ok:
                self.db.execute(
                    "UPDATE nodes SET status='online', consecutive_failures=0, last_seen=?, "
                    "last_health_check=? WHERE id=?", (now, now, node_id))
            else:
                self.db.execute(
                    "UPDATE nodes SET status=?, consecutive_failures=?, last_health_check=? "
                    "WHERE id=?", (status, failures, now, node_id))
        return status, failures

    def delete_node(self, node_id: str) -> bool:
        self._keys.pop(node_id, None)
        cur = self.db.execute("DELETE FROM nodes WHERE id=? AND is_primary=0", (node_id,))
        return cur.rowcount > 0

    # -- invites ---------------------------------------------------------

    def create_invite(self, invite_id: str, token: str, ttl: float) -> float:
        now = time.time()
        with self._tx():
            self.db.execute("DELETE FROM invites WHERE expires_at < ?", (now - 86400,))
            self.db.execute(
                "INSERT INTO invites (id, token_hash, created_at, expires_at) VALUES (?, ?, ?, ?)",
                (invite_id, security.sha256_hex(token), now, now + ttl))
        return now + ttl

    def consume_invite(self, token: str, node_id: str) -> bool:
        """Mark the invite used by `node_id` (call inside the registration transaction)."""
        now = time.time()
        cur = self.db.execute(
            "UPDATE invites SET used_at=?, used_by=? WHERE token_hash=? AND used_at IS NULL "
            "AND expires_at > ?", (now, node_id, security.sha256_hex(token), now))
        return cur.rowcount == 1

    # -- helpers ---------------------------------------------------------

    def transaction(self):
        """Group several writes in one transaction (nested calls join it)."""
        return _Transaction(self.db)

    def _tx(self):
        return _Transaction(self.db)

    def integrity_check(self) -> str:
        return self.db.execute("PRAGMA integrity_check").fetchone()[0]


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, rollback on error; re-entrant (nested = no-op)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db
        self.outer = False

    def __enter__(self):
        if not self.db.in_transaction:
            self.db.execute("BEGIN IMMEDIATE")
            self.outer = True
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.outer:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")
        return False
