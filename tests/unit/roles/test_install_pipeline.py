"""One install pipeline: every wheel a role installs on a node comes from
hostmesh.cluster.wheelhouse, offline, and no role reaches into role_path/../.."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
TASK_FILES = sorted((ROOT / "roles").glob("*/tasks/*.yml"))


def tasks(node):
    """Every task (a mapping with a module key) in a task file, blocks included."""
    if isinstance(node, list):
        for item in node:
            yield from tasks(item)
    elif isinstance(node, dict):
        yield node
        for key in ("block", "rescue", "always"):
            if key in node:
                yield from tasks(node[key])


def pip_runs(task: dict) -> list[list[str]]:
    """argv lists of command tasks that run pip."""
    runs = []
    for module in ("ansible.builtin.command", "command"):
        args = task.get(module)
        if isinstance(args, dict) and isinstance(args.get("argv"), list):
            argv = [str(a) for a in args["argv"]]
            if any(a.endswith("/pip") or a == "pip" for a in argv):
                runs.append(argv)
    return runs


@pytest.mark.parametrize("path", TASK_FILES, ids=[str(p.relative_to(ROOT)) for p in TASK_FILES])
def test_no_role_reaches_outside_itself(path):
    assert "role_path" not in path.read_text(encoding="utf-8"), (
        f"{path.relative_to(ROOT)}: the collection's files are found by the plugins "
        "(hostmesh.cluster.wheelhouse), not through role_path/../.."
    )


def test_every_pip_run_on_a_node_is_an_offline_install():
    runs = [
        (path, argv)
        for path in TASK_FILES
        for task in tasks(yaml.safe_load(path.read_text(encoding="utf-8")))
        for argv in pip_runs(task)
    ]
    assert len(runs) >= 3, "node_agent, traefik and ddns each install wheels"
    for path, argv in runs:
        where = path.relative_to(ROOT)
        assert "install" in argv, f"{where}: pip {argv} (only installs run on nodes)"
        assert "--no-index" in argv, f"{where}: pip install without --no-index: {argv}"
        assert any(a.startswith("--find-links") for a in argv), where


def test_every_role_that_installs_wheels_gets_them_from_the_wheelhouse_module():
    users = set()
    for path in TASK_FILES:
        for task in tasks(yaml.safe_load(path.read_text(encoding="utf-8"))):
            if "hostmesh.cluster.wheelhouse" in task:
                assert task.get("run_once") is True, f"{path}: build the set once per play"
                assert task["hostmesh.cluster.wheelhouse"].get("cache_dir") == (
                    "{{ hostmesh_cache_dir }}"
                ), f"{path}: the one cache is hostmesh_cache_dir"
                users.add(path.parts[-3])
    assert users == {"node_agent", "traefik", "ddns", "tls"}
