"""Agent configuration: environment (+ optional env file) parsed once into `Config`.

Every variable is documented in `hostmesh/agent/README.md`. Bad values raise
`ConfigError` with a message naming the variable and how to fix it; nothing
is started or written before the whole configuration is valid.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import os
import re
import socket
import stat
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from hostmesh.agent import security

# What a node's name and id may be, written once for the agent and the
# node_agent role's preflight (plugins/module_utils/_names.py in the collection).
from hostmesh.module_utils._names import (
    ID_RE,
    NAME_RE,
    name_problem,
)

DEFAULT_ENV_FILE = "/etc/hostmesh/agent.env"
DEFAULT_DATA_DIR = "/var/lib/hostmesh"
# issue 17: a dead node is offline within 15 s (checked 7 s after its last sign of
# life, once more 1 s after a failed check, each check at most HEALTH_CHECK_TIMEOUT
# 2 s), then backed off to 5 s, 30 s, 2 min, 5 min, 15 min and 30 min.
DEFAULT_BACKOFF = ("0:7:online,1:1:online,2:5:offline,4:30:offline,6:120:offline,"
                   "8:300:offline,11:900:unreachable,21:1800:unreachable")
STATUSES = ("online", "offline", "unreachable")
DEFAULT_PORT = 8080
DEFAULT_MESH_SUBNET = "10.50.0.0/24"


class ConfigError(Exception):
    """A configuration value is missing or wrong; the message says how to fix it."""


@dataclass(frozen=True)
class BackoffRow:
    min_failures: int
    interval: float
    status: str


@dataclass
class Config:
    is_primary: bool
    node_name: str
    node_id: str
    api_endpoint: str
    api_key: str
    host: str
    port: int
    data_dir: Path
    database_path: Path
    primary_url: str | None = None
    previous_api_key: str | None = None  # secondary: proves the old key when rotating
    registration_token: str | None = None  # secondary: what it sends
    registration_token_hashes: list[str] = field(default_factory=list)  # primary: accepted
    admin_token_hashes: list[str] = field(default_factory=list)
    metrics_token_hashes: list[str] = field(default_factory=list)  # GET /metrics (issue 17)
    primary_key_hashes: list[str] = field(default_factory=list)  # secondary: trusted primary keys
    wireguard_ip: str | None = None
    public_ip: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    health_check_interval: float = 7.0
    health_check_timeout: float = 2.0
    health_check_concurrency: int = 100
    backoff_table: list[BackoffRow] = field(default_factory=list)
    heartbeat_interval: float = 5.0
    heartbeat_timeout: float = 5.0
    startup_heartbeat_delay: float = 2.0
    registration_retry_initial: float = 2.0
    registration_retry_max: float = 300.0
    key_grace_seconds: float = 300.0
    invite_default_ttl: float = 3600.0
    invite_max_ttl: float = 7 * 86400.0
    registration_rate_limit: int = 60
    registration_rate_window: float = 60.0
    max_body_bytes: int = 65536
    log_level: str = "INFO"
    # issue 12/13: where the API listens and who may be checked / trusted
    listen: list[tuple[str, int]] = field(default_factory=list)
    agent_port: int = DEFAULT_PORT
    mesh_subnet: ipaddress.IPv4Network | ipaddress.IPv6Network = field(
        default_factory=lambda: ipaddress.ip_network(DEFAULT_MESH_SUBNET))
    allow_loopback_endpoints: bool = False
    allow_public_api: bool = False
    trusted_proxies: list[str] = field(default_factory=list)
    request_timeout: float = 10.0
    idle_timeout: float = 5.0
    max_connections: int = 4096
    generated: list[str] = field(default_factory=list)  # names of values generated+persisted
    dns: object | None = None  # dns_withdrawal.DnsSettings: health-aware DNS (issue 17)
    tls: object | None = None  # hostmesh.tls.agent.TlsSettings: certificates to nodes (issue 15)
    routing: object | None = None  # routing.RoutingSettings: Traefik follows the view (#17)
    # issue 16: report this node's app containers (label hostmesh.app) from the file that
    # the root-run `hostmesh apps-report` writes (the agent never reads Docker's socket)
    apps_report: bool = True
    apps_report_file: str = "/run/hostmesh-apps/apps.json"
    # issue 17: the node's DDNS updater status (exported in /metrics) and, on the
    # primary, Prometheus' file_sd targets (file_sd.FileSdSettings, off when None)
    ddns_status_file: str = "/var/lib/hostmesh-ddns/status.json"
    file_sd: object | None = None

    @property
    def role(self) -> str:
        return "primary" if self.is_primary else "secondary"

    def backoff_for(self, failures: int) -> BackoffRow:
        """The table row that applies after `failures` consecutive failures."""
        row = self.backoff_table[0]
        for candidate in self.backoff_table:
            if failures >= candidate.min_failures:
                row = candidate
        return row


def read_env_file(path: str | Path) -> dict[str, str]:
    """Parse a systemd-style env file (KEY=VALUE, # comments, optional quotes/export)."""
    values: dict[str, str] = {}
    text = Path(path).read_text(encoding="utf-8")
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            # never echo the line: it may hold a secret
            raise ConfigError(
                f"{path}:{lineno}: expected KEY=VALUE; fix or remove this line"
            )
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def env_file_mode_warning(path: str | Path) -> str | None:
    """A warning when others may read the env file, or its group write it (secrets)."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o027:  # 0640 with the agent's group is a fair setup; 0644 is not
        return f"env file {path} has mode {mode:04o}; run chmod 600 {path} (it holds secrets)"
    return None


def _bool(env: dict[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean; use true or false")


def _number(env: dict[str, str], name: str, default: float, *, minimum: float = 0.0,
            integer: bool = False) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "an integer" if integer else "a number of seconds"
        raise ConfigError(f"{name}={raw!r} is not {kind}") from None
    if not (math.isfinite(value) and value >= minimum):
        raise ConfigError(f"{name}={raw!r} must be a finite number >= {minimum}")
    return value


def _list(env: dict[str, str], name: str) -> list[str]:
    return [item.strip() for item in env.get(name, "").split(",") if item.strip()]


def _hashes(env: dict[str, str], plain_name: str, hash_name: str) -> list[str]:
    hashes = [security.sha256_hex(v) for v in _list(env, plain_name)]
    for h in _list(env, hash_name):
        if not re.fullmatch(r"[0-9a-fA-F]{64}", h):
            raise ConfigError(
                f"{hash_name} must be a comma-separated list of hex SHA-256 digests "
                "(64 hex characters each, e.g. from `printf %s TOKEN | sha256sum`)"
            )
        hashes.append(h.lower())
    return hashes


def parse_backoff(raw: str, name: str = "BACKOFF_TABLE") -> list[BackoffRow]:
    """Parse `min_failures:interval_seconds:status,...` (first row must start at 0)."""
    rows = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        parts = item.split(":")
        try:
            if len(parts) != 3:
                raise ValueError
            row = BackoffRow(int(parts[0]), float(parts[1]), parts[2].strip())
        except ValueError:
            raise ConfigError(
                f"{name}: row {item!r} is not min_failures:interval_seconds:status "
                f"(example: {DEFAULT_BACKOFF})"
            ) from None
        if row.status not in STATUSES or row.interval <= 0 or row.min_failures < 0:
            raise ConfigError(
                f"{name}: row {item!r}: status must be one of {', '.join(STATUSES)} and "
                "the interval > 0"
            )
        rows.append(row)
    if not rows or rows[0].min_failures != 0:
        raise ConfigError(f"{name}: the first row must start at 0 failures (example: "
                          f"{DEFAULT_BACKOFF})")
    if any(b.min_failures <= a.min_failures for a, b in itertools.pairwise(rows)):
        raise ConfigError(f"{name}: min_failures must increase from row to row")
    return rows


def parse_address(raw: str, name: str = "SERVER_ADDRESS") -> tuple[str, int]:
    raw = raw.strip()
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\[\]]*):(\d+)", raw)
    if not m:
        raise ConfigError(f"{name}={raw!r}: expected host:port, e.g. 10.50.0.1:8080 or "
                          "[fd00::1]:8080 (a comma-separated list for several)")
    host = m.group(1) or m.group(3) or "0.0.0.0"
    port = int(m.group(2) or m.group(4))
    if not 0 < port < 65536:
        raise ConfigError(f"{name}={raw!r}: port must be 1-65535")
    return host, port


WILDCARDS = ("0.0.0.0", "::")


def parse_addresses(raw: str, name: str = "SERVER_ADDRESS") -> list[tuple[str, int]]:
    """A comma-separated list of host:port ([addr]:port for IPv6), duplicates dropped."""
    out: list[tuple[str, int]] = []
    for item in raw.split(","):
        if item.strip():
            address = parse_address(item, name)
            if address not in out:
                out.append(address)
    if not out:
        raise ConfigError(f"{name} is empty; expected host:port[,host:port...]")
    return out


def _is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _in_subnet(host: str, subnet) -> bool:
    try:
        return ipaddress.ip_address(host) in subnet
    except ValueError:
        return False


def _listen(env: dict[str, str], wg: str | None, allow_public: bool) -> tuple[
        list[tuple[str, int]], int]:
    """(addresses to listen on, the agent port) from SERVER_ADDRESS / SERVER_PORT."""
    port_raw = (env.get("SERVER_PORT") or "").strip()
    port = DEFAULT_PORT
    if port_raw:
        if not port_raw.isdigit() or not 0 < int(port_raw) < 65536:
            raise ConfigError(f"SERVER_PORT={port_raw!r}: expected a port 1-65535")
        port = int(port_raw)
    raw = (env.get("SERVER_ADDRESS") or "").strip()
    if raw:
        listen = parse_addresses(raw)
        if not port_raw:
            port = listen[0][1]
    elif wg:
        listen = [(wg, port), ("127.0.0.1", port)]
    else:
        raise ConfigError(
            "no mesh address to listen on: NODE_WIREGUARD_IP is not set, and the API listens "
            "on the node's WireGuard address (and loopback) by default so that it is never "
            "reachable from a public network; set NODE_WIREGUARD_IP to this node's mesh "
            "address, or SERVER_ADDRESS explicitly (e.g. SERVER_ADDRESS=10.50.0.2:8080,"
            "127.0.0.1:8080)")
    wild = [h for h, _p in listen if h in WILDCARDS]
    if wild and not allow_public:
        raise ConfigError(
            f"SERVER_ADDRESS listens on every address ({wild[0]}), so the API would answer "
            "on public addresses too; list the mesh address and loopback instead (e.g. "
            "SERVER_ADDRESS=10.50.0.2:8080,127.0.0.1:8080), or set ALLOW_PUBLIC_API=true "
            "if a firewall keeps the port off public networks")
    return listen, port


def _url(value: str, name: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name}={value!r} is not an http(s) URL, e.g. http://10.50.0.1:8080")
    return value.rstrip("/")


def _report_file(env: dict[str, str]) -> str:
    raw = (env.get("APPS_REPORT_FILE") or "/run/hostmesh-apps/apps.json").strip()
    if not raw.startswith("/") or len(raw) > 4096 or "\0" in raw or raw.endswith("/"):
        raise ConfigError(f"APPS_REPORT_FILE={raw!r}: expected the absolute path of the "
                          "apps report file, e.g. /run/hostmesh-apps/apps.json")
    return raw


def _labels(raw: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,63}", key) or len(value) > 255:
            raise ConfigError(f"NODE_LABELS: {item!r} is not key=value (key: letters, digits, "
                              "._-; e.g. NODE_LABELS=gpu=true,zone=eu)")
        labels[key] = value if sep else "true"
    return labels


def _persisted(data_dir: Path, filename: str, generate, generated: list[str], name: str) -> str:
    """Read a value persisted in the data dir, or generate it once and persist it (0600)."""
    path = data_dir / filename
    if path.exists():
        value = path.read_text(encoding="utf-8").strip()
        if value:
            return value
    value = generate()
    security.write_private(path, value + "\n")
    generated.append(name)
    return value


def load(env: dict[str, str]) -> Config:
    """Build the configuration from an environment mapping (raises ConfigError)."""
    is_primary = _bool(env, "NODE_IS_PRIMARY", False)
    data_dir = Path(env.get("DATA_DIR") or DEFAULT_DATA_DIR)
    database_path = Path(env.get("DATABASE_PATH") or data_dir / "hostmesh.db")
    allow_public = _bool(env, "ALLOW_PUBLIC_API", False)
    mesh_raw = (env.get("MESH_SUBNET") or DEFAULT_MESH_SUBNET).strip()
    try:
        mesh_subnet = ipaddress.ip_network(mesh_raw, strict=False)
    except ValueError:
        raise ConfigError(f"MESH_SUBNET={mesh_raw!r} is not a network; expected e.g. "
                          f"{DEFAULT_MESH_SUBNET}") from None
    wg = (env.get("NODE_WIREGUARD_IP") or "").strip() or None
    if wg and not security.is_ip(wg):
        raise ConfigError(f"NODE_WIREGUARD_IP={wg!r} is not an IP address")
    if wg and not _in_subnet(wg, mesh_subnet):
        raise ConfigError(f"NODE_WIREGUARD_IP={wg} is outside MESH_SUBNET={mesh_subnet}; "
                          "set MESH_SUBNET to the mesh's network or fix the address")
    listen, port = _listen(env, wg, allow_public)
    host = listen[0][0]

    node_name = (env.get("NODE_NAME") or socket.gethostname().split(".")[0]).strip()
    if not NAME_RE.fullmatch(node_name):
        raise ConfigError(f"NODE_NAME={node_name!r}: use letters, digits, '.', '_', '-' "
                          "(max 63, starting with a letter or digit)")
    problem = name_problem(node_name)
    if problem:
        raise ConfigError(f"NODE_NAME: {problem}")
    node_id = (env.get("NODE_ID") or "").strip()
    if node_id and not ID_RE.fullmatch(node_id):
        raise ConfigError(f"NODE_ID={node_id!r}: use letters, digits, '.', '_', '-' (max 64)")
    api_key = env.get("NODE_API_KEY", "").strip()
    if api_key:
        problem = security.key_problem(api_key)
        if problem:
            raise ConfigError(f"NODE_API_KEY {problem}")

    previous_key = (env.get("NODE_API_KEY_PREVIOUS") or "").strip() or None
    if previous_key:
        problem = security.key_problem(previous_key)
        if problem:
            raise ConfigError(f"NODE_API_KEY_PREVIOUS {problem}")

    endpoint = (env.get("NODE_API_ENDPOINT") or "").strip()
    if endpoint:
        endpoint = _url(endpoint, "NODE_API_ENDPOINT")
    elif wg:
        endpoint = f"http://{'[' + wg + ']' if ':' in wg else wg}:{port}"
    else:
        # the first address that is neither a wildcard nor loopback, else the first one
        hosts = [(h, p) for h, p in listen if h not in WILDCARDS]
        outward = [(h, p) for h, p in hosts if not _is_loopback_host(h)] or hosts
        if not outward:
            if not is_primary:
                raise ConfigError(
                    "NODE_API_ENDPOINT is not set and SERVER_ADDRESS listens on all "
                    "addresses: set NODE_WIREGUARD_IP (the endpoint is then "
                    "http://<NODE_WIREGUARD_IP>:<port>) or NODE_API_ENDPOINT, e.g. "
                    "http://10.50.0.2:8080")
            endpoint = f"http://{socket.gethostname()}:{port}"
        else:
            h, p = outward[0]
            endpoint = f"http://{'[' + h + ']' if ':' in h else h}:{p}"

    primary_url = (env.get("PRIMARY_NODE_URL") or "").strip() or None
    if not is_primary:
        if not primary_url:
            raise ConfigError(
                "PRIMARY_NODE_URL is not set: a secondary must know the primary's API, "
                "e.g. PRIMARY_NODE_URL=http://10.50.0.1:8080 (or set NODE_IS_PRIMARY=true "
                "on the primary)"
            )
        primary_url = _url(primary_url, "PRIMARY_NODE_URL")
        from urllib.parse import urlsplit

        primary_host = urlsplit(primary_url).hostname or ""
        if not (_in_subnet(primary_host, mesh_subnet) or _is_loopback_host(primary_host)):
            raise ConfigError(
                f"PRIMARY_NODE_URL={primary_url}: the primary must be reached over the mesh "
                f"(an address inside MESH_SUBNET={mesh_subnet}) or on loopback, never over a "
                "public network; use the primary's WireGuard address, e.g. "
                f"http://{next(mesh_subnet.hosts(), '10.50.0.1')}:{DEFAULT_PORT}")

    backoff_raw = env.get("BACKOFF_TABLE", "").strip()
    interval = _number(env, "HEALTH_CHECK_INTERVAL", 7.0, minimum=0.01)
    if backoff_raw:
        table = parse_backoff(backoff_raw)
    else:
        table = parse_backoff(DEFAULT_BACKOFF)
        table[0] = BackoffRow(0, interval, "online")

    rate_raw = env.get("REGISTRATION_RATE_LIMIT", "60/60").strip()
    m = re.fullmatch(r"(\d+)\s*/\s*(\d+(?:\.\d+)?)", rate_raw)
    if not m or int(m.group(1)) < 1 or float(m.group(2)) <= 0:
        raise ConfigError(f"REGISTRATION_RATE_LIMIT={rate_raw!r}: expected ATTEMPTS/SECONDS, "
                          "e.g. 60/60")

    registration_token = (env.get("REGISTRATION_TOKEN") or "").strip() or None
    if not is_primary:
        registration_token = (env.get("INVITE_TOKEN") or "").strip() or registration_token
        if registration_token and "," in registration_token:
            registration_token = registration_token.split(",")[0].strip()

    pub = (env.get("NODE_PUBLIC_IP") or "").strip() or None
    if pub and not security.is_ip(pub):
        raise ConfigError(f"NODE_PUBLIC_IP={pub!r} is not an IP address")
    proxies = _list(env, "TRUSTED_PROXIES")
    for proxy in proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(f"TRUSTED_PROXIES: {proxy!r} is not an IP address or network; "
                              "list the reverse proxies whose X-Forwarded-For is believed, "
                              "e.g. TRUSTED_PROXIES=127.0.0.1") from None

    log_level = (env.get("LOG_LEVEL") or "INFO").strip().upper()
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"LOG_LEVEL={log_level!r}: use DEBUG, INFO, WARNING or ERROR")

    cfg = Config(
        is_primary=is_primary,
        node_name=node_name,
        node_id=node_id,
        api_endpoint=endpoint,
        api_key=api_key,
        host=host,
        port=port,
        data_dir=data_dir,
        database_path=database_path,
        primary_url=primary_url,
        previous_api_key=previous_key,
        registration_token=registration_token,
        registration_token_hashes=_hashes(env, "REGISTRATION_TOKEN", "REGISTRATION_TOKEN_SHA256")
        if is_primary else [],
        admin_token_hashes=_hashes(env, "ADMIN_TOKEN", "ADMIN_TOKEN_SHA256"),
        metrics_token_hashes=_hashes(env, "METRICS_TOKEN", "METRICS_TOKEN_SHA256"),
        primary_key_hashes=_hashes(env, "", "PRIMARY_KEY_SHA256"),
        wireguard_ip=wg,
        public_ip=pub,
        labels=_labels(env.get("NODE_LABELS", "")),
        health_check_interval=interval,
        health_check_timeout=_number(env, "HEALTH_CHECK_TIMEOUT", 2.0, minimum=0.01),
        health_check_concurrency=int(_number(env, "HEALTH_CHECK_CONCURRENCY", 100, minimum=1,
                                             integer=True)),
        backoff_table=table,
        heartbeat_interval=_number(env, "HEARTBEAT_INTERVAL", 5.0, minimum=0.01),
        heartbeat_timeout=_number(env, "HEARTBEAT_TIMEOUT", 5.0, minimum=0.01),
        startup_heartbeat_delay=_number(env, "STARTUP_HEARTBEAT_DELAY", 2.0),
        registration_retry_initial=_number(env, "REGISTRATION_RETRY_INITIAL", 2.0, minimum=0.01),
        registration_retry_max=_number(env, "REGISTRATION_RETRY_MAX", 300.0, minimum=0.01),
        key_grace_seconds=_number(env, "KEY_GRACE_SECONDS", 300.0),
        invite_default_ttl=_number(env, "INVITE_DEFAULT_TTL", 3600.0, minimum=1),
        invite_max_ttl=_number(env, "INVITE_MAX_TTL", 7 * 86400.0, minimum=1),
        registration_rate_limit=int(m.group(1)),
        registration_rate_window=float(m.group(2)),
        max_body_bytes=int(_number(env, "MAX_BODY_BYTES", 65536, minimum=1024, integer=True)),
        log_level=log_level,
        listen=listen,
        agent_port=port,
        mesh_subnet=mesh_subnet,
        allow_loopback_endpoints=_bool(env, "ALLOW_LOOPBACK_ENDPOINTS", False),
        allow_public_api=allow_public,
        trusted_proxies=proxies,
        request_timeout=_number(env, "REQUEST_TIMEOUT", 10.0, minimum=0.1),
        idle_timeout=_number(env, "IDLE_TIMEOUT", 5.0, minimum=0.1),
        max_connections=int(_number(env, "MAX_CONNECTIONS", 4096, minimum=16, integer=True)),
        apps_report=_bool(env, "APPS_REPORT", True),
        apps_report_file=_report_file(env),
        ddns_status_file=(env.get("DDNS_STATUS_FILE") or "").strip()
        or "/var/lib/hostmesh-ddns/status.json",
    )
    from hostmesh.agent.file_sd import FileSdInvalid
    from hostmesh.agent.file_sd import load_settings as load_file_sd_settings

    try:
        cfg.file_sd = load_file_sd_settings(env, is_primary)
    except FileSdInvalid as exc:
        raise ConfigError(str(exc)) from None
    from hostmesh.agent.dns_withdrawal import DnsConfigError, load_settings

    try:
        cfg.dns = load_settings(env, is_primary)
    except DnsConfigError as exc:
        raise ConfigError(str(exc)) from None
    from hostmesh.tls.agent import TlsConfigError
    from hostmesh.tls.agent import load_settings as load_tls_settings

    try:
        cfg.tls = load_tls_settings(env, data_dir, is_primary)
    except TlsConfigError as exc:
        raise ConfigError(str(exc)) from None
    from hostmesh.agent.routing import RoutingInvalid
    from hostmesh.agent.routing import load_settings as load_routing_settings

    try:
        cfg.routing = load_routing_settings(env, data_dir, cfg.heartbeat_interval)
    except RoutingInvalid as exc:
        raise ConfigError(str(exc)) from None
    return cfg


def finish(cfg: Config) -> Config:
    """Create the data dir and fill NODE_ID / NODE_API_KEY from it when unset."""
    try:
        cfg.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        cfg.database_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not cfg.node_id:
            cfg.node_id = _persisted(cfg.data_dir, "node_id", lambda: str(uuid.uuid4()),
                                     cfg.generated, "NODE_ID")
        if not cfg.api_key:
            cfg.api_key = _persisted(cfg.data_dir, "node_api_key", security.new_secret,
                                     cfg.generated, "NODE_API_KEY")
    except OSError as exc:
        raise ConfigError(
            f"cannot use the data directory {cfg.data_dir}: {exc.strerror}; create it "
            "(mode 0700) or set DATA_DIR to a writable directory"
        ) from None
    if not ID_RE.fullmatch(cfg.node_id):
        raise ConfigError(f"the node id stored in {cfg.data_dir / 'node_id'} is invalid; "
                          "delete that file or set NODE_ID")
    return cfg
