"""scripts/setup-host.sh: silent when ready, exact message when it cannot fix."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "setup-host.sh"


def restricted_path(tmp_path: Path) -> str:
    """A PATH with the basics and python3, but no docker."""
    fake = tmp_path / "bin"
    fake.mkdir()
    for cmd in ("bash", "env", "id", "cat", "cut", "dirname", "sha256sum", "seq", "sleep",
                "timeout", "tail", "grep"):
        found = shutil.which(cmd)
        if found:
            os.symlink(found, fake / cmd)
    os.symlink("/usr/bin/python3" if Path("/usr/bin/python3").exists()
               else shutil.which("python3"), fake / "python3")
    for cmd in ("debootstrap", "wg"):  # only docker is missing
        found = shutil.which(cmd) or (f"/usr/sbin/{cmd}" if Path(f"/usr/sbin/{cmd}").exists()
                                      else None)
        if found:
            os.symlink(found, fake / cmd)
    fake.chmod(0o755)
    tmp_path.chmod(0o755)
    return str(fake)


def test_ready_host_is_silent():
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, check=False,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""


def test_non_root_without_docker_says_what_is_missing(tmp_path):
    venv = tmp_path / "venv"
    env = {"PATH": restricted_path(tmp_path), "HOME": str(tmp_path),
           "HOSTMESH_VENV": str(venv)}
    cmd = ["bash", str(SCRIPT)]
    if os.geteuid() == 0:  # become an unprivileged user for the run
        cmd = [shutil.which("setpriv") or "/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 1
    assert "missing: docker.io" in proc.stderr
    assert "sudo apt-get install -y docker.io" in proc.stderr
    assert not venv.exists(), "nothing may change when the host cannot be fixed"
