"""Cache rows: a hit (the key is stored) and a miss (a new key every call, so the function runs
and its result is stored), failsafe beside aiocache and cashews in-memory caches."""

from __future__ import annotations

import importlib.util
import itertools
from typing import Any

from cases import Case

HIT = "r = await g(1)"
MISS = "r = await g(next(keys))"


async def one(_key: object) -> int:
    return 1


def _failsafe(maxsize: int | None) -> Any:
    from failsafe.cache import cache

    return cache(maxsize=maxsize)(one)


def _aiocache() -> Any:
    from aiocache import SimpleMemoryCache, cached

    return cached(cache=SimpleMemoryCache)(one)


def _cashews() -> Any:
    from cashews import Cache

    backend = Cache()
    backend.setup("mem://")
    return backend(ttl=3600)(one)


def _async_lru() -> Any:
    from async_lru import alru_cache

    return alru_cache(maxsize=None)(one)


def _miss(make: Any) -> Any:
    return lambda: {"g": make(), "keys": itertools.count()}


CASES: list[Case] = [
    Case("cache", "hit", "failsafe @cache()", lambda: _failsafe(None), HIT, budget=1_500),
    Case("cache", "hit", "aiocache @cached (SimpleMemoryCache)", _aiocache, HIT),
    Case("cache", "hit", "cashews @cache (mem://)", _cashews, HIT),
    Case("cache", "miss", "failsafe @cache()", _miss(lambda: _failsafe(None)), MISS),
    Case("cache", "miss", "failsafe @cache(maxsize=1000)", _miss(lambda: _failsafe(1000)), MISS),
    Case("cache", "miss", "aiocache @cached (SimpleMemoryCache)", _miss(_aiocache), MISS),
    Case("cache", "miss", "cashews @cache (mem://)", _miss(_cashews), MISS),
]

# async-lru is not a dependency: its rows appear only where it happens to be installed.
if importlib.util.find_spec("async_lru") is not None:
    CASES += [
        Case("cache", "hit", "async-lru @alru_cache", _async_lru, HIT),
        Case("cache", "miss", "async-lru @alru_cache", _miss(_async_lru), MISS),
    ]
