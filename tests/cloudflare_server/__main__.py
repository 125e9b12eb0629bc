"""Start the local Cloudflare v4 API server.

    python -m tests.cloudflare_server --listen 127.0.0.1:8787 \
        --zone lab.test --token-file .hostmesh/secrets/cloudflare_api_token

The SDK then talks to it with ``base_url="http://127.0.0.1:8787/client/v4"``.
Tokens are read from files (or the environment) so they never show in ``ps``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import uvicorn

from .app import State, Token, create_app


def _read_secret(path: str) -> str:
    value = Path(path).read_text().strip()
    if not value:
        raise SystemExit(f"cloudflare_server: token file {path} is empty; write the token into it")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cloudflare_server", description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:8787", help="HOST:PORT (default %(default)s)")
    parser.add_argument("--zone", action="append", default=[], help="zone name to serve (repeatable)")
    parser.add_argument("--token-file", action="append", default=[],
                        help="file holding an API token with DNS edit on every zone (repeatable)")
    parser.add_argument("--read-token-file", action="append", default=[],
                        help="file holding a read-only API token (repeatable)")
    parser.add_argument("--token-env", default="CLOUDFLARE_API_TOKEN",
                        help="environment variable holding one more edit token (default %(default)s)")
    parser.add_argument("--port-file", help="write the bound port here once listening (for --listen HOST:0)")
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)

    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        parser.error(f"--listen must be HOST:PORT, not {args.listen!r}")
    state = State()
    for zone in args.zone:
        state.add_zone(zone.lower().rstrip("."))
    for path in args.token_file:
        value = _read_secret(path)
        state.tokens[value] = Token(value, can_edit=True)
    for path in args.read_token_file:
        value = _read_secret(path)
        state.tokens[value] = Token(value, can_edit=False)
    env_token = os.environ.get(args.token_env, "").strip()
    if env_token:
        state.tokens[env_token] = Token(env_token, can_edit=True)
    if not state.tokens:
        print("cloudflare_server: warning: no token configured; every API call will be refused "
              "(use --token-file or the CLOUDFLARE_API_TOKEN environment variable)", file=sys.stderr)

    config = uvicorn.Config(create_app(state), host=host, port=int(port),
                            log_level=args.log_level, access_log=False)
    server = uvicorn.Server(config)
    if args.port_file:
        _write_port_when_bound(server, args.port_file)
    server.run()
    return 0


def _write_port_when_bound(server: uvicorn.Server, path: str) -> None:
    original = server.startup

    async def startup(sockets=None):
        await original(sockets=sockets)
        for srv in server.servers:
            for sock in srv.sockets:
                Path(path).write_text(str(sock.getsockname()[1]))
                return

    server.startup = startup  # type: ignore[method-assign]


if __name__ == "__main__":
    sys.exit(main())
