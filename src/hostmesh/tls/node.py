"""``python -m hostmesh.tls.node install``: install the pairs the agent fetched (root).

On a secondary the agent (user ``hostmesh``, no write access to Traefik's files)
leaves each new pair as ``<inbox>/<set>.json``; systemd's
``hostmesh-tls-install.path`` starts this command as root, which trusts nothing
in that directory:

- only the sets named by ``--set NAME=name1,name2`` are looked at, and a bundle
  must be for exactly those names;
- a file is read without following a symlink, at most 128 KiB, and checked from
  scratch (JSON shape, version = the chain's hash, the key belongs to the leaf);
- a set whose installed certificate ends later than the offered one keeps it;
- then ``hostmesh.tls.deploy.update`` installs it: the key 0600 and the chain
  owned by ``--owner`` (Traefik's user), ``hostmesh-tls.yml`` replaced last in one
  rename (paths only), other sets left as they are. Traefik reloads; no restart.

Exit codes: 0 every bundle installed or already current, 1 a bundle was refused
(an ERROR line says which and why, never its content), 2 bad arguments.
Also ``status``: print the installed sets as JSON (version, serial, not_after),
which the tls role reads to keep a newer certificate than the one it carries.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from hostmesh.tls import bundle, deploy

log = logging.getLogger("hostmesh.tls")


def _sets(values: list[str]) -> dict[str, list[str]]:
    out = {}
    for value in values:
        name, sep, names = value.partition("=")
        domains = [d.strip().lower() for d in names.split(",") if d.strip()]
        if not sep or not bundle.SET_RE.fullmatch(name) or not domains:
            raise ValueError(f"--set {value!r}: expected NAME=name1,name2 (e.g. "
                             "example.org=example.org,*.example.org)")
        out[name] = domains
    return out


def install(inbox: Path, tls_dir: Path, dynamic_dir: Path, sets: dict[str, list[str]],
            owner: tuple[int, int] | None) -> int:
    refused = 0
    sources: dict[str, tuple[bytes, bytes]] = {}
    current = deploy.installed(tls_dir, dynamic_dir)
    for name, names in sorted(sets.items()):
        path = inbox / f"{name}.json"
        if not path.exists() and not path.is_symlink():
            continue
        try:
            got = bundle.read_file(path, name, names)
        except bundle.BundleError as exc:
            log.error("refused %s: %s; the current certificate keeps serving", path, exc)
            refused += 1
            continue
        if name in current and current[name].serial == got["version"]:
            continue
        sources[name] = (got["fullchain"].encode("ascii"), got["key"].encode("ascii"))
    for other in sorted(p.name for p in inbox.glob("*.json") if p.stem not in sets):
        log.warning("ignored %s: not one of the configured sets (%s)", other,
                    ", ".join(sorted(sets)))
    if sources:
        changed, kept = deploy.update(sources, tls_dir, dynamic_dir, owner=owner,
                                      newer_only=True)
        for name in kept:
            log.warning("kept the installed certificate of %s: it ends later than the one "
                        "in the inbox", name)
        for name in sorted(set(sources) - set(kept)):
            log.info("installed %s version %s for Traefik (%s)", name,
                     bundle.version_of(sources[name][0]), dynamic_dir)
        if not changed:
            log.info("nothing to change")
    return 1 if refused else 0


def status(tls_dir: Path, dynamic_dir: Path) -> dict:
    out = {}
    for name, pair in sorted(deploy.installed(tls_dir, dynamic_dir).items()):
        try:
            info = bundle.inspect(pair.cert.read_bytes())
        except (OSError, bundle.BundleError):
            continue
        out[name] = {"version": pair.serial, "serial": info["serial"],
                     "not_after": info["not_after"]}
    return out


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="hostmesh-tls: %(levelname)s %(message)s",
                        stream=sys.stderr)
    parser = argparse.ArgumentParser(prog="python -m hostmesh.tls.node",
                                     description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install", help="install the pairs the agent left in the inbox")
    inst.add_argument("--inbox", required=True, help="the agent's TLS_INBOX_DIR")
    inst.add_argument("--set", action="append", default=[], dest="sets",
                      help="NAME=name1,name2: a set this node serves (repeat)")
    inst.add_argument("--owner", help="owner of the installed pairs (Traefik's user)")
    st = sub.add_parser("status", help="print the installed sets as JSON")
    for p in (inst, st):
        p.add_argument("--tls-dir", required=True)
        p.add_argument("--dynamic-dir", required=True)
    args = parser.parse_args(argv)
    if args.command == "status":
        print(json.dumps(status(Path(args.tls_dir), Path(args.dynamic_dir)), sort_keys=True))
        return 0
    try:
        sets = _sets(args.sets)
        if not sets:
            raise ValueError("no --set given: name the sets this node may install")
        owner = None
        if args.owner:
            import pwd

            entry = pwd.getpwnam(args.owner)
            owner = (entry.pw_uid, entry.pw_gid)
    except (ValueError, KeyError) as exc:
        log.error("bad arguments: %s; nothing was installed", exc)
        return 2
    inbox = Path(args.inbox)
    try:
        # the inbox changed while this ran (another set arrived): look again, a few times
        for _round in range(3):
            before = _mtime(inbox)
            rc = install(inbox, Path(args.tls_dir), Path(args.dynamic_dir), sets, owner)
            if _mtime(inbox) == before:
                break
        return rc
    except OSError as exc:
        log.error("could not install: %s; the current certificate keeps serving", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
