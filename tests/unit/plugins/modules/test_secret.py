"""hostmesh.cluster.secret: the store (module_utils/_secret.py) and the action
plugin driven by a real ansible-playbook run (vault, no_log, check mode)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT / "collections"))

from ansible_collections.hostmesh.cluster.plugins.module_utils._secret import (
    SecretError,
    SecretStore,
    generate,
)

ANSIBLE_PLAYBOOK = str(Path(sys.executable).with_name("ansible-playbook"))


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_generate_is_32_random_bytes_url_safe():
    values = {generate() for _ in range(50)}
    assert len(values) == 50
    for v in values:
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", v)


def test_created_once_with_private_modes(tmp_path):
    store = SecretStore(str(tmp_path / "secrets"))
    first = store.ensure("admin_token")
    assert first.changed and first.created and first.value
    assert mode(tmp_path / "secrets") == 0o700
    assert mode(tmp_path / "secrets" / "admin_token") == 0o600
    again = store.ensure("admin_token")
    assert not again.changed and again.value == first.value
    assert again.before == again.after
    assert first.value not in first.after and first.value not in first.before


def test_rotation_keeps_previous_values_until_forgotten(tmp_path):
    store = SecretStore(str(tmp_path))
    v0 = store.ensure("node_api_key_node2").value
    r1 = store.ensure("node_api_key_node2", rotate=True)
    assert r1.changed and r1.rotated and r1.value != v0 and r1.previous == [v0]
    assert mode(tmp_path / "node_api_key_node2.previous") == 0o600
    # an interrupted rotation run again keeps every value a node may still hold
    r2 = store.ensure("node_api_key_node2", rotate=True)
    assert r2.previous == [v0, r1.value]
    assert store.read("node_api_key_node2") == (r2.value, [v0, r1.value])
    done = store.ensure("node_api_key_node2", forget_previous=True)
    assert done.changed and done.previous == [] and done.value == r2.value
    assert not (tmp_path / "node_api_key_node2.previous").exists()
    assert not store.ensure("node_api_key_node2", forget_previous=True).changed


def test_check_mode_changes_nothing(tmp_path):
    store = SecretStore(str(tmp_path / "s"))
    out = store.ensure("registration_token", check_mode=True)
    assert out.changed and out.value
    assert not (tmp_path / "s").exists()
    real = store.ensure("registration_token")
    rot = store.ensure("registration_token", rotate=True, check_mode=True)
    assert rot.changed and rot.previous == [real.value]
    assert store.read("registration_token") == (real.value, [])


def test_import_a_value_and_remove(tmp_path):
    store = SecretStore(str(tmp_path))
    assert store.ensure("admin_token", value="imported-token-value").value == "imported-token-value"
    assert not store.ensure("admin_token", value="imported-token-value").changed
    changed = store.ensure("admin_token", value="other-value")
    assert changed.rotated and changed.previous == ["imported-token-value"]
    gone = store.remove("admin_token")
    assert gone.changed and not list(tmp_path.iterdir())
    assert not store.remove("admin_token").changed


def test_too_open_file_is_repaired(tmp_path):
    store = SecretStore(str(tmp_path))
    value = store.ensure("admin_token").value
    os.chmod(tmp_path / "admin_token", 0o644)
    out = store.ensure("admin_token")
    assert out.changed and out.value == value and mode(tmp_path / "admin_token") == 0o600


@pytest.mark.parametrize("name", ["", "../etc/passwd", "a/b", ".hidden", "x.previous", "a b"])
def test_bad_names_are_refused(tmp_path, name):
    with pytest.raises(SecretError, match="invalid secret name"):
        SecretStore(str(tmp_path)).ensure(name)
    assert not list(tmp_path.iterdir())


def test_encrypted_file_without_password_is_a_clear_error(tmp_path):
    (tmp_path / "admin_token").write_text("$ANSIBLE_VAULT;1.1;AES256\n3132\n")
    with pytest.raises(SecretError, match="no vault password"):
        SecretStore(str(tmp_path)).ensure("admin_token")


# -- the action plugin, through a real ansible-playbook run ---------------

PLAY = """
- hosts: localhost
  gather_facts: false
  vars:
    hostmesh_state_dir: {state}
  tasks:
    - name: Ensure the secret
      hostmesh.cluster.secret:
        name: admin_token
        rotate: {rotate}
      register: s
    - name: Write the value where the test can read it
      ansible.builtin.copy:
        content: "{{{{ s.value }}}}"
        dest: {state}/seen
        mode: "0600"
      no_log: true
"""


def run_play(tmp_path, *extra, rotate=False):
    state = tmp_path / "state"
    play = tmp_path / "play.yml"
    play.write_text(PLAY.format(state=state, rotate=str(rotate).lower()))
    proc = subprocess.run(
        [
            ANSIBLE_PLAYBOOK,
            "-i",
            "localhost,",
            "-c",
            "local",
            "-vvv",
            "--diff",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            str(play),
            *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    seen = (state / "seen").read_text() if (state / "seen").exists() else None
    return proc, seen, state / "secrets" / "admin_token"


def test_action_plugin_never_shows_the_value(tmp_path):
    proc, seen, path = run_play(tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert seen and len(seen) == 43
    assert seen not in proc.stdout + proc.stderr
    assert path.read_text().strip() == seen
    proc2, seen2, _ = run_play(tmp_path, rotate=True)
    assert proc2.returncode == 0 and seen2 != seen
    assert seen not in proc2.stdout and seen2 not in proc2.stdout
    assert (path.parent / "admin_token.previous").read_text().strip() == seen


def test_action_plugin_vault_encrypts_and_decrypts(tmp_path):
    pw = tmp_path / "vault-pass"
    pw.write_text("correct horse\n")
    proc, seen, path = run_play(tmp_path, "--vault-password-file", str(pw))
    assert proc.returncode == 0, proc.stdout[-2000:]
    raw = path.read_text()
    assert raw.startswith("$ANSIBLE_VAULT;1.1;AES256") and seen not in raw
    proc2, seen2, _ = run_play(tmp_path, "--vault-password-file", str(pw))
    assert proc2.returncode == 0 and seen2 == seen
    # no password: a clear error, nothing changed
    proc3, _, _ = run_play(tmp_path)
    assert proc3.returncode != 0
    assert "vault-encrypted but no vault password" in proc3.stdout
    assert path.read_text() == raw
    # wrong password: a clear error too
    pw.write_text("wrong\n")
    proc4, _, _ = run_play(tmp_path, "--vault-password-file", str(pw))
    assert proc4.returncode != 0 and "cannot decrypt secret file" in proc4.stdout
