#!/usr/bin/env python3
"""TCP connect scan of one address, for the firewall checks (standard library only).

    scan.py ADDRESS PORT [PORT...] [--timeout SECONDS]

Prints {"<port>": "open" | "closed" | "filtered"} as JSON: open = the
connection was accepted, closed = refused (the firewall let the SYN through,
nothing listens), filtered = no answer before the timeout (dropped).
Runs on the controller and on the lab nodes: only ever point it at your own
lab containers.
"""

from __future__ import annotations

import argparse
import json
import socket
from concurrent.futures import ThreadPoolExecutor


def probe(address: str, port: int, timeout: float) -> str:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return "open"
    except ConnectionRefusedError:
        return "closed"
    except TimeoutError:
        return "filtered"
    except OSError as exc:  # unreachable host/network: nothing answered either
        return f"error: {exc.strerror or exc}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("ports", nargs="+", type=int)
    parser.add_argument("--timeout", type=float, default=1.5)
    args = parser.parse_args()
    with ThreadPoolExecutor(max_workers=len(args.ports)) as pool:
        states = pool.map(lambda p: probe(args.address, p, args.timeout), args.ports)
        print(json.dumps(dict(zip((str(p) for p in args.ports), states)), sort_keys=True))


if __name__ == "__main__":
    main()
