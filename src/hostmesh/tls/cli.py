"""`hostmesh acme renew`: one pass of the cluster's ACME issuer (run on the primary only).

Settings come from an environment file (``/etc/hostmesh-acme/acme.env``, mode
0600) and may be overridden by flags:

    ACME_DIRECTORY_URL   the CA's directory (Let's Encrypt, or the lab's pebble)
    ACME_EMAIL           contact for the account (optional)
    ACME_CA_BUNDLE       verify the CA's HTTPS with this file (a private CA such as pebble)
    ACME_ZONE            the Cloudflare zone of every name
    ACME_CLUSTER         the cluster name of the owner comment hostmesh:<cluster>:acme
    ACME_CERTS           certificate sets: names joined by ",", sets by ";"
                         (e.g. "example.org,*.example.org")
    ACME_STATE_DIR       account, certificates, status.json (default /var/lib/hostmesh-acme)
    ACME_TOKEN_FILE      file holding the Cloudflare API token (Zone:Read + DNS:Edit), 0600
    CLOUDFLARE_BASE_URL  the API (default Cloudflare's; the lab's stand-in)
    ACME_PROPAGATION_SECONDS  wait after writing the TXT records (default 10)
    ACME_BACKOFF_SECONDS base of the retry backoff after a failure (default 60, doubling, max 6 h)
    ACME_DEPLOY_TLS_DIR, ACME_DEPLOY_DYNAMIC_DIR  when set: after every pass, hand the
                         current certificates to this node's Traefik (hostmesh.tls.deploy:
                         versioned pair in the TLS dir, hostmesh-tls.yml in the file
                         provider's directory; no restart)
    ACME_DEPLOY_USER     owner of the installed pairs (Traefik's user, e.g. traefik)
    ACME_EXPORT_DIR      when set: after every pass, leave each set's current pair as one
                         JSON bundle (<dir>/<set>.json, 0600, hostmesh.tls.bundle) for the
                         primary's agent, which hands it to the secondaries' agents
                         (GET /api/tls/certificates/<set>, node key only; docs/tls.md)
    ACME_EXPORT_USER     owner of the bundles (the agent's user, e.g. hostmesh)

Exit codes: 0 every set has a valid certificate (issued now or earlier, none
failed in this pass), 1 an order failed or is backing off (the current
certificate keeps serving; the log says why and when the next try is; the
systemd unit shows failed), 2 bad configuration (nothing was ordered).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import sys
from pathlib import Path

DEFAULT_CONFIG = "/etc/hostmesh-acme/acme.env"

_ENV = {
    "ACME_DIRECTORY_URL": "directory_url",
    "ACME_EMAIL": "email",
    "ACME_CA_BUNDLE": "ca_bundle",
    "ACME_ZONE": "zone",
    "ACME_CLUSTER": "cluster",
    "ACME_CERTS": "certs",
    "ACME_STATE_DIR": "state_dir",
    "ACME_TOKEN_FILE": "token_file",
    "CLOUDFLARE_BASE_URL": "api_base_url",
    "ACME_PROPAGATION_SECONDS": "propagation_seconds",
    "ACME_BACKOFF_SECONDS": "backoff_seconds",
    "ACME_DEPLOY_TLS_DIR": "deploy_tls_dir",
    "ACME_DEPLOY_DYNAMIC_DIR": "deploy_dynamic_dir",
    "ACME_DEPLOY_USER": "deploy_user",
    "ACME_EXPORT_DIR": "export_dir",
    "ACME_EXPORT_USER": "export_user",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help=f"environment file with ACME_* settings (default "
                        f"{DEFAULT_CONFIG} when it exists)")
    for key, dest in _ENV.items():
        parser.add_argument("--" + dest.replace("_", "-"), dest=dest, help=f"({key})")
    parser.add_argument("--force", action="store_true", help="order every set now")
    parser.add_argument("--status", action="store_true",
                        help="print status.json and exit (no order)")


class ConfigError(Exception):
    pass


def _read_env(path: str) -> dict[str, str]:
    from hostmesh.dns.sync import read_env_file

    try:
        return read_env_file(path)
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None


def resolve(args: argparse.Namespace):
    from hostmesh.tls.issuer import CertSet, IssuerConfig, IssuerError

    path = args.config or (DEFAULT_CONFIG if Path(DEFAULT_CONFIG).exists() else None)
    env = _read_env(path) if path else {}
    val = {dest: getattr(args, dest, None) or env.get(key) or None for key, dest in _ENV.items()}
    missing = [k for k, d in _ENV.items()
               if d in ("directory_url", "zone", "cluster", "certs", "token_file") and not val[d]]
    if missing:
        raise ConfigError(f"missing settings: {', '.join(missing)} (in {path or DEFAULT_CONFIG} "
                          "or as flags)")
    try:
        token = Path(val["token_file"]).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read token file {val['token_file']}: {exc.strerror}") from None
    if not token:
        raise ConfigError(f"token file {val['token_file']} is empty")
    try:
        sets = [CertSet.from_domains(group.split(","))
                for group in val["certs"].split(";") if group.strip()]
        numbers = {k: float(val[k]) for k in ("propagation_seconds", "backoff_seconds")
                   if val[k] is not None}
    except IssuerError as exc:
        raise ConfigError(f"ACME_CERTS: {exc}") from None
    except ValueError as exc:
        raise ConfigError(f"not a number: {exc}") from None
    if bool(val["deploy_tls_dir"]) != bool(val["deploy_dynamic_dir"]):
        raise ConfigError("set both ACME_DEPLOY_TLS_DIR and ACME_DEPLOY_DYNAMIC_DIR, or neither")
    args.deploy = (val["deploy_tls_dir"], val["deploy_dynamic_dir"], val["deploy_user"])
    args.export = (val["export_dir"], val["export_user"])
    return IssuerConfig(
        directory_url=val["directory_url"], zone=val["zone"].lower().rstrip("."),
        cluster=val["cluster"], sets=sets, api_token=token, api_base_url=val["api_base_url"],
        state_dir=Path(val["state_dir"] or "/var/lib/hostmesh-acme"), email=val["email"],
        ca_bundle=val["ca_bundle"],
        propagation_seconds=numbers.get("propagation_seconds", 10.0),
        backoff_base=numbers.get("backoff_seconds", 60.0),
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="hostmesh-acme: %(levelname)s %(message)s",
                        stream=sys.stderr)
    # The SDK's HTTP log names URLs only, but nothing from other libraries is needed here.
    for noisy in ("httpx", "httpcore", "urllib3", "acme", "cloudflare"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    log = logging.getLogger("hostmesh.acme")
    from hostmesh.tls.issuer import Issuer, IssuerError

    try:
        cfg = resolve(args)
        issuer = Issuer(cfg)
    except (ConfigError, IssuerError) as exc:
        log.error("configuration error: %s; nothing was ordered", exc)
        return 2
    except Exception as exc:  # noqa: BLE001 - InvalidSpec from the name check
        log.error("configuration error: %s; nothing was ordered", exc)
        return 2
    if args.status:
        print(json.dumps(issuer.status(), indent=2, sort_keys=True))
        return 0
    os.umask(0o077)
    # One pass at a time (the timer's and the tls role's may start together): a second
    # pass waits, then finds the certificate the first one ordered; never two orders.
    cfg.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(cfg.state_dir / "pass.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _pass(args, cfg, issuer, log)


def _pass(args: argparse.Namespace, cfg, issuer, log) -> int:
    status = issuer.run_once(force=args.force)
    bad = [name for name, st in status["sets"].items()
           if st.get("failures") or not st.get("serial")]
    tls_dir, dynamic_dir, user = args.deploy
    if tls_dir:
        ready = [cs.name for cs in cfg.sets if issuer.current(cs.name) is not None]
        try:
            owner = None
            if user:
                import pwd

                entry = pwd.getpwnam(user)
                owner = (entry.pw_uid, entry.pw_gid)
            from hostmesh.tls import deploy

            # update: a bring-your-own set next to the issued ones stays
            changed, _kept = deploy.update(deploy.from_issuer(cfg.state_dir, ready), tls_dir,
                                           dynamic_dir, owner=owner)
            if changed:
                log.info("handed %s to Traefik (%s)", ", ".join(ready), dynamic_dir)
        except (KeyError, OSError) as exc:
            log.error("could not hand the certificates to Traefik: %s", exc)
            return 1
    if args.export[0] and export(cfg, issuer, *args.export, log=log):
        return 1
    return 1 if bad else 0


def export(cfg, issuer, export_dir: str, user: str | None, *, log) -> bool:
    """Leave each set's current pair for the primary's agent; True when that failed."""
    from hostmesh.tls import bundle, deploy

    try:
        owner = None
        if user:
            import pwd

            entry = pwd.getpwnam(user)
            owner = (entry.pw_uid, entry.pw_gid)
        ready = [cs.name for cs in cfg.sets if issuer.current(cs.name) is not None]
        for name, (chain, key) in deploy.from_issuer(cfg.state_dir, ready).items():
            doc = bundle.make(name, chain, key)
            if bundle.write_file(Path(export_dir) / f"{name}.json", doc, owner):
                log.info("left %s (version %s) for the agent in %s", name, doc["version"],
                         export_dir)
    except (KeyError, OSError, bundle.BundleError) as exc:
        log.error("could not leave the certificates for the agent in %s: %s; the "
                  "secondaries keep their current certificate", export_dir, exc)
        return True
    return False
