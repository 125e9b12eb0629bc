# Private to the collection: may change without notice.
"""The base of the collection's action plugins that run wholly on the controller.

Such an action opens no connection to the managed host and transfers no file:
its `run` validates the task's arguments against `ARGUMENT_SPEC` (and
`MUTUALLY_EXCLUSIVE`; a bad argument fails the task before anything is done)
and hands them to `act(args, task_vars, result)`, which returns the result.
"""

from __future__ import annotations

from typing import ClassVar

from ansible.plugins.action import ActionBase


class ControllerAction(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    ARGUMENT_SPEC: ClassVar[dict] = {}
    MUTUALLY_EXCLUSIVE: ClassVar[list | None] = None

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        _validation, args = self.validate_argument_spec(
            argument_spec=self.ARGUMENT_SPEC,
            mutually_exclusive=self.MUTUALLY_EXCLUSIVE,
        )
        return self.act(args, task_vars, result)

    def act(self, args: dict, task_vars: dict, result: dict) -> dict:
        raise NotImplementedError
