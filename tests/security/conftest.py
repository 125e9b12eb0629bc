"""tests/security: one test per attack of issue 13, against real agent processes."""

from __future__ import annotations

import attack_helpers  # noqa: F401 - puts tests/integration/agent (the harness) on sys.path
import pytest
from agent_harness import Cluster


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    c.close()
