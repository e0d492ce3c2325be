"""Shared fixtures: deterministic time, waits and listener registries (failsafe.testing)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from failsafe import _native, events
from failsafe._core import PATTERNS
from failsafe.testing import FakeClock, instant_waits


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="event loop for every test, pytest-asyncio's and asyncio.run()'s alike",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("loop") == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


@pytest.fixture(autouse=True)
def _unshifted_clock() -> Iterator[None]:
    """Tests are independent: one that ran a FakeClock to its end (2**62 ns) would leave
    failsafe's time there, and the next FakeClock no room to move."""
    yield
    if _native.now_ns() > 2**61:
        _native._restart_clock()


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    """A FakeClock installed for the test (the C core reads it), uninstalled afterwards."""
    with FakeClock() as fake:
        yield fake


@pytest.fixture
def instant() -> Iterator[None]:
    """failsafe's waits (retry backoff, hedge delays) return at once; with `clock` they advance
    the fake clock by the delay."""
    with instant_waits():
        yield


@pytest.fixture
def global_listeners() -> Iterator[None]:
    """Removes every global listener the test registers, whatever pattern."""
    before = {pattern: events.global_listeners(pattern) for pattern in PATTERNS}
    yield
    for pattern, kept in before.items():
        for listener in events.global_listeners(pattern):
            if not any(listener is k for k in kept):
                events.unregister_listener(pattern, listener)
