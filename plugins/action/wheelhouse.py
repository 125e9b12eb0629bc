# Private to the collection: may change without notice.
"""Controller side of `hostmesh.cluster.wheelhouse` (all of it).

Builds and downloads wheel sets in the controller's cache
(plugins/plugin_utils/_wheelhouse.py); nothing is sent to a managed host.
"""

from __future__ import annotations

from ansible_collections.hostmesh.cluster.plugins.plugin_utils._controller_action import (
    ControllerAction,
)
from ansible_collections.hostmesh.cluster.plugins.plugin_utils._wheelhouse import (
    ARGUMENT_SPEC,
    WheelhouseError,
    ensure,
)


class ActionModule(ControllerAction):
    ARGUMENT_SPEC = ARGUMENT_SPEC

    def act(self, args, task_vars, result):
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
