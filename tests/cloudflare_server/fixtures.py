"""pytest fixtures: the local Cloudflare v4 server as a real process.

Imported by the conftest.py of every test package that needs it.
"""

from __future__ import annotations

import pytest

from tests.cloudflare_server.harness import (
    TEST_READ_TOKEN,
    TEST_TOKEN,
    TEST_ZONE,
    CloudflareServer,
)


@pytest.fixture(scope="module")
def cf_server():
    server = CloudflareServer(
        zones=[TEST_ZONE, "other.test"], token=TEST_TOKEN, read_token=TEST_READ_TOKEN
    )
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
