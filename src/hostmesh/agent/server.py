"""Wire configuration, registry, API and background duties into one uvicorn server.

uvicorn runs with its pure-Python parts only (`http="h11"`, `loop="asyncio"`):
no uvloop/httptools, so one wheelhouse serves amd64 and arm64 nodes.

Anonymous clients cannot stall it (issue 13):
- a connection must deliver a whole request within REQUEST_TIMEOUT seconds of
  connecting (or of its previous answer) and may idle IDLE_TIMEOUT seconds
  between requests (uvicorn's keep-alive timeout), else it is closed;
- at most MAX_CONNECTIONS connections are open (and never more than the file
  descriptor limit allows, which the agent raises to its hard limit at start);
  a new connection beyond that closes the oldest one still waiting for its
  request, so a crowd of half-open connections pushes out itself, not a real
  client whose request arrives in one packet;
- X-Forwarded-For is believed only from TRUSTED_PROXIES (default: nobody);
- identical warnings and errors are logged at a bounded rate (security.RepeatFilter).
"""

from __future__ import annotations

import asyncio
import logging
import socket

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from hostmesh.agent.api import AgentAPI, build_app
from hostmesh.agent.config import Config, ConfigError
from hostmesh.agent.registry import DatabaseError, Registry

log = logging.getLogger("hostmesh.agent")
FD_RESERVE = 64  # descriptors kept for the database, the log, health-check probes


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
    from hostmesh.agent import file_sd

    duties = [api.checker.run(), _primary_routing(api), file_sd.run(api)]
    if api.cfg.dns is not None:
        from hostmesh.agent.dns_withdrawal import DnsWithdrawal

        dns = DnsWithdrawal(api.cfg.dns, api.registry, api.cfg.data_dir, api.metrics)
        duties.append(dns.run())
    await asyncio.gather(*duties)


async def _primary_routing(api: AgentAPI) -> None:
    """The primary's own Traefik follows its own view (issue 17), checked every second."""
    if api.cfg.routing is None or api.routing_view is None:
        return
    from hostmesh.agent.routing import RoutingView

    view = RoutingView(api.cfg.routing)
    while True:
        try:  # the registry is read here, on the loop's thread; the file in a thread
            await asyncio.to_thread(view.apply, api.routing_view.offline_nodes())
        except Exception as exc:  # noqa: BLE001 - never stop the primary's other duties
            log.warning("routing view not updated reason=%s", " ".join(str(exc).split())[:200])
        await asyncio.sleep(1.0)


async def _secondary_duties(api: AgentAPI) -> None:
    from hostmesh.agent.secondary import Secondary

    await Secondary(api.cfg, api).run()


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the soft limit in force."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = max(soft, 65536)
        if soft != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        return int(soft) if soft != resource.RLIM_INFINITY else 1 << 20
    except (ImportError, OSError, ValueError):
        return 1024


def accept_backlog(fd_limit: int) -> int:
    """How many connections asyncio accepts in one go (the listen backlog)."""
    return max(16, min(2048, fd_limit // 8))


def connection_cap(cfg: Config, fd_limit: int) -> int:
    """Connections open at once: MAX_CONNECTIONS, but always below the descriptor limit.

    asyncio accepts a whole backlog at once, and a few such bursts can arrive before
    the protocol sees the first one (and before a closed connection's descriptor is
    released), so the cap leaves four bursts plus the agent's own files free.
    """
    room = fd_limit - FD_RESERVE - 4 * accept_backlog(fd_limit)
    return max(16, min(cfg.max_connections, room))


def guarded_protocol(request_timeout: float, max_connections: int):
    """An H11Protocol class with a request timeout and a connection cap (see above)."""
    waiting: dict[GuardedH11, None] = {}  # connections waiting for a request, oldest first

    class GuardedH11(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                victim = next(iter(waiting), None)
                if victim is None:  # every connection is busy: refuse the newcomer
                    transport.abort()
                    return
                victim._expire()
            self._guard()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._guard()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._guard()

        def connection_lost(self, exc) -> None:
            self._cancel()
            super().connection_lost(exc)

        def _guard(self) -> None:
            # IDLE (no complete request head yet) or SEND_BODY: still receiving a request
            if self.transport.is_closing():
                self._cancel()
            elif self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
                if self._deadline is None:
                    self._deadline = self.loop.call_later(request_timeout, self._expire)
                    waiting[self] = None
            else:
                self._cancel()

        def _cancel(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            waiting.pop(self, None)

        def _expire(self) -> None:
            self._cancel()
            if not self.transport.is_closing():
                self.transport.abort()

    return GuardedH11


def bind(cfg: Config) -> list[socket.socket]:
    """One listening socket per SERVER_ADDRESS entry; a clear error when one fails."""
    sockets = []
    try:
        for host, port in cfg.listen:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise ConfigError(
                    f"cannot listen on {host}:{port}: {exc.strerror}; is the port in use, or "
                    "the address not on this host (is the WireGuard interface up)? Check "
                    "SERVER_ADDRESS / NODE_WIREGUARD_IP") from None
            sock.listen(accept_backlog(raise_fd_limit()))
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


async def serve(cfg: Config) -> int:
    from hostmesh.agent.main import summary

    fd_limit = raise_fd_limit()
    sockets = bind(cfg)
    api, app = build(cfg)
    for name in cfg.generated:
        log.info("generated %s and stored it in %s", name, cfg.data_dir)
    if cfg.is_primary and not cfg.admin_token_hashes:
        log.warning("no ADMIN_TOKEN or ADMIN_TOKEN_SHA256 set: the admin API refuses every "
                    "request")
    if cfg.is_primary and not cfg.registration_token_hashes:
        log.warning("no REGISTRATION_TOKEN or REGISTRATION_TOKEN_SHA256 set: nodes can only "
                    "register with invites (POST /api/invites)")
    cap = connection_cap(cfg, fd_limit)
    log.info("agent starting %s max_connections=%d", summary(cfg), cap)
    server = uvicorn.Server(uvicorn.Config(
        app, http=guarded_protocol(cfg.request_timeout, cap), loop="asyncio", lifespan="on",
        access_log=False, log_config=None, server_header=False,
        h11_max_incomplete_event_size=16384, timeout_keep_alive=cfg.idle_timeout,
        backlog=accept_backlog(fd_limit), proxy_headers=bool(cfg.trusted_proxies),
        forwarded_allow_ips=cfg.trusted_proxies or [],
    ))
    try:
        await server.serve(sockets=sockets)
    except SystemExit:  # uvicorn exits this way when it cannot start
        pass
    finally:
        if api.registry is not None:
            api.registry.close()
        for sock in sockets:
            sock.close()
    if not server.started:
        log.error("agent could not start on %s (SERVER_ADDRESS)", cfg.listen)
        return 1
    return 0
