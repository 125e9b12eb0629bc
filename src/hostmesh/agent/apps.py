"""The node's container apps (issue 16): read from the local Docker Engine, checked on the
primary.

A node reports the containers of its hostmesh apps with its heartbeats (the primary
reads its own): the containers that carry the label `hostmesh.app`, which
`hostmesh.cluster.apps` puts on every replica (`hostmesh-<app>`, label
`hostmesh.app=<app>`). Each report is small and holds no secret::

    {"name": "whoami", "container": "hostmesh-whoami",
     "image": "10.231.1.1:5000/hostmesh/whoami:2", "state": "running", "health": "healthy"}

Reading: one `GET /containers/json?all=1&filters={"label":["hostmesh.app"]}` on the
Docker Engine API over its unix socket (http.client, standard library only). The list
endpoint never returns a container's environment (the environment is only in
`/containers/{id}/json`, which this module never asks), so an app's secrets cannot
travel in a report. No socket, or a socket nobody answers on: Docker is not running
there, and the node has no apps (an empty list, no error).

Checking (the primary, every report): every secondary may be hostile, so a report is a
list of at most MAX_APPS objects whose known keys are strictly checked (bounded
lengths, fixed patterns, fixed vocabularies); unknown keys are dropped (a newer agent
still heartbeats), anything else is refused with a message naming the item and the
field (400, nothing recorded). A report is stored on the sender's own record only.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
from urllib.parse import urlencode

LABEL = "hostmesh.app"
DEFAULT_SOCKET = "/run/docker.sock"
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
            f"permission denied on {socket_path}: this agent's user may not read Docker; "
            "hostmesh.cluster.apps adds it to the docker group (apps_agent_reads_docker) "
            "and restarts the agent, or set APPS_REPORT=false") from None
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


class AppsReader:
    """What a node reports: its app containers, or None while Docker cannot be read.

    Logs once when reading starts failing and once when it works again (never on
    every heartbeat)."""

    def __init__(self, socket_path: str, enabled: bool = True, timeout: float = 2.0,
                 log=None):
        self.socket_path = socket_path
        self.enabled = enabled
        self.timeout = timeout
        self.log = log
        self.problem: str | None = None

    def read(self) -> list[dict] | None:
        if not self.enabled:
            return None
        try:
            apps = read_apps(self.socket_path, self.timeout)
        except DockerUnavailable as exc:
            if self.log is not None and str(exc) != self.problem:
                self.log.warning("apps not reported reason=%s", _quote(str(exc)))
            self.problem = str(exc)
            return None
        if self.problem is not None and self.log is not None:
            self.log.info("apps reported again containers=%d", len(apps))
        self.problem = None
        return apps


def _quote(text: str) -> str:
    return '"' + " ".join(text.split()).replace('"', "'") + '"'
