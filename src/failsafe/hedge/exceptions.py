"""Hedge exceptions."""

from __future__ import annotations

import builtins
from collections.abc import Iterable

from failsafe.exceptions import FailsafeError

__all__ = ["HedgeAllFailed", "HedgeTimeout"]


class HedgeTimeout(builtins.TimeoutError, FailsafeError):
    """A hedged call (or an ``async with hedge(timeout=...)`` block) ran out of its
    ``timeout``; every attempt was cancelled and awaited first. ``except TimeoutError`` (the
    builtin) catches it."""


class HedgeAllFailed(FailsafeError):
    """Every attempt of a hedged call failed. ``errors`` holds their exceptions in the order
    they failed; the exception is raised ``from`` the last one."""

    def __init__(self, errors: Iterable[BaseException] = ()) -> None:
        self.errors: tuple[BaseException, ...] = tuple(errors)
        n = len(self.errors)
        last = f"; last: {self.errors[-1]!r}" if n else ""
        super().__init__(f"all {n} hedged attempt(s) failed{last}")
