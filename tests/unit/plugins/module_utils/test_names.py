"""plugins/module_utils/_names.py: the node name and id rules, one definition for all users."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "collections"))

from ansible_collections.hostmesh.cluster.plugins.module_utils import _names

ONE = (ROOT / "plugins" / "module_utils" / "_names.py").resolve()


@pytest.mark.parametrize("name", ["node1", "web-1.eu", "a", "N_2", "x" * 63])
def test_good_names(name):
    assert _names.node_identity_errors(name) == []


@pytest.mark.parametrize("name,expected", [
    ("", "must be 1-63"), ("-x", "must be 1-63"), ("x" * 64, "must be 1-63"),
    ("web1\n", "must be 1-63"), ("a b", "must be 1-63"), (None, "must be 1-63"),
    ("localhost", "is reserved"), ("ALL", "is reserved"), ("hostmesh_online", "is reserved"),
    ("hostmesh_label_gpu", "is reserved"), ("10.0.0.5", "is an IP address"),
    ("::1", "must be 1-63"),
])
def test_bad_names_say_why(name, expected):
    (message,) = _names.node_identity_errors(name)
    assert expected in message


def test_ids():
    assert _names.node_identity_errors("n1", "") == []
    assert _names.node_identity_errors("n1", None) == []
    assert _names.node_identity_errors("n1", "7f9c2b4e-0d1a-4c55-9a57-3c1e2f0b8d61") == []
    assert _names.node_identity_errors("n1", "x" * 64) == []
    for bad in ("x" * 65, "bad id", "-x", 5):
        (message,) = _names.node_identity_errors("n1", bad)
        assert "node id" in message


def test_the_agent_uses_this_file_not_a_copy():
    from hostmesh.agent import config, openapi, validate

    for obj in (config.name_problem, validate.name_problem):
        assert Path(obj.__code__.co_filename).resolve() == ONE
    assert config.NAME_RE.pattern == _names.NAME_RE.pattern
    assert config.ID_RE.pattern == _names.ID_RE.pattern
    agent = ROOT / "src" / "hostmesh" / "agent"
    for path in sorted(agent.glob("*.py")):
        text = path.read_text()
        for copy in ("NAME_RE = re.compile", "ID_RE = re.compile", "RESERVED_NAMES = "):
            assert copy not in text, f"{path.name} defines its own {copy.split()[0]}"
    assert openapi.document()["components"]["schemas"]["NodeInput"]["properties"]["id"][
        "pattern"] == f"^{_names.ID_RE.pattern}$"


def test_the_role_asks_the_filter_instead_of_repeating_patterns():
    settings = (ROOT / "roles" / "node_agent" / "tasks" / "settings.yml").read_text()
    assert "hostmesh.cluster.node_identity_errors" in settings
    assert "[A-Za-z0-9._-]" not in settings
