# Private to the collection: may change without notice.
"""Controller side of `hostmesh.cluster.secret`.

The work happens here, in the controller process, because only here are the
vault secrets of the run (`--vault-password-file`, `--vault-id`) available:
files are vault-encrypted when a vault password is configured. Nothing is
ever sent to a managed host, and every result is marked no_log.
"""

from __future__ import annotations

import os

from ansible.errors import AnsibleError
from ansible.module_utils.common.text.converters import to_bytes, to_text
from ansible.parsing.vault import VaultLib, match_encrypt_secret
from ansible_collections.hostmesh.cluster.plugins.module_utils._secret import (
    ARGUMENT_SPEC,
    MUTUALLY_EXCLUSIVE,
    SecretError,
    SecretStore,
)
from ansible_collections.hostmesh.cluster.plugins.plugin_utils._controller_action import (
    ControllerAction,
)


class ActionModule(ControllerAction):
    ARGUMENT_SPEC = ARGUMENT_SPEC
    MUTUALLY_EXCLUSIVE = MUTUALLY_EXCLUSIVE

    def act(self, args, task_vars, result):
        if args["length"] < 16 or args["length"] > 1024:
            result.update(
                failed=True,
                msg=f"length must be between 16 and 1024 bytes, got {args['length']}",
            )
            return result

        directory = args["dir"] or self._default_dir(task_vars)
        try:
            encrypt, decrypt, encrypting = self._vault_functions(args)
            store = SecretStore(directory, encrypt=encrypt if encrypting else None, decrypt=decrypt)
            out = store.apply(args, check_mode=self._task.check_mode)
        except SecretError as exc:
            result.update(failed=True, msg=str(exc))
            return result
        except AnsibleError as exc:
            # vault failures: wrong password, unknown vault id
            result.update(failed=True, msg=f"secret {args['name']}: {to_text(exc.message)}")
            return result

        # the whole result is hidden; failures above stay readable (they never
        # carry a value)
        result["_ansible_no_log"] = True
        result.update(out.result(store.path(args["name"])))
        if self._task.diff:
            result["diff"] = {
                "before_header": store.path(args["name"]),
                "after_header": store.path(args["name"]),
                "before": out.before,
                "after": out.after,
            }
        return result

    def _default_dir(self, task_vars):
        state_dir = task_vars.get("hostmesh_state_dir")
        if state_dir:
            state_dir = self._templar.template(state_dir)
        else:
            inventory_dir = task_vars.get("inventory_dir") or os.getcwd()
            state_dir = os.path.join(inventory_dir, ".hostmesh")
        return os.path.join(os.path.expanduser(str(state_dir)), "secrets")

    def _vault_functions(self, args):
        """Return (encrypt, decrypt, encrypting) built on the run's vault secrets."""
        secrets = list(getattr(self._loader, "_vault", None) and self._loader._vault.secrets or [])
        vault = VaultLib(secrets)

        def decrypt(text, path):
            if not secrets:
                raise SecretError(
                    f"secret file {path} is vault-encrypted but no vault password is "
                    "configured; pass --vault-password-file or --ask-vault-pass"
                )
            try:
                return to_text(vault.decrypt(to_bytes(text)))
            except AnsibleError:
                raise SecretError(
                    f"cannot decrypt secret file {path} with the configured vault "
                    "password(s); use the vault password it was written with"
                ) from None

        def encrypt(text):
            vault_id, secret = match_encrypt_secret(secrets, args["vault_id"])
            return to_text(vault.encrypt(text, secret=secret, vault_id=vault_id))

        encrypting = args["encrypt"]
        if encrypting is None:
            encrypting = bool(secrets)
        elif encrypting and not secrets:
            raise AnsibleError(
                "encrypt=true needs a vault password: pass --vault-password-file or --ask-vault-pass"
            )
        return encrypt, decrypt, encrypting
