"""Start real `hostmesh agent` processes on 127.0.0.x for integration tests and benches."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from hostmesh.module_utils._agent_client import AgentClient, Credentials, HostmeshAPIError

ADMIN_TOKEN = "admin-token-0123456789abcdef0123456789abcdef"
REGISTRATION_TOKEN = "registration-token-0123456789abcdef0123456789"
HOSTMESH = [sys.executable, "-m", "hostmesh.cli", "agent"]


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def node_key(name: str) -> str:
    """A deterministic, valid 64-character key for a test node."""
    import hashlib

    return hashlib.sha256(f"test-key-{name}".encode()).hexdigest()


@dataclass
class Agent:
    name: str
    host: str
    port: int
    data_dir: Path
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None
    extra: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> Agent:
        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        # extra["preexec_fn"]: e.g. lower the agent's file descriptor limit (tests/security)
        self.proc = subprocess.Popen(HOSTMESH, env=self.env, stdout=self.log_file,
                                     stderr=subprocess.STDOUT,
                                     preexec_fn=self.extra.get("preexec_fn"))  # noqa: PLW1509
        return self

    def wait_ready(self, timeout: float = 15.0) -> Agent:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent {self.name} exited ({self.proc.returncode}):\n"
                                   + self.log())
            try:
                with urllib.request.urlopen(self.url + "/api/health", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"agent {self.name} not ready after {timeout}s:\n" + self.log())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log_file", None):
            self.log_file.close()

    def kill9(self) -> None:
        self.stop(signal.SIGKILL)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def node_id(self) -> str:
        return (self.data_dir / "node_id").read_text().strip() if "NODE_ID" not in self.env \
            else self.env["NODE_ID"]

    def admin(self, timeout: float = 5.0) -> AgentClient:
        return AgentClient(self.url, Credentials(admin_token=ADMIN_TOKEN), timeout=timeout)


class Cluster:
    """Creates agents under `root`; `close()` stops every process it started."""

    def __init__(self, root: Path):
        self.root = root
        self.agents: list[Agent] = []
        self._next_ip = 30

    def _host(self) -> str:
        self._next_ip += 1
        return f"127.0.0.{self._next_ip}"

    def base_env(self) -> dict[str, str]:
        keep = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")
                if k in os.environ}
        return {**keep, "PYTHONUNBUFFERED": "1"}

    def primary(self, start: bool = True, **env: str) -> Agent:
        host = self._host()
        port = free_port(host)
        data = self.root / "primary"
        settings = {
            **self.base_env(), "NODE_IS_PRIMARY": "true", "NODE_NAME": "primary",
            "SERVER_ADDRESS": f"{host}:{port}", "NODE_API_ENDPOINT": f"http://{host}:{port}",
            "DATA_DIR": str(data), "ADMIN_TOKEN": ADMIN_TOKEN,
            "REGISTRATION_TOKEN": REGISTRATION_TOKEN, "HEALTH_CHECK_INTERVAL": "0.5",
            "HEALTH_CHECK_TIMEOUT": "1", "REGISTRATION_RATE_LIMIT": "1000/60",
            # every agent of these tests is on 127.0.0.x, not on a mesh address
            "ALLOW_LOOPBACK_ENDPOINTS": "true", "LOG_LEVEL": "INFO", **env,
        }
        agent = Agent("primary", host, port, data, settings, self.root / "primary.log")
        self.agents.append(agent)
        if start:
            agent.start().wait_ready()
        return agent

    def secondary(self, primary: Agent, name: str, start: bool = True, **env: str) -> Agent:
        host = self._host()
        port = free_port(host)
        data = self.root / name
        settings = {
            **self.base_env(), "NODE_NAME": name, "SERVER_ADDRESS": f"{host}:{port}",
            # the endpoint is this loopback listener even when a test sets NODE_WIREGUARD_IP
            "NODE_API_ENDPOINT": f"http://{host}:{port}", "DATA_DIR": str(data), "PRIMARY_NODE_URL": primary.url,
            "REGISTRATION_TOKEN": REGISTRATION_TOKEN, "NODE_API_KEY": node_key(name),
            "REGISTRATION_RETRY_INITIAL": "0.2", "REGISTRATION_RETRY_MAX": "1",
            "STARTUP_HEARTBEAT_DELAY": "2", "HEARTBEAT_INTERVAL": "60", **env,
        }
        agent = Agent(name, host, port, data, settings, self.root / f"{name}.log")
        self.agents.append(agent)
        if start:
            agent.start()
        return agent

    def close(self) -> None:
        for agent in self.agents:
            agent.stop()


def wait_for(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except HostmeshAPIError as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def nodes_by_name(primary: Agent) -> dict[str, dict]:
    return {n["name"]: n for n in primary.admin().list_nodes()}
