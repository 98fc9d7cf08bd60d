"""One way for a role's filter plugin to fail: the ValueError (or subclass) that the
collection's logic raises becomes Ansible's filter error, its text prefixed with the
role's name, so that a task fails with the message and not with a traceback. The logic
itself stays free of Ansible (tools/bundle.py imports it where Ansible is absent)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from ansible.errors import AnsibleFilterError


def filters_failing_cleanly(prefix: str, filters: dict[str, Callable[..., Any]]) -> dict:
    """A FilterModule's table: each function's ValueError raised as
    AnsibleFilterError('<prefix>: <its message>')."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except ValueError as err:
                raise AnsibleFilterError(f"{prefix}: {err}") from None

        return inner

    return {name: wrap(fn) for name, fn in filters.items()}
