"""Temporary changes to ``os.environ``, for the child processes started inside them (standard library only)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, MutableMapping


@contextlib.contextmanager
def environment(changes: Mapping[str, str | None]) -> Iterator[None]:
    """Apply ``changes`` to ``os.environ`` (``None`` unsets the variable) for the ``with`` block, then restore it.

    A process spawned inside the block (``multiprocessing`` ``spawn``, ``subprocess``) starts with the changed
    environment; the variables are set back to their earlier values (or unset) on exit, also on error.
    """
    saved = {key: os.environ.get(key) for key in changes}
    try:
        apply_changes(os.environ, changes)
        yield
    finally:
        apply_changes(os.environ, saved)


def apply_changes(env: MutableMapping[str, str], changes: Mapping[str, str | None]) -> None:
    """Set each variable of ``changes`` in ``env`` (``os.environ`` or a copy of it), or remove it where the value is ``None``."""
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
