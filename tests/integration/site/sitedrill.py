"""The site lab every test in tests/integration/site shares, and its helpers.

One lab (drill-node1..3 on hostmesh-drill, 10.231.6.0/24) is converged once
per test session by the real site.yml over SSH (user `admin`, become, host
key checking on; the key pair and known_hosts sit in the lab inventory's state
dir). The `site` fixture (tests/integration/site/conftest.py) yields it; every
test module that uses it leaves the cluster as it found it (every node online
and serving), so modules can run in any order and a converge is paid once.
"""

from __future__ import annotations

import http.client
import json
import secrets
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "scripts"))
from lab import Lab
from sitelab import (
    VENV_BIN,
    ansible_env,
)

LAB = Lab(prefix="drill-", network="hostmesh-drill", subnet="10.231.6.0/24")
SERVICE_HOST = "whoami.lab.test"
RUNS_WHOAMI = {"node1", "node3"}  # inventory/lab/group_vars/hostmesh_nodes/main.yml
# Lab agent settings (node_agent.yml): checks every 10 s, offline after 3 failures.
DETECTION_SECONDS = 90


@dataclass
class Site:
    inventory: Path
    first_run: subprocess.CompletedProcess
    cfg: Path = field(default=None)
    # tcpdump of the lab bridge during the first converge (None: not root / no tcpdump)
    first_run_capture: Path | None = None


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        check=False, args=["docker", *args], capture_output=True, text=True, timeout=180
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def on_node(node: str, *cmd: str) -> str:
    return docker("exec", LAB.container(node), *cmd).stdout.strip()


def get(node: str, timeout: float = 3.0) -> tuple[int, str]:
    """GET / for whoami.lab.test on `node`'s public entrypoint: (status, body)."""
    conn = http.client.HTTPConnection(LAB.address(node), 80, timeout=timeout)
    try:
        conn.request("GET", "/", headers={"Host": SERVICE_HOST})
        resp = conn.getresponse()
        return resp.status, resp.read().decode().strip()
    except OSError as exc:
        return 0, f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


class Hammer:
    """Bounded request loop against some nodes, in a thread, ~20 requests/s."""

    def __init__(self, nodes: list[str], interval: float = 0.05, limit_seconds: float = 300):
        self.nodes, self.interval, self.limit = nodes, interval, limit_seconds
        self.results: list[tuple[str, int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        i = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            node = self.nodes[i % len(self.nodes)]
            status, body = get(node)
            self.results.append((node, status, body))
            i += 1
            time.sleep(self.interval)

    def start(self) -> None:
        self._thread.start()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    @property
    def failures(self) -> list[tuple[str, int, str]]:
        return [r for r in self.results if r[1] != 200]


def forwarding_state(node: str) -> str:
    """What `node` knows of its peers, for a failed drill's message: WireGuard
    handshakes, Traefik's recent health-check verdicts, and the units of every node."""
    lines = [
        f"{node} wg latest-handshakes: " + on_node(node, "wg", "show", "wg0", "latest-handshakes")
    ]
    journal = docker(
        "exec",
        LAB.container(node),
        "journalctl",
        "-u",
        "traefik",
        "--since",
        "-60s",
        "--no-pager",
        "-o",
        "cat",
        check=False,
    ).stdout
    lines += [
        f"{node} traefik: {line[:300]}" for line in journal.splitlines() if '"msg":""' not in line
    ][-12:]
    for other in LAB.nodes:
        units = docker(
            "exec",
            LAB.container(other),
            "systemctl",
            "is-active",
            "wg-quick@wg0",
            "traefik",
            "hostmesh-agent",
            "hostmesh-whoami",
            check=False,
        ).stdout.split()
        lines.append(f"{other} units (wg, traefik, agent, whoami): {' '.join(units)}")
    return "\n".join(lines)


def inventory_groups(cfg: Path) -> dict[str, list[str]]:
    """ansible-inventory --list from the dynamic inventory: group -> hosts."""
    groups = registered(cfg)
    assert groups is not None, f"ansible-inventory -i {cfg} failed or listed no node"
    return groups


def registered(cfg: Path) -> dict[str, list[str]] | None:
    """The dynamic inventory's groups, or None while the primary does not answer."""
    proc = subprocess.run(
        check=False,
        args=[str(VENV_BIN / "ansible-inventory"), "-i", str(cfg), "--list"],
        cwd=ROOT,
        env=ansible_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        return None
    data = json.loads(proc.stdout)
    groups = {g: v.get("hosts", []) for g, v in data.items() if isinstance(v, dict)}
    nodes = groups.get("hostmesh_primary", []) + groups.get("hostmesh_secondary", [])
    return groups if nodes else None


def wait_for(predicate, timeout: float, what: str, interval: float = 2.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def node_status(cfg: Path, node: str) -> str | None:
    groups = inventory_groups(cfg)
    for status in ("online", "offline", "unreachable"):
        if node in groups.get(f"hostmesh_{status}", []):
            return status
    return None


def wait_until_restored(timeout: float = 90) -> None:
    """Every node serves, and node2 (which does not run whoami) reaches every
    node that does: the next drill starts from a whole cluster. A rebooted node
    answers its own port before its peers' WireGuard sessions to it are renewed."""
    wait_for(lambda: {get(n)[0] for n in LAB.nodes} == {200}, timeout, "every node serving")
    wait_for(
        lambda: {get("node2")[1] for _ in range(12)} == RUNS_WHOAMI,
        timeout,
        f"node2 forwarding to each of {sorted(RUNS_WHOAMI)}",
    )


def start_node(node: str) -> None:
    docker("start", LAB.container(node))
    assert LAB.wait_systemd(node, 180) in ("running", "degraded")


# tcpdump on the lab bridge: what someone on the path between controller and nodes sees.
TCPDUMP = shutil.which("tcpdump") or "/usr/bin/tcpdump"


def lab_bridge() -> str:
    """The Linux bridge of the lab's Docker network (br-<first 12 of its id>)."""
    net_id = docker("network", "inspect", "-f", "{{.Id}}", LAB.network).stdout.strip()
    options = docker(
        "network",
        "inspect",
        "-f",
        '{{index .Options "com.docker.network.bridge.name"}}',
        LAB.network,
    ).stdout
    name = options.strip() if options.strip() not in ("", "<no value>") else f"br-{net_id[:12]}"
    assert Path(f"/sys/class/net/{name}").exists(), f"no bridge {name} for {LAB.network}"
    return name


class Capture:
    """tcpdump -i <bridge> -w <file>, whole frames, until stopped."""

    def __init__(self, bridge: str, path: Path):
        self.path = path
        self.log = path.with_suffix(".log")
        self.proc = subprocess.Popen(
            [TCPDUMP, "-i", bridge, "-s", "0", "-U", "--immediate-mode", "-n", "-w", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"),
        )
        deadline = time.monotonic() + 10
        while "listening on" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"tcpdump did not start: {self.log.read_text()}")
            time.sleep(0.1)

    def stop(self) -> bytes:
        time.sleep(1.0)  # frames still on their way from the kernel to tcpdump
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        return self.path.read_bytes()


# A bearer token sent in clear across the lab bridge at the end of the first
# converge: a capture that misses it would prove nothing.
CANARY = "canary-" + secrets.token_urlsafe(24)


def send_in_clear(token: str) -> None:
    """One HTTP request with `token` to node1's public web entrypoint."""
    conn = http.client.HTTPConnection(LAB.address("node1"), 80, timeout=5)
    try:
        conn.request("GET", "/", headers={"Host": SERVICE_HOST, "Authorization": f"Bearer {token}"})
        conn.getresponse().read()
    except OSError:
        pass  # any answer will do: the request crossed the bridge
    finally:
        conn.close()
