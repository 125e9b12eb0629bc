"""A secondary's duties: auto-register (forever, capped backoff) and heartbeat."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time

from hostmesh import __version__
from hostmesh.agent import security
from hostmesh.agent.apps import AppsReader
from hostmesh.agent.config import ID_RE, Config
from hostmesh.agent.stats import SystemStats
from hostmesh.module_utils._agent_client import (
    AgentClient,
    AuthRejected,
    Credentials,
    HostmeshAPIError,
    NotFound,
)

log = logging.getLogger("hostmesh.agent")
PRIMARY_FILE = "primary.json"


def retry_delay(attempt: int, initial: float, cap: float) -> float:
    """Exponential backoff (x2 per attempt) capped at `cap`, with +-10 % jitter."""
    base = min(cap, initial * (2 ** min(attempt - 1, 30)))
    return min(cap, base * random.uniform(0.9, 1.1))


def _reason(exc: HostmeshAPIError) -> str:
    return _quote(str(exc))


def _quote(text: str) -> str:
    text = " ".join(text.split())[:300]  # one line, whatever the server answered
    return '"' + text.replace('"', "'") + '"'


def _hashes(value) -> list[str]:
    if not isinstance(value, list):
        return []
    return [h.lower() for h in value if isinstance(h, str) and re.fullmatch(r"[0-9a-fA-F]{64}", h)]


class Secondary:
    def __init__(self, cfg: Config, api):
        self.cfg = cfg
        self.api = api  # AgentAPI: receives the trusted primary hashes
        self.client = AgentClient(
            cfg.primary_url,
            Credentials(node_id=cfg.node_id, node_api_key=cfg.api_key),
            timeout=cfg.heartbeat_timeout,
        )
        # registration proves the node's current key in X-Node-API-Key: the previous key
        # while a rotation is under way (the body carries the new one), else the key itself
        self.register_client = AgentClient(
            cfg.primary_url,
            Credentials(node_id=cfg.node_id, node_api_key=cfg.previous_api_key or cfg.api_key),
            timeout=cfg.heartbeat_timeout,
        )
        self.primary_file = cfg.data_dir / PRIMARY_FILE
        self.stats = SystemStats(disk_path=str(cfg.data_dir))
        # the app containers of this node, from the local Docker Engine (issue 16)
        self.apps = AppsReader(cfg.apps_report_file, cfg.apps_report, log=log)
        # issue 15: fetch a certificate set when the heartbeat answer offers a new version
        self.tls = None
        tls = getattr(cfg, "tls", None)  # hostmesh.tls.agent.TlsSettings
        if tls is not None and tls.enabled(False):
            from hostmesh.tls.agent import Sync

            self.tls = Sync(tls, self.client, log)
        self._tls_task: asyncio.Task | None = None
        # issue 17: Traefik's peer lists follow the primary's offline_nodes
        self.routing = None
        if getattr(cfg, "routing", None) is not None:
            from hostmesh.agent.routing import RoutingView

            self.routing = RoutingView(cfg.routing)
        self._load_primary()

    # -- the primary's identity, pinned ----------------------------------------
    #
    # The first registration answer pins the primary (its id and key hash) in
    # DATA_DIR/primary.json; PRIMARY_KEY_SHA256 (set by the controller) pins the key
    # before any contact. An answer from another primary is refused: this node does
    # not register with it, and only the pinned primary's proofs are accepted.

    def _load_primary(self) -> None:
        try:
            data = json.loads(self.primary_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        if not isinstance(data, dict):
            data = {}
        pid = data.get("primary_id")
        self.pinned_id = pid if isinstance(pid, str) and ID_RE.fullmatch(pid) else None
        self.pinned_hashes = _hashes(data.get("primary_key_sha256"))
        self.api.primary_id = self.pinned_id
        self.api.trusted_primary_hashes = list(self.cfg.primary_key_hashes or self.pinned_hashes)

    def accept_primary(self, answer: dict) -> str | None:
        """None when `answer` comes from the pinned primary (pinning it on first contact),
        else why it is refused."""
        pid = answer.get("primary_id")
        hashes = _hashes(answer.get("primary_key_sha256"))
        if not isinstance(pid, str) or not ID_RE.fullmatch(pid) or not hashes:
            return "the answer does not say which primary it is (primary_id, primary_key_sha256)"
        if self.cfg.primary_key_hashes:
            if not set(hashes) & set(self.cfg.primary_key_hashes):
                return ("the primary's key is not one of PRIMARY_KEY_SHA256; another machine "
                        "answers at PRIMARY_NODE_URL, or the primary's key changed without "
                        "the controller updating this node")
        elif self.pinned_hashes and not set(hashes) & set(self.pinned_hashes):
            return (f"the primary's key differs from the one pinned in {self.primary_file}; "
                    "if the primary was replaced on purpose, delete that file (or set "
                    "PRIMARY_KEY_SHA256) and restart this agent")
        if self.pinned_id is not None and pid != self.pinned_id:
            return (f"the primary answers as {pid}, not as the pinned {self.pinned_id}; if "
                    f"the primary was replaced on purpose, delete {self.primary_file} and "
                    "restart this agent")
        if pid != self.pinned_id or hashes != self.pinned_hashes:
            security.write_private(self.primary_file, json.dumps(
                {"primary_id": pid, "primary_key_sha256": hashes}) + "\n")
            if self.pinned_id is None:
                log.info("primary pinned primary_id=%s file=%s", pid, self.primary_file)
            self.pinned_id, self.pinned_hashes = pid, hashes
        self.api.primary_id = pid
        self.api.trusted_primary_hashes = list(self.cfg.primary_key_hashes or hashes)
        return None

    # -- registration -------------------------------------------------------

    def registration_body(self) -> dict:
        body = {"id": self.cfg.node_id, "name": self.cfg.node_name,
                "api_endpoint": self.cfg.api_endpoint, "api_key": self.cfg.api_key,
                "version": __version__}
        if self.cfg.labels:  # else labels set by an admin survive re-registration
            body["labels"] = self.cfg.labels
        if self.cfg.registration_token:
            body["token"] = self.cfg.registration_token
        if self.cfg.wireguard_ip:
            body["wireguard_ip"] = self.cfg.wireguard_ip
        if self.cfg.public_ip:
            body["public_ip"] = self.cfg.public_ip
        return body

    async def register_until_done(self) -> None:
        """Retry registration with capped backoff; never gives up."""
        attempt = 0
        while True:
            attempt += 1
            log.info("attempting auto-registration primary_url=%s attempt=%d",
                     self.cfg.primary_url, attempt)
            try:
                status, answer = await asyncio.to_thread(self.register_client.register,
                                                         self.registration_body())
            except HostmeshAPIError as exc:
                delay = retry_delay(attempt, self.cfg.registration_retry_initial,
                                    self.cfg.registration_retry_max)
                log.warning("auto-registration failed attempt=%d reason=%s retry_in=%.1fs",
                            attempt, _reason(exc), delay)
                await asyncio.sleep(delay)
                continue
            refused = self.accept_primary(answer)
            if refused:
                delay = retry_delay(attempt, self.cfg.registration_retry_initial,
                                    self.cfg.registration_retry_max)
                log.error("auto-registration refused attempt=%d reason=%s retry_in=%.1fs",
                          attempt, _quote(refused), delay)
                await asyncio.sleep(delay)
                continue
            self.api.registered = True
            log.info("auto-registration successful node=%s id=%s status=%d attempt=%d",
                     self.cfg.node_name, self.cfg.node_id, status, attempt)
            return

    # -- heartbeats ---------------------------------------------------------

    async def heartbeat(self) -> bool:
        body = {"version": __version__}
        try:  # CPU, memory and disk for the primary's node list (issue 17)
            body["stats"] = self.stats.heartbeat()
        except (OSError, ValueError, IndexError):
            pass
        apps = await asyncio.to_thread(self.apps.read)
        if apps is not None:  # None: not read (APPS_REPORT=false or Docker unreadable)
            body["apps"] = apps
        if self.cfg.wireguard_ip:
            body["wireguard_ip"] = self.cfg.wireguard_ip
        if self.cfg.public_ip:
            body["public_ip"] = self.cfg.public_ip
        try:
            answer = await asyncio.to_thread(self.client.heartbeat, self.cfg.node_id, body)
        except (NotFound, AuthRejected) as exc:
            # the primary forgot us or no longer knows our key: register again
            log.warning("heartbeat failed reason=%s action=re-register", _reason(exc))
            self.api.registered = False
            await self.register_until_done()
            return False
        except HostmeshAPIError as exc:
            log.warning("heartbeat failed reason=%s", _reason(exc))
            self.expire_routing()
            return False
        refused = self.accept_primary(answer)
        if refused:
            log.error("heartbeat answer refused reason=%s", _quote(refused))
            self.expire_routing()
            return False
        self.offer_tls(answer)
        if self.routing is not None:  # only from the pinned primary (checked above)
            await asyncio.to_thread(self.routing.offer, answer)
        return True

    def expire_routing(self) -> None:
        if self.routing is not None:
            self.routing.expire()

    def offer_tls(self, answer: dict) -> None:
        """Fetch and install new certificate versions beside the heartbeats (one at a time)."""
        if self.tls is None or not self.tls.wanted(answer):
            return
        if self._tls_task is not None and not self._tls_task.done():
            return  # the next heartbeat offers it again
        self._tls_task = asyncio.get_running_loop().create_task(
            asyncio.to_thread(self.tls.run, answer))

    async def run(self) -> None:
        started = time.monotonic()
        await self.register_until_done()
        await asyncio.sleep(max(0.0, self.cfg.startup_heartbeat_delay -
                                (time.monotonic() - started)))
        while not await self.heartbeat():
            await asyncio.sleep(min(self.cfg.heartbeat_interval,
                                    self.cfg.registration_retry_max))
        log.info("startup heartbeat sent node=%s", self.cfg.node_name)
        while True:
            await asyncio.sleep(self.cfg.heartbeat_interval)
            if await self.heartbeat():
                log.debug("heartbeat sent node=%s", self.cfg.node_name)
