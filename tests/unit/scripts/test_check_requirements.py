"""scripts/check_requirements.py decides whether setup-host.sh runs pip."""

from __future__ import annotations

import json
from pathlib import Path

from _scripts import load_script

ROOT = Path(__file__).resolve().parents[3]
check_requirements = load_script("check_requirements")


def write(tmp_path, deps, dev=()):
    path = tmp_path / "pyproject.toml"
    lines = ["[project]", 'name = "hostmesh"', f"dependencies = {json.dumps(list(deps))}",
             "[project.optional-dependencies]", f"dev = {json.dumps(list(dev))}"]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_this_venv_satisfies_the_project():
    assert check_requirements.unsatisfied(str(ROOT / "pyproject.toml"), ["dev"]) == []


def test_missing_and_too_old_packages_are_reported(tmp_path):
    path = write(tmp_path, ["pytest>=1", "no-such-package-hostmesh>=1"], ["pytest>=999"])
    assert check_requirements.unsatisfied(path, []) == [
        "no-such-package-hostmesh>=1: not installed"]
    problems = check_requirements.unsatisfied(path, ["dev"])
    assert any(p.startswith("pytest>=999:") for p in problems)


def test_markers_that_do_not_apply_are_ignored(tmp_path):
    path = write(tmp_path, ['no-such-package-hostmesh; python_version < "3"'])
    assert check_requirements.unsatisfied(path, []) == []
