#!/usr/bin/env python3
"""Build (or reuse) the wheelhouse that the node_agent role ships to nodes.

Runs on the controller. Prints one JSON object: {"changed", "dir", "wheel",
"version", "msg"}. Fast and idempotent:

- the `hostmesh` wheel is built from the collection tree (pyproject.toml +
  src/) only when a hash of those sources changed; the tree itself is never
  written to (the build happens in a staging copy);
- the runtime dependencies are downloaded once per (dependency list, node
  Python versions) and must be pure-Python wheels, so one wheelhouse serves
  every architecture;
- or, with --wheelhouse DIR, a user-given offline wheelhouse is used as is.

The output dir holds exactly the wheels to ship plus manifest.json (file ->
sha256), which the role compares on the node to decide on a reinstall.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None


class BuildError(Exception):
    pass


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def source_files(root: Path) -> list[Path]:
    # Not README.md: the nodes' wheel gets a stub in its place (build_wheel), so
    # editing the documentation never reinstalls and restarts every agent.
    # plugins/module_utils is packaged as hostmesh.module_utils (the one copy of
    # the API client and the DNS reconciler, see pyproject.toml).
    files = [root / "pyproject.toml"]
    for tree in (root / "src" / "hostmesh", root / "plugins" / "module_utils"):
        for path in sorted(tree.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix == ".py":
                files.append(path)
    return files


def source_hash(root: Path) -> str:
    h = hashlib.sha256()
    for path in source_files(root):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def dependencies(root: Path) -> list[str]:
    text = (root / "pyproject.toml").read_text(encoding="utf-8")
    if tomllib is not None:
        return list(tomllib.loads(text).get("project", {}).get("dependencies", []))
    m = re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, re.DOTALL | re.MULTILINE)
    return re.findall(r"\"([^\"]+)\"", m.group(1)) if m else []


def run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()][-8:]
        raise BuildError(f"{what} failed: {' | '.join(tail)}")


def _can_build_offline() -> bool:
    """True when this Python can build the wheel without fetching build deps."""
    try:
        import setuptools
    except ImportError:
        return False
    major_minor = tuple(int(x) for x in setuptools.__version__.split(".")[:2])
    if major_minor >= (70, 1):  # bdist_wheel is part of setuptools
        return True
    try:
        import wheel  # noqa: F401
    except ImportError:
        return False
    return major_minor >= (64, 0)


def build_wheel(root: Path, dest: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="hostmesh-build-") as tmp:
        stage = Path(tmp) / "src-tree"
        stage.mkdir()
        for path in source_files(root):
            target = stage / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        # pyproject.toml names the project's README as the long description
        (stage / "README.md").write_text("hostmesh node agent, built by hostmesh.cluster.node_agent\n")
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out)]
        if _can_build_offline():
            cmd.append("--no-build-isolation")
        run(cmd + [str(stage)], "building the hostmesh wheel")
        wheels = list(out.glob("hostmesh-*.whl"))
        if len(wheels) != 1:
            raise BuildError("building the hostmesh wheel produced no hostmesh-*.whl")
        dest.mkdir(parents=True, exist_ok=True)
        shutil.move(str(wheels[0]), dest / wheels[0].name)


def download_deps(deps: list[str], versions: list[str], dest: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="hostmesh-deps-", dir=dest.parent) as tmp:
        for version in versions or [f"{sys.version_info[0]}.{sys.version_info[1]}"]:
            run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--only-binary=:all:",
                    "--python-version",
                    version,
                    "--dest",
                    tmp,
                    *deps,
                ],
                f"downloading the agent's dependencies for Python {version} ({', '.join(deps)}); "
                "if this controller has no access to a package index, build a wheelhouse "
                "elsewhere and set node_agent_wheelhouse",
            )
        impure = [p.name for p in Path(tmp).glob("*.whl") if not p.name.endswith("-none-any.whl")]
        if impure:
            raise BuildError(
                f"dependencies without a pure-Python wheel: {', '.join(sorted(impure))}; "
                "the agent must stay pure Python (or set node_agent_wheelhouse)"
            )
        (Path(tmp) / ".complete").write_text("ok\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
        Path(tmp).mkdir()  # TemporaryDirectory cleans up the path it created


def sync(wheels: list[Path], out: Path) -> bool:
    """Make `out` hold exactly `wheels` (+ manifest.json); return True if changed."""
    out.mkdir(parents=True, exist_ok=True)
    changed = False
    names = {w.name for w in wheels}
    for old in out.glob("*.whl"):
        if old.name not in names:
            old.unlink()
            changed = True
    files = {}
    for wheel in wheels:
        target = out / wheel.name
        digest = sha256_file(wheel)
        if not target.exists() or sha256_file(target) != digest:
            shutil.copy2(wheel, target)
            changed = True
        files[wheel.name] = digest
    manifest = json.dumps({"files": files}, indent=1, sort_keys=True) + "\n"
    mpath = out / "manifest.json"
    if not mpath.exists() or mpath.read_text() != manifest:
        mpath.write_text(manifest)
        changed = True
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="collection root (pyproject.toml, src/)")
    parser.add_argument("--cache", required=True, help="controller-side cache directory")
    parser.add_argument("--wheelhouse", default="", help="use this prebuilt wheelhouse")
    parser.add_argument(
        "--python-version", action="append", default=[], help="node Python version X.Y (repeatable)"
    )
    args = parser.parse_args(argv)
    cache = Path(args.cache).expanduser().resolve()
    out = cache / "ship"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        if args.wheelhouse:
            given = Path(args.wheelhouse).expanduser()
            wheels = sorted(given.glob("*.whl"))
            if not any(w.name.startswith("hostmesh-") for w in wheels):
                raise BuildError(
                    f"node_agent_wheelhouse {given} holds no hostmesh-*.whl; build one with "
                    "`pip wheel --no-deps <collection dir>` and put it there with its "
                    "dependencies"
                )
            msg = f"using the wheelhouse {given}"
        else:
            root = Path(args.source).resolve()
            if not (root / "pyproject.toml").is_file() or not (root / "src" / "hostmesh").is_dir():
                raise BuildError(
                    f"{root} does not hold pyproject.toml and src/hostmesh: the collection "
                    "is incomplete; reinstall it or set node_agent_wheelhouse"
                )
            built = cache / f"hostmesh-{source_hash(root)}"
            msg = "reused the hostmesh wheel"
            if not list(built.glob("hostmesh-*.whl")):
                build_wheel(root, built)
                msg = "built the hostmesh wheel"
            for stale in cache.glob("hostmesh-*"):
                if stale.is_dir() and stale != built:
                    shutil.rmtree(stale)
            deps = dependencies(root)
            versions = sorted(set(args.python_version))
            key = hashlib.sha256(json.dumps([deps, versions]).encode()).hexdigest()[:16]
            deps_dir = cache / f"deps-{key}"
            if deps and not (deps_dir / ".complete").exists():
                download_deps(deps, versions, deps_dir)
                msg += " and downloaded its dependencies"
            for stale in cache.glob("deps-*"):
                if stale.is_dir() and stale != deps_dir:
                    shutil.rmtree(stale)
            wheels = sorted(built.glob("hostmesh-*.whl")) + sorted(deps_dir.glob("*.whl"))
        changed = sync(wheels, out)
    except (BuildError, OSError) as exc:
        print(json.dumps({"failed": True, "msg": str(exc)}))
        return 1
    wheel = next(w.name for w in wheels if w.name.startswith("hostmesh-"))
    print(
        json.dumps(
            {
                "changed": changed,
                "dir": str(out),
                "wheel": wheel,
                "version": wheel.split("-")[1],
                "msg": msg,
                "files": sorted(w.name for w in wheels),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
