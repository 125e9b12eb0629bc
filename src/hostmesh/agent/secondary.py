"""A secondary's duties: auto-register (forever, capped backoff) and heartbeat."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time

from hostmesh import __version__
from hostmesh.agent import security
from hostmesh.agent.config import Config
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
    text = " ".join(str(exc).split())[:300]  # one line, whatever the server answered
    return '"' + text.replace('"', "'") + '"'


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
        self._load_primary()

    # -- primary key hashes learned from the primary -----------------------

    def _load_primary(self) -> None:
        try:
            data = json.loads(self.primary_file.read_text(encoding="utf-8"))
            learned = [h for h in data.get("primary_key_sha256", []) if isinstance(h, str)]
        except (OSError, ValueError, AttributeError):
            learned = []
        self._merge_hashes(learned, persist=False)

    def _merge_hashes(self, hashes: list, persist: bool = True) -> None:
        hashes = [h for h in hashes if isinstance(h, str) and len(h) == 64]
        if not hashes:
            return
        # env-provided hashes stay trusted; learned ones replace earlier learned ones
        trusted = list(dict.fromkeys(self.cfg.primary_key_hashes + hashes))
        if trusted != self.api.trusted_primary_hashes:
            self.api.trusted_primary_hashes = trusted
            if persist:
                security.write_private(self.primary_file,
                                       json.dumps({"primary_key_sha256": hashes}) + "\n")

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
            self._merge_hashes(answer.get("primary_key_sha256") or [])
            self.api.registered = True
            log.info("auto-registration successful node=%s id=%s status=%d attempt=%d",
                     self.cfg.node_name, self.cfg.node_id, status, attempt)
            return

    # -- heartbeats ---------------------------------------------------------

    async def heartbeat(self) -> bool:
        body = {"version": __version__}
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
            return False
        self._merge_hashes(answer.get("primary_key_sha256") or [])
        return True

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
