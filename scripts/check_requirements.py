#!/usr/bin/env python3
"""Exit 0 when the running Python satisfies pyproject.toml's requirements.

Usage: check_requirements.py PYPROJECT [EXTRA ...]

Checks the project itself (installed, editable or not), its runtime
dependencies and those of the named extras. Prints each unsatisfied
requirement on its own line. Used by scripts/setup-host.sh to decide whether
pip must run at all.
"""

from __future__ import annotations

import sys
from importlib import metadata

try:
    import tomllib
except ImportError:  # Python 3.10
    from pip._vendor import tomli as tomllib

try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:  # pragma: no cover - fresh venv without packaging
    print("packaging is not installed")
    sys.exit(1)


def unsatisfied(pyproject: str, extras: list[str]) -> list[str]:
    with open(pyproject, "rb") as fh:
        project = tomllib.load(fh)["project"]
    reqs = list(project.get("dependencies", []))
    for extra in extras:
        reqs += project.get("optional-dependencies", {}).get(extra, [])
    problems = []
    try:
        metadata.version(project["name"])
    except metadata.PackageNotFoundError:
        problems.append(f"{project['name']} (the project itself) is not installed")
    for line in reqs:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            version = metadata.version(canonicalize_name(req.name))
        except metadata.PackageNotFoundError:
            problems.append(f"{line}: not installed")
            continue
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            problems.append(f"{line}: {version} installed")
    return problems


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    problems = unsatisfied(sys.argv[1], sys.argv[2:])
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
