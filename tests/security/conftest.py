"""tests/security: one test per attack of issue 13, against real agent processes."""

from __future__ import annotations

import pytest
from attack_helpers import new_cluster


@pytest.fixture
def cluster(tmp_path):
    c = new_cluster(tmp_path)
    yield c
    c.close()
