"""scripts/lab.py without Docker: image hashing, addressing, CLI errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from _scripts import load_script

ROOT = Path(__file__).resolve().parents[3]
lab = load_script("lab")


def test_package_hash_is_stable_and_order_free():
    assert lab.package_hash(["a", "b"]) == lab.package_hash(["b", "a"])
    assert len(lab.package_hash()) == 12


def test_package_hash_changes_with_the_list():
    assert lab.package_hash(lab.PACKAGES) != lab.package_hash([*lab.PACKAGES, "vim"])
    assert lab.image_tag() == f"hostmesh-node:pkgs-{lab.package_hash()}"
    assert lab.image_tag(repo="other") == f"other:pkgs-{lab.package_hash()}"


def test_image_holds_what_the_roles_need():
    for pkg in ("systemd-sysv", "python3", "python3-venv", "wireguard-tools", "wireguard-go",
                "iproute2", "ca-certificates", "curl", "libcap2-bin"):
        assert pkg in lab.PACKAGES


def test_run_options_never_privileged():
    assert "--privileged" not in lab.RUN_OPTIONS
    joined = " ".join(lab.RUN_OPTIONS)
    for opt in ("--cap-add SYS_ADMIN", "--cap-add NET_ADMIN", "seccomp=unconfined",
                "--cgroupns=host", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--device /dev/net/tun"):
        assert opt in joined


def test_lab_names_and_addresses():
    the_lab = lab.Lab(prefix="drill-", network="hostmesh-drill", subnet="10.231.6.0/24",
                      nodes=["node1", "node2", "node3"])
    assert the_lab.containers == ["drill-node1", "drill-node2", "drill-node3"]
    assert [the_lab.address(n) for n in the_lab.nodes] == [
        "10.231.6.11", "10.231.6.12", "10.231.6.13"]


def test_default_lab_matches_inventory():
    the_lab = lab.Lab()
    assert the_lab.containers == ["hostmesh-lab-node1", "hostmesh-lab-node2",
                                  "hostmesh-lab-node3"]
    hosts = (ROOT / "inventory" / "lab" / "hosts.yml").read_text()
    for node in the_lab.nodes:
        assert f"hostmesh_public_ip: {the_lab.address(node)}" in hosts


def test_cli_without_docker_says_what_to_do(monkeypatch, capsys):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert lab.main(["up"]) == 1
    err = capsys.readouterr().err
    assert "docker" in err and "setup-host.sh" in err


def test_cli_rejects_unknown_command():
    with pytest.raises(SystemExit) as exc:
        lab.main(["explode"])
    assert exc.value.code == 2
