"""Health-aware DNS on the primary (issue 17): a node the primary sees offline loses
its public records; they come back when it is online again.

Off unless `DNS_WITHDRAWAL=true` on the primary. It works through the one DNS
reconciler (`hostmesh.module_utils._dns_reconcile`) and touches only records
whose comment is exactly `hostmesh:<DNS_CLUSTER>:<node name>` (the records the
ddns role publishes for that node); nothing else in the zone is ever changed.

Guards, each decision logged with its reason (`dns records withdrawn`,
`dns records restored`, `dns withdrawal held`):
- hysteresis: a node is withdrawn only after `DNS_WITHDRAW_AFTER` seconds
  offline (or unreachable), restored only after `DNS_RESTORE_AFTER` seconds
  online, and one node's records change at most once per
  `DNS_MIN_CHANGE_INTERVAL` seconds, so a flapping node does not churn DNS;
- never the last record of a name: a record stays when no other record of the
  cluster with that name and type would remain;
- while half the cluster or more (the primary included in the count) is not
  online, nothing is withdrawn: the primary is then the likely partitioned one.
  Restores still go ahead.

The withdrawn records are kept in `DATA_DIR/dns_withdrawn.json` (0600) so a
restart of the primary can still restore them. A node's own DDNS timer (or an
`ansible-playbook site.yml`) may publish its records again while it is
withdrawn; if the node is still offline they are withdrawn again on the next
pass (after the change interval).

The Cloudflare token is read from `DNS_API_TOKEN_FILE`, which must not be
readable by group or others (0600 or 0400); it never appears in a log line,
a metric or an answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from hostmesh.agent import security

log = logging.getLogger("hostmesh.agent")
STATE_FILE = "dns_withdrawn.json"
DOWN = ("offline", "unreachable")


class DnsConfigError(ValueError):
    """A DNS_* variable is wrong; the message names it and how to fix it."""


@dataclass
class DnsSettings:
    zone: str
    cluster: str
    token_file: Path
    api_base_url: str | None = None
    withdraw_after: float = 10.0
    restore_after: float = 10.0
    min_change_interval: float = 30.0
    interval: float = 2.0


def _seconds(env: dict[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise DnsConfigError(f"{name}={raw!r} is not a number of seconds") from None
    if not (math.isfinite(value) and value >= minimum):
        raise DnsConfigError(f"{name}={raw!r} must be a finite number >= {minimum:g}")
    return value


def load_settings(env: dict[str, str], is_primary: bool) -> DnsSettings | None:
    """The DNS_* settings, or None when health-aware DNS is off (the default)."""
    raw = (env.get("DNS_WITHDRAWAL") or "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return None
    if raw not in ("1", "true", "yes", "on"):
        raise DnsConfigError(f"DNS_WITHDRAWAL={raw!r} is not a boolean; use true or false")
    if not is_primary:
        raise DnsConfigError("DNS_WITHDRAWAL=true is for the primary only (it acts on the "
                             "primary's health view); remove it from this secondary")
    zone = (env.get("DNS_ZONE") or "").strip().rstrip(".").lower()
    if not zone or "." not in zone:
        raise DnsConfigError("DNS_WITHDRAWAL=true needs DNS_ZONE, the zone of the public "
                             "records (e.g. DNS_ZONE=example.org)")
    cluster = (env.get("DNS_CLUSTER") or "hostmesh").strip()
    if ":" in cluster or any(c.isspace() for c in cluster):
        raise DnsConfigError(f"DNS_CLUSTER={cluster!r}: the cluster name of the owner "
                             "comments hostmesh:<cluster>:<node>, without ':' or spaces")
    token_file = (env.get("DNS_API_TOKEN_FILE") or "").strip()
    if not token_file:
        raise DnsConfigError("DNS_WITHDRAWAL=true needs DNS_API_TOKEN_FILE, a file (mode "
                             "0600) holding the Cloudflare API token (Zone:Read, DNS:Edit)")
    path = Path(token_file)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError as exc:
        raise DnsConfigError(f"DNS_API_TOKEN_FILE={path}: {exc.strerror}") from None
    if mode & 0o077:
        raise DnsConfigError(f"DNS_API_TOKEN_FILE={path} has mode {mode:04o}; it holds the "
                             f"Cloudflare token: chmod 600 {path}")
    base = (env.get("DNS_API_BASE_URL") or "").strip() or None
    if base is not None and not base.startswith(("http://", "https://")):
        raise DnsConfigError(f"DNS_API_BASE_URL={base!r} is not an http(s) URL")
    return DnsSettings(
        zone=zone, cluster=cluster, token_file=path, api_base_url=base,
        withdraw_after=_seconds(env, "DNS_WITHDRAW_AFTER", 10.0),
        restore_after=_seconds(env, "DNS_RESTORE_AFTER", 10.0),
        min_change_interval=_seconds(env, "DNS_MIN_CHANGE_INTERVAL", 30.0),
        interval=_seconds(env, "DNS_RECONCILE_INTERVAL", 2.0, minimum=0.05))


class DnsWithdrawal:
    """One pass every `interval`: read the registry, change DNS only when needed."""

    def __init__(self, settings: DnsSettings, registry, data_dir: Path, metrics=None,
                 client=None):
        self.s = settings
        self.registry = registry
        self.metrics = metrics
        self.state_path = Path(data_dir) / STATE_FILE
        self.withdrawn: dict[str, list[dict]] = self._load()
        self.seen: dict[str, tuple[str, float]] = {}  # node -> (status, since)
        self.changed_at: dict[str, float] = {}
        self.held: dict[str, str] = {}  # node -> guard last logged (log once per change)
        self._client = client
        self._zone_id: str | None = None

    # -- state ----------------------------------------------------------------

    def _load(self) -> dict[str, list[dict]]:
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): [r for r in v if isinstance(r, dict)] for k, v in data.items()
                if isinstance(v, list)}

    def _save(self) -> None:
        security.write_private(self.state_path, json.dumps(self.withdrawn, sort_keys=True) + "\n")

    # -- the Cloudflare side (runs in a worker thread) -------------------------

    def _reconciler(self):
        from hostmesh.module_utils import _dns_reconcile as dr

        if self._client is None:
            token = self.s.token_file.read_text(encoding="utf-8").strip()
            self._client = dr.make_client(token, self.s.api_base_url)
        return dr.Reconciler(self._client)

    def _spec(self):
        from hostmesh.module_utils import _dns_reconcile as dr

        return dr.Spec(zone=self.s.zone, cluster=self.s.cluster, names=[], nodes={})

    def _owned(self, rec) -> list:
        if self._zone_id is None:
            self._zone_id = rec.find_zone(self.s.zone)
        return rec.list_owned(self._zone_id, self._spec())

    def _apply_withdrawals(self, nodes: list[str]) -> tuple[dict[str, list], dict[str, list]]:
        """Delete the records of `nodes`; returns ({node: removed}, {node: kept})."""
        from hostmesh.module_utils import _dns_reconcile as dr

        rec = self._reconciler()
        owned = self._owned(rec)
        going = set()
        removed: dict[str, list] = {n: [] for n in nodes}
        kept: dict[str, list] = {n: [] for n in nodes}
        for node in nodes:
            comment = dr.owner_comment(self.s.cluster, node)
            for r in owned:
                if r.comment != comment:
                    continue
                others = [o for o in owned if o.name == r.name and o.type == r.type
                          and o.id != r.id and o.id not in going]
                if not others:  # never the last record of a name
                    kept[node].append(r)
                    continue
                going.add(r.id)
                removed[node].append(r)
        deletes = [r for rs in removed.values() for r in rs]
        if deletes:
            rec.apply(self._zone_id, dr.Plan(deletes=deletes), self._spec())
        return removed, kept

    def _apply_restores(self, nodes: list[str]) -> dict[str, int]:
        from hostmesh.module_utils import _dns_reconcile as dr

        rec = self._reconciler()
        owned = self._owned(rec)
        present = {(r.name, r.type, r.content, r.comment) for r in owned}
        creates, counts = [], {}
        for node in nodes:
            counts[node] = 0
            for item in self.withdrawn.get(node, []):
                try:
                    r = dr.Record(name=str(item["name"]), type=str(item["type"]),
                                  content=str(item["content"]), ttl=int(item["ttl"]),
                                  proxied=bool(item["proxied"]), comment=str(item["comment"]))
                except (KeyError, TypeError, ValueError):
                    continue
                if r.comment != dr.owner_comment(self.s.cluster, node):
                    continue  # the state file never makes us write another node's record
                if (r.name, r.type, r.content, r.comment) in present:
                    continue  # already back (its DDNS timer or Ansible)
                creates.append(r)
                counts[node] += 1
        if creates:
            rec.apply(self._zone_id, dr.Plan(creates=creates), self._spec())
        return counts

    # -- one pass ---------------------------------------------------------------

    def _observe(self, now: float) -> dict[str, str]:
        rows = self.registry.db.execute("SELECT name, status, is_primary FROM nodes").fetchall()
        statuses = {}
        for name, status, _is_primary in rows:
            statuses[name] = status
            if self.seen.get(name, (None,))[0] != status:
                self.seen[name] = (status, now)
        for name in list(self.seen):
            if name not in statuses:
                del self.seen[name]
        return statuses

    def _hold(self, node: str, guard: str, text: str) -> None:
        if self.held.get(node) != guard:
            self.held[node] = guard
            log.warning("dns withdrawal held node=%s guard=%s %s", node, guard, text)
            if self.metrics is not None:
                self.metrics.dns_held.labels(guard).inc()

    async def run_once(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        statuses = self._observe(now)
        # nodes that left the registry: their records were meant to go anyway
        for gone in [n for n in self.withdrawn if n not in statuses]:
            del self.withdrawn[gone]
            self._save()
            log.info("dns withdrawal forgotten node=%s reason=node_deleted", gone)
        rows = self.registry.db.execute("SELECT name, is_primary FROM nodes").fetchall()
        primary = {name for name, is_primary in rows if is_primary}
        total = len(statuses)
        down = [n for n, s in statuses.items() if s in DOWN and n not in primary]

        def may_change(node: str) -> bool:
            return now - self.changed_at.get(node, float("-inf")) >= self.s.min_change_interval

        to_withdraw = []
        for node in down:
            status, since = self.seen[node]
            if node in self.withdrawn or now - since < self.s.withdraw_after:
                continue
            if len(down) * 2 >= total:
                self._hold(node, "half_cluster_offline",
                           f"offline={len(down)} nodes={total} reason=the primary sees half or "
                           "more of the cluster offline and may be the partitioned one")
                continue
            if not may_change(node):
                self._hold(node, "change_interval",
                           f"min_change_interval={self.s.min_change_interval:g}s")
                continue
            to_withdraw.append(node)
        to_restore = [n for n in self.withdrawn if statuses.get(n) == "online"
                      and now - self.seen[n][1] >= self.s.restore_after and may_change(n)]
        if not to_withdraw and not to_restore:
            return
        try:
            if to_withdraw:
                removed, kept = await asyncio.to_thread(self._apply_withdrawals, to_withdraw)
                for node in to_withdraw:
                    self.withdrawn[node] = [
                        {k: v for k, v in r.as_dict().items() if k != "id"}
                        for r in removed[node]]
                    self.changed_at[node] = now
                    self.held.pop(node, None)
                    status, since = self.seen[node]
                    names = ",".join(sorted({r.name for r in removed[node]})) or "-"
                    log.warning("dns records withdrawn node=%s reason=%s_for_%ds records=%d "
                                "names=%s kept_last_of_name=%d", node, status, now - since,
                                len(removed[node]), names, len(kept[node]))
                    for r in kept[node]:
                        self._hold(node, "last_record_of_name",
                                   f"name={r.name} type={r.type} reason=no other record of "
                                   "the cluster would remain under this name")
                    if self.metrics is not None and removed[node]:
                        self.metrics.dns_changes.labels("withdraw").inc(len(removed[node]))
                self._save()
            if to_restore:
                counts = await asyncio.to_thread(self._apply_restores, to_restore)
                for node in to_restore:
                    since = self.seen[node][1]
                    log.warning("dns records restored node=%s reason=online_for_%ds records=%d",
                                node, now - since, counts[node])
                    del self.withdrawn[node]
                    self.changed_at[node] = now
                    self.held.pop(node, None)
                    if self.metrics is not None and counts[node]:
                        self.metrics.dns_changes.labels("restore").inc(counts[node])
                self._save()
        except Exception as exc:  # noqa: BLE001 - logged, counted, retried next pass
            self._zone_id = None
            if self.metrics is not None:
                self.metrics.dns_failures.inc()
            log.error("dns update failed withdraw=%s restore=%s error=%s reason=%s",
                      ",".join(to_withdraw) or "-", ",".join(to_restore) or "-",
                      type(exc).__name__, _one_line(str(exc)))

    async def run(self) -> None:
        log.info("health-aware dns on zone=%s cluster=%s withdraw_after=%gs restore_after=%gs",
                 self.s.zone, self.s.cluster, self.s.withdraw_after, self.s.restore_after)
        while True:
            try:
                await self.run_once()
            except Exception:  # keep going whatever happened to one pass
                log.exception("dns withdrawal pass failed")
            await asyncio.sleep(self.s.interval)


def _one_line(text: str) -> str:
    return '"' + " ".join(text.split())[:300].replace('"', "'") + '"'
