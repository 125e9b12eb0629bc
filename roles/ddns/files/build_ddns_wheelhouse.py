"""Build (or reuse) the wheelhouse of the Cloudflare SDK that the ddns role ships to nodes.

Runs on the controller. For each node target ``X.Y:machine`` (Python version and
``platform.machine()``), downloads the wheels of the collection's ``cloudflare``
extra (read from pyproject.toml) for that Python and architecture once, into
``<cache>/<target>-<hash>/`` with a manifest.json (file -> sha256) that the role
compares on the node. The SDK's dependencies include compiled wheels
(pydantic-core), hence one directory per architecture. ``--wheelhouse DIR``
uses prebuilt wheels instead (offline controllers).

Prints one JSON object: {"changed", "dirs": {target: dir}, "msg"} or {"failed", "msg"}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None

PLATFORMS = {
    "x86_64": ["manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_28_x86_64"],
    "aarch64": ["manylinux_2_17_aarch64", "manylinux2014_aarch64", "manylinux_2_28_aarch64"],
}
PLATFORMS["amd64"] = PLATFORMS["x86_64"]
PLATFORMS["arm64"] = PLATFORMS["aarch64"]


class BuildError(Exception):
    pass


def extra_requirements(root: Path) -> list[str]:
    text = (root / "pyproject.toml").read_text(encoding="utf-8")
    if tomllib is None:
        return ["cloudflare>=4"]
    extras = tomllib.loads(text).get("project", {}).get("optional-dependencies", {})
    reqs = list(extras.get("cloudflare", []))
    if not reqs:
        raise BuildError(f"{root}/pyproject.toml has no 'cloudflare' extra")
    return reqs


def manifest(directory: Path) -> bool:
    files = {}
    for wheel in sorted(directory.glob("*.whl")):
        files[wheel.name] = hashlib.sha256(wheel.read_bytes()).hexdigest()
    text = json.dumps({"files": files}, indent=1, sort_keys=True) + "\n"
    path = directory / "manifest.json"
    if path.exists() and path.read_text() == text:
        return False
    path.write_text(text)
    return True


def download(reqs: list[str], version: str, machine: str, dest: Path) -> None:
    platforms = PLATFORMS.get(machine)
    if not platforms:
        raise BuildError(f"no wheel platform known for machine {machine!r}; set ddns_wheelhouse")
    with tempfile.TemporaryDirectory(prefix="ddns-wheels-", dir=dest.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
               "--only-binary=:all:", "--python-version", version, "--dest", tmp]
        for plat in platforms:
            cmd += ["--platform", plat]
        proc = subprocess.run(cmd + reqs, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()][-6:]
            raise BuildError(
                f"downloading {', '.join(reqs)} for Python {version} on {machine} failed: "
                f"{' | '.join(tail)}; without a package index, build the wheels elsewhere and "
                "set ddns_wheelhouse"
            )
        manifest(Path(tmp))
        (Path(tmp) / ".complete").write_text("ok\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
        Path(tmp).mkdir()  # TemporaryDirectory removes the path it created


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="collection root (pyproject.toml)")
    parser.add_argument("--cache", required=True, help="controller-side cache directory")
    parser.add_argument("--wheelhouse", default="", help="use these prebuilt wheels")
    parser.add_argument("--target", action="append", default=[], help="X.Y:machine (repeatable)")
    args = parser.parse_args(argv)
    cache = Path(args.cache).expanduser().resolve()
    dirs: dict[str, str] = {}
    changed = False
    msgs = []
    try:
        cache.mkdir(parents=True, exist_ok=True)
        if args.wheelhouse:
            given = Path(args.wheelhouse).expanduser()
            wheels = sorted(given.glob("*.whl"))
            if not any(w.name.startswith("cloudflare-") for w in wheels):
                raise BuildError(f"ddns_wheelhouse {given} holds no cloudflare-*.whl")
            out = cache / "given"
            out.mkdir(exist_ok=True)
            for old in out.glob("*.whl"):
                if old.name not in {w.name for w in wheels}:
                    old.unlink()
                    changed = True
            for wheel in wheels:
                if not (out / wheel.name).exists():
                    shutil.copy2(wheel, out / wheel.name)
                    changed = True
            changed = manifest(out) or changed
            dirs = {t: str(out) for t in args.target}
            msgs.append(f"using the wheelhouse {given}")
        else:
            reqs = extra_requirements(Path(args.source).resolve())
            key = hashlib.sha256(json.dumps(reqs).encode()).hexdigest()[:12]
            for target in sorted(set(args.target)):
                version, _sep, machine = target.partition(":")
                if not version or not machine:
                    raise BuildError(f"target {target!r} must be X.Y:machine")
                dest = cache / f"{version}-{machine}-{key}"
                if not (dest / ".complete").exists():
                    download(reqs, version, machine, dest)
                    changed = True
                    msgs.append(f"downloaded {', '.join(reqs)} for {target}")
                dirs[target] = str(dest)
    except (BuildError, OSError) as exc:
        print(json.dumps({"failed": True, "msg": str(exc)}))
        return 1
    print(json.dumps({"changed": changed, "dirs": dirs, "msg": "; ".join(msgs) or "reused"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
