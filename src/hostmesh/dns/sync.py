"""`hostmesh ddns sync`: detect this node's public IP and update only its own records.

Settings come from an environment file (``/etc/hostmesh-ddns/ddns.env``, written
by the `hostmesh.cluster.ddns` role, whose `ddns_config_dir` is /etc/hostmesh-ddns;
`hostmesh-ddns.service` passes it with --config) and may be overridden by flags. The API token
is read from a file (``--token-file``, mode 0600) or CLOUDFLARE_API_TOKEN, and
is never printed. A failed detection changes nothing and exits non-zero.

Exit codes: 0 in sync or updated, 1 Cloudflare refused or unreachable,
2 bad configuration, 3 public-IP detection failed.

With ``--status-file``/``DDNS_STATUS_FILE`` (the ddns role sets it) every run but a
``--dry-run`` records its outcome there (`hostmesh.dns.status`), for the agent's
``/metrics`` and the ``HostmeshDdnsUpdaterFailing`` alert.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .detect import DEFAULT_DETECTOR_URL, DetectionFailed, detect_public_ip

# Where the ddns role writes it (ddns_config_dir); the unit also passes it with --config.
DEFAULT_CONFIG = "/etc/hostmesh-ddns/ddns.env"

# env key -> (argparse dest, kind)
_ENV_KEYS = {
    "DDNS_ZONE": ("zone", str),
    "DDNS_NAMES": ("names", list),
    "DDNS_CLUSTER": ("cluster", str),
    "NODE_NAME": ("node", str),
    "DDNS_TTL": ("ttl", int),
    "DDNS_PROXIED": ("proxied", bool),
    "DDNS_DETECTOR_URL": ("detector_url", str),
    "DDNS_DETECTOR_URL_V6": ("detector_url_v6", str),
    "DDNS_TOKEN_FILE": ("token_file", str),
    "CLOUDFLARE_BASE_URL": ("api_base_url", str),
    "DDNS_TIMEOUT": ("timeout", float),
    "DDNS_RETRIES": ("retries", int),
    "DDNS_STATUS_FILE": ("status_file", str),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the flags of `hostmesh ddns sync`."""
    parser.add_argument("--config", default=None,
                        help=f"environment file with DDNS_* settings (default {DEFAULT_CONFIG} "
                        "when it exists)")
    parser.add_argument("--zone", help="Cloudflare zone, e.g. example.org (DDNS_ZONE)")
    parser.add_argument("--name", dest="names", action="append",
                        help="public name to publish, repeatable (DDNS_NAMES, comma-separated)")
    parser.add_argument("--cluster", help="cluster name of the owner comment (DDNS_CLUSTER)")
    parser.add_argument("--node", help="this node's name (NODE_NAME)")
    parser.add_argument("--ttl", type=int, help="record TTL, 1 = automatic (DDNS_TTL, default 300)")
    parser.add_argument("--proxied", action=argparse.BooleanOptionalAction, default=None,
                        help="proxy through Cloudflare (DDNS_PROXIED, default no)")
    parser.add_argument("--detector-url", help="IPv4 detector URL, trace or plain format "
                        f"(DDNS_DETECTOR_URL, default {DEFAULT_DETECTOR_URL})")
    parser.add_argument("--detector-url-v6", help="IPv6 detector URL; AAAA records are managed "
                        "only when set (DDNS_DETECTOR_URL_V6)")
    parser.add_argument("--token-file", help="file holding the API token (DDNS_TOKEN_FILE); "
                        "else CLOUDFLARE_API_TOKEN")
    parser.add_argument("--api-base-url", help="API base URL (CLOUDFLARE_BASE_URL; SDK default)")
    parser.add_argument("--timeout", type=float, help="seconds per HTTP request (default 15)")
    parser.add_argument("--retries", type=int, help="retries on 429/5xx (default 3)")
    parser.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")
    parser.add_argument("--status-file", help="record each run's outcome in this JSON file "
                        "(DDNS_STATUS_FILE; the agent exports it in /metrics); not with "
                        "--dry-run")


def _log(msg: str) -> None:
    print(f"hostmesh-ddns: {msg}", file=sys.stderr, flush=True)


def read_env_file(path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in Path(path).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _sep, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


class ConfigError(Exception):
    pass


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Merge flags over the env file over defaults; raise ConfigError saying what is missing."""
    path = args.config or (DEFAULT_CONFIG if Path(DEFAULT_CONFIG).exists() else None)
    env: dict[str, str] = {}
    if path:
        try:
            env = read_env_file(path)
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    merged = argparse.Namespace(**vars(args))
    for key, (dest, kind) in _ENV_KEYS.items():
        if getattr(merged, dest, None) not in (None, []):
            continue
        value = env.get(key, os.environ.get(key) if key == "CLOUDFLARE_BASE_URL" else None)
        if value in (None, ""):
            continue
        try:
            if kind is list:
                conv = [v.strip() for v in value.split(",") if v.strip()]
            elif kind is bool:
                conv = value.strip().lower() in ("1", "true", "yes", "on")
            else:
                conv = kind(value)
        except ValueError:
            raise ConfigError(f"{key}={value!r} in {path} is not a valid {kind.__name__}") from None
        setattr(merged, dest, conv)
    merged.ttl = 300 if merged.ttl is None else merged.ttl
    merged.proxied = bool(merged.proxied)
    merged.detector_url = merged.detector_url or DEFAULT_DETECTOR_URL
    merged.timeout = 15.0 if merged.timeout is None else merged.timeout
    merged.retries = 3 if merged.retries is None else merged.retries
    missing = [flag for flag, dest in (("--zone/DDNS_ZONE", "zone"), ("--name/DDNS_NAMES", "names"),
                                       ("--cluster/DDNS_CLUSTER", "cluster"),
                                       ("--node/NODE_NAME", "node"))
               if not getattr(merged, dest)]
    if missing:
        raise ConfigError(f"missing settings: {', '.join(missing)} (flags or {path or DEFAULT_CONFIG})")
    token = None
    if merged.token_file:
        try:
            token = Path(merged.token_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read token file {merged.token_file}: {exc.strerror}") from None
        if not token:
            raise ConfigError(f"token file {merged.token_file} is empty")
    else:
        token = os.environ.get("CLOUDFLARE_API_TOKEN", "").strip() or None
    if not token:
        raise ConfigError("no API token: set --token-file/DDNS_TOKEN_FILE or CLOUDFLARE_API_TOKEN")
    merged.token = token
    return merged


def status_path(args: argparse.Namespace) -> str | None:
    """Where this run records its outcome: the flag, else the env file's DDNS_STATUS_FILE
    (read even when the rest of the configuration is wrong, so that is recorded too)."""
    if getattr(args, "status_file", None):
        return args.status_file
    path = args.config or (DEFAULT_CONFIG if Path(DEFAULT_CONFIG).exists() else None)
    if not path:
        return None
    try:
        return read_env_file(path).get("DDNS_STATUS_FILE") or None
    except (OSError, UnicodeDecodeError):
        return None


def run(args: argparse.Namespace) -> int:
    """Entry point of `hostmesh ddns sync`; returns the exit code."""
    outcome: dict = {}
    path = status_path(args)
    try:
        code = _sync(args, outcome)
    except Exception as exc:
        # a bug or an unexpected library error: still counted as a failed run
        if path and not args.dry_run:
            _record(path, 1, {**outcome, "error": f"unexpected error: {type(exc).__name__}"})
        raise
    if path and not args.dry_run:
        _record(path, code, outcome)
    return code


def _record(path: str, code: int, outcome: dict) -> None:
    from hostmesh.dns import status

    try:
        status.record(path, ok=code == 0, now=time.time(), exit_code=code,
                      error=outcome.get("error"), secret=outcome.get("token"))
    except OSError as exc:
        _log(f"cannot record the outcome in {path}: {exc.strerror}; the agent's "
             "hostmesh_ddns_* metrics stay as they were (make its directory writable by "
             "this user: the ddns role does)")


def _sync(args: argparse.Namespace, outcome: dict) -> int:
    """One sync; puts the error (one line, for the status file) and the token (to keep
    it out of that line) into `outcome`."""
    try:
        cfg = resolve(args)
    except ConfigError as exc:
        _log(f"configuration error: {exc}")
        outcome["error"] = f"configuration error: {exc}"
        return 2
    outcome["token"] = cfg.token
    try:
        ipv4 = detect_public_ip(cfg.detector_url, version=4, timeout=cfg.timeout)
        ipv6 = None
        if cfg.detector_url_v6:
            ipv6 = detect_public_ip(cfg.detector_url_v6, version=6, timeout=cfg.timeout)
    except DetectionFailed as exc:
        _log(f"public IP detection failed: {exc}; DNS records left unchanged")
        outcome["error"] = f"public IP detection failed: {exc}"
        return 3

    from hostmesh.module_utils._dns_reconcile import (
        DNSError,
        InvalidSpec,
        NodeAddresses,
        Reconciler,
        Scope,
        Spec,
        make_client,
    )

    types = frozenset({"A", "AAAA"}) if cfg.detector_url_v6 else frozenset({"A"})
    spec = Spec(zone=cfg.zone, cluster=cfg.cluster, names=cfg.names,
                nodes={cfg.node: NodeAddresses(ipv4, ipv6)}, ttl=cfg.ttl, proxied=cfg.proxied,
                scope=Scope(node=cfg.node, types=types))
    try:
        client = make_client(cfg.token, cfg.api_base_url, max_retries=cfg.retries,
                             timeout=cfg.timeout)
        result = Reconciler(client).converge(spec, check_mode=cfg.dry_run)
    except DNSError as exc:
        _log(f"error: {exc}")
        outcome["error"] = f"DNS update failed: {exc}"
        return 2 if isinstance(exc, InvalidSpec) else 1
    addrs = ipv4 + (f" {ipv6}" if ipv6 else "")
    if not result.changed:
        _log(f"{cfg.node} {addrs}: {len(result.records)} records in sync, nothing to do")
        return 0
    verb = "would change" if cfg.dry_run else "changed"
    _log(f"{cfg.node} {addrs}: {verb} {len(result.created)} created, {len(result.updated)} "
         f"updated, {len(result.deleted)} deleted")
    for before, after in result.plan.updates:
        _log(f"  update {before.name} {before.type} {before.content} -> {after.content}")
    for rec in result.plan.creates:
        _log(f"  create {rec.name} {rec.type} {rec.content}")
    for rec in result.plan.deletes:
        _log(f"  delete {rec.name} {rec.type} {rec.content}")
    return 0
