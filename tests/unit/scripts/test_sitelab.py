"""scripts/sitelab.py's helpers for lab scripts that need no lab: the PLAY RECAP
change count and the Drill's check and wait."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "scripts"))

from lab import Lab
from sitelab import Drill, changed_count

RECAP = """\
TASK [x] ***
changed: [node1]

PLAY RECAP *********************************************************************
node1                      : ok=12   changed=2    unreachable=0    failed=0    skipped=3
node2                      : ok=10   changed=0    unreachable=0    failed=0    skipped=3
node3                      : ok=10   changed=1    unreachable=0    failed=0    skipped=3
"""

DRILL = Drill("lab_example", Lab(prefix="unit-", network="hostmesh-unit",
                                 subnet="10.231.250.0/24"), interval=0.01)


def test_changed_count_sums_every_host_of_the_recap():
    assert changed_count(RECAP) == 3
    assert changed_count("no recap here") == 0


def test_a_failed_check_ends_the_script_with_its_name():
    DRILL.check(True, "fine")
    with pytest.raises(SystemExit, match="^lab_example: node2 is down$"):
        DRILL.check(False, "node2 is down")


def test_wait_returns_the_first_true_value_or_says_what_it_waited_for():
    answers = iter([None, "", "ready"])
    assert DRILL.wait(lambda: next(answers), 5, "the answer") == "ready"
    with pytest.raises(SystemExit, match="^lab_example: timed out after 0.05 s waiting for x$"):
        DRILL.wait(lambda: False, 0.05, "x")
