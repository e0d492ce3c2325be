"""Shared state across processes: a policy given ``store=`` keeps its state in the store.

``RedisStore(url_or_client, *, prefix="failsafe", on_error="local", op_timeout=0.05)`` keeps it
in Redis (``pip install failsafe-py[redis]``). ``tokenbucket``, ``slidingwindow`` (and so policies
built by ``keyed``) and ``bulkhead`` accept ``store=`` with an explicit ``name=``: their limits
and concurrency caps then hold across every process that uses the same store and name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from failsafe.stores._base import ON_ERROR, Store, StoreUnavailable

if TYPE_CHECKING:
    from failsafe.stores.redis import RedisStore

__all__ = ["ON_ERROR", "RedisStore", "Store", "StoreUnavailable"]


def __getattr__(name: str) -> Any:
    # redis-py is an optional extra: imported when RedisStore is first asked for.
    if name == "RedisStore":
        from failsafe.stores.redis import RedisStore

        return RedisStore
    raise AttributeError(f"module 'failsafe.stores' has no attribute {name!r}")
