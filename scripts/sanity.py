#!/usr/bin/env python3
"""Run `ansible-test sanity` on a copy of this collection.

ansible-test needs the collection under ``ansible_collections/hostmesh/cluster``
and inside a git checkout. This copies the files git knows (tracked, plus new
files that are not ignored), makes the copy a one-commit git repository, and
runs ``ansible-test sanity --venv --python X.Y`` there. ansible-test's pip
bootstrap downloads get-pip.py from a host this machine cannot reach; a
stand-in that uses ``ensurepip`` is written to its cache when missing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Left out of the copy: a link back to the collection (collections/), and the
# development tooling that is not Ansible content and is checked by ruff and
# pytest instead (benchmarks, scripts, pytest-only integration tests and the
# local Cloudflare server, which ansible-test would read as integration targets).
SKIP_PREFIXES = ("collections/", ".ci/", ".config/", ".ansible/", "tests/output/",
                 "bench/", "scripts/", "tests/integration/", "tests/cloudflare_server/",
                 "tests/unit/", "molecule/")
# The collection is Apache-2.0, so validate-modules' GPLv3-header check does
# not apply to any plugin it reads; the ignore lines are generated for them.
LICENSE_CHECKED = ("modules", "inventory", "strategy", "lookup", "callback", "connection",
                   "become", "cache", "vars", "shell")
IGNORE_FILE = "tests/sanity/ignore-2.19.txt"

GET_PIP_STANDIN = '''\
"""Stand-in for pypa's get-pip.py (not reachable here): ensurepip, then pip."""
import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"])
if "--no-setuptools" in sys.argv:
    # ensurepip brings setuptools, whose distutils shim warns on stderr, and
    # ansible-test fails pylint on any stderr output.
    subprocess.check_call([sys.executable, "-m", "pip", "uninstall", "-q", "-y", "setuptools"])
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
if args:
    subprocess.check_call([sys.executable, "-m", "pip", "install", *args])
'''
STANDIN_MARK = "Stand-in for pypa's get-pip.py"


def collection_files() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode()
    return sorted(
        f for f in out.split("\0")
        if f and not f.startswith(SKIP_PREFIXES) and (ROOT / f).exists()
    )


def write_license_ignores(coll: Path) -> None:
    ignore = coll / IGNORE_FILE
    lines = ignore.read_text().splitlines() if ignore.exists() else []
    for kind in LICENSE_CHECKED:
        for path in sorted((coll / "plugins" / kind).glob("*.py")):
            if path.name.startswith("_") or path.name == "__init__.py":
                continue
            line = f"{path.relative_to(coll)} validate-modules:missing-gplv3-license"
            if line not in lines:
                lines.append(line)
    ignore.parent.mkdir(parents=True, exist_ok=True)
    ignore.write_text("".join(f"{line}\n" for line in lines))


def make_copy(dest: Path) -> Path:
    coll = dest / "ansible_collections" / "hostmesh" / "cluster"
    if coll.exists():
        shutil.rmtree(coll)
    coll.mkdir(parents=True)
    for rel in collection_files():
        src = ROOT / rel
        dst = coll / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy2(src, dst)
    write_license_ignores(coll)
    env = {**os.environ, "GIT_AUTHOR_NAME": "sanity", "GIT_AUTHOR_EMAIL": "sanity@localhost",
           "GIT_COMMITTER_NAME": "sanity", "GIT_COMMITTER_EMAIL": "sanity@localhost"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "commit", "-q", "-m", "sanity copy"]):
        subprocess.run(cmd, cwd=coll, check=True, env=env)
    return coll


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--dest", default="/tmp/hostmesh-sanity")
    parser.add_argument("--python", default=f"{sys.version_info[0]}.{sys.version_info[1]}")
    parser.add_argument("--get-pip",
                        default=os.path.expanduser("~/.ansible/test/cache/get_pip_24_2.py"))
    parser.add_argument("tests", nargs="*", help="only these sanity tests (--test ...)")
    args = parser.parse_args()

    get_pip = Path(args.get_pip)
    current = get_pip.read_text() if get_pip.exists() else None
    if current is None or (STANDIN_MARK in current and current != GET_PIP_STANDIN):
        get_pip.parent.mkdir(parents=True, exist_ok=True)
        get_pip.write_text(GET_PIP_STANDIN)
    coll = make_copy(Path(args.dest))
    cmd = ["ansible-test", "sanity", "--venv", "--python", args.python, "--color", "no"]
    for test in args.tests:
        cmd += ["--test", test]
    print(f"ansible-test sanity in {coll}", flush=True)
    return subprocess.run(cmd, cwd=coll, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
