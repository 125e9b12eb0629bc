"""The primary's health checker: periodic, concurrent, per-node backoff.

A check is `GET <api_endpoint>/api/health` carrying no credential: only a
proof (`X-Hostmesh-Primary-Proof`, see `security.primary_proof`) bound to that
node, that path and that moment, which a secondary can verify and nobody can
reuse against another node or replay. It
succeeds on HTTP 200 with `status: healthy` and, when the answer names a
node id, the id we expect (an address now used by another node is a failure).
The probe is a minimal HTTP/1.1 client on asyncio streams: it keeps a sweep
of a thousand nodes cheap, with no dependency beyond the standard library.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from hostmesh.agent import security, validate
from hostmesh.agent.config import Config
from hostmesh.agent.registry import Registry

log = logging.getLogger("hostmesh.agent")
MAX_ANSWER = 65536


@dataclass
class ProbeResult:
    ok: bool
    duration_ms: float
    reason: str = ""


async def probe(endpoint: str, node_id: str, headers: dict[str, str], timeout: float,
                ssl_context: ssl.SSLContext | None = None) -> ProbeResult:
    """Check one node's /api/health; never raises."""
    start = time.perf_counter()
    try:
        reason = await asyncio.wait_for(_probe(endpoint, node_id, headers, ssl_context), timeout)
    except asyncio.TimeoutError:
        reason = f"timeout after {timeout:g}s"
    except (OSError, ssl.SSLError, ValueError, UnicodeError) as exc:
        reason = type(exc).__name__ + (f": {exc.strerror}" if getattr(exc, "strerror", None)
                                       else "")
    return ProbeResult(not reason, (time.perf_counter() - start) * 1000, reason)


async def _probe(endpoint: str, node_id: str, headers: dict[str, str],
                 ssl_context: ssl.SSLContext | None) -> str:
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "bad api_endpoint"
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    ctx = (ssl_context or ssl.create_default_context()) if tls else None
    reader, writer = await asyncio.open_connection(parts.hostname, port, ssl=ctx)
    try:
        host = parts.netloc.rpartition("@")[2]
        lines = [f"GET {parts.path.rstrip('/')}/api/health HTTP/1.1", f"Host: {host}",
                 "Accept: application/json", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        raw = b""
        while len(raw) <= MAX_ANSWER:
            chunk = await reader.read(65536)
            if not chunk:
                break
            raw += chunk
    finally:
        writer.close()
    head, _sep, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = status_line.split(" ", 2)
    if len(fields) < 2 or not fields[0].startswith("HTTP/"):
        return "not an HTTP answer"
    if fields[1] != "200":
        return f"HTTP {fields[1]}"
    if any(h.lower().replace(" ", "") == "transfer-encoding:chunked" for h in header_lines):
        body = _dechunk(body)
    try:
        answer = json.loads(body)
    except ValueError:
        return "answer is not JSON"
    if not isinstance(answer, dict) or answer.get("status") != "healthy":
        return "answer is not healthy"
    other = answer.get("node_id")
    if other is not None and other != node_id:
        return "answered by another node id"
    return ""


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _sep, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return out


class HealthChecker:
    """Wakes often, checks every node whose backoff interval has elapsed."""

    def __init__(self, cfg: Config, registry: Registry):
        self.cfg = cfg
        self.registry = registry
        self.sem = asyncio.Semaphore(cfg.health_check_concurrency)
        self.in_flight: set[str] = set()
        smallest = min(row.interval for row in cfg.backoff_table)
        self.tick = min(1.0, smallest / 2)
        self.sweeps = 0
        self.metrics = None  # metrics.Metrics, set by the API

    def endpoint_problem(self, node_id: str, endpoint: str) -> str:
        """Why the primary must not send a request to `endpoint` ('' when it may):
        only a node's own mesh address and the agent port are ever checked."""
        state = self.registry.key_state(node_id)
        fields = {"api_endpoint": endpoint,
                  "wireguard_ip": state.wireguard_ip if state is not None else None}
        try:
            validate.mesh_endpoint(fields, subnet=self.cfg.mesh_subnet,
                                   port=self.cfg.agent_port,
                                   allow_loopback=self.cfg.allow_loopback_endpoints)
        except validate.Invalid:
            return "api_endpoint is not the node's mesh address and agent port; not checked"
        return ""

    def proof_headers(self, node_id: str, endpoint: str) -> dict[str, str]:
        state = self.registry.key_state(node_id)
        if state is None:
            return {}
        path = urlsplit(endpoint).path.rstrip("/") + "/api/health"
        return {security.PROOF_HEADER: security.primary_proof(
            state.key_hash, "GET", path, self.cfg.node_id, node_id)}

    def status_for(self, failures: int) -> str:
        return self.cfg.backoff_for(failures).status

    def due(self, now: float) -> list[tuple[str, str, str]]:
        """Nodes whose backoff interval has elapsed since their last sign of life.

        A healthy node's sign of life is its last heartbeat or successful check,
        whichever is newer: a node that heartbeats more often than row 0's interval
        is never probed (the primary's cost is the heartbeats alone), and one whose
        heartbeats stop is probed once its heartbeat is that old. After a failure
        the interval counts from the last check (the backoff table)."""
        targets = []
        for node_id, name, endpoint, failures, checked, seen in self.registry.check_targets():
            if node_id in self.in_flight:
                continue
            last = checked if failures else max(checked or 0.0, seen or 0.0) or None
            if last is None or now - last >= self.cfg.backoff_for(failures).interval:
                targets.append((node_id, name, endpoint))
        return targets

    async def check(self, node_id: str, name: str, endpoint: str) -> dict | None:
        """Check one node now and record the result; returns the result for the API."""
        self.in_flight.add(node_id)
        try:
            refused = self.endpoint_problem(node_id, endpoint)
            if refused:  # a record from before these rules: never sent a request
                result = ProbeResult(False, 0.0, refused)
            else:
                async with self.sem:
                    result = await probe(endpoint, node_id,
                                         self.proof_headers(node_id, endpoint),
                                         self.cfg.health_check_timeout)
            stored = self.registry.record_check(node_id, result.ok, self.status_for)
        finally:
            self.in_flight.discard(node_id)
        if stored is None:  # deleted meanwhile
            return None
        status, failures = stored
        if self.metrics is not None:
            self.metrics.observe_check(result.ok, result.duration_ms)
        extra = "" if result.ok else f" failures={failures} reason={_quote(result.reason)}"
        log.info("health check completed node=%s status=%s duration_ms=%d%s",
                 name, status, result.duration_ms, extra)
        return {"ok": result.ok, "status": status, "consecutive_failures": failures,
                "duration_ms": round(result.duration_ms, 1),
                "reason": result.reason or None}

    async def sweep(self) -> int:
        """Check every due node concurrently; returns how many were checked."""
        targets = self.due(time.time())
        if targets:
            await asyncio.gather(*(self.check(*t) for t in targets))
        self.sweeps += 1
        return len(targets)

    async def own_stats(self) -> None:
        """Every HEARTBEAT_INTERVAL, the primary's own stats and app containers on its row
        (as a secondary's heartbeat would bring them)."""
        from hostmesh.agent.apps import AppsReader
        from hostmesh.agent.stats import SystemStats

        stats = SystemStats(disk_path=str(self.cfg.data_dir))
        apps = AppsReader(self.cfg.apps_report_file, self.cfg.apps_report, log=log)
        while True:
            try:
                snapshot = await asyncio.to_thread(stats.heartbeat)
                self.registry.record_own_stats(self.cfg.node_id, snapshot)
            except (OSError, ValueError, IndexError):
                pass
            reported = await asyncio.to_thread(apps.read)
            if reported is not None:
                self.registry.record_own_apps(self.cfg.node_id, reported)
            await asyncio.sleep(self.cfg.heartbeat_interval)

    async def run(self) -> None:
        # one task per due node, so a node that times out never delays the others
        tasks: set[asyncio.Task] = set()
        own = asyncio.create_task(self.own_stats())
        try:
            while True:
                try:
                    for target in self.due(time.time()):
                        self.in_flight.add(target[0])
                        task = asyncio.create_task(self.check(*target))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                except Exception:  # keep checking whatever happened to one tick
                    log.exception("health sweep failed")
                await asyncio.sleep(self.tick)
        finally:
            own.cancel()


def _quote(text: str) -> str:
    return '"' + text.replace('"', "'") + '"' if " " in text else text
