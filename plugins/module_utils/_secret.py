# Private to the collection: may change without notice.
"""Controller-side secret store used by the `hostmesh.cluster.secret` action.

One file per secret under a directory (mode 0700): `<name>` holds the current
value (mode 0600), `<name>.previous` holds the values replaced by rotations
that are not finished yet (one per line), so an interrupted rotation can be
resumed without ever losing a value that a node may still use.

Encryption is pluggable: the action plugin passes vault `encrypt`/`decrypt`
callables when a vault password is configured; the store itself never logs
or returns anything but through its return values.
"""

from __future__ import annotations

import base64
import os
import re
import secrets as _secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from ansible_collections.hostmesh.cluster.plugins.module_utils._atomic import write_atomic

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
VAULT_HEADER = "$ANSIBLE_VAULT"


# The options of hostmesh.cluster.secret, shared by its action plugin (the
# normal path, with vault) and its module (the fallback without vault).
ARGUMENT_SPEC = {
    "name": {"type": "str", "required": True},
    "dir": {"type": "path"},
    "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
    "rotate": {"type": "bool", "default": False},
    "value": {"type": "str", "no_log": True},
    "forget_previous": {"type": "bool", "default": False},
    "length": {"type": "int", "default": 32},
    "encrypt": {"type": "bool"},
    "vault_id": {"type": "str"},
}
MUTUALLY_EXCLUSIVE = [("rotate", "value")]


class SecretError(Exception):
    """A clear, user-facing error (never carries a secret value)."""


def generate(num_bytes: int = 32) -> str:
    """Return `num_bytes` random bytes as URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(_secrets.token_bytes(num_bytes)).rstrip(b"=").decode()


@dataclass
class Outcome:
    value: str | None
    previous: list[str] = field(default_factory=list)
    changed: bool = False
    created: bool = False
    rotated: bool = False
    encrypted: bool = False
    before: str = ""
    after: str = ""

    def result(self, path: str) -> dict:
        """The task result's fields for the secret file `path`; they carry the
        value, so the caller marks the result no_log."""
        return {
            "changed": self.changed,
            "value": self.value,
            "previous": self.previous,
            "path": path,
            "created": self.created,
            "rotated": self.rotated,
            "encrypted": self.encrypted,
        }


class SecretStore:
    """Secrets under `directory`; `encrypt`/`decrypt` wrap file contents."""

    def __init__(
        self,
        directory: str,
        *,
        encrypt: Callable[[str], str] | None = None,
        decrypt: Callable[[str, str], str] | None = None,
    ):
        self.directory = os.path.abspath(os.path.expanduser(directory))
        self._encrypt = encrypt
        self._decrypt = decrypt

    # -- paths and raw io ----------------------------------------------

    def path(self, name: str) -> str:
        if not isinstance(name, str) or not NAME_RE.match(name) or name.endswith(".previous"):
            raise SecretError(
                f"invalid secret name {name!r}: use 1-128 letters, digits, '_', '-' or '.', "
                "starting with a letter or digit (for example node_api_key_node1)"
            )
        return os.path.join(self.directory, name)

    def _read(self, path: str) -> str | None:
        try:
            with open(path, encoding="utf-8") as fh:
                raw = fh.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SecretError(f"cannot read secret file {path}: {exc.strerror}") from None
        if raw.lstrip().startswith(VAULT_HEADER):
            if self._decrypt is None:
                raise SecretError(
                    f"secret file {path} is vault-encrypted but no vault password is "
                    "configured; pass --vault-password-file or --ask-vault-pass"
                )
            raw = self._decrypt(raw, path)
        return raw.strip()

    def _write(self, path: str, text: str) -> bool:
        """Write atomically with mode 0600; return True when encrypted."""
        self._ensure_dir()
        encrypted = self._encrypt is not None
        data = self._encrypt(text) if encrypted else text
        if not data.endswith("\n"):
            data += "\n"
        write_atomic(path, data, mode=0o600)
        return encrypted

    def _ensure_dir(self) -> None:
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            if os.stat(self.directory).st_mode & 0o077:
                os.chmod(self.directory, 0o700)
        except OSError as exc:
            raise SecretError(
                f"cannot create the secret directory {self.directory}: {exc.strerror}; "
                "set the dir option to a writable path"
            ) from None

    def _fix_mode(self, path: str) -> bool:
        mode = os.stat(path).st_mode & 0o777
        if mode != 0o600:
            os.chmod(path, 0o600)
            return True
        return False

    # -- operations ----------------------------------------------------

    def read(self, name: str) -> tuple[str | None, list[str]]:
        """Return (current value or None, previous values oldest first)."""
        path = self.path(name)
        value = self._read(path)
        prev_raw = self._read(path + ".previous")
        previous = [v for v in (prev_raw or "").splitlines() if v.strip()]
        return value, previous

    def ensure(
        self,
        name: str,
        *,
        value: str | None = None,
        rotate: bool = False,
        forget_previous: bool = False,
        num_bytes: int = 32,
        check_mode: bool = False,
    ) -> Outcome:
        """Create once, optionally rotate / set, optionally forget previous values."""
        path = self.path(name)
        current, previous = self.read(name)
        out = Outcome(value=current, previous=list(previous))
        out.before = _describe(current, previous)

        new_value = None
        if current is None:
            new_value = value if value is not None else generate(num_bytes)
            out.created = True
        elif value is not None and value != current:
            new_value = value
            out.rotated = True
        elif rotate and value is None:
            new_value = generate(num_bytes)
            out.rotated = True

        if new_value is not None:
            out.changed = True
            if out.rotated and current not in out.previous:
                out.previous.append(current)
            out.value = new_value
        if forget_previous and out.previous:
            out.changed = True
            out.previous = []

        if not check_mode:
            if new_value is not None:
                if out.rotated:
                    # previous first: a crash between the writes loses nothing
                    self._write_previous(path, out.previous)
                out.encrypted = self._write(path, new_value)
            if forget_previous and os.path.exists(path + ".previous"):
                os.unlink(path + ".previous")
            if not out.changed and current is not None:
                # repair a too-open mode without reporting the value as changed
                out.changed = self._fix_mode(path)
        out.after = _describe(out.value, out.previous)
        return out

    def apply(self, params: dict, *, check_mode: bool = False) -> Outcome:
        """What a task asks for the secret `params["name"]` (the options of
        ARGUMENT_SPEC): `remove` for state=absent, else `ensure`."""
        if params["state"] == "absent":
            return self.remove(params["name"], check_mode=check_mode)
        return self.ensure(
            params["name"],
            value=params["value"],
            rotate=params["rotate"],
            forget_previous=params["forget_previous"],
            num_bytes=params["length"],
            check_mode=check_mode,
        )

    def _write_previous(self, path: str, previous: list[str]) -> None:
        if previous:
            self._write(path + ".previous", "\n".join(previous))

    def remove(self, name: str, *, check_mode: bool = False) -> Outcome:
        path = self.path(name)
        current, previous = self.read(name)
        out = Outcome(value=None, before=_describe(current, previous), after="absent\n")
        for p in (path, path + ".previous"):
            if os.path.exists(p):
                out.changed = True
                if not check_mode:
                    os.unlink(p)
        return out


def _describe(value: str | None, previous: list[str]) -> str:
    """A diff-safe description: never the value, not even a fingerprint."""
    if value is None:
        return "absent\n"
    text = f"present ({len(value)} characters)\n"
    if previous:
        text += f"previous values kept for a rotation in progress: {len(previous)}\n"
    return text
