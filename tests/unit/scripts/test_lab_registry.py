"""scripts/lab_registry.py on loopback: Debian's registry, the demo image pushed without Docker."""

from __future__ import annotations

import base64
import json
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "scripts"))

import lab_registry


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def registry(tmp_path):
    listen = f"127.0.0.1:{_free_port()}"
    assert lab_registry.start(tmp_path, listen) == "started"
    assert lab_registry.start(tmp_path, listen) == "running"
    yield listen
    assert lab_registry.stop(tmp_path) == "stopped"
    assert lab_registry.stop(tmp_path) == "not running"


def test_push_demo_makes_a_pullable_image(registry):
    ref = lab_registry.push_demo(registry, "7", failing=True)
    assert ref == f"{registry}/hostmesh/whoami:7"
    req = urllib.request.Request(
        f"http://{registry}/v2/hostmesh/whoami/manifests/7",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        manifest = json.load(resp)
    config_digest = manifest["config"]["digest"]
    with urllib.request.urlopen(
            f"http://{registry}/v2/hostmesh/whoami/blobs/{config_digest}", timeout=5) as resp:
        config = json.load(resp)
    assert config["config"]["Entrypoint"] == ["/whoami"]
    assert "WHOAMI_VERSION=7" in config["config"]["Env"]
    assert "WHOAMI_FAIL=1" in config["config"]["Env"]
    # The same binary again is the same layer (reproducible): one blob, not two.
    lab_registry.push_demo(registry, "8")
    req = urllib.request.Request(
        f"http://{registry}/v2/hostmesh/whoami/manifests/8",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert json.load(resp)["layers"] == manifest["layers"]


def test_push_to_nothing_says_how_to_fix():
    with pytest.raises(lab_registry.RegistryError, match="lab_registry.py start"):
        lab_registry.push_demo(f"127.0.0.1:{_free_port()}", "1")


def test_running_stops_the_registry_after_the_block_even_when_it_fails(tmp_path):
    listen = f"127.0.0.1:{_free_port()}"
    with (pytest.raises(RuntimeError, match="the block failed"),
          lab_registry.running(tmp_path, listen) as how):
        assert how == "started"
        with urllib.request.urlopen(f"http://{listen}/v2/", timeout=5) as resp:
            assert resp.status == 200
        raise RuntimeError("the block failed")
    assert lab_registry.stop(tmp_path) == "not running"
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{listen}/v2/", timeout=2)


def test_a_registry_with_basic_auth_takes_pushes_only_with_the_password(tmp_path):
    listen = f"127.0.0.1:{_free_port()}"
    (tmp_path / "htpasswd").write_text(lab_registry.htpasswd_line("lab", "s3cret-pw") + "\n")
    assert lab_registry.start(tmp_path, listen, name="private", htpasswd=tmp_path / "htpasswd") \
        == "started"
    try:
        with pytest.raises(urllib.error.HTTPError) as anonymous:
            urllib.request.urlopen(f"http://{listen}/v2/", timeout=5)
        assert anonymous.value.code == 401
        with pytest.raises(lab_registry.RegistryError):
            lab_registry.push_demo(listen, "1", credentials=("lab", "wrong"))
        assert lab_registry.push_demo(listen, "1", credentials=("lab", "s3cret-pw")) \
            == f"{listen}/hostmesh/whoami:1"
        token = base64.b64encode(b"lab:s3cret-pw").decode()
        req = urllib.request.Request(
            f"http://{listen}/v2/hostmesh/whoami/manifests/1", method="HEAD",
            headers={"Authorization": f"Basic {token}",
                     "Accept": "application/vnd.docker.distribution.manifest.v2+json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200
    finally:
        assert lab_registry.stop(tmp_path, name="private") == "stopped"
