"""`hostmesh agent`: run the node agent (primary or secondary) from the environment."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from hostmesh import __version__
from hostmesh.agent import config as config_mod
from hostmesh.agent.config import Config, ConfigError

log = logging.getLogger("hostmesh.agent")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--env-file",
        help=f"KEY=VALUE file read before the environment (default: {config_mod.DEFAULT_ENV_FILE}"
             " when it exists); variables already in the environment win",
    )
    parser.add_argument("--check-config", action="store_true",
                        help="validate the configuration, print a summary without secrets, "
                             "and exit")


def load_environment(env_file: str | None,
                     notes: list[str] | None = None) -> tuple[dict[str, str], list[str]]:
    """Merge the env file (if any) under the process environment; returns (env, warnings).

    Informational messages are appended to `notes` when given."""
    warnings: list[str] = []
    notes = notes if notes is not None else []
    path = env_file
    if path is None and os.path.exists(config_mod.DEFAULT_ENV_FILE):
        if os.access(config_mod.DEFAULT_ENV_FILE, os.R_OK):
            path = config_mod.DEFAULT_ENV_FILE
        else:
            # under systemd, EnvironmentFile= (read as root) already supplied it
            notes.append(f"env file {config_mod.DEFAULT_ENV_FILE} is not readable by this "
                         "user; using the process environment (systemd EnvironmentFile=)")
    values: dict[str, str] = {}
    if path is not None:
        try:
            values = config_mod.read_env_file(path)
            warning = config_mod.env_file_mode_warning(path)
        except FileNotFoundError:
            raise ConfigError(f"env file {path} does not exist; create it or drop --env-file")\
                from None
        except OSError as exc:
            raise ConfigError(f"cannot read env file {path}: {exc.strerror}") from None
        if warning:
            warnings.append(warning)
    values.update(os.environ)
    return values, warnings


def summary(cfg: Config) -> str:
    return (f"role={cfg.role} node={cfg.node_name} id={cfg.node_id or '(generated at start)'} "
            f"listen={','.join(_hostport(h, p) for h, p in cfg.listen)} "
            f"endpoint={cfg.api_endpoint} "
            + (f"database={cfg.database_path} " if cfg.is_primary else
               f"primary_url={cfg.primary_url} ")
            + f"data_dir={cfg.data_dir} version={__version__}")


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def setup_logging(level: str) -> None:
    from hostmesh.agent.security import RepeatFilter

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    # repeated identical warnings/errors (a flood of bad clients, a full fd table) are
    # written a few times per minute, then summarised
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's own access log would add a line per request; errors still show
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


def run(args: argparse.Namespace) -> int:
    try:
        notes: list[str] = []
        env, warnings = load_environment(args.env_file, notes)
        cfg = config_mod.load(env)
        setup_logging(cfg.log_level)
        for warning in warnings:
            log.warning("%s", warning)
        for note in notes:
            log.info("%s", note)
        if args.check_config:
            print(summary(cfg))
            return 0
        config_mod.finish(cfg)
        from hostmesh.agent.server import serve

        return asyncio.run(serve(cfg))
    except ConfigError as exc:
        print(f"hostmesh agent: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
