"""The `hostmesh` command: `hostmesh agent`, `hostmesh ddns sync`, `hostmesh acme renew`
and `hostmesh apps-report`.

Each subcommand lives in its own package and registers its arguments through
an `add_arguments(parser)` / `run(args) -> int` pair, imported lazily so the
agent never imports the Cloudflare SDK and vice versa.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand path -> module holding add_arguments() and run()
_COMMANDS = {
    ("agent",): ("hostmesh.agent.main", "run the node agent (primary or secondary)"),
    ("ddns", "sync"): ("hostmesh.dns.sync", "update this node's own DNS records"),
    ("acme", "renew"): ("hostmesh.tls.cli", "order or renew the cluster's certificates (primary)"),
    ("apps-report",): ("hostmesh.agent.apps", "write this node's app containers for the agent (root)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hostmesh", description=__doc__.splitlines()[0])
    from hostmesh import __version__

    parser.add_argument("--version", action="version", version=f"hostmesh {__version__}")
    top = parser.add_subparsers(dest="command", required=True)
    groups: dict[str, argparse._SubParsersAction] = {}
    for path, (module_name, help_text) in _COMMANDS.items():
        if len(path) == 1:
            sub = top.add_parser(path[0], help=help_text)
        else:
            if path[0] not in groups:
                group = top.add_parser(path[0], help=f"{path[0]} commands")
                groups[path[0]] = group.add_subparsers(dest="subcommand", required=True)
            sub = groups[path[0]].add_parser(path[1], help=help_text)
        sub.set_defaults(_module=module_name)
        module = _load(module_name)
        if module is not None:
            module.add_arguments(sub)
    return parser


def _load(module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError:
        # A subcommand whose optional extra is missing still shows in --help;
        # running it then raises the import error with the missing package.
        return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    module = importlib.import_module(args._module)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
