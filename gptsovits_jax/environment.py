"""Temporary changes to ``os.environ``, for the child processes started inside them (standard library only)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping


@contextlib.contextmanager
def environment(changes: Mapping[str, str | None]) -> Iterator[None]:
    """Apply ``changes`` to ``os.environ`` (``None`` unsets the variable) for the ``with`` block, then restore it.

    A process spawned inside the block (``multiprocessing`` ``spawn``, ``subprocess``) starts with the changed
    environment; the variables are set back to their earlier values (or unset) on exit, also on error.
    """
    saved = {key: os.environ.get(key) for key in changes}
    try:
        for key, value in changes.items():
            _set(key, value)
        yield
    finally:
        for key, value in saved.items():
            _set(key, value)


def _set(key: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value
