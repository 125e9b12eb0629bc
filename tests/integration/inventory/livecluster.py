"""Real hostmesh agents on loopback addresses, for the inventory plugin's tests and bench.

A primary and any number of secondaries run as real `hostmesh agent`
processes (real HTTP, real SQLite), each on its own 127.8.x.y address, with
short intervals so that health changes happen in seconds. Nothing leaves
loopback.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from hostmesh.module_utils._agent_client import AgentClient, Credentials

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
HOSTMESH = str(BIN / "hostmesh")
ANSIBLE_INVENTORY = str(BIN / "ansible-inventory")
ANSIBLE = str(BIN / "ansible")
ANSIBLE_DOC = str(BIN / "ansible-doc")

# Short health-check table: a stopped secondary is offline after 3 failed
# checks (~1.5 s) and unreachable after 11.
FAST_ENV = {
    "HEALTH_CHECK_INTERVAL": "0.5",
    "HEALTH_CHECK_TIMEOUT": "0.5",
    "BACKOFF_TABLE": "0:0.5:online,3:0.5:offline,11:0.5:unreachable",
    "HEARTBEAT_INTERVAL": "1",
    "STARTUP_HEARTBEAT_DELAY": "0.1",
    "REGISTRATION_RETRY_INITIAL": "0.2",
    "REGISTRATION_RETRY_MAX": "1",
    "LOG_LEVEL": "INFO",
}


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def base_env() -> dict[str, str]:
    """The caller's environment minus anything hostmesh or Ansible would pick up by itself."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HOSTMESH_", "ANSIBLE_", "NODE_", "ADMIN_", "REGISTRATION_"))
    }
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Agent:
    name: str
    address: str
    port: int
    data_dir: Path
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def start(self) -> Agent:
        env = {
            **base_env(),
            **self.env,
            "DATA_DIR": str(self.data_dir),
            "SERVER_ADDRESS": f"{self.address}:{self.port}",
            # this loopback listener, even when NODE_WIREGUARD_IP is set
            "NODE_API_ENDPOINT": self.url,
            "NODE_NAME": self.name,
        }
        # the agent reads /etc/hostmesh/agent.env when it exists: point it at ours
        env_file = self.data_dir.parent / f"{self.name}.env"
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        env_file.write_text("")
        env_file.chmod(0o600)
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [HOSTMESH, "agent", "--env-file", str(env_file)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(self.data_dir),
            start_new_session=True,
        )
        log.close()
        self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"agent {self.name} exited with {self.proc.returncode}:\n{self.log()}"
                )
            try:
                with urllib.request.urlopen(self.url + "/api/health", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"agent {self.name} not healthy after {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


@dataclass
class Cluster:
    """One primary + secondaries under `root`, all on 127.8.<net>.x."""

    root: Path
    net: int = 0
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    registration_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    extra_env: dict[str, str] = field(default_factory=dict)
    agents: dict[str, Agent] = field(default_factory=dict)

    def _agent(self, name: str, index: int, env: dict[str, str]) -> Agent:
        address = f"127.8.{self.net}.{index}"
        agent = Agent(
            name=name,
            address=address,
            port=free_port(address),
            data_dir=self.root / name,
            env={**FAST_ENV, **self.extra_env, **env},
            log_path=self.root / f"{name}.log",
        )
        self.agents[name] = agent
        return agent

    @property
    def primary(self) -> Agent:
        return next(a for a in self.agents.values() if a.env.get("NODE_IS_PRIMARY") == "true")

    def start_primary(self, name: str = "primary", **env: str) -> Agent:
        return self._agent(
            name,
            1,
            {
                "NODE_IS_PRIMARY": "true",
                "ALLOW_LOOPBACK_ENDPOINTS": "true",  # every agent here is on 127.8.x.y
                "ADMIN_TOKEN": self.admin_token,
                "REGISTRATION_TOKEN": self.registration_token,
                **env,
            },
        ).start()

    def start_secondary(self, name: str, index: int, **env: str) -> Agent:
        return self._agent(
            name,
            index,
            {
                "NODE_IS_PRIMARY": "false",
                "PRIMARY_NODE_URL": self.primary.url,
                "REGISTRATION_TOKEN": self.registration_token,
                **env,
            },
        ).start()

    def api(self, method: str, path: str, body=None, token: str | None = None):
        """One admin request to the primary (json in, json out)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.primary.url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {token or self.admin_token}",
                "Content-Type": "application/json",
            },
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def nodes(self) -> dict[str, dict]:
        return {n["name"]: n for n in self.api("GET", "/api/nodes")}

    def heartbeat_as(self, name: str, body: dict) -> None:
        """One heartbeat to the primary with node `name`'s own id and key, as its agent sends it."""
        agent = self.agents[name]
        node_id = (agent.data_dir / "node_id").read_text().strip()
        key = (agent.data_dir / "node_api_key").read_text().strip()
        AgentClient(self.primary.url, Credentials(node_id=node_id, node_api_key=key)).heartbeat(node_id, body)

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "condition"):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.nodes()
            if predicate(last):
                return last
            time.sleep(0.25)
        raise AssertionError(
            f"timed out waiting for {what}; nodes: {last}\n"
            + "\n".join(f"--- {a.name}\n{a.log()}" for a in self.agents.values())
        )

    def stop(self) -> None:
        for agent in reversed(list(self.agents.values())):
            agent.stop()


def write_cfg(path: Path, url: str, **options) -> Path:
    cfg = {"plugin": "hostmesh.cluster.nodes", "url": url, **options}
    path.write_text(json.dumps(cfg, indent=2))
    return path


def ansible_env(token: str | None = None, **extra: str) -> dict[str, str]:
    env = base_env()
    env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_LOCALHOST_WARNING"] = "0"
    if token is not None:
        env["HOSTMESH_ADMIN_TOKEN"] = token
    env.update(extra)
    return env


def run(cmd: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, env=env, cwd=str(REPO), capture_output=True, text=True, timeout=timeout, check=False
    )


def plain(value):
    """`ansible-inventory --list` output with the unsafe markers removed.

    ansible-inventory writes a value marked unsafe as {"__ansible_unsafe": value}.
    """
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def inventory_list(cfg: Path, env: dict[str, str], *args: str, raw: bool = False) -> dict:
    """Run `ansible-inventory --list` (it must succeed); unsafe markers removed unless raw."""
    res = run([ANSIBLE_INVENTORY, "-i", str(cfg), "--list", *args], env)
    if res.returncode != 0 or "[WARNING]: Failed to parse" in res.stderr:
        raise AssertionError(f"ansible-inventory failed ({res.returncode}):\n{res.stderr}")
    data = json.loads(res.stdout)
    return data if raw else plain(data)


def group_hosts(data: dict, group: str) -> list[str]:
    """Hosts of a group in `ansible-inventory --list` output, children included."""
    entry = data.get(group, {})
    hosts = set(entry.get("hosts", []))
    for child in entry.get("children", []):
        hosts.update(group_hosts(data, child))
    return sorted(hosts)
