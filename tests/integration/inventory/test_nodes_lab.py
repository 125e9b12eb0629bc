"""Lab check: `ansible -i <cfg> hostmesh_online -m ping` reaches every online node.

Three containers of the lab image (`hostmesh-node:latest`, built by
`scripts/lab.py image`) on their own network hostmesh-inv (10.231.8.0/24), each
running a real `hostmesh agent` (node1 primary, node2/node3 secondaries
registering over the container network). The agent runs from this checkout's
virtualenv, bind-mounted read-only, so the test needs no wheelhouse. Ansible
reaches the containers with the community.docker.docker connection; the
inventory itself comes only from the primary's API. Containers and network are
always removed.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from livecluster import ANSIBLE, ansible_env, group_hosts, inventory_list, run, write_cfg

IMAGE = "hostmesh-node:latest"
NETWORK = "hostmesh-inv"
SUBNET = "10.231.8.0/24"
NODES = {"node1": "10.231.8.11", "node2": "10.231.8.12", "node3": "10.231.8.13"}
PYTHON_HOME = str(Path(sys.base_prefix))  # the interpreter behind the venv


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(
        ["docker", *args], check=False, capture_output=True, text=True, timeout=120
    )
    if check and res.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} failed: {res.stderr.strip()}")
    return res


def container(name: str) -> str:
    return f"inv-{name}"


def cleanup() -> None:
    for name in NODES:
        docker("rm", "-f", container(name), check=False)
    docker("network", "rm", NETWORK, check=False)


def start_agent(name: str, env: dict[str, str]) -> None:
    env_file = "\n".join(f"{k}={v}" for k, v in env.items()) + "\n"
    script = (
        "umask 077; mkdir -p /etc/hostmesh /var/lib/hostmesh; "
        "cat > /etc/hostmesh/agent.env; "
        "nohup /work/main/.venv/bin/hostmesh agent --env-file /etc/hostmesh/agent.env "
        ">/var/log/hostmesh-agent.log 2>&1 & echo $! > /run/hostmesh-agent.pid"
    )
    res = subprocess.run(
        ["docker", "exec", "-i", container(name), "sh", "-c", script],
        input=env_file,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr


def agent_log(name: str) -> str:
    return docker(
        "exec", container(name), "cat", "/var/log/hostmesh-agent.log", check=False
    ).stdout[-3000:]


@pytest.fixture
def lab(tmp_path):
    if shutil.which("docker") is None or docker("info", check=False).returncode != 0:
        pytest.fail("the Docker engine is not running: run scripts/setup-host.sh first")
    if docker("image", "inspect", IMAGE, check=False).returncode != 0:
        pytest.fail(f"image {IMAGE} is missing: build it with `scripts/lab.py image`")
    cleanup()
    admin_token = secrets.token_urlsafe(32)
    registration_token = secrets.token_urlsafe(32)
    fast = {
        "HEALTH_CHECK_INTERVAL": "0.5",
        "HEALTH_CHECK_TIMEOUT": "0.5",
        "BACKOFF_TABLE": "0:0.5:online,3:0.5:offline,11:0.5:unreachable",
        "HEARTBEAT_INTERVAL": "1",
        "STARTUP_HEARTBEAT_DELAY": "0.1",
        "REGISTRATION_RETRY_INITIAL": "0.2",
        "REGISTRATION_RETRY_MAX": "1",
    }
    try:
        docker("network", "create", "--subnet", SUBNET, NETWORK)
        for name, ip in NODES.items():
            docker(
                "run",
                "-d",
                "--name",
                container(name),
                "--hostname",
                name,
                "--network",
                NETWORK,
                "--ip",
                ip,
                "-v",
                "/work/main:/work/main:ro",
                "-v",
                f"{PYTHON_HOME}:{PYTHON_HOME}:ro",
                "--entrypoint",
                "sleep",
                IMAGE,
                "infinity",
            )
        primary_url = f"http://{NODES['node1']}:8080"
        start_agent(
            "node1",
            {
                **fast,
                "NODE_IS_PRIMARY": "true",
                "NODE_NAME": container("node1"),
                "SERVER_ADDRESS": "0.0.0.0:8080",
                "NODE_API_ENDPOINT": primary_url,
                "ADMIN_TOKEN": admin_token,
                "REGISTRATION_TOKEN": registration_token,
            },
        )
        for name in ("node2", "node3"):
            start_agent(
                name,
                {
                    **fast,
                    "NODE_IS_PRIMARY": "false",
                    "NODE_NAME": container(name),
                    "SERVER_ADDRESS": f"{NODES[name]}:8080",
                    "PRIMARY_NODE_URL": primary_url,
                    "REGISTRATION_TOKEN": registration_token,
                },
            )
        # hosts are named after the containers (NODE_NAME), so with
        # ansible_host_source=name the docker connection finds them by name
        cfg = write_cfg(
            tmp_path / "lab.hostmesh.yml",
            primary_url,
            ansible_host_source="name",
            compose={
                "ansible_connection": "'community.docker.docker'",
                "ansible_python_interpreter": "'/usr/bin/python3'",
            },
        )
        by_ip = write_cfg(
            tmp_path / "ip.hostmesh.yml", primary_url, ansible_host_source="api_endpoint"
        )
        yield {"cfg": cfg, "by_ip": by_ip, "token": admin_token}
    finally:
        for name in NODES:
            log = agent_log(name)
            if log:
                print(f"--- agent log {name}\n{log}")
        cleanup()


def wait_statuses(cfg: Path, token: str, want: dict[str, str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    data: dict = {}
    while time.monotonic() < deadline:
        try:
            data = inventory_list(cfg, ansible_env(token))
        except AssertionError as exc:  # e.g. the primary still starting: keep the reason
            data = {"error": str(exc)[-1500:]}
        hv = data.get("_meta", {}).get("hostvars", {})
        if all(hv.get(h, {}).get("hostmesh_status") == s for h, s in want.items()):
            return data
        time.sleep(1)
    raise AssertionError(f"statuses never became {want}: {json.dumps(data)[:2000]}")


def ping(cfg: Path, token: str) -> tuple[list[str], str]:
    res = run(
        [ANSIBLE, "-i", str(cfg), "hostmesh_online", "-m", "ansible.builtin.ping"],
        ansible_env(token),
    )
    ok = sorted(ln.split()[0] for ln in res.stdout.splitlines() if "| SUCCESS" in ln)
    return ok, res.stdout + res.stderr


def test_ping_every_online_node_in_the_lab(lab):
    cfg, token = lab["cfg"], lab["token"]
    names = [container(n) for n in NODES]
    wait_statuses(cfg, token, dict.fromkeys(names, "online"))
    data = wait_statuses(lab["by_ip"], token, dict.fromkeys(names, "online"))
    hv = data["_meta"]["hostvars"]
    assert {h: hv[container(h)]["ansible_host"] for h in NODES} == NODES
    assert group_hosts(data, "hostmesh_primary") == [container("node1")]

    ok, out = ping(cfg, token)
    assert ok == names, out

    # node3's agent stops: once the primary says offline, ping skips it
    docker("exec", container("node3"), "sh", "-c", "kill $(cat /run/hostmesh-agent.pid)")
    data = wait_statuses(cfg, token, {container("node3"): "offline"})
    assert group_hosts(data, "hostmesh_online") == names[:2]
    ok, out = ping(cfg, token)
    assert ok == names[:2], out
    assert token not in out
