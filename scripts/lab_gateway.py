#!/usr/bin/env python3
"""The lab's outside world, on the lab network's gateway: everything site.yml
talks to that is not a node.

- the Cloudflare v4 API stand-in (:8787), also answering DNS for the zone (:53);
- the ACME test CA, Debian's pebble (:14000), validating DNS-01 through that DNS;
- an image registry, Debian's docker-registry (:5000), holding the demo app
  `hostmesh/whoami:1` (built here: no public registry is reachable).

inventory/lab's group_vars point the ddns, tls and apps roles at these
addresses; `make lab-up`, the Molecule `default` scenario and the site tests
(scripts/sitelab.py) start them with `start`, and `stop` ends them. Both are
idempotent: what already runs is left running.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lab_acme
import lab_cloudflare
import lab_registry

# The demo app's version in inventory/lab (whoami's container.image).
DEMO_VERSION = "1"


def gateway(subnet: str) -> str:
    return lab_cloudflare.gateway_listen(subnet).rsplit(":", 1)[0]


def start(state_dir: str | Path, subnet: str, zone: str = "lab.test") -> str:
    """Start the three services for the lab on `subnet`; return what happened."""
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    ip = gateway(subnet)
    done = [
        "cloudflare " + lab_cloudflare.start(state, f"{ip}:8787", [zone], f"{ip}:53").strip(),
        "acme " + lab_acme.start(state, ip, f"{ip}:53"),
        "registry " + lab_registry.start(state, f"{ip}:{lab_registry.PORT}"),
    ]
    lab_registry.push_demo(f"{ip}:{lab_registry.PORT}", DEMO_VERSION)
    return ", ".join(done)


def stop(state_dir: str | Path) -> str:
    """Stop whatever `start` started for the lab of `state_dir`."""
    state = Path(state_dir)
    return ", ".join([
        "registry " + lab_registry.stop(state),
        "acme " + lab_acme.stop(state),
        "cloudflare " + lab_cloudflare.stop(state).strip(),
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lab_gateway.py",
                                     description=__doc__.split("\n", maxsplit=1)[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("start", help="start the lab's gateway services (idempotent)")
    up.add_argument("--state-dir", required=True, help="the lab's hostmesh_state_dir")
    up.add_argument("--subnet", required=True, help="the lab network's subnet (gateway: .1)")
    up.add_argument("--zone", default="lab.test")
    down = sub.add_parser("stop", help="stop the gateway services of --state-dir")
    down.add_argument("--state-dir", required=True)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "start":
            print(start(args.state_dir, args.subnet, args.zone))
        else:
            print(stop(args.state_dir))
    except lab_registry.RegistryError as exc:
        print(f"lab_gateway: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
