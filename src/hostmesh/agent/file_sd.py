"""Prometheus follows the primary's registry (issue 17): file-based service discovery.

On the primary, when ``PROMETHEUS_SD_DIR`` is set (the prometheus role sets it in
a drop-in of ``hostmesh-agent.service``, with ``ReadWritePaths`` for that
directory), the agent keeps two Prometheus ``file_sd`` files there equal to the
registry:

* ``agents.json``: every registered node's ``<mesh address>:<agent port>``;
* ``traefik.json``: every registered node's ``<mesh address>:<PROMETHEUS_SD_TRAEFIK_PORT>``
  (only when that is set; else the file is removed).

Each target group is one node, labelled ``instance: <node name>`` like the role's
static targets (a ``node`` target label would clash with the primary's per-node
series, which carry their own ``node`` label).

Only what the primary itself checked goes in: a node's name (``NAME_RE``, checked
again here) and the mesh address it registered from (the registration must come
from that address, inside ``MESH_SUBNET``; checked again here). The port is the
primary's own ``agent_port`` (every registration's endpoint must use it), never
anything a node sent. A row that fails a check is left out and logged once.

The registry is read every ``INTERVAL`` seconds (registrations, admin changes and
deletions all land there); the files are rewritten only when the targets change,
atomically (``.<name>.*.tmp`` + rename; Prometheus reads ``*.json`` names only),
mode 0640. The role makes the directory setgid with Prometheus' group, so its
user can read them and nothing else can.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from hostmesh.agent.config import NAME_RE

log = logging.getLogger("hostmesh.agent")

INTERVAL = 2.0
AGENTS_FILE = "agents.json"
TRAEFIK_FILE = "traefik.json"


class FileSdInvalid(ValueError):
    pass


@dataclass(frozen=True)
class FileSdSettings:
    directory: Path
    traefik_port: int | None


def load_settings(env: dict[str, str], is_primary: bool) -> FileSdSettings | None:
    """PROMETHEUS_SD_DIR (absolute; "" = off), PROMETHEUS_SD_TRAEFIK_PORT ("" = no Traefik
    targets). Only on the primary: a secondary has no registry."""
    raw = (env.get("PROMETHEUS_SD_DIR") or "").strip()
    if not raw:
        return None
    if not raw.startswith("/") or "\0" in raw or len(raw) > 4096:
        raise FileSdInvalid(f"PROMETHEUS_SD_DIR={raw!r}: expected an absolute directory path "
                            "(the prometheus role sets it), or leave it unset")
    port_raw = (env.get("PROMETHEUS_SD_TRAEFIK_PORT") or "").strip()
    port = None
    if port_raw:
        if not port_raw.isdigit() or not 0 < int(port_raw) < 65536:
            raise FileSdInvalid(f"PROMETHEUS_SD_TRAEFIK_PORT={port_raw!r}: expected a port "
                                "1-65535, or leave it unset for no Traefik targets")
        port = int(port_raw)
    if not is_primary:
        return None
    return FileSdSettings(Path(raw), port)


def _host(address: str, subnet, allow_loopback: bool) -> str | None:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if ip not in subnet and not (allow_loopback and ip.is_loopback):
        return None
    return f"[{ip}]" if ip.version == 6 else str(ip)


def build_targets(rows, *, subnet, agent_port: int, traefik_port: int | None,
                  allow_loopback: bool = False) -> tuple[list, list, list[str]]:
    """(agent groups, traefik groups, names left out) from (name, wireguard_ip) rows."""
    agents, traefik, skipped = [], [], []
    for name, address in sorted(rows, key=lambda row: str(row[0])):
        host = _host(address, subnet, allow_loopback) if isinstance(address, str) else None
        if not isinstance(name, str) or not NAME_RE.fullmatch(name) or host is None:
            skipped.append(name if isinstance(name, str) and NAME_RE.fullmatch(name)
                           else "<invalid name>")
            continue
        agents.append({"targets": [f"{host}:{agent_port}"], "labels": {"instance": name}})
        if traefik_port is not None:
            traefik.append({"targets": [f"{host}:{traefik_port}"], "labels": {"instance": name}})
    return agents, traefik, skipped


def _write(path: Path, groups: list) -> None:
    from hostmesh.module_utils._atomic import write_atomic

    write_atomic(str(path), json.dumps(groups, indent=1, sort_keys=True) + "\n", mode=0o640)


class FileSdWriter:
    def __init__(self, settings: FileSdSettings, *, subnet, agent_port: int,
                 allow_loopback: bool = False):
        self.settings = settings
        self.subnet = subnet
        self.agent_port = agent_port
        self.allow_loopback = allow_loopback
        self.written: tuple | None = None
        self.logged_skipped: list[str] = []

    def targets(self, registry) -> tuple[list, list]:
        rows = registry.db.execute("SELECT name, wireguard_ip FROM nodes").fetchall()
        agents, traefik, skipped = build_targets(
            rows, subnet=self.subnet, agent_port=self.agent_port,
            traefik_port=self.settings.traefik_port, allow_loopback=self.allow_loopback)
        if skipped != self.logged_skipped:
            if skipped:
                log.warning("prometheus targets: left out nodes=%s reason=no_mesh_address_"
                            "in_MESH_SUBNET", ",".join(skipped)[:500])
            self.logged_skipped = skipped
        return agents, traefik

    def apply(self, agents: list, traefik: list) -> bool:
        """Write the files when the targets changed (or a file is gone); True if written."""
        directory = self.settings.directory
        state = (json.dumps(agents), json.dumps(traefik))
        traefik_path = directory / TRAEFIK_FILE
        present = (directory / AGENTS_FILE).exists() and (
            traefik_path.exists() == (self.settings.traefik_port is not None))
        if state == self.written and present:
            return False
        _write(directory / AGENTS_FILE, agents)
        if self.settings.traefik_port is not None:
            _write(traefik_path, traefik)
        else:
            try:
                os.unlink(traefik_path)
            except FileNotFoundError:
                pass
        self.written = state
        log.info("prometheus targets written nodes=%d dir=%s", len(agents), directory)
        return True


async def run(api) -> None:
    """The primary's duty: keep the files equal to the registry (no-op when off)."""
    settings = getattr(api.cfg, "file_sd", None)
    if settings is None or api.registry is None:
        return
    writer = FileSdWriter(settings, subnet=api.cfg.mesh_subnet, agent_port=api.cfg.agent_port,
                          allow_loopback=api.cfg.allow_loopback_endpoints)
    problem = None
    while True:
        try:  # the registry on the loop's thread (its connection), the files in a thread
            agents, traefik = writer.targets(api.registry)
            await asyncio.to_thread(writer.apply, agents, traefik)
            problem = None
        except Exception as exc:  # noqa: BLE001 - never stop the primary's other duties
            reason = (f"{exc.strerror} (the prometheus role creates the directory, "
                      "writable by this agent's user)" if isinstance(exc, OSError)
                      and exc.strerror else " ".join(str(exc).split())[:200])
            if reason != problem:  # once per distinct problem, not every INTERVAL
                log.warning("prometheus targets not written dir=%s reason=%s",
                            settings.directory, reason)
            problem = reason
        await asyncio.sleep(INTERVAL)
