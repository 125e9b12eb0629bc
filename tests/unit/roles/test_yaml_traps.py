"""YAML that parses into something other than what it reads as.

`- --only-binary=:all:` is a one-key mapping ({'--only-binary=:all': None}),
not a string: pip then receives a dict's repr as an argument. Such an item
fails only at run time, on the first run that reaches the task, so every YAML
file of the project is checked here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
SKIP = {".venv", ".git", "collections", "tests/output", "build", "dist", ".hostmesh"}


def yaml_files() -> list[Path]:
    found = []
    for path in sorted([*ROOT.rglob("*.yml"), *ROOT.rglob("*.yaml")]):
        rel = path.relative_to(ROOT)
        if any(part in SKIP for part in rel.parts) or str(rel).startswith("tests/output"):
            continue
        found.append(path)
    return found


def traps(node, where: str = "") -> list[str]:
    """Places where a list item or an argv entry is not what it reads as."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{where}.{key}"
            if key == "argv" and isinstance(value, list):
                found += [
                    f"{here}[{i}] is a {type(item).__name__}: {item!r} (quote it)"
                    for i, item in enumerate(value)
                    if not isinstance(item, (str, int, float))
                ]
            found += traps(value, here)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            here = f"{where}[{i}]"
            # `- a: ` / `- --flag=:x:` with nothing after the colon: a mapping
            # of one key to null, which nobody writes on purpose in a list
            if isinstance(item, dict) and len(item) == 1 and next(iter(item.values())) is None:
                found.append(f"{here} is the mapping {item!r}, not a string (quote it)")
            found += traps(item, here)
    return found


FILES = yaml_files()


def test_the_project_has_yaml_to_check():
    rels = {str(p.relative_to(ROOT)) for p in FILES}
    assert "roles/traefik/tasks/install.yml" in rels and "site.yml" in rels
    assert any(r.startswith("molecule/") for r in rels)
    assert any(r.startswith("playbooks/") for r in rels)


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_no_list_item_or_argument_is_an_accidental_mapping(path):
    found = []
    for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        found += traps(doc)
    assert not found, f"{path.relative_to(ROOT)}: " + "; ".join(found)


def test_the_checker_catches_the_unquoted_colon():
    doc = yaml.safe_load("argv:\n  - pip\n  - --only-binary=:all:\nlist:\n  - --flag=x:\n")
    found = traps(doc)
    assert len(found) == 3, found  # argv entry, and both list items
    assert not traps(yaml.safe_load('argv:\n  - pip\n  - "--only-binary=:all:"\n'))
