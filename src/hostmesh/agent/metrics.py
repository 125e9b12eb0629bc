"""Prometheus metrics of the agent at `GET /metrics` (issue 17).

Served on the agent's API port, so only where the API listens (the mesh
address and loopback), and only to a caller with a bearer token: the metrics
token (`METRICS_TOKEN_SHA256`, the hash of what Prometheus sends from its
`credentials_file`) or the admin token. Decision: node names, statuses and the
cluster's size are not secret, but every secondary may be hostile and holds
no admin right; an anonymous mesh peer learns nothing the node API would not
tell it. A separate read-only token means Prometheus never holds the admin
token, and the agents keep only its hash. Nothing in the metrics is a token,
key or hash of one.

Every agent (primary or secondary) also exports its node's DDNS updater status
(`hostmesh ddns sync` writes it, see `hostmesh.dns.status`; `DDNS_STATUS_FILE`,
default /var/lib/hostmesh-ddns/status.json), read at scrape time: no file (no
updater on this node) means no `hostmesh_ddns_*` series at all, an unreadable or
invalid one `hostmesh_ddns_status_ok 0` and one log line per distinct problem.

Each agent has its own CollectorRegistry (several agents in one test process
stay apart). On the primary, per-node series are read from the registry
database at scrape time, so a node that is deleted disappears from them.
"""

from __future__ import annotations

import json
import logging
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from hostmesh import __version__
from hostmesh.dns import status as ddns_status

log = logging.getLogger("hostmesh.agent")

STATUSES = ("online", "offline", "unreachable")
STAT_GAUGES = (("cpu_percent", "CPU busy since the node's previous heartbeat (0-100)"),
               ("memory_percent", "memory in use (0-100)"),
               ("disk_percent", "disk in use on the agent's data file system (0-100)"),
               ("load_1m", "load average over one minute"))


class NodeCollector:
    """The primary's per-node series, from its registry at scrape time."""

    def __init__(self, registry):
        self.registry = registry

    def collect(self):
        now = time.time()
        status = GaugeMetricFamily("hostmesh_node_status",
                                   "1 for the node's current status in the primary's view",
                                   labels=["node", "status"])
        age = GaugeMetricFamily("hostmesh_node_heartbeat_age_seconds",
                                "seconds since the node's last sign of life (heartbeat or "
                                "successful check)", labels=["node"])
        failures = GaugeMetricFamily("hostmesh_node_consecutive_failures",
                                     "failed health checks in a row", labels=["node"])
        primary = GaugeMetricFamily("hostmesh_node_is_primary", "1 for the primary",
                                    labels=["node"])
        counts = GaugeMetricFamily("hostmesh_nodes", "nodes per status", labels=["status"])
        stats = {key: GaugeMetricFamily(f"hostmesh_node_{key}", text, labels=["node"])
                 for key, text in STAT_GAUGES}
        per_status = dict.fromkeys(STATUSES, 0)
        rows = self.registry.db.execute(
            "SELECT name, status, last_seen, consecutive_failures, is_primary, stats "
            "FROM nodes ORDER BY name")
        for name, state, seen, fails, is_primary, raw in rows:
            for candidate in STATUSES:
                status.add_metric([name, candidate], 1.0 if candidate == state else 0.0)
            if state in per_status:
                per_status[state] += 1
            if seen is not None:
                age.add_metric([name], max(0.0, now - seen))
            failures.add_metric([name], fails or 0)
            primary.add_metric([name], 1.0 if is_primary else 0.0)
            try:
                values = json.loads(raw) if raw else {}
            except ValueError:
                values = {}
            for key, family in stats.items():
                value = values.get(key) if isinstance(values, dict) else None
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    family.add_metric([name], float(value))
        for candidate, count in per_status.items():
            counts.add_metric([candidate], count)
        yield from (status, age, failures, primary, counts, *stats.values())


class DdnsStatusCollector:
    """This node's DDNS updater, from its status file at scrape time."""

    def __init__(self, path: str):
        self.path = path
        self.problem: str | None = None

    def collect(self):
        try:
            doc = ddns_status.read(self.path)
        except FileNotFoundError:
            self.problem = None
            return
        except (OSError, ddns_status.StatusInvalid) as exc:
            reason = (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc))
            if reason != self.problem:  # once per distinct problem, not every scrape
                log.warning("ddns status unreadable file=%s reason=%s; hostmesh_ddns_* "
                            "metrics left out until the next good run of hostmesh ddns sync",
                            self.path, " ".join(reason.split())[:200])
            self.problem = reason
            yield GaugeMetricFamily("hostmesh_ddns_status_ok", "1 when this node's DDNS "
                                    "updater status file was read, 0 when it is invalid",
                                    value=0.0)
            return
        if self.problem is not None:
            log.info("ddns status readable again file=%s", self.path)
        self.problem = None
        yield GaugeMetricFamily("hostmesh_ddns_status_ok", "1 when this node's DDNS updater "
                                "status file was read, 0 when it is invalid", value=1.0)
        yield GaugeMetricFamily("hostmesh_ddns_last_attempt_timestamp_seconds",
                                "when this node's DDNS updater last ran (Unix time)",
                                value=doc["last_attempt"])
        if doc["last_success"] is not None:
            yield GaugeMetricFamily("hostmesh_ddns_last_success_timestamp_seconds",
                                    "when this node's DDNS updater last succeeded (Unix time)",
                                    value=doc["last_success"])
        yield GaugeMetricFamily("hostmesh_ddns_consecutive_failures",
                                "failed runs of this node's DDNS updater in a row",
                                value=float(doc["consecutive_failures"]))


class Metrics:
    def __init__(self, cfg, registry=None):
        self.registry = CollectorRegistry(auto_describe=False)
        info = Gauge("hostmesh_agent_info", "the agent: role, node name and version",
                     ["role", "node", "version"], registry=self.registry)
        info.labels(cfg.role, cfg.node_name, __version__).set(1)
        self.checks = Counter("hostmesh_health_checks_total",
                              "health checks of secondaries by the primary, by result",
                              ["result"], registry=self.registry)
        self.check_seconds = Histogram(
            "hostmesh_health_check_duration_seconds", "duration of one health check",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0),
            registry=self.registry)
        self.heartbeats = Counter("hostmesh_heartbeats_total",
                                  "heartbeats accepted by the primary", registry=self.registry)
        self.dns_changes = Counter(
            "hostmesh_dns_changes_total",
            "DNS record changes made by the primary's health-aware DNS, by action "
            "(withdraw, restore)", ["action"], registry=self.registry)
        self.dns_failures = Counter(
            "hostmesh_dns_failures_total",
            "failed DNS reconciliations of the primary's health-aware DNS",
            registry=self.registry)
        self.dns_held = Counter(
            "hostmesh_dns_withdrawals_held_total",
            "withdrawals a guard held back (last record of a name, half the cluster "
            "offline)", ["guard"], registry=self.registry)
        for action in ("withdraw", "restore"):
            self.dns_changes.labels(action)
        for result in ("ok", "failed"):
            self.checks.labels(result)
        if registry is not None:
            self.registry.register(NodeCollector(registry))
        self.registry.register(DdnsStatusCollector(
            getattr(cfg, "ddns_status_file", "/var/lib/hostmesh-ddns/status.json")))

    def observe_check(self, ok: bool, duration_ms: float) -> None:
        self.checks.labels("ok" if ok else "failed").inc()
        self.check_seconds.observe(duration_ms / 1000.0)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
