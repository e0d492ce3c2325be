"""Smoke test of an installed failsafe-py (sdist or wheel): run from outside the repository.

A flaky call succeeds under retry, a slow one times out, and the C engine is the one loaded.
"""

import asyncio
import importlib.metadata
import importlib.util
import sys
from pathlib import Path

import failsafe
from failsafe import _native
from failsafe.retry import AttemptsExceeded, retry
from failsafe.timeout import TimeoutError, timeout

calls = 0


@retry(attempts=3, backoff=0.01, on=ConnectionError, name="smoke")
@timeout(0.5)
async def flaky() -> str:
    global calls
    calls += 1
    if calls < 3:
        raise ConnectionError("not yet")
    return "ok"


@retry(attempts=1, backoff=0, on=TimeoutError)
@timeout(0.01)
async def slow() -> None:
    await asyncio.sleep(10)


async def main() -> None:
    assert await flaky() == "ok"
    assert calls == 3, calls
    assert flaky.policy.stats()["success"] == 1
    try:
        await slow()
    except AttemptsExceeded as e:
        last = e.last_exception
    else:
        raise AssertionError("slow() did not time out")
    assert isinstance(last, TimeoutError), last


location = Path(failsafe.__file__).resolve()
assert "site-packages" in location.parts, f"failsafe not imported from an install: {location}"
assert Path(_native.__file__).suffix in (".so", ".pyd"), _native.__file__
assert importlib.util.find_spec("integrations") is None, "a top-level 'integrations' is installed"
asyncio.run(main())
version = importlib.metadata.version("failsafe-py")
print(f"failsafe-py {version} on Python {sys.version.split()[0]}: {location.parent} ok")
