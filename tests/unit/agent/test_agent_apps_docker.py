"""Apps read from the real Docker Engine of this host (issue 16).

Builds a tiny image locally (the lab's static whoami plus a static /check program,
imported from a tar: nothing is pulled), starts a few labelled containers (healthy,
unhealthy, without health check, exited, unlabelled, one with a secret in its
environment), and checks what `read_apps` reads, what the reporter (`hostmesh
apps-report`, a real process run as hostmesh-apps-report.service runs it: uid 0 without
any capability, the agent's group) writes, and what real agents (a primary and a
secondary on 127.0.0.x, real HTTP, real SQLite) report from its file. The agent's user
needs no access to Docker at all: a user that may not use Docker's socket reads the
report through its group; outside that group it gets a clear error.

Needs the Docker Engine (`scripts/setup-host.sh` starts it; `make test` runs it first).
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pytest
from hostmesh.module_utils._agent_client import AgentClient, Credentials

from hostmesh.agent.apps import read_apps

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests" / "integration" / "agent"))
sys.path.insert(0, str(ROOT / "scripts"))
import lab_registry
from agent_harness import ADMIN_TOKEN, Cluster, wait_for

SOCKET = "/run/docker.sock"
PREFIX = f"hmut{os.getpid()}"  # app names and containers of this test run only
SECRET = "s3cret-" + secrets.token_hex(16)
CHECK_C = "int main(int argc, char **argv) { (void)argv; return argc > 1; }\n"


def _docker():
    if not os.path.exists(SOCKET) or shutil.which("docker") is None:
        pytest.fail("the Docker Engine is not running here: run scripts/setup-host.sh (as "
                    "root; make test does) and run this test again")
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"the Docker Engine does not answer ({exc}): run scripts/setup-host.sh")
    return client


def _image_tar(tmp: Path) -> bytes:
    whoami = lab_registry.build_binary(tmp)
    (tmp / "check.c").write_text(CHECK_C)
    subprocess.run(["gcc", "-static", "-O2", "-o", str(tmp / "check"), str(tmp / "check.c")],
                   check=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in (whoami, tmp / "check"):
            info = tar.gettarinfo(str(path), arcname=path.name)
            info.uid = info.gid = 0
            info.mode = 0o755
            with open(path, "rb") as fh:
                tar.addfile(info, fh)
    return buf.getvalue()


def _app(name: str) -> str:
    return f"{PREFIX}-{name}"


@pytest.fixture(scope="module")
def containers(tmp_path_factory):
    """{short name: container} running on this host's Docker; removed afterwards."""
    client = _docker()
    image = f"hostmesh-unittest-apps:{PREFIX}"
    client.api.import_image_from_data(_image_tar(tmp_path_factory.mktemp("image")),
                                      repository=image.split(":")[0], tag=PREFIX,
                                      changes=['ENTRYPOINT ["/whoami"]'])
    made = {}
    check = {"interval": 300_000_000, "timeout": 2_000_000_000, "retries": 1,
             "start_period": 0}
    specs = {
        "web": {"healthcheck": {"test": ["CMD", "/check"], **check},
                "environment": {"API_TOKEN": SECRET, "HOSTMESH_APP": _app("web")}},
        "sick": {"healthcheck": {"test": ["CMD", "/check", "fail"], **check}},
        "plain": {},
        "done": {"entrypoint": ["/check"]},
        "other": {"labels": {"team": "not-hostmesh"}},
    }
    try:
        for short, spec in specs.items():
            labels = spec.pop("labels", {"hostmesh.app": _app(short)})
            made[short] = client.containers.run(
                image, name=f"hostmesh-{_app(short)}", labels=labels, detach=True,
                network_mode="none", **spec)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for c in made.values():
                c.reload()
            health = {k: c.attrs["State"].get("Health", {}).get("Status")
                      for k, c in made.items()}
            if health["web"] == "healthy" and health["sick"] == "unhealthy" \
                    and made["done"].status == "exited":
                break
            time.sleep(0.2)
        yield made
    finally:
        for c in made.values():
            c.remove(force=True)
        client.images.remove(image, force=True)


def _ours(apps: list[dict]) -> list[dict]:
    return [a for a in apps if a["name"].startswith(PREFIX)]


def _expected(image: str) -> list[dict]:
    def item(short, state, health):
        return {"name": _app(short), "container": f"hostmesh-{_app(short)}", "image": image,
                "state": state, "health": health}

    return [item("done", "exited", "none"), item("plain", "running", "none"),
            item("sick", "running", "unhealthy"), item("web", "running", "healthy")]


def test_read_apps_from_the_real_engine(containers):
    apps = _ours(read_apps(SOCKET))
    assert apps == _expected(f"hostmesh-unittest-apps:{PREFIX}")
    assert SECRET not in json.dumps(read_apps(SOCKET))  # never the environment


NOBODY = 65534  # the agent's user and group in these tests (nobody / nogroup)
CAPLESS_ROOT = ["setpriv", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all",
                "--ambient-caps=-all", "--bounding-set=-all", "--no-new-privs"]


def _env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT / "src"),
            "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def report_dir():
    """A directory like /run/hostmesh-apps: root:<agent group> 0750, in /tmp so that
    another user can reach it (pytest's own directories are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="hostmesh-apps-"))
    try:
        path.chmod(0o755)
        (path / "run").mkdir(mode=0o750)
        os.chown(path / "run", 0, NOBODY)
        yield path / "run"
    finally:
        shutil.rmtree(path)


def _reporter(out: Path, interval: str, log: Path) -> subprocess.Popen:
    """`hostmesh apps-report` as its unit runs it: uid 0 without any capability, the
    agent's group, no new privileges."""
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [*CAPLESS_ROOT, sys.executable, "-m", "hostmesh.cli", "apps-report",
             "--socket", SOCKET, "--out", str(out), "--interval", interval],
            env=_env(), stdout=fh, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _as_user(gid: int, code: str, *args: str) -> subprocess.CompletedProcess:
    """Python code run as the agent's user (nobody) with only the group `gid`."""
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={gid}", "--clear-groups",
                           sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=_env(), check=False)


AGENT_READS = ("import json, sys\n"
               "from hostmesh.agent.apps import AppsReader, read_apps, DockerUnavailable\n"
               "try: read_apps(); print('DOCKER READABLE'); sys.exit(4)\n"
               "except DockerUnavailable as exc: print('docker:', exc, file=sys.stderr)\n"
               "import logging; logging.basicConfig()\n"
               "apps = AppsReader(sys.argv[1], log=logging.getLogger('agent')).read()\n"
               "print(json.dumps(apps)); sys.exit(0 if apps is not None else 3)\n")


def test_the_reporter_writes_the_apps_for_an_agent_without_docker_access(containers,
                                                                          report_dir,
                                                                          tmp_path):
    out = report_dir / "apps.json"
    log = tmp_path / "reporter.log"
    proc = _reporter(out, "0.3", log)
    try:
        wait_for(lambda: out.exists(), 15, what="the reporter's first report")
        st = out.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, NOBODY, 0o640)
        raw = out.read_text()
        assert SECRET not in raw and "API_TOKEN" not in raw and "Env" not in raw
        body = json.loads(raw)
        assert set(body) == {"apps", "interval"} and body["interval"] == 0.3
        assert _ours(body["apps"]) == _expected(f"hostmesh-unittest-apps:{PREFIX}")
        assert all(set(a) == {"name", "container", "image", "state", "health"}
                   for a in body["apps"])
        # it keeps writing (the agent sends nothing once the file is 3 intervals old)
        first = st.st_mtime_ns
        wait_for(lambda: out.stat().st_mtime_ns > first, 5, what="the next report")

        # the agent's user: no access to Docker's socket at all, only the report's group
        agent = _as_user(NOBODY, AGENT_READS, str(out))
        assert agent.returncode == 0, agent.stdout + agent.stderr
        assert "docker: permission denied on /run/docker.sock: only root" in agent.stderr
        assert _ours(json.loads(agent.stdout)) == _expected(f"hostmesh-unittest-apps:{PREFIX}")
        # a user outside the agent's group reads nothing, and is told why
        other = _as_user(12345, AGENT_READS, str(out))
        assert other.returncode == 3 and other.stdout.strip() == "null", other.stderr
        assert f"permission denied on {out}" in other.stderr
        assert proc.poll() is None, log.read_text()
    finally:
        _stop(proc)
    assert proc.returncode == 0, log.read_text()  # SIGTERM: a clean stop
    assert "apps report started" in log.read_text()
    assert sorted(os.listdir(report_dir)) == ["apps.json"]  # no temporary file left
    # the reporter stopped: its last report gets stale, and is not sent
    wait_for(lambda: _as_user(NOBODY, AGENT_READS, str(out)).returncode == 3, 10,
             what="the stopped reporter's report stale")
    assert "hostmesh-apps-report.service" in _as_user(NOBODY, AGENT_READS, str(out)).stderr


def test_agents_report_the_engine_s_apps_and_follow_changes(containers, tmp_path, report_dir):
    out = report_dir / "apps.json"
    reporter = _reporter(out, "0.3", tmp_path / "reporter.log")
    cluster = Cluster(tmp_path)
    try:
        primary = cluster.primary(APPS_REPORT_FILE=str(out), HEARTBEAT_INTERVAL="0.3")
        cluster.secondary(primary, "node2", APPS_REPORT_FILE=str(out), HEARTBEAT_INTERVAL="0.3",
                          STARTUP_HEARTBEAT_DELAY="0.2")
        admin = AgentClient(primary.url, Credentials(admin_token=ADMIN_TOKEN))
        image = f"hostmesh-unittest-apps:{PREFIX}"

        def view():
            return admin.request("GET", "/api/apps")[1]

        def replicas(v, short):
            app = next((a for a in v["apps"] if a["name"] == _app(short)), None)
            return {} if app is None else {r["node"]: r for r in app["replicas"]}

        v = wait_for(lambda: (v := view()) and set(replicas(v, "web")) == {"primary", "node2"}
                     and v, 20, what="the primary's and node2's reports")
        for node in ("primary", "node2"):
            got = {s: replicas(v, s)[node] for s in ("web", "sick", "plain", "done")}
            assert {s: (r["state"], r["health"], r["image"], r["container"])
                    for s, r in got.items()} == {
                "web": ("running", "healthy", image, f"hostmesh-{_app('web')}"),
                "sick": ("running", "unhealthy", image, f"hostmesh-{_app('sick')}"),
                "plain": ("running", "none", image, f"hostmesh-{_app('plain')}"),
                "done": ("exited", "none", image, f"hostmesh-{_app('done')}")}
        assert next(a for a in v["apps"] if a["name"] == _app("web"))["running"] == 2
        assert not replicas(v, "other")
        nodes_answer = json.dumps(admin.list_nodes())
        for answer in (json.dumps(v), nodes_answer):
            assert SECRET not in answer and "API_TOKEN" not in answer

        # a replica stops: the next reports say so; it is removed: it leaves the view
        containers["plain"].stop(timeout=1)
        wait_for(lambda: {r["state"] for r in replicas(view(), "plain").values()} == {"exited"},
                 15, what="the stopped container reported as exited by both nodes")
        containers["plain"].remove(force=True)
        wait_for(lambda: not replicas(view(), "plain"), 15,
                 what="the removed container gone from the view")
        del containers["plain"]
    finally:
        cluster.close()
        _stop(reporter)
