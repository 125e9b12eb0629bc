# Copyright: hostmesh developers
# Apache License 2.0
"""hostmesh.cluster.linear: Ansible's linear strategy, accelerated by Mitogen when present."""

from __future__ import annotations

DOCUMENTATION = r"""
name: linear
short_description: Linear strategy that uses Mitogen when it is installed
description:
  - Runs tasks exactly like C(ansible.builtin.linear).
  - When the Python package C(mitogen) is importable on the controller and
    E(HOSTMESH_MITOGEN) is not V(0), the run goes through Mitogen's
    C(mitogen_linear) instead, which on the hostmesh lab (driven over SSH,
    as real servers) makes a no-op converge several times faster. Hosts must
    then use a connection name Mitogen knows (C(ssh), C(local), ...).
  - Mitogen checks host keys like plain SSH as long as host key checking is
    on (with it off, Mitogen passes C(UserKnownHostsFile=/dev/null) to ssh).
  - Turn Mitogen off with E(HOSTMESH_MITOGEN=0), or pick another strategy
    (C(--strategy), E(ANSIBLE_STRATEGY)=V(ansible.builtin.linear)).
version_added: 0.1.0
author:
  - hostmesh developers (@hostmesh)
"""

import os

from ansible.plugins.loader import strategy_loader

_Base = strategy_loader.get("ansible.builtin.linear", class_only=True)
_Mixin = None
if os.environ.get("HOSTMESH_MITOGEN", "1") != "0":
    try:
        import ansible_mitogen.strategy

        _Mixin = ansible_mitogen.strategy.StrategyMixin
    except ImportError:  # Mitogen not installed: plain linear.
        _Mixin = None

if _Mixin is not None:

    class StrategyModule(_Mixin, _Base):
        """Mitogen-accelerated linear strategy."""

else:

    class StrategyModule(_Base):  # type: ignore[no-redef]
        """Plain linear strategy (Mitogen absent or turned off)."""
