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


def test_image_runs_sshd_for_a_sudo_user():
    for pkg in ("openssh-server", "sudo"):
        assert pkg in lab.PACKAGES
    assert lab.LAB_USER != "root"


def test_image_recipe_is_part_of_the_hash(monkeypatch):
    before = lab.package_hash()
    monkeypatch.setattr(lab, "IMAGE_RECIPE", lab.IMAGE_RECIPE + "-next")
    assert lab.package_hash() != before


def test_default_lab_inventory_goes_over_ssh_with_checked_host_keys():
    hosts = (ROOT / "inventory" / "lab" / "hosts.yml").read_text()
    the_lab = lab.Lab()
    for node in the_lab.nodes:
        assert f"ansible_host: {the_lab.address(node)}" in hosts
    group_vars = (ROOT / "inventory" / "lab" / "group_vars" / "hostmesh_nodes" / "main.yml")
    text = group_vars.read_text()
    for line in ("ansible_connection: ssh", f"ansible_user: {lab.LAB_USER}",
                 "ansible_become: true", "StrictHostKeyChecking=yes",
                 "UserKnownHostsFile={{ hostmesh_lab_ssh_dir }}/known_hosts",
                 "hostmesh_lab: true"):
        assert line in text
    cfg = (ROOT / "ansible.cfg").read_text()
    assert "host_key_checking = True" in cfg and "host_key_checking = False" not in cfg


def test_known_hosts_replaces_only_the_given_addresses(tmp_path):
    access = lab.LabSsh(tmp_path)
    access.known_hosts.write_text("10.0.0.1 ssh-ed25519 OLD1\n10.0.0.2 ssh-ed25519 KEEP\n")
    access._record({"10.0.0.1": ["ssh-ed25519 NEW1", "ssh-rsa NEW1R"],
                    "10.0.0.3": ["ssh-ed25519 NEW3"]})
    assert access.known_hosts.read_text().splitlines() == [
        "10.0.0.2 ssh-ed25519 KEEP",
        "10.0.0.1 ssh-ed25519 NEW1",
        "10.0.0.1 ssh-rsa NEW1R",
        "10.0.0.3 ssh-ed25519 NEW3",
    ]


def test_ssh_command_checks_host_keys_with_the_lab_files(tmp_path):
    access = lab.LabSsh(tmp_path)
    cmd = access.ssh_command("10.231.6.11", "true")
    assert cmd[0] == "ssh" and cmd[-2:] == [f"{lab.LAB_USER}@10.231.6.11", "true"]
    joined = " ".join(cmd)
    assert f"UserKnownHostsFile={tmp_path}/known_hosts" in joined
    assert "StrictHostKeyChecking=yes" in joined and "BatchMode=yes" in joined
    assert f"-i {tmp_path}/id_ed25519" in joined
    assert "StrictHostKeyChecking=no" not in joined and "/dev/null" not in joined


def test_ensure_key_makes_one_private_key_per_lab(tmp_path):
    access = lab.LabSsh(tmp_path / "ssh")
    access.ensure_key()
    first = access.key.read_bytes()
    assert access.key.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "ssh").stat().st_mode & 0o777 == 0o700
    access.ensure_key()
    assert access.key.read_bytes() == first


def test_cli_ssh_rejects_malformed_nodes(capsys):
    assert lab.main(["ssh", "--ssh-dir", "/nonexistent", "node1"]) == 1
    assert "expected CONTAINER=ADDRESS" in capsys.readouterr().err
