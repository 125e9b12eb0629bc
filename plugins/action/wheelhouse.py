# Private to the collection: may change without notice.
"""Controller side of `hostmesh.cluster.wheelhouse` (all of it).

Builds and downloads wheel sets in the controller's cache
(plugins/plugin_utils/_wheelhouse.py); nothing is sent to a managed host.
"""

from __future__ import annotations

from ansible.plugins.action import ActionBase
from ansible_collections.hostmesh.cluster.plugins.plugin_utils._wheelhouse import (
    ARGUMENT_SPEC,
    WheelhouseError,
    ensure,
)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        # Filling the cache changes nothing on a host: it runs in check mode
        # too, so that --check --diff can compare the wheels with the nodes'.
        try:
            out = ensure(
                args["name"],
                args["targets"],
                project=args["project"],
                extras=args["extras"],
                requirements=args["requirements"],
                no_deps=args["no_deps"],
                pure=args["pure"],
                wheelhouse=args["wheelhouse"] or "",
                cache_dir=args["cache_dir"] or "",
            )
        except (WheelhouseError, OSError) as exc:
            result.update(failed=True, msg=f"wheel set {args['name']}: {exc}")
            return result
        result.update(out)
        return result
