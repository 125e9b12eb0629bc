# Copyright: hostmesh contributors
# Apache License 2.0 (see LICENSE)
"""Filters of the hostmesh.cluster.node_agent role: the agent's own rules, asked once.

The rules live in plugins/module_utils/_names.py, which the agent itself
imports (through its wheel); the role's preflight asks them here instead of
repeating the patterns in Jinja.
"""

from __future__ import annotations

from ansible_collections.hostmesh.cluster.plugins.module_utils._names import (
    node_identity_errors,
)


class FilterModule:
    def filters(self):
        return {"node_identity_errors": node_identity_errors}
