"""Wire configuration, registry, API and background duties into one uvicorn server.

uvicorn runs with its pure-Python parts only (`http="h11"`, `loop="asyncio"`):
no uvloop/httptools, so one wheelhouse serves amd64 and arm64 nodes.
"""

from __future__ import annotations

import logging

import uvicorn

from hostmesh.agent.api import AgentAPI, build_app
from hostmesh.agent.config import Config, ConfigError
from hostmesh.agent.registry import DatabaseError, Registry

log = logging.getLogger("hostmesh.agent")


def build(cfg: Config):
    """(api, app) for this configuration; opens the database on a primary."""
    registry = None
    if cfg.is_primary:
        try:
            registry = Registry(cfg.database_path)
        except DatabaseError as exc:
            raise ConfigError(str(exc)) from None
        registry.upsert_self(cfg.node_id, cfg.node_name, cfg.api_endpoint, cfg.api_key,
                             _version(), cfg.wireguard_ip, cfg.public_ip, cfg.labels)
    api = AgentAPI(cfg, registry)
    if cfg.is_primary:
        background = _primary_duties
    else:
        background = _secondary_duties
    return api, build_app(api, background)


def _version() -> str:
    from hostmesh import __version__

    return __version__


async def _primary_duties(api: AgentAPI) -> None:
    await api.checker.run()


async def _secondary_duties(api: AgentAPI) -> None:
    from hostmesh.agent.secondary import Secondary

    await Secondary(api.cfg, api).run()


async def serve(cfg: Config) -> int:
    from hostmesh.agent.main import summary

    api, app = build(cfg)
    for name in cfg.generated:
        log.info("generated %s and stored it in %s", name, cfg.data_dir)
    if cfg.is_primary and not cfg.admin_token_hashes:
        log.warning("no ADMIN_TOKEN or ADMIN_TOKEN_SHA256 set: the admin API refuses every "
                    "request")
    if cfg.is_primary and not cfg.registration_token_hashes:
        log.warning("no REGISTRATION_TOKEN or REGISTRATION_TOKEN_SHA256 set: nodes can only "
                    "register with invites (POST /api/invites)")
    log.info("agent starting %s", summary(cfg))
    server = uvicorn.Server(uvicorn.Config(
        app, host=cfg.host, port=cfg.port, http="h11", loop="asyncio", lifespan="on",
        access_log=False, log_config=None, server_header=False,
        h11_max_incomplete_event_size=16384,
    ))
    try:
        await server.serve()
    except SystemExit:  # uvicorn exits this way when it cannot bind
        pass
    finally:
        if api.registry is not None:
            api.registry.close()
    if not server.started:
        log.error("agent could not listen on %s:%d; is the port in use or the address not "
                  "on this host? (SERVER_ADDRESS)", cfg.host, cfg.port)
        return 1
    return 0
