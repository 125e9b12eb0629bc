"""hostmesh.cluster.wireguard_keypair and wireguard_config, run in-process."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "collections"))

from ansible.module_utils.testing import patch_module_args
from ansible_collections.hostmesh.cluster.plugins.module_utils import _wireguard as wg
from ansible_collections.hostmesh.cluster.plugins.modules import (
    wireguard_config,
    wireguard_keypair,
)


def run(module, capsys, **args) -> dict:
    check = args.pop("_check", False)
    diff = args.pop("_diff", False)
    args["_ansible_check_mode"] = check
    args["_ansible_diff"] = diff
    with patch_module_args(args), pytest.raises(SystemExit):
        module.main()
    return json.loads(capsys.readouterr().out)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_creates_key_0600_and_returns_only_the_public_key(tmp_path, capsys):
    path = tmp_path / "wg" / "wg0.key"
    out = run(wireguard_keypair, capsys, path=str(path), _diff=True)
    assert out["changed"] is True and out["exists"] is True
    private = path.read_text().strip()
    assert mode(path) == 0o600
    assert out["public_key"] == wg.public_key(private)
    assert private not in json.dumps(out)


def test_matches_wg_pubkey(tmp_path, capsys):
    path = tmp_path / "wg0.key"
    out = run(wireguard_keypair, capsys, path=str(path))
    wg_pub = subprocess.run(
        ["wg", "pubkey"], input=path.read_text(), capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out["public_key"] == wg_pub


def test_second_run_changes_nothing(tmp_path, capsys):
    path = tmp_path / "wg0.key"
    first = run(wireguard_keypair, capsys, path=str(path))
    second = run(wireguard_keypair, capsys, path=str(path))
    assert second["changed"] is False
    assert second["public_key"] == first["public_key"]


def test_check_mode_creates_nothing(tmp_path, capsys):
    path = tmp_path / "wg0.key"
    out = run(wireguard_keypair, capsys, path=str(path), _check=True)
    assert out["changed"] is True and out["public_key"] is None
    assert not path.exists()


def test_rotate_makes_a_new_key(tmp_path, capsys):
    path = tmp_path / "wg0.key"
    first = run(wireguard_keypair, capsys, path=str(path))
    rotated = run(wireguard_keypair, capsys, path=str(path), rotate=True)
    assert rotated["changed"] is True and rotated["rotated"] is True
    assert rotated["public_key"] != first["public_key"]
    assert mode(path) == 0o600


def test_create_false_reports_absent(tmp_path, capsys):
    path = tmp_path / "wg0.key"
    out = run(wireguard_keypair, capsys, path=str(path), create=False)
    assert out == {**out, "changed": False, "exists": False, "public_key": None}
    assert not path.exists()


def test_loose_mode_is_fixed(tmp_path, capsys):
    path = tmp_path / "wg0.key"
    run(wireguard_keypair, capsys, path=str(path))
    os.chmod(path, 0o644)
    out = run(wireguard_keypair, capsys, path=str(path))
    assert out["changed"] is True and mode(path) == 0o600


def test_invalid_key_file_fails_without_touching_it(tmp_path, capsys):
    path = tmp_path / "wg0.key"
    path.write_text("not-a-key\n")
    out = run(wireguard_keypair, capsys, path=str(path))
    assert out["failed"] is True
    assert str(path) in out["msg"] and "rotate=true" in out["msg"]
    assert path.read_text() == "not-a-key\n"


def test_preshared_key_has_no_public_key(tmp_path, capsys):
    path = tmp_path / "secrets" / "wireguard_psk_a_b"
    out = run(wireguard_keypair, capsys, path=str(path), kind="preshared_key")
    assert out["public_key"] is None
    assert wg.is_valid_key(path.read_text().strip())
    assert mode(path) == 0o600 and mode(path.parent) == 0o700


# ---- wireguard_config


def _peer(name: str, psk: bool = False) -> dict:
    key = wg.public_key(wg.generate_private_key())
    peer = {
        "name": name,
        "public_key": key,
        "allowed_ips": ["10.50.0.9/32"],
        "endpoint": "192.0.2.9:51821",
    }
    if psk:
        peer["preshared_key"] = wg.generate_preshared_key()
    return peer


@pytest.fixture
def keyfile(tmp_path, capsys):
    path = tmp_path / "wg0.key"
    run(wireguard_keypair, capsys, path=str(path))
    return path


def test_config_holds_private_key_but_never_returns_it(tmp_path, keyfile, capsys):
    conf = tmp_path / "wg0.conf"
    peers = [_peer("node2", psk=True)]
    out = run(
        wireguard_config,
        capsys,
        path=str(conf),
        private_key_path=str(keyfile),
        address="10.50.0.1/24",
        peers=peers,
        _diff=True,
    )
    assert out["changed"] and out["interface_changed"] and out["peers_changed"]
    text = conf.read_text()
    private = keyfile.read_text().strip()
    assert f"PrivateKey = {private}" in text
    assert f"PresharedKey = {peers[0]['preshared_key']}" in text
    dumped = json.dumps(out)
    assert private not in dumped and peers[0]["preshared_key"] not in dumped
    assert "PrivateKey = <hidden>" in out["diff"]["after"]
    assert mode(conf) == 0o600


def test_config_peer_change_is_not_an_interface_change(tmp_path, keyfile, capsys):
    conf = tmp_path / "wg0.conf"
    peers = [_peer("node2")]
    common = {"path": str(conf), "private_key_path": str(keyfile), "address": "10.50.0.1/24"}
    run(wireguard_config, capsys, peers=peers, **common)
    again = run(wireguard_config, capsys, peers=peers, **common)
    assert again["changed"] is False
    added = run(wireguard_config, capsys, peers=peers + [_peer("node3")], **common)
    assert added["changed"] and added["peers_changed"] and not added["interface_changed"]
    moved = run(wireguard_config, capsys, peers=peers, listen_port=51900, **common)
    assert moved["interface_changed"]


def test_config_check_mode_writes_nothing(tmp_path, keyfile, capsys):
    conf = tmp_path / "wg0.conf"
    out = run(
        wireguard_config,
        capsys,
        path=str(conf),
        private_key_path=str(keyfile),
        address="10.50.0.1/24",
        peers=[],
        _check=True,
    )
    assert out["changed"] is True and not conf.exists()


def test_config_rejects_a_bad_peer_key(tmp_path, keyfile, capsys):
    conf = tmp_path / "wg0.conf"
    bad = {"name": "node2", "public_key": "short=", "allowed_ips": ["10.50.0.2/32"]}
    out = run(
        wireguard_config,
        capsys,
        path=str(conf),
        private_key_path=str(keyfile),
        address="10.50.0.1/24",
        peers=[bad],
    )
    assert out["failed"] and "node2" in out["msg"] and "short=" in out["msg"]
    assert not conf.exists()


def test_config_without_private_key_fails(tmp_path, capsys):
    out = run(
        wireguard_config,
        capsys,
        path=str(tmp_path / "wg0.conf"),
        private_key_path=str(tmp_path / "missing.key"),
        address="10.50.0.1/24",
    )
    assert out["failed"] and "wireguard_keypair" in out["msg"]
