"""``python -m hostmesh.tls.node install``: install the pairs the agent fetched (root).

On a secondary the agent (user ``hostmesh``, no write access to Traefik's files)
leaves each new pair as ``<inbox>/<set>.json``; systemd's
``hostmesh-tls-install.path`` starts this command as root, which trusts nothing
in that directory:

- only the sets named by ``--set NAME=name1,name2`` are looked at, and a bundle
  must be for exactly those names;
- a file is read without following a symlink, at most 128 KiB, and checked from
  scratch (JSON shape, version = the chain's hash, the key belongs to the leaf);
- who signed it (``hostmesh.tls.trust``): the leaf must lead up to a root of the
  system store or of ``--trusted-roots FILE``, be valid now and end at most
  ``trust.MAX_DAYS_AHEAD`` days from now; anything else is refused, so a pair an
  agent account made itself is never served;
- a set whose installed certificate passes the same check and ends later than the
  offered one keeps it (an installed pair that fails the check is replaced);
- then ``hostmesh.tls.deploy.update`` installs it: the key 0600 and the chain
  owned by ``--owner`` (Traefik's user), ``hostmesh-tls.yml`` replaced last in one
  rename (paths only), other sets left as they are. Traefik reloads; no restart.

Exit codes: 0 every bundle installed or already current, 1 a bundle was refused
(an ERROR line says which and why, never its content; nothing of it is written and
the current pair keeps serving), 2 bad arguments or an unusable roots file.

``status``: print the installed sets as JSON (version, serial, not_after; with
``--set``, whether each passes the check: ``trusted``, ``refused``), which the tls
role reads to keep a newer certificate than the one it carries only when it is
trusted. ``verify --issuer-state-dir DIR``: the same check on the issuer's current
pair of each ``--set`` (JSON; exit 1 when one fails), which the role runs on the
primary before it turns agent sync on.

``probe``: what the tls role would change on this node, in one command (a spec on
standard input, JSON out; nothing is changed and no key material is printed): the
files and units it manages (``differs``), the pairs served and whether each passes
the check, whether every pair file is as the role writes it, the files its cleanup
would remove, the issuer's current pairs (on the primary) and the virtualenv's
target and install record. The role includes its writing tasks only where this finds
a difference, so a converged cluster costs a few tasks.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from hostmesh.tls import bundle, deploy, trust

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


def _trusted(pair: deploy.Pair, names: list[str], roots: str) -> dict | None:
    """The check's answer for an installed pair, or None when it fails (logged)."""
    try:
        return trust.verify(pair.cert.read_bytes(), pair.key.read_bytes(), names, roots=roots)
    except (OSError, bundle.BundleError) as exc:
        log.warning("the installed certificate of %s fails the check (%s): a trusted one "
                    "replaces it", pair.name, exc)
        return None


def install(inbox: Path, tls_dir: Path, dynamic_dir: Path, sets: dict[str, list[str]],
            owner: tuple[int, int] | None, roots: str = "") -> int:
    refused = 0
    sources: dict[str, tuple[bytes, bytes]] = {}
    current = deploy.installed(tls_dir, dynamic_dir)
    for name, names in sorted(sets.items()):
        path = inbox / f"{name}.json"
        if not path.exists() and not path.is_symlink():
            continue
        try:
            got = bundle.read_file(path, name, names)
            if name in current and current[name].serial == got["version"]:
                continue
            chain, key = got["fullchain"].encode("ascii"), got["key"].encode("ascii")
            trust.verify(chain, key, names, roots=roots)
        except bundle.BundleError as exc:
            log.error("refused %s: %s; nothing was installed, the current certificate keeps "
                      "serving", path, exc)
            refused += 1
            continue
        served = current.get(name)
        if served is not None:
            mine = _trusted(served, names, roots)
            if mine is not None and mine["not_after"] > got["not_after"]:
                log.warning("kept the installed certificate of %s: it ends later than the one "
                            "in the inbox", name)
                continue
        sources[name] = (chain, key)
    for other in sorted(p.name for p in inbox.glob("*.json") if p.stem not in sets):
        log.warning("ignored %s: not one of the configured sets (%s)", other,
                    ", ".join(sorted(sets)))
    if sources:
        changed, _kept = deploy.update(sources, tls_dir, dynamic_dir, owner=owner)
        for name in sorted(sources):
            log.info("installed %s version %s for Traefik (%s)", name,
                     bundle.version_of(sources[name][0]), dynamic_dir)
        if not changed:
            log.info("nothing to change")
    return 1 if refused else 0


def status(tls_dir: Path, dynamic_dir: Path, sets: dict[str, list[str]] | None = None,
           roots: str = "") -> dict:
    out = {}
    for name, pair in sorted(deploy.installed(tls_dir, dynamic_dir).items()):
        try:
            info = bundle.inspect(pair.cert.read_bytes())
        except (OSError, bundle.BundleError):
            continue
        out[name] = {"version": pair.serial, "serial": info["serial"],
                     "not_after": info["not_after"]}
        if sets is not None:
            out[name].update(_verdict(pair.cert, pair.key, sets.get(name), roots))
    return out


def _verdict(cert: Path, key: Path, names: list[str] | None, roots: str) -> dict:
    if names is None:
        return {"trusted": False, "refused": "not one of the sets given"}
    try:
        trust.verify(cert.read_bytes(), key.read_bytes(), names, roots=roots)
    except OSError as exc:
        return {"trusted": False, "refused": f"cannot read the pair: {exc.strerror}"}
    except bundle.BundleError as exc:
        return {"trusted": False, "refused": str(exc)}
    return {"trusted": True}


def verify_issued(state_dir: Path, sets: dict[str, list[str]], roots: str) -> dict:
    """The check on the issuer's current pair of each set (``<state>/certs/<set>/current``);
    a set the issuer has no pair of yet is left out."""
    out = {}
    for name, names in sorted(sets.items()):
        cur = state_dir / "certs" / name / "current"
        if not (cur / "fullchain.pem").is_file():
            continue
        out[name] = _verdict(cur / "fullchain.pem", cur / "privkey.pem", names, roots)
    return out


def _file_differs(spec: dict) -> bool:
    """True when ``spec`` (path, state file/directory/absent, mode, owner, group,
    sha256) does not describe the file as it is."""
    import grp
    import hashlib
    import os
    import pwd
    import stat

    try:
        st = os.lstat(spec["path"])
    except FileNotFoundError:
        return spec["state"] != "absent"
    if spec["state"] == "absent":
        return True
    kind = stat.S_ISDIR if spec["state"] == "directory" else stat.S_ISREG
    if not kind(st.st_mode) or format(stat.S_IMODE(st.st_mode), "04o") != spec["mode"]:
        return True
    try:
        if (pwd.getpwuid(st.st_uid).pw_name != spec["owner"]
                or grp.getgrgid(st.st_gid).gr_name != spec["group"]):
            return True
    except KeyError:
        return True
    if spec.get("sha256"):
        with open(spec["path"], "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest() != spec["sha256"]
    return False


def _unit_differs(spec: dict) -> bool:
    import subprocess

    def ask(what: str) -> str:
        try:
            return subprocess.run(["systemctl", what, spec["name"]], capture_output=True,
                                  text=True, check=False, timeout=30).stdout.strip()
        except OSError:
            return ""

    if "enabled" in spec and (ask("is-enabled") == "enabled") != spec["enabled"]:
        return True
    return "active" in spec and (ask("is-active") == "active") != spec["active"]


def _pair_right(tls: Path, base: str, owner: str, group: str) -> bool:
    """Both files of a pair as the role writes them: the chain's hash names it, 0644
    and 0600, Traefik's user and group, and the key belongs to the chain."""
    crt, key = tls / f"{base}.crt", tls / f"{base}.key"
    for path, mode in ((crt, "0644"), (key, "0600")):
        if _file_differs({"path": str(path), "state": "file", "mode": mode, "owner": owner,
                          "group": group}):
            return False
    try:
        chain = crt.read_bytes()
        if not base.endswith("-" + bundle.version_of(chain)):
            return False
        bundle.server_context(chain, key.read_bytes())
    except (OSError, bundle.BundleError):
        return False
    return True


def probe(spec: dict) -> dict:
    """The role's one look at a node (see the module's text)."""
    import importlib.util
    import platform

    tls, dyn = Path(spec["tls_dir"]), Path(spec["dynamic_dir"])
    sets = {name: list(names) for name, names in spec.get("sets", {}).items()}
    roots = spec.get("roots", "")
    out: dict = {
        "target": f"{sys.version_info[0]}.{sys.version_info[1]}:{platform.machine()}",
        "differs": [f["path"] for f in spec.get("files", []) if _file_differs(f)]
        + [u["name"] for u in spec.get("units", []) if _unit_differs(u)],
    }
    record = Path(spec["manifest"]) if spec.get("manifest") else None
    out["installed"] = record.read_text() if record is not None and record.is_file() \
        and importlib.util.find_spec("acme") else ""
    if spec.get("issuer_state_dir"):
        issued = {}
        for name, verdict in verify_issued(Path(spec["issuer_state_dir"]), sets, roots).items():
            chain = (Path(spec["issuer_state_dir"]) / "certs" / name / "current"
                     / "fullchain.pem").read_bytes()
            info = bundle.inspect(chain)
            issued[name] = {"version": bundle.version_of(chain), "serial": info["serial"],
                            "not_after": info["not_after"], **verdict}
        out["issued"] = issued
    out["served"] = status(tls, dyn, sets, roots)
    current = deploy.installed(tls, dyn)
    out["pairs"] = {p.cert.stem: _pair_right(tls, p.cert.stem, spec["owner"], spec["group"])
                    for p in current.values()}
    out["stale"] = [str(p) for p in deploy.stale(tls, {n: p.serial for n, p in current.items()})]
    try:
        text = (dyn / deploy.DYNAMIC_NAME).read_text(encoding="utf-8")
        config = json.loads("\n".join(ln for ln in text.splitlines() if not ln.startswith("#")))
        # byte for byte what the role (to_nice_json) and deploy.render write for it
        canonical = text == (deploy.render([]).partition("\n")[0] + "\n"
                             + json.dumps(config, indent=2, sort_keys=True) + "\n")
        out["dynamic"] = config if canonical else "not as the role writes it"
    except (OSError, ValueError, IndexError):
        out["dynamic"] = None
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
    inst.add_argument("--owner", help="owner of the installed pairs (Traefik's user)")
    st = sub.add_parser("status", help="print the installed sets as JSON")
    ver = sub.add_parser("verify", help="check the issuer's current pairs (JSON; exit 1 when "
                                        "one fails)")
    ver.add_argument("--issuer-state-dir", required=True, help="the issuer's --state-dir")
    sub.add_parser("probe", help="what the tls role would change here (a JSON spec on "
                                 "standard input; JSON out)")
    for p in (inst, st, ver):
        p.add_argument("--set", action="append", default=[], dest="sets",
                       help="NAME=name1,name2: a set this node serves (repeat)")
        p.add_argument("--trusted-roots", metavar="FILE",
                       help="PEM roots trusted besides the system store ('-': standard input)")
    for p in (inst, st):
        p.add_argument("--tls-dir", required=True)
        p.add_argument("--dynamic-dir", required=True)
    args = parser.parse_args(argv)
    if args.command == "probe":
        try:
            print(json.dumps(probe(json.load(sys.stdin)), sort_keys=True))
        except (ValueError, KeyError, TypeError, OSError, bundle.BundleError) as exc:
            log.error("probe: %s", exc)
            return 2
        return 0
    try:
        sets = _sets(args.sets)
        roots = trust.read_roots(args.trusted_roots)
        if args.command == "status":
            print(json.dumps(status(Path(args.tls_dir), Path(args.dynamic_dir),
                                    sets if sets else None, roots), sort_keys=True))
            return 0
        if not sets:
            raise ValueError("no --set given: name the sets this node may install")
        if args.command == "verify":
            out = verify_issued(Path(args.issuer_state_dir), sets, roots)
            print(json.dumps(out, sort_keys=True))
            for name, verdict in out.items():
                if not verdict["trusted"]:
                    log.error("the issuer's certificate of %s fails the check: %s", name,
                              verdict["refused"])
            return 0 if all(v["trusted"] for v in out.values()) else 1
        owner = None
        if args.owner:
            import pwd

            entry = pwd.getpwnam(args.owner)
            owner = (entry.pw_uid, entry.pw_gid)
    except (ValueError, KeyError, trust.RootsError) as exc:
        log.error("bad arguments: %s; nothing was installed", exc)
        return 2
    inbox = Path(args.inbox)
    try:
        # the inbox changed while this ran (another set arrived): look again, a few times
        for _round in range(3):
            before = _mtime(inbox)
            rc = install(inbox, Path(args.tls_dir), Path(args.dynamic_dir), sets, owner, roots)
            if _mtime(inbox) == before:
                break
        return rc
    except OSError as exc:
        log.error("could not install: %s; the current certificate keeps serving", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
