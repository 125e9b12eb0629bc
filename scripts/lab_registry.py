#!/usr/bin/env python3
"""The lab's image registry: Debian's docker-registry, and the demo image in it.

Public registries are out of reach, so the lab runs its own registry on the
lab network's gateway (where the nodes reach it, as they would reach a private
registry) and builds the demo app's image without any base image::

    scripts/lab_registry.py start --state-dir DIR --subnet 10.231.6.0/24
    scripts/lab_registry.py push-demo --registry 10.231.6.1:5000 --version 1 [--failing]
    scripts/lab_registry.py stop --state-dir DIR

``start`` runs ``docker-registry serve`` (Debian's ``docker-registry``
package, Docker's own distribution registry) in the background on the
gateway, port 5000, plain HTTP (the lab's nodes list it in
``apps_insecure_registries``), storing images in ``DIR/registry/`` and its pid
and log beside. It prints ``started`` or ``running``; ``stop`` prints
``stopped`` or ``not running``.

``push-demo`` compiles lab/whoami/whoami.c statically (gcc), makes an image of
that one file (``/whoami``, no base image) and uploads it with the registry's
HTTP API v2 as ``hostmesh/whoami:<version>`` (its environment sets
WHOAMI_VERSION; ``--failing`` also sets WHOAMI_FAIL=1: a replica that never
gets healthy). The host's Docker is not used, so its daemon needs no
insecure-registry setting.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lab_cloudflare import gateway_listen, start_stop_commands

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "lab" / "whoami" / "whoami.c"
PORT = 5000
REPOSITORY = "hostmesh/whoami"
BINARY = "/usr/bin/docker-registry"


class RegistryError(RuntimeError):
    """The lab registry failed; the message says what and how to fix it."""


def _pid(state: Path, name: str = "registry") -> int | None:
    try:
        pid = int((state / f"{name}.pid").read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _answers(address: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=2) as resp:
            return resp.status == 200
    except urllib.error.HTTPError as exc:
        return exc.code == 401  # a registry with basic auth answers, asking for it
    except (OSError, urllib.error.URLError):
        return False


def start(state_dir: str | Path, listen: str, name: str = "registry",
          htpasswd: Path | None = None) -> str:
    """Start a registry on `listen` (files `<name>.*` and `<name>/` in `state_dir`);
    with `htpasswd` (bcrypt lines) it asks for basic auth."""
    state = Path(state_dir).resolve()
    if _pid(state, name) and _answers(listen):
        return "running"
    if not Path(BINARY).exists():
        raise RegistryError(
            f"{BINARY} is missing: install Debian's registry with "
            "`apt-get install docker-registry` (scripts/setup-host.sh does)"
        )
    storage = state / name
    storage.mkdir(parents=True, exist_ok=True)
    config = state / f"{name}.yml"
    auth = {"auth": {"htpasswd": {"realm": "hostmesh-lab", "path": str(htpasswd)}}} if htpasswd else {}
    config.write_text(json.dumps({
        **auth,
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
        "http": {"addr": listen},
    }, indent=2))
    log = open(state / f"{name}.log", "ab")  # noqa: SIM115 (handed to the daemon)
    proc = subprocess.Popen([BINARY, "serve", str(config)], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    (state / f"{name}.pid").write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (state / f"{name}.log").read_text(errors="replace")[-1500:]
            raise RegistryError(f"docker-registry exited ({proc.returncode}):\n{tail}")
        if _answers(listen):
            return "started"
        time.sleep(0.2)
    raise RegistryError(f"docker-registry does not answer on http://{listen}/v2/ after 20 s")


def htpasswd_line(user: str, password: str) -> str:
    """`user:<bcrypt hash>`, the only form the registry's htpasswd accepts. Through
    libcrypt (Python's `crypt`, Python < 3.13): no bcrypt package needed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))
    if not hashed or not hashed.startswith("$2"):
        raise RegistryError("this system's libcrypt makes no bcrypt hashes (needed for htpasswd)")
    return f"{user}:{hashed}"


def stop(state_dir: str | Path, name: str = "registry") -> str:
    state = Path(state_dir).resolve()
    pid = _pid(state, name)
    if pid is None:
        return "not running"
    os.kill(pid, signal.SIGTERM)
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except OSError:
            break
        time.sleep(0.1)
    (state / f"{name}.pid").unlink(missing_ok=True)
    return "stopped"


@contextmanager
def running(state_dir: str | Path, listen: str) -> Iterator[str]:
    """The registry started for the block (yields start's answer), stopped after it."""
    try:
        yield start(state_dir, listen)
    finally:
        stop(state_dir)


def build_binary(dest: Path) -> Path:
    if shutil.which("gcc") is None:
        raise RegistryError("gcc is missing: `apt-get install gcc libc6-dev` "
                            "(scripts/setup-host.sh does)")
    out = dest / "whoami"
    proc = subprocess.run(["gcc", "-static", "-O2", "-Wall", "-o", str(out), str(SOURCE)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RegistryError(f"gcc could not build {SOURCE} statically (libc6-dev has the "
                            f"static libc):\n{proc.stderr.strip()}")
    return out


def layer(binary: Path) -> bytes:
    """An uncompressed tar holding /whoami, reproducible (fixed owner and time)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tar.gettarinfo(str(binary), arcname="whoami")
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mtime = 0
        info.mode = 0o755
        with open(binary, "rb") as fh:
            tar.addfile(info, fh)
    return buf.getvalue()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _request(method: str, url: str, data: bytes | None = None,
             headers: dict | None = None) -> urllib.request.addinfourl:
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    return urllib.request.urlopen(req, timeout=30)


def _upload(base: str, data: bytes, auth: dict) -> str:
    digest = _digest(data)
    try:
        _request("HEAD", f"{base}/blobs/{digest}", headers=auth)
        return digest
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise
    with _request("POST", f"{base}/blobs/uploads/", headers=auth) as resp:
        location = resp.headers["Location"]
    if location.startswith("/"):
        location = base.split("/v2/")[0] + location
    sep = "&" if "?" in location else "?"
    _request("PUT", f"{location}{sep}digest={digest}", data,
             {"Content-Type": "application/octet-stream", **auth}).close()
    return digest


def push_demo(registry: str, version: str, failing: bool = False,
              credentials: tuple[str, str] | None = None) -> str:
    """Build and push hostmesh/whoami:<version> (as `credentials` (user, password)
    to a registry with basic auth); return the image reference."""
    auth = ({"Authorization": "Basic " + base64.b64encode(":".join(credentials).encode()).decode()}
            if credentials else {})
    with tempfile.TemporaryDirectory(prefix="hostmesh-whoami-") as tmp:
        tar = layer(build_binary(Path(tmp)))
    compressed = gzip.compress(tar, mtime=0)
    env = ["PATH=/", f"WHOAMI_VERSION={version}"] + (["WHOAMI_FAIL=1"] if failing else [])
    config = json.dumps({
        "architecture": "amd64" if os.uname().machine == "x86_64" else "arm64",
        "os": "linux",
        "config": {"Entrypoint": ["/whoami"], "Env": env, "ExposedPorts": {"8080/tcp": {}}},
        "rootfs": {"type": "layers", "diff_ids": [_digest(tar)]},
        "history": [{"created_by": "scripts/lab_registry.py push-demo"}],
    }, sort_keys=True).encode()
    base = f"http://{registry}/v2/{REPOSITORY}"
    try:
        layer_digest = _upload(base, compressed, auth)
        config_digest = _upload(base, config, auth)
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "size": len(config), "digest": config_digest},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "size": len(compressed), "digest": layer_digest}],
        }, sort_keys=True).encode()
        _request("PUT", f"{base}/manifests/{version}", manifest,
                 {"Content-Type": "application/vnd.docker.distribution.manifest.v2+json",
                  **auth}).close()
    except (OSError, urllib.error.URLError) as exc:
        raise RegistryError(f"pushing {REPOSITORY}:{version} to http://{registry} failed: {exc} "
                            "(is the registry started? scripts/lab_registry.py start)") from exc
    return f"{registry}/{REPOSITORY}:{version}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lab_registry.py",
                                     description=__doc__.split("\n", maxsplit=1)[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    start_stop_commands(sub, "registry", PORT)
    push = sub.add_parser("push-demo", help="build and push hostmesh/whoami:VERSION")
    push.add_argument("--registry", required=True, help="IP:PORT of the lab registry")
    push.add_argument("--version", default="1")
    push.add_argument("--failing", action="store_true", help="an image that answers 500")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "start":
            print(start(args.state_dir, args.listen or gateway_listen(args.subnet, PORT)))
        elif args.cmd == "stop":
            print(stop(args.state_dir))
        else:
            print(push_demo(args.registry, args.version, args.failing))
    except RegistryError as exc:
        print(f"lab_registry: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
