"""Start/stop the local Cloudflare server as a real process for tests and benches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Values the tests share (never real credentials: the server is local).
TEST_ZONE = "example.org"
TEST_TOKEN = "edit-token-0123456789abcdef"
TEST_READ_TOKEN = "read-token-0123456789abcdef"


class CloudflareServer:
    """A running ``python -m tests.cloudflare_server`` on loopback, port chosen by the OS."""

    def __init__(self, zones=("example.org",), token="test-token-0123456789", read_token=None,
                 host="127.0.0.1", dns=False):
        self.zones = list(zones)
        self.token = token
        self.read_token = read_token
        self.host = host
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None
        self.dns = dns  # also answer DNS (UDP+TCP) on host:dns_port
        self.dns_port: int | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="hm-cf-")

    @property
    def root(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root}/client/v4"

    @property
    def trace_url(self) -> str:
        return f"{self.root}/cdn-cgi/trace"

    def start(self) -> CloudflareServer:
        tmp = Path(self._tmp.name)
        args = [sys.executable, "-m", "tests.cloudflare_server", "--listen", f"{self.host}:0",
                "--port-file", str(tmp / "port")]
        for zone in self.zones:
            args += ["--zone", zone]
        if self.dns:
            args += ["--dns-listen", f"{self.host}:0", "--dns-port-file", str(tmp / "dns-port")]
        tok = tmp / "token"
        tok.write_text(self.token)
        tok.chmod(0o600)
        args += ["--token-file", str(tok)]
        if self.read_token:
            rtok = tmp / "read-token"
            rtok.write_text(self.read_token)
            args += ["--read-token-file", str(rtok)]
        env = {k: v for k, v in os.environ.items() if k != "CLOUDFLARE_API_TOKEN"}
        self.proc = subprocess.Popen(args, cwd=REPO, env=env)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cloudflare_server exited with {self.proc.returncode}")
            port_file = tmp / "port"
            if port_file.exists() and port_file.read_text().strip():
                self.port = int(port_file.read_text())
                if self.dns:
                    self.dns_port = int((tmp / "dns-port").read_text())
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("cloudflare_server did not start within 20 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._tmp.cleanup()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- test controls
    def control(self, what: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.root}/_hm/{what}", data=data,
                                     method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def stats(self) -> dict:
        return self.control("stats")

    def reset_stats(self) -> None:
        self.control("reset_stats", {})

    def wipe(self) -> None:
        self.control("wipe", {})

    def records(self, zone: str | None = None) -> list[dict]:
        state = self.control("state")
        return state[zone or self.zones[0]]

    def seed(self, records: list[dict], zone: str | None = None) -> None:
        self.control("records", {"zone": zone or self.zones[0], "records": records})

    def writes(self) -> list[dict]:
        return [e for e in self.stats()["log"] if e["method"] in ("POST", "PUT", "PATCH", "DELETE")]

    def reads(self) -> list[dict]:
        return [e for e in self.stats()["log"] if e["method"] == "GET" and e["kind"] != "trace"]
