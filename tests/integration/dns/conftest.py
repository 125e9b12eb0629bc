"""Fixtures: the local Cloudflare v4 server as a real process (tests/cloudflare_server)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.cloudflare_server.fixtures import cf, cf_server  # noqa: F401
