"""Routing follows the primary's health view (issue 17).

Three parts, each small:

* the primary's view: the names of the nodes it sees offline (or unreachable),
  added to every heartbeat answer as ``offline_nodes``. It sends an empty list
  while half or more of the cluster is not online (then the primary is the likely
  partitioned one, the same guard as the DNS withdrawal) or when more than
  ``MAX_OFFLINE`` nodes are down (the answer stays small).
* the agent's part (:class:`RoutingView`, primary and secondaries): once the
  traefik role created ``ROUTING_INBOX_DIR`` (``DATA_DIR/routing-inbox``), the agent
  keeps ``<inbox>/offline.json`` equal to the last view it got from the primary (a
  secondary: checked again, see :func:`check_offline_nodes`; dropped to ``[]`` when
  no fresh view came for ``ROUTING_VIEW_TTL`` seconds, so a secondary cut off from
  the primary routes to every peer and lets Traefik's own probes decide).
* the root-run installer (``python -m hostmesh.agent.routing install``, started by
  the ``hostmesh-routes.path`` unit when the inbox changes, and by the traefik role
  when the routes changed) renders Traefik's dynamic file from the routes the role
  wrote (``/etc/traefik/hostmesh-routes.json``, the whole config of this node)
  without the servers of the offline peers. It never empties a load balancer: a
  service whose every server is on an offline node keeps them all. The agent can
  only *remove peers* this way: it never writes Traefik's files itself.

The filtered file is written only when its content changes (every reload of
Traefik marks all servers up again until their next probe).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from hostmesh.agent.config import NAME_RE

log = logging.getLogger("hostmesh.agent")

MAX_OFFLINE = 256  # names in one heartbeat answer; more down nodes: nothing is applied
DOWN = ("offline", "unreachable")
VIEW_FILE = "offline.json"
SOURCE_FORMAT = 1


class RoutingInvalid(ValueError):
    pass


def check_offline_nodes(value: object) -> list[str]:
    """The primary's ``offline_nodes``, checked strictly: a list of at most MAX_OFFLINE
    distinct node names. Raises RoutingInvalid saying what is wrong."""
    if not isinstance(value, list):
        raise RoutingInvalid(f"offline_nodes must be a list of node names, got "
                             f"{type(value).__name__}")
    if len(value) > MAX_OFFLINE:
        raise RoutingInvalid(f"offline_nodes has {len(value)} names, at most {MAX_OFFLINE}")
    names = []
    for item in value:
        if not isinstance(item, str) or not NAME_RE.fullmatch(item):
            raise RoutingInvalid("offline_nodes: every entry must be a node name (letters, "
                                 "digits, '-', '_', '.'), got " + repr(item)[:80])
        names.append(item)
    if len({n.lower() for n in names}) != len(names):
        raise RoutingInvalid("offline_nodes lists a node twice")
    return sorted(names)


# -- the primary's view ------------------------------------------------------------------


def offline_view(rows: list[tuple[str, str, int]]) -> tuple[list[str], str | None]:
    """(names to send, why nothing is sent) from the registry's (name, status, is_primary)."""
    total = len(rows)
    down = sorted(name for name, status, is_primary in rows
                  if status in DOWN and not is_primary)
    if not down:
        return [], None
    if 2 * len(down) >= total:
        return [], (f"half_cluster_offline offline={len(down)} nodes={total} reason=the "
                    "primary sees half or more of the cluster offline and may be the "
                    "partitioned one")
    if len(down) > MAX_OFFLINE:
        return [], f"too_many_offline offline={len(down)} max={MAX_OFFLINE}"
    return down, None


class PrimaryView:
    """The primary's offline list, read from the registry at most once per `ttl` seconds
    (heartbeats are the hot path of a big cluster)."""

    def __init__(self, registry, ttl: float = 0.5, clock=time.monotonic):
        self.registry = registry
        self.ttl = ttl
        self.clock = clock
        self._at = -1e18
        self._names: list[str] = []
        self._held: str | None = None

    def offline_nodes(self) -> list[str]:
        now = self.clock()
        if now - self._at >= self.ttl:
            rows = self.registry.db.execute(
                "SELECT name, status, is_primary FROM nodes").fetchall()
            names, held = offline_view(rows)
            if held != self._held and held is not None:
                log.warning("routing view held guard=%s", held)
            elif names != self._names:
                log.info("routing view offline=%s", ",".join(names) or "-")
            self._names, self._held, self._at = names, held, now
        return list(self._names)


# -- the agent's part ----------------------------------------------------------------------


class RoutingSettings:
    def __init__(self, mode: str, inbox_dir: Path, ttl: float):
        self.mode, self.inbox_dir, self.ttl = mode, inbox_dir, ttl

    def enabled(self) -> bool:
        """auto (default): on once the traefik role created the inbox (no restart needed)."""
        if self.mode == "false":
            return False
        return self.inbox_dir.is_dir()


def load_settings(env: dict[str, str], data_dir: Path,
                  heartbeat_interval: float) -> RoutingSettings:
    """ROUTING_VIEW (auto|true|false), ROUTING_INBOX_DIR, ROUTING_VIEW_TTL."""
    mode = (env.get("ROUTING_VIEW") or "auto").strip().lower()
    if mode not in ("auto", "true", "false"):
        raise RoutingInvalid(f"ROUTING_VIEW={mode!r}: use auto (on when the traefik role "
                             "created ROUTING_INBOX_DIR), true or false")
    raw = (env.get("ROUTING_INBOX_DIR") or "").strip()
    if raw and (not raw.startswith("/") or "\0" in raw):
        raise RoutingInvalid(f"ROUTING_INBOX_DIR={raw!r}: expected an absolute path")
    inbox = Path(raw) if raw else data_dir / "routing-inbox"
    raw_ttl = (env.get("ROUTING_VIEW_TTL") or "").strip()
    try:
        ttl = float(raw_ttl) if raw_ttl else 3 * heartbeat_interval + 5
    except ValueError:
        raise RoutingInvalid(f"ROUTING_VIEW_TTL={raw_ttl!r}: expected seconds") from None
    if not (math.isfinite(ttl) and ttl > 0):  # also refuses nan and inf
        raise RoutingInvalid(f"ROUTING_VIEW_TTL={raw_ttl!r}: must be more than 0")
    return RoutingSettings(mode, inbox, ttl)


class RoutingView:
    """Keeps ``<inbox>/offline.json`` equal to the primary's latest view."""

    def __init__(self, settings: RoutingSettings, clock=time.monotonic):
        self.settings = settings
        self.clock = clock
        self.last_fresh: float | None = None
        self.written: list[str] | None = None

    def _write(self, names: list[str]) -> None:
        if names == self.written and self._current() == names:
            return
        inbox = self.settings.inbox_dir
        if not self.settings.enabled():
            return
        if self.settings.mode == "true":
            inbox.mkdir(mode=0o700, parents=True, exist_ok=True)
        # staged outside the watched directory, then renamed in: the installer's path
        # unit starts once, on the whole file
        staging = inbox / ".staging"
        staging.mkdir(mode=0o700, exist_ok=True)
        tmp = staging / VIEW_FILE
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps({"offline_nodes": names}) + "\n")
        os.replace(tmp, inbox / VIEW_FILE)
        log.info("routing view written offline=%s file=%s", ",".join(names) or "-",
                 inbox / VIEW_FILE)
        self.written = names

    def _current(self) -> list[str] | None:
        try:
            data = json.loads((self.settings.inbox_dir / VIEW_FILE).read_text("utf-8"))
            return data.get("offline_nodes") if isinstance(data, dict) else None
        except (OSError, ValueError):
            return None

    def apply(self, names: list[str]) -> None:
        """A fresh view (already checked)."""
        self.last_fresh = self.clock()
        try:
            self._write(names)
        except OSError as exc:
            log.warning("routing view not written reason=%s", exc.strerror)

    def offer(self, answer: dict) -> None:
        """A secondary: the heartbeat answer of the (already authenticated) primary."""
        if "offline_nodes" not in answer:
            self.expire()  # an older primary: no view; a stale one goes after the TTL
            return
        try:
            names = check_offline_nodes(answer["offline_nodes"])
        except RoutingInvalid as exc:
            log.error("routing view refused reason=%s", str(exc)[:200])
            self.expire()  # the last good view holds until the TTL
            return
        self.apply(names)

    def expire(self) -> None:
        """No fresh view for ROUTING_VIEW_TTL: route to every peer again."""
        if self.written and (self.last_fresh is None
                             or self.clock() - self.last_fresh > self.settings.ttl):
            log.warning("routing view expired after=%.0fs action=route to every peer",
                        self.settings.ttl)
            try:
                self._write([])
            except OSError as exc:
                log.warning("routing view not written reason=%s", exc.strerror)


# -- the root-run installer -------------------------------------------------------------


def _server_host(server: dict) -> str | None:
    if not isinstance(server, dict):
        return None
    if isinstance(server.get("url"), str):
        try:
            return urlsplit(server["url"]).hostname
        except ValueError:
            return None
    if isinstance(server.get("address"), str):
        host = server["address"].rsplit(":", 1)[0]
        return host[1:-1] if host.startswith("[") else host
    return None


def apply_view(source: dict, offline: list[str]) -> tuple[dict, dict, dict]:
    """Traefik's dynamic config of this node without the servers of `offline` peers.

    Returns (config, removed, kept): removed maps ``<proto>/<service>`` to the nodes
    taken out; kept to the offline nodes left in because removing them would empty
    the load balancer. Pure function; `source` is the file the traefik role wrote."""
    config = json.loads(json.dumps(source["config"]))  # a deep copy
    self_name = source.get("node")
    nodes = source.get("nodes") or {}
    by_address = {str(addr).lower(): name for name, addr in nodes.items()}
    down = {n for n in offline if n in nodes and n != self_name}
    removed: dict[str, list[str]] = {}
    kept: dict[str, list[str]] = {}
    if not down:
        return config, removed, kept
    for proto in ("http", "tcp"):
        services = (config.get(proto) or {}).get("services") or {}
        for name in sorted(services):
            lb = services[name].get("loadBalancer") if isinstance(services[name], dict) \
                else None
            if not isinstance(lb, dict) or not isinstance(lb.get("servers"), list):
                continue
            servers = lb["servers"]
            owners = [by_address.get((_server_host(s) or "").lower()) for s in servers]
            gone = sorted({o for o in owners if o in down})
            if not gone:
                continue
            left = [s for s, o in zip(servers, owners) if o not in down]
            if not left:
                kept[f"{proto}/{name}"] = gone
                continue
            lb["servers"] = left
            removed[f"{proto}/{name}"] = gone
    return config, removed, kept


def render(config: dict) -> str:
    """The same serialisation as the traefik_config module (so a view with nothing
    offline gives the very file the role would write)."""
    return json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def read_source(path: Path) -> dict:
    data = json.loads(path.read_text("utf-8"))
    if not isinstance(data, dict) or data.get("hostmesh_routes") != SOURCE_FORMAT \
            or not isinstance(data.get("config"), dict) \
            or not isinstance(data.get("nodes"), dict):
        raise RoutingInvalid(f"{path} is not a hostmesh routes file (format "
                             f"{SOURCE_FORMAT}); run the traefik role again")
    return data


def read_view(inbox: Path) -> list[str]:
    """The agent's proposal; anything unreadable or invalid counts as nothing offline."""
    path = inbox / VIEW_FILE
    try:
        if path.stat().st_size > 64 * 1024:
            raise RoutingInvalid(f"{path} is larger than 64 KiB")
        data = json.loads(path.read_text("utf-8"))
        if not isinstance(data, dict):
            raise RoutingInvalid(f"{path} must hold an object")
        return check_offline_nodes(data.get("offline_nodes"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:  # RoutingInvalid is a ValueError
        log.error("routing view ignored file=%s reason=%s", path, str(exc)[:200])
        return []


def _stamp(inbox: Path, source_path: Path) -> tuple:
    stamps = []
    for path in (inbox, inbox / VIEW_FILE, source_path):
        try:
            st = path.stat()
            stamps.append((st.st_mtime_ns, st.st_ino, st.st_size))
        except OSError:
            stamps.append(None)
    return tuple(stamps)


def install(source_path: Path, inbox: Path, dynamic_file: Path) -> int:
    """Write `dynamic_file` from the routes and the agent's view; 0 when done or when
    there are no routes (the feature is off: the role writes Traefik's file itself).
    A path unit does not start a service again for changes made while it runs: when
    the view or the routes changed meanwhile, look again (a few times)."""
    rc = 0
    for _attempt in range(5):
        before = _stamp(inbox, source_path)
        rc = _install_once(source_path, inbox, dynamic_file)
        if _stamp(inbox, source_path) == before:
            break
    return rc


def _install_once(source_path: Path, inbox: Path, dynamic_file: Path) -> int:
    try:
        source = read_source(source_path)
    except FileNotFoundError:
        log.info("routing install skipped reason=no routes file %s (the feature is off)",
                 source_path)
        return 0
    except (OSError, ValueError) as exc:
        log.error("routing install failed reason=%s", str(exc)[:300])
        return 1
    offline = read_view(inbox)
    config, removed, kept = apply_view(source, offline)
    content = render(config)
    try:
        before = dynamic_file.read_text("utf-8")
    except OSError:
        before = None
    for service, names in sorted(kept.items()):
        log.warning("routing kept service=%s nodes=%s reason=every server of the service "
                    "is on an offline node; Traefik's own checks decide", service,
                    ",".join(names))
    if before == content:
        return 0
    # keep the file's owner and mode; a new file: 0640, the group of Traefik's directory
    mode, uid, gid = 0o640, -1, -1
    try:
        st = dynamic_file.stat()
        mode, uid, gid = st.st_mode & 0o7777, st.st_uid, st.st_gid
    except OSError:
        try:
            gid = dynamic_file.parent.stat().st_gid
        except OSError:
            pass
    tmp = dynamic_file.with_name(f".{dynamic_file.name}.hostmesh.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(content)
        fh.flush()
        os.fsync(fh.fileno())
    if (uid, gid) != (-1, -1):
        try:
            os.chown(tmp, uid, gid)
        except PermissionError:  # not root (tests): the file stays the caller's
            pass
    os.chmod(tmp, mode)
    os.replace(tmp, dynamic_file)
    log.info("routing installed file=%s offline=%s removed=%s", dynamic_file,
             ",".join(offline) or "-",
             ";".join(f"{s}:{','.join(n)}" for s, n in sorted(removed.items())) or "-")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hostmesh.agent.routing",
        description="Render Traefik's routes of this node without the peers the primary "
                    "sees offline (run as root by hostmesh-routes.service)")
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install", help="write the dynamic file from the routes and the "
                                          "agent's view")
    inst.add_argument("--source", required=True,
                      help="the routes the traefik role wrote (hostmesh-routes.json)")
    inst.add_argument("--inbox", required=True, help="the agent's ROUTING_INBOX_DIR")
    inst.add_argument("--dynamic-file", required=True,
                      help="Traefik's dynamic file to write (/etc/traefik/dynamic/hostmesh.yml)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s",
                        stream=sys.stderr)
    return install(Path(args.source), Path(args.inbox), Path(args.dynamic_file))


if __name__ == "__main__":
    sys.exit(main())
