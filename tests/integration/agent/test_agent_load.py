"""Concurrency and crash durability of the primary (real processes, real SQLite)."""

from __future__ import annotations

import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from agent_harness import REGISTRATION_TOKEN, node_key
from hostmesh.module_utils._agent_client import AgentClient, Conflict, Credentials, HostmeshAPIError


def _register(url: str, name: str, node_id: str | None = None, timeout: float = 10.0):
    body = {"name": name, "api_endpoint": "http://127.0.0.99:9", "api_key": node_key(name),
            "token": REGISTRATION_TOKEN}
    if node_id:
        body["id"] = node_id
    return AgentClient(url, timeout=timeout).register(body)


def test_50_concurrent_registrations_are_stored_once(cluster):
    primary = cluster.primary()
    names = [f"burst{i:02d}" for i in range(50)]
    barrier = threading.Barrier(50)

    def one(name):
        barrier.wait()
        return _register(primary.url, name)

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(one, names))
    assert [status for status, _ in results] == [201] * 50
    nodes = primary.admin().list_nodes()
    stored = [n["name"] for n in nodes if not n["is_primary"]]
    assert sorted(stored) == names
    assert len({n["id"] for n in nodes}) == len(nodes)

    # the same name raced by 20 different ids: exactly one wins, the rest get 409
    barrier2 = threading.Barrier(20)

    def contender(i):
        barrier2.wait()
        try:
            return _register(primary.url, "contested", node_id=f"contender-{i}")[0]
        except Conflict:
            return 409

    with ThreadPoolExecutor(20) as pool:
        statuses = list(pool.map(contender, range(20)))
    assert sorted(statuses) == [201] + [409] * 19
    assert [n["name"] for n in primary.admin().list_nodes()].count("contested") == 1


def test_registration_attempts_are_rate_limited(cluster):
    from hostmesh.module_utils._agent_client import RateLimited

    primary = cluster.primary(REGISTRATION_RATE_LIMIT="5/60")
    for i in range(5):
        _register(primary.url, f"limited{i}")
    try:
        _register(primary.url, "limited5")
        raise AssertionError("the 6th attempt within the window was accepted")
    except RateLimited as exc:
        assert exc.status == 429
    assert "registration rate-limited client=" in primary.log()


def test_kill9_during_a_burst_keeps_every_acknowledged_registration(cluster):
    primary = cluster.primary()
    acked: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def heartbeater():
        while not stop.is_set():
            with lock:
                ids = acked[-20:]
            for node_id in ids:
                # ids equal names here, and a test node's key derives from its name
                client = AgentClient(primary.url, Credentials(node_id=node_id,
                                                              node_api_key=node_key(node_id)),
                                     timeout=2)
                try:
                    client.heartbeat(node_id)
                except HostmeshAPIError:
                    pass

    def registrar(worker):
        i = 0
        while not stop.is_set():
            name = f"k{worker}-{i}"
            i += 1
            try:
                status, node = _register(primary.url, name, node_id=name, timeout=2)
            except HostmeshAPIError:
                continue
            if status == 201:
                with lock:
                    acked.append(node["id"])

    threads = [threading.Thread(target=registrar, args=(w,)) for w in range(6)]
    threads += [threading.Thread(target=heartbeater) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    primary.kill9()
    stop.set()
    for t in threads:
        t.join(10)
    assert len(acked) > 20, "the burst did not get going"

    primary.start().wait_ready()
    db = sqlite3.connect(str(primary.data_dir / "hostmesh.db"))
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {row[0] for row in db.execute("SELECT id FROM nodes")}
    finally:
        db.close()
    missing = set(acked) - stored
    assert not missing, f"{len(missing)} acknowledged registrations lost"
    api_ids = {n["id"] for n in primary.admin().list_nodes()}
    assert set(acked) <= api_ids
