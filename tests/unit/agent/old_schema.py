"""A registry database left by an older agent, for the migration tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from hostmesh.agent.registry import MIGRATIONS


def database_at(path: Path, version: int) -> sqlite3.Connection:
    """Create `path` with the registry's first `version` migrations only (autocommit)."""
    db = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(MIGRATIONS[:version], 1):
        for statement in script.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(f"PRAGMA user_version={number}")
    return db
