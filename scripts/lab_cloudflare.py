#!/usr/bin/env python3
"""The lab's Cloudflare: start or stop tests/cloudflare_server for one lab.

The ddns role talks to whatever API ``ddns_api_base_url`` names; in the lab
that is this local server speaking Cloudflare's v4 API, started by the lab
tooling (``make lab-up``, the molecule scenarios' prepare.yml, the site
drills and bench), never by the role::

    scripts/lab_cloudflare.py start --state-dir DIR --listen IP:PORT --zone ZONE
    scripts/lab_cloudflare.py stop --state-dir DIR

``DIR`` is the lab's ``hostmesh_state_dir`` (``<inventory>/.hostmesh``):
``start`` creates the API token secret ``DIR/secrets/cloudflare_api_token``
when it is missing (as ``hostmesh.cluster.secret`` would), then starts the
server in the background with that token, keeping its records in
``DIR/cloudflare-api.json`` and its pid and log next to it. It prints
``started`` or ``running`` (already up). ``stop`` prints ``stopped`` or
``not running``. Listen on the lab network's gateway (its ``.1``) so the
controller and the nodes both reach it. ``--dns-listen IP:PORT`` (or ``--dns``
with ``--subnet``: the gateway, port 53) also answers DNS for the zones from
the records it holds (tests/cloudflare_server/dns.py), where the lab's ACME CA
validates DNS-01 challenges (scripts/lab_acme.py).
"""

from __future__ import annotations

import argparse
import ipaddress
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "cloudflare_api_token"


def _python() -> str:
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def ensure_token(state_dir: Path) -> Path:
    """The lab's API token secret, created once (0600 in a 0700 directory)."""
    sys.path.insert(0, str(ROOT / "collections"))
    from ansible_collections.hostmesh.cluster.plugins.module_utils._secret import SecretStore

    store = SecretStore(str(state_dir / "secrets"))
    store.ensure(TOKEN)
    return Path(store.path(TOKEN))


def _server(*args: str) -> str:
    proc = subprocess.run([_python(), "-m", "tests.cloudflare_server", *args], cwd=ROOT,
                          capture_output=True, text=True, check=False, timeout=60)
    if proc.returncode != 0:
        raise SystemExit(f"lab_cloudflare: the local Cloudflare API server failed "
                         f"(exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout.strip()


def start(state_dir: str | Path, listen: str, zones: list[str],
          dns_listen: str | None = None) -> str:
    state = Path(state_dir).resolve()
    host, _, port = listen.rpartition(":")
    try:
        ipaddress.ip_address(host)
        if not 0 < int(port) < 65536:
            raise ValueError(port)
    except ValueError:
        raise SystemExit(f"lab_cloudflare: --listen must be IP:PORT, got {listen!r} "
                         "(for example 10.231.1.1:8787, the lab network's gateway)") from None
    if not zones:
        raise SystemExit("lab_cloudflare: give at least one --zone (the lab's ddns_zone)")
    token = ensure_token(state)
    dns = [f"--dns-listen={dns_listen}"] if dns_listen else []
    if dns_listen and (state / "cloudflare-api.pid").exists() and not dns_answers(dns_listen,
                                                                                   zones[0]):
        stop(state)  # started earlier without DNS: again with it (records are in the state file)
        import time
        import urllib.request

        for _ in range(100):  # until the old one has let go of the address
            try:
                urllib.request.urlopen(f"http://{listen}/_hm/stats", timeout=1).close()
            except OSError:
                break
            time.sleep(0.1)
    return _server(f"--listen={listen}", *(f"--zone={z}" for z in zones), *dns,
                   f"--token-file={token}", f"--state-file={state / 'cloudflare-api.json'}",
                   "--daemon", f"--pid-file={state / 'cloudflare-api.pid'}",
                   f"--log-file={state / 'cloudflare-api.log'}")


def dns_answers(listen: str, zone: str) -> bool:
    """Whether a DNS server answers an SOA query for ``zone`` on IP:PORT (UDP, 2 s)."""
    import socket
    import struct

    host, _, port = listen.rpartition(":")
    qname = b"".join(bytes([len(label)]) + label.encode() for label in zone.split(".")) + b"\0"
    query = struct.pack("!HHHHHH", 0x4842, 0, 1, 0, 0, 0) + qname + struct.pack("!HH", 6, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        try:
            sock.sendto(query, (host, int(port)))
            data, _ = sock.recvfrom(512)
        except OSError:
            return False
    return data[:2] == b"\x48\x42"


def stop(state_dir: str | Path) -> str:
    pid_file = Path(state_dir).resolve() / "cloudflare-api.pid"
    if not pid_file.exists():
        return "not running"
    return _server("--stop", f"--pid-file={pid_file}")


def gateway_listen(subnet: str, port: int = 8787) -> str:
    """IP:PORT on the first address (the Docker gateway) of a lab subnet."""
    return f"{next(ipaddress.ip_network(subnet).hosts())}:{port}"


def start_stop_commands(sub, what: str, port: int) -> argparse.ArgumentParser:
    """Add the `start` (--state-dir, --listen or --subnet) and `stop` (--state-dir)
    subcommands of a lab server on the gateway, `what` at `port`, to the subparsers
    `sub`; return the `start` parser."""
    up = sub.add_parser("start", help=f"start the {what} (idempotent)")
    up.add_argument("--state-dir", required=True, help="the lab's hostmesh_state_dir")
    where = up.add_mutually_exclusive_group(required=True)
    where.add_argument("--listen", help="IP:PORT")
    where.add_argument("--subnet", help=f"the lab network's subnet: listen on its gateway, :{port}")
    down = sub.add_parser("stop", help=f"stop the {what} of --state-dir")
    down.add_argument("--state-dir", required=True)
    return up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lab_cloudflare.py",
                                     description=__doc__.split("\n", maxsplit=1)[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = start_stop_commands(sub, "server", 8787)
    up.add_argument("--zone", action="append", default=[], help="zone to serve (repeatable)")
    dns = up.add_mutually_exclusive_group()
    dns.add_argument("--dns-listen", help="also answer DNS for the zones on IP:PORT (UDP+TCP)")
    dns.add_argument("--dns", action="store_true",
                     help="with --subnet: also answer DNS on the gateway, port 53")
    args = parser.parse_args(argv)
    if args.cmd == "start":
        dns_listen = args.dns_listen
        if args.dns:
            if not args.subnet:
                parser.error("--dns needs --subnet (or give --dns-listen IP:PORT)")
            dns_listen = gateway_listen(args.subnet, 53)
        print(start(args.state_dir, args.listen or gateway_listen(args.subnet), args.zone,
                    dns_listen))
    else:
        print(stop(args.state_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
