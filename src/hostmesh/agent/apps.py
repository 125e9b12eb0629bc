"""The node's container apps (issue 16): read from the local Docker Engine, checked on the
primary.

A node reports the containers of its hostmesh apps with its heartbeats (the primary
reads its own): the containers that carry the label `hostmesh.app`, which
`hostmesh.cluster.apps` puts on every replica (`hostmesh-<app>`, label
`hostmesh.app=<app>`). Each report is small and holds no secret::

    {"name": "whoami", "container": "hostmesh-whoami",
     "image": "10.231.1.1:5000/hostmesh/whoami:2", "state": "running", "health": "healthy"}

Reading, as root: `hostmesh apps-report` (hostmesh-apps-report.service, installed by
`hostmesh.cluster.apps` where Docker Engine runs) asks with one
`GET /containers/json?all=1&filters={"label":["hostmesh.app"]}` on the Docker Engine API
over its unix socket (http.client, standard library only) every few seconds and writes
only the filtered report to a file (DEFAULT_REPORT_FILE, 0640 root:<agent group>,
atomically). The list endpoint never returns a container's environment (that is only in
`/containers/{id}/json`, which is never asked), so an app's secrets cannot travel in a
report. No socket, or a socket nobody answers on: Docker is not running there, and the
node has no apps (an empty list, no error).

The agent reads that file (APPS_REPORT_FILE) and never Docker's socket: the docker group
amounts to root, and the agent parses what other nodes send. No file: no Docker, []. A
file older than STALE_INTERVALS of its interval, malformed, unreadable, or carrying the
reporter's problem: nothing is sent (the primary keeps the last report), logged once.

Checking (the primary, every report): every secondary may be hostile, so a report is a
list of at most MAX_APPS objects whose known keys are strictly checked (bounded
lengths, fixed patterns, fixed vocabularies); unknown keys are dropped (a newer agent
still heartbeats), anything else is refused with a message naming the item and the
field (400, nothing recorded). A report is stored on the sender's own record only.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import socket
import stat
import tempfile
import time
from urllib.parse import urlencode

LABEL = "hostmesh.app"
DEFAULT_SOCKET = "/run/docker.sock"
# written by root (hostmesh apps-report), read by the agent (APPS_REPORT_FILE)
DEFAULT_REPORT_FILE = "/run/hostmesh-apps/apps.json"
DEFAULT_INTERVAL = 5.0  # seconds between two reports (the heartbeats' cadence)
MIN_INTERVAL, MAX_INTERVAL = 0.1, 3600.0
STALE_INTERVALS = 3  # a report older than this many intervals is not sent
MIN_STALE_SECONDS = 1.0
MAX_REPORT_FILE_BYTES = 64 * 1024
MAX_APPS = 100  # containers per node in one report
MAX_KEYS = 16  # keys of one report item (known ones are kept)
MAX_DOCKER_ANSWER = 4 * 1024 * 1024  # bytes of Docker's answer read at most
# what a report may take of a heartbeat body (MAX_BODY_BYTES is 64 KiB by default):
# containers beyond it are left out rather than the heartbeat refused as too large
MAX_REPORT_BYTES = 32 * 1024
STATES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")
HEALTH = ("healthy", "unhealthy", "starting", "none")

# matched whole (fullmatch): `$` would let a trailing newline through
_APP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_CONTAINER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_IMAGE = re.compile(r"[\x21-\x7e]{1,512}")


class AppsInvalid(ValueError):
    """A heartbeat's apps are malformed; the message names the item and the field."""


class DockerUnavailable(OSError):
    """Docker is there but cannot be read (permission, a bad answer); says what to do."""


def _item(index: int, value: object) -> dict:
    where = f"apps[{index}]"
    if not isinstance(value, dict):
        raise AppsInvalid(f"{where}: expected an object such as {{\"name\": \"whoami\", "
                          "\"container\": \"hostmesh-whoami\", \"image\": \"...\", "
                          "\"state\": \"running\", \"health\": \"healthy\"}")
    if len(value) > MAX_KEYS:
        raise AppsInvalid(f"{where}: at most {MAX_KEYS} keys")
    name = value.get("name")
    if not isinstance(name, str) or not _APP_NAME.fullmatch(name):
        raise AppsInvalid(f"{where}.name: expected the app's name: 1-63 letters, digits, "
                          "'.', '_' or '-', starting with a letter or digit")
    container = value.get("container")
    if not isinstance(container, str) or not _CONTAINER.fullmatch(container):
        raise AppsInvalid(f"{where}.container: expected a container name: 1-128 letters, "
                          "digits, '.', '_' or '-', starting with a letter or digit")
    image = value.get("image")
    if image is not None and (not isinstance(image, str) or not _IMAGE.fullmatch(image)):
        raise AppsInvalid(f"{where}.image: expected an image reference of 1-512 printable "
                          "characters without spaces, or null")
    state = value.get("state")
    if state not in STATES:
        raise AppsInvalid(f"{where}.state: expected one of {', '.join(STATES)}")
    health = value.get("health", "none")
    if health not in HEALTH:
        raise AppsInvalid(f"{where}.health: expected one of {', '.join(HEALTH)}")
    return {"name": name, "container": container, "image": image, "state": state,
            "health": health}


def check_heartbeat_apps(value: object) -> list[dict] | None:
    """The validated apps of a heartbeat (None stays None: nothing reported); raises
    AppsInvalid."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise AppsInvalid("apps: expected a list of the node's app containers, e.g. "
                          "[{\"name\": \"whoami\", \"container\": \"hostmesh-whoami\", "
                          "\"image\": \"registry:5000/whoami:1\", \"state\": \"running\", "
                          "\"health\": \"healthy\"}] ([] for none)")
    if len(value) > MAX_APPS:
        raise AppsInvalid(f"apps: at most {MAX_APPS} containers per node, got {len(value)}")
    out = [_item(i, item) for i, item in enumerate(value)]
    seen: set[str] = set()
    for i, item in enumerate(out):
        if item["container"] in seen:
            raise AppsInvalid(f"apps[{i}].container: {item['container']!r} is listed twice")
        seen.add(item["container"])
    return sorted(out, key=lambda a: (a["name"], a["container"]))


# -- reading the local Docker Engine -----------------------------------------------


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("docker", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _health(container: dict) -> str:
    """healthy / unhealthy / starting from Docker's health check; none without one."""
    health = container.get("Health")  # newer engines (API 1.52+) say it outright
    if isinstance(health, dict) and health.get("Status") in HEALTH:
        return health["Status"]
    status = container.get("Status")
    if isinstance(status, str):  # "Up 3 minutes (healthy)", "Up 2 seconds (health: starting)"
        if "(healthy)" in status:
            return "healthy"
        if "(unhealthy)" in status:
            return "unhealthy"
        if "(health: starting)" in status:
            return "starting"
    return "none"


def report(containers: list) -> list[dict]:
    """The app reports of Docker's container list (items the primary would refuse are
    left out, so one odd container never costs the node its heartbeat)."""
    out: list[dict] = []
    seen: set[str] = set()
    size = 2
    for container in containers:
        if not isinstance(container, dict):
            continue
        labels = container.get("Labels") or {}
        names = container.get("Names") or []
        name = names[0].lstrip("/") if names and isinstance(names[0], str) else None
        item = {"name": labels.get(LABEL) if isinstance(labels, dict) else None,
                "container": name, "image": container.get("Image"),
                "state": container.get("State"), "health": _health(container)}
        try:
            item = _item(len(out), item)
        except AppsInvalid:
            continue
        size += len(json.dumps(item)) + 2
        if item["container"] not in seen and len(out) < MAX_APPS and size <= MAX_REPORT_BYTES:
            seen.add(item["container"])
            out.append(item)
    return sorted(out, key=lambda a: (a["name"], a["container"]))


def read_apps(socket_path: str = DEFAULT_SOCKET, timeout: float = 2.0) -> list[dict]:
    """The hostmesh app containers of the Docker Engine at `socket_path`.

    [] when Docker does not run here (no socket, or nobody listening on it); raises
    DockerUnavailable when it runs but cannot be read (the message says what to do).
    """
    if not os.path.exists(socket_path):
        return []
    query = urlencode({"all": "1", "filters": json.dumps({"label": [LABEL]})})
    conn = _UnixConnection(socket_path, timeout)
    try:
        conn.request("GET", f"/containers/json?{query}", headers={"Accept": "application/json"})
        resp = conn.getresponse()
        raw = resp.read(MAX_DOCKER_ANSWER + 1)
    except (FileNotFoundError, ConnectionRefusedError):
        return []  # a socket left behind by a stopped dockerd
    except PermissionError:
        raise DockerUnavailable(
            f"permission denied on {socket_path}: only root reads Docker's socket (run "
            "hostmesh apps-report as root: hostmesh-apps-report.service)") from None
    except (OSError, http.client.HTTPException) as exc:
        raise DockerUnavailable(f"Docker at {socket_path} did not answer: "
                                f"{type(exc).__name__}") from None
    finally:
        conn.close()
    if resp.status != 200:
        raise DockerUnavailable(f"Docker at {socket_path} answered HTTP {resp.status} to "
                                "the container list")
    if len(raw) > MAX_DOCKER_ANSWER:
        raise DockerUnavailable(f"Docker's container list is larger than "
                                f"{MAX_DOCKER_ANSWER} bytes")
    try:
        containers = json.loads(raw)
    except ValueError:
        raise DockerUnavailable(f"Docker at {socket_path} answered something other than "
                                "JSON") from None
    if not isinstance(containers, list):
        raise DockerUnavailable(f"Docker at {socket_path} answered something other than a "
                                "container list")
    return report(containers)


# -- the report file: written by root, read by the agent ------------------------------
#
# Only root (and the docker group, which amounts to root) may use Docker's socket, and
# the agent parses what other nodes send, so it must not hold that power. A small
# root-run service (`hostmesh apps-report`, hostmesh-apps-report.service from
# hostmesh.cluster.apps) asks Docker as read_apps does and writes only the filtered
# report to a file the agent's group may read; the agent reads that file.


def write_report(path: str, interval: float, apps: list[dict] | None,
                 problem: str | None = None) -> None:
    """Write the report file atomically (a temporary file in the same directory, then
    rename), mode 0640, group: the directory's (the agent's group)."""
    directory = os.path.dirname(os.path.abspath(path))
    body: dict = {"interval": interval, "apps": apps}
    if apps is None:
        body["problem"] = problem or "not read"
    data = json.dumps(body, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".apps.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o640)
        dir_gid = os.stat(directory).st_gid
        if os.fstat(fd).st_gid != dir_gid:
            try:  # a root shell's file: give it the directory's group, as the service's is
                os.fchown(fd, -1, dir_gid)
            except PermissionError:
                pass
        with os.fdopen(fd, "wb") as fh:
            fd = -1
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class ReportUnusable(ValueError):
    """The report file cannot be used (stale, malformed, unreadable); says what to do."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def read_report(path: str, now: float | None = None) -> list[dict]:
    """The apps of the report file at `path`: [] when there is none (no Docker on this
    node, so no reporter); raises ReportUnusable when it is stale, malformed, unreadable,
    or says that Docker could not be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return []
    except PermissionError:
        raise ReportUnusable("permission", (
            f"permission denied on {path}: the agent's user must be in the group that owns "
            f"{os.path.dirname(path)} (hostmesh-apps-report.service writes it "
            "root:<agent group> 0640; hostmesh.cluster.apps installs it), or set "
            "APPS_REPORT=false")) from None
    except OSError as exc:
        raise ReportUnusable("unreadable", f"{path} cannot be opened: "
                             f"{exc.strerror or type(exc).__name__}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ReportUnusable("malformed", f"{path} is not a regular file")
        raw = fh.read(MAX_REPORT_FILE_BYTES + 1)
    malformed = (f"{path} is not an apps report (expected {{\"interval\": 5, \"apps\": "
                 "[...]}} as hostmesh apps-report writes it): ")
    if len(raw) > MAX_REPORT_FILE_BYTES:
        raise ReportUnusable("malformed", malformed + f"larger than {MAX_REPORT_FILE_BYTES} "
                             "bytes")
    try:
        body = json.loads(raw)
    except ValueError:
        raise ReportUnusable("malformed", malformed + "not JSON") from None
    if not isinstance(body, dict):
        raise ReportUnusable("malformed", malformed + "not an object")
    interval = body.get("interval")
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) \
            or not MIN_INTERVAL <= interval <= MAX_INTERVAL:
        raise ReportUnusable("malformed", malformed + f"interval: expected {MIN_INTERVAL}"
                             f"-{MAX_INTERVAL} seconds")
    age = (time.time() if now is None else now) - st.st_mtime
    if age > max(STALE_INTERVALS * interval, MIN_STALE_SECONDS):
        raise ReportUnusable("stale", (
            f"{path} was written {age:.0f} s ago (every {interval:g} s expected): is "
            "hostmesh-apps-report.service running? (systemctl status "
            "hostmesh-apps-report.service)"))
    apps = body.get("apps")
    if apps is None:
        problem = body.get("problem")
        problem = problem[:300] if isinstance(problem, str) else "no reason given"
        raise ReportUnusable("reporter:" + problem, f"the reporter could not read Docker: "
                             f"{problem}")
    try:
        checked = check_heartbeat_apps(apps)
    except AppsInvalid as exc:
        raise ReportUnusable("malformed", malformed + str(exc)) from None
    return _capped(checked or [])


def _capped(apps: list[dict]) -> list[dict]:
    """At most MAX_REPORT_BYTES of a heartbeat (the rest is left out, as `report` does)."""
    out, size = [], 2
    for item in apps:
        size += len(json.dumps(item)) + 2
        if size > MAX_REPORT_BYTES:
            break
        out.append(item)
    return out


class AppsReader:
    """What the agent reports: the node's app containers from the report file, or None
    (nothing sent; the primary keeps the node's last report) while that file is stale,
    malformed or unreadable.

    `path` is the report file (APPS_REPORT_FILE). Logs once when reading starts failing
    (once per kind of problem) and once when it works again, never on every heartbeat."""

    def __init__(self, path: str, enabled: bool = True, log=None):
        self.path = path
        self.enabled = enabled
        self.log = log
        self.problem: str | None = None

    def read(self) -> list[dict] | None:
        if not self.enabled:
            return None
        try:
            apps = read_report(self.path)
        except ReportUnusable as exc:
            if self.log is not None and exc.kind != self.problem:
                self.log.warning("apps not reported reason=%s", _quote(str(exc)))
            self.problem = exc.kind
            return None
        if self.problem is not None and self.log is not None:
            self.log.info("apps reported again containers=%d", len(apps))
        self.problem = None
        return apps


# -- the reporter: `hostmesh apps-report` (root, hostmesh-apps-report.service) --------


def report_once(socket_path: str, out: str, interval: float) -> str | None:
    """Read Docker once and write the report file; returns the problem (None: apps
    written). Raises OSError when the file cannot be written."""
    try:
        apps = read_apps(socket_path)
    except DockerUnavailable as exc:
        write_report(out, interval, None, str(exc))
        return str(exc)
    write_report(out, interval, apps)
    return None


def add_arguments(parser) -> None:
    parser.description = (
        "Write this node's app containers (Docker containers labelled hostmesh.app: name, "
        "container, image, state, health; never their environment) to a file the node "
        "agent reads, so that the agent needs no access to Docker. Runs as root "
        "(hostmesh-apps-report.service).")
    parser.add_argument("--socket", default=DEFAULT_SOCKET,
                        help=f"the Docker Engine's unix socket (default {DEFAULT_SOCKET})")
    parser.add_argument("--out", default=DEFAULT_REPORT_FILE,
                        help=f"the report file (default {DEFAULT_REPORT_FILE}); its directory "
                             "must exist, the file takes its group")
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL,
                        help=f"seconds between two reports (default {DEFAULT_INTERVAL:g}, "
                             f"{MIN_INTERVAL}-{MAX_INTERVAL})")
    parser.add_argument("--once", action="store_true",
                        help="write one report and exit (1: Docker could not be read)")


def run(args) -> int:
    import logging
    import signal
    import sys

    log = logging.getLogger("hostmesh.apps_report")
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(levelname)s %(name)s %(message)s")
    socket_path = args.socket.removeprefix("unix://")
    out = os.path.abspath(args.out)
    if not MIN_INTERVAL <= args.interval <= MAX_INTERVAL:
        print(f"hostmesh apps-report: --interval {args.interval:g}: expected "
              f"{MIN_INTERVAL}-{MAX_INTERVAL} seconds", file=sys.stderr)
        return 2
    if not os.path.isdir(os.path.dirname(out)):
        print(f"hostmesh apps-report: {os.path.dirname(out)} does not exist: create it "
              "(owned by root, group of the agent, mode 0750) or choose another --out",
              file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if args.once:
        try:
            return 1 if report_once(socket_path, out, args.interval) else 0
        except OSError as exc:
            print(f"hostmesh apps-report: cannot write {out}: {exc}", file=sys.stderr)
            return 2
    log.info("apps report started out=%s socket=%s interval=%g", out, socket_path,
             args.interval)
    shown: str | None = None
    next_at = time.monotonic()
    while True:
        try:
            problem = report_once(socket_path, out, args.interval)
        except OSError as exc:
            problem = f"cannot write {out}: {exc.strerror or type(exc).__name__}"
        if problem != shown:
            if problem is None:
                log.info("apps reported again")
            else:
                log.warning("apps not reported reason=%s", _quote(problem))
            shown = problem
        next_at = max(next_at + args.interval, time.monotonic())
        time.sleep(max(0.0, next_at - time.monotonic()))


def _quote(text: str) -> str:
    return '"' + " ".join(text.split()).replace('"', "'") + '"'
