"""Start the local Cloudflare v4 API server.

    python -m tests.cloudflare_server --listen 127.0.0.1:8787 \\
        --zone lab.test --token-file .hostmesh/secrets/cloudflare_api_token

The SDK then talks to it with ``base_url="http://127.0.0.1:8787/client/v4"``,
and ``http://127.0.0.1:8787/cdn-cgi/trace`` answers ``ip=<client address>``.
Tokens are read from files (or the environment) so they never show in ``ps``.

For the lab: ``--daemon --pid-file F --log-file L --state-file S`` starts it in
the background unless one already answers on --listen (prints ``started`` or
``running``); ``--stop --pid-file F`` stops it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _read_secret(path: str) -> str:
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise SystemExit(f"cloudflare_server: cannot read token file {path}: {exc.strerror}") from None
    if not value:
        raise SystemExit(f"cloudflare_server: token file {path} is empty; write the token into it")
    return value


def _answers(listen: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{listen}/_hm/stats", timeout=2) as resp:
            return resp.status == 200 and "counts" in json.loads(resp.read())
    except (OSError, ValueError):
        return False


def _recorded_pid_alive(pid_file: str | None) -> bool:
    try:
        os.kill(int(Path(pid_file).read_text()), 0)
    except (TypeError, OSError, ValueError):
        return False
    return True


def _daemon(args, argv: list[str]) -> int:
    if _answers(args.listen):
        if _recorded_pid_alive(args.pid_file):
            print("running")
            return 0
        # Another lab's server (other token, other records) holds the address.
        print(f"cloudflare_server: another server already answers on {args.listen}, not the one "
              f"recorded in {args.pid_file}; stop it (python -m tests.cloudflare_server --stop "
              "--pid-file <its pid file>) or listen elsewhere", file=sys.stderr)
        return 1
    child = [a for a in argv if a != "--daemon"]
    log = open(args.log_file or os.devnull, "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen([sys.executable, "-m", "tests.cloudflare_server", *child], cwd=REPO,
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            print(f"cloudflare_server exited with {proc.returncode}; see {args.log_file}",
                  file=sys.stderr)
            return 1
        if _answers(args.listen):
            if args.pid_file:
                Path(args.pid_file).write_text(f"{proc.pid}\n")
            print("started")
            return 0
        time.sleep(0.1)
    print(f"cloudflare_server did not answer on {args.listen} within 20 s", file=sys.stderr)
    return 1


def _stop(args) -> int:
    if not args.pid_file or not Path(args.pid_file).exists():
        print("not running")
        return 0
    pid = int(Path(args.pid_file).read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        print("not running")
        Path(args.pid_file).unlink()
        return 0
    # Return only once it is gone: a start right after a stop must not find the
    # old server still answering on its address (it would refuse to start).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.05)
    Path(args.pid_file).unlink()
    print("stopped")
    return 0


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie child of ours counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m tests.cloudflare_server",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:8787", help="HOST:PORT (default %(default)s)")
    parser.add_argument("--zone", action="append", default=[], help="zone name to serve (repeatable)")
    parser.add_argument("--token-file", action="append", default=[],
                        help="file holding an API token with DNS edit on every zone (repeatable)")
    parser.add_argument("--read-token-file", action="append", default=[],
                        help="file holding a read-only API token (repeatable)")
    parser.add_argument("--token-env", default="CLOUDFLARE_API_TOKEN",
                        help="environment variable holding one more edit token (default %(default)s)")
    parser.add_argument("--state-file", help="keep the records in this JSON file across restarts")
    parser.add_argument("--port-file", help="write the bound port here once listening (for HOST:0)")
    parser.add_argument("--daemon", action="store_true", help="start in the background if not running")
    parser.add_argument("--stop", action="store_true", help="stop the server of --pid-file")
    parser.add_argument("--pid-file", help="pid file (with --daemon / --stop)")
    parser.add_argument("--log-file", help="log file (with --daemon)")
    parser.add_argument("--log-level", default="warning")
    parser.add_argument("--dns-listen", help="also answer DNS for the zones on HOST:PORT, UDP and "
                        "TCP (tests/cloudflare_server/dns.py; PORT 0: one the OS picks)")
    parser.add_argument("--dns-port-file", help="write the bound DNS port here once listening")
    args = parser.parse_args(argv)

    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        parser.error(f"--listen must be HOST:PORT, not {args.listen!r}")
    if args.dns_listen is not None:
        dns_host, _, dns_port = args.dns_listen.rpartition(":")
        if not dns_host or not dns_port.isdigit() or int(dns_port) > 65535:
            parser.error(f"--dns-listen must be HOST:PORT, not {args.dns_listen!r}")
    if args.stop:
        return _stop(args)
    if args.daemon:
        return _daemon(args, argv)

    import uvicorn

    from .app import State, Token, create_app

    state = State(state_file=args.state_file)
    for zone in args.zone:
        state.add_zone(zone.lower().rstrip("."))
    state.load()
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

    if args.dns_listen is not None:
        from .dns import DnsServer

        try:
            dns_server = DnsServer(state, dns_host.strip("[]"), int(dns_port)).start()
        except OSError as exc:
            print(f"cloudflare_server: cannot answer DNS on {args.dns_listen}: {exc.strerror or exc}",
                  file=sys.stderr)
            return 1
        if args.dns_port_file:
            Path(args.dns_port_file).write_text(str(dns_server.port))

    config = uvicorn.Config(create_app(state), host=host, port=int(port),
                            log_level=args.log_level, access_log=False)
    server = uvicorn.Server(config)
    if args.port_file:
        _write_port_when_bound(server, args.port_file)
    server.run()
    return 0


def _write_port_when_bound(server, path: str) -> None:
    original = server.startup

    async def startup(sockets=None):
        await original(sockets=sockets)
        for srv in server.servers:
            for sock in srv.sockets:
                Path(path).write_text(str(sock.getsockname()[1]))
                return

    server.startup = startup


if __name__ == "__main__":
    sys.exit(main())
