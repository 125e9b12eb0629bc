"""Fixtures: the local Cloudflare v4 server as a real process (tests/cloudflare_server)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.cloudflare_server.harness import (
    TEST_READ_TOKEN,
    TEST_TOKEN,
    TEST_ZONE,
    CloudflareServer,
)


@pytest.fixture(scope="module")
def cf_server():
    server = CloudflareServer(zones=[TEST_ZONE, "other.test"], token=TEST_TOKEN,
                              read_token=TEST_READ_TOKEN)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cf(cf_server):
    """The shared server, emptied (records, counters, injected faults) for each test."""
    cf_server.wipe()
    return cf_server
