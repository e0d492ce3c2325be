"""A cache shared through a store: ``cache(ttl=60, store=store, name="users")``.

Values live in the store with the ttl, under ``{prefix:name}:v:<key digest>``; the digest is a
SHA-256 of a canonical, typed encoding of the key (``key_func``'s result, else the arguments), so
every process derives the same key. A miss takes a lock (``SET NX PX``, a random token, expiry
``lock_ttl``) and calls the function; the others of every process wait for it (woken by a
publish on the policy's channel, polling as a safety net) and then read the value. The leader
stores its value and frees the lock only if it still holds it (compare-and-delete): an
``invalidate()`` meanwhile drops the lock, so a value computed before it is not stored. An error
or a cancellation frees the lock at once, and a dead leader's lock expires after ``lock_ttl``.

``local_ttl`` puts the in-process C cache in front (its hits cost what a plain ``@cache`` hit
costs); ``invalidate()`` and ``clear()`` anywhere empty every process's local layer.
Values are JSON; ``serializer="pickle"`` needs ``secret=``: each value carries an HMAC-SHA256
of its bytes and is never unpickled unless the signature checks (a value that fails is deleted
and recomputed).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import hashlib
import hmac
import inspect
import json
import pickle
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ClassVar, Final

from failsafe import _core, _native
from failsafe.cache.exceptions import CacheUnavailable
from failsafe.stats import SharedCacheStats
from failsafe.stores._base import Store, StoreUnavailable, check_lease, check_store

__all__ = ["SERIALIZERS", "SharedCache"]

SERIALIZERS: Final = ("json", "pickle")
HIT, MISS, SET, SHARED, REJECTED, FALLBACK = _core.counter_indexes(
    "cache", "hit", "miss", "set", "shared", "rejected", "fallback", table=_native.STORE_METRICS
)
_MIN_SECRET: Final = 16
_SIG: Final = 32  # bytes of an HMAC-SHA256

# KEYS: value, lock. ARGV: token, lock_ms. Reply: {1, value} | {2} (this caller leads) | {3}.
_GET: Final = """
local v = redis.call('GET', KEYS[1])
if v then return {1, v} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end
return {3}
"""

# KEYS: value, lock, index. ARGV: token, payload, ttl_ms (0: none), channel, digest.
# Stores only while the lock is still this leader's (an invalidate() meanwhile dropped it).
_SET: Final = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
  redis.call('ZADD', KEYS[3], string.format('%d', now + ttl), ARGV[5])
else
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('ZADD', KEYS[3], '+inf', ARGV[5])
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', string.format('%d', now))
redis.call('PUBLISH', ARGV[4], '1')
return 1
"""

# KEYS: lock. ARGV: token, channel. Frees the lock if it is still ours and wakes the waiters.
_UNLOCK: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], '1')
return 1
"""

# KEYS: value, lock, index. ARGV: invalidation channel, digest.
_INVALIDATE: Final = """
local n = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('PUBLISH', ARGV[1], '1')
return n
"""

# KEYS: index. ARGV: invalidation channel, key base ({prefix:name}). The keys it deletes share
# the index's hash tag, so they live on its cluster node.
_CLEAR: Final = """
local ds = redis.call('ZRANGE', KEYS[1], 0, -1)
local n = 0
for _, d in ipairs(ds) do
  n = n + redis.call('DEL', ARGV[2] .. ':v:' .. d)
  redis.call('DEL', ARGV[2] .. ':lock:' .. d)
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[1], '1')
return n
"""


class _Retry:
    __slots__ = ()


_RETRY: Final = _Retry()


def _canon(obj: object, out: list[str], fn: str) -> None:
    """Appends a typed encoding of obj that is the same in every process (unlike hash())."""
    if obj is None:
        out.append("n")
    elif obj is True or obj is False:
        out.append("T" if obj else "F")
    elif isinstance(obj, enum.Enum):
        out.append(f"E{type(obj).__module__}.{type(obj).__qualname__}.{obj.name};")
    elif isinstance(obj, int):
        out.append(f"i{int(obj)};")
    elif isinstance(obj, float):
        out.append(f"f{float(obj)!r};")
    elif isinstance(obj, str):
        out.append(f"s{len(obj)}:{obj}")
    elif isinstance(obj, (bytes, bytearray)):
        out.append(f"b{len(obj)}:{bytes(obj).hex()}")
    elif isinstance(obj, (tuple, list)):
        out.append(f"l{len(obj)}(")
        for item in obj:
            _canon(item, out, fn)
        out.append(")")
    elif isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            part: list[str] = []
            _canon(k, part, fn)
            _canon(v, part, fn)
            items.append("".join(part))
        out.append(f"d{len(items)}({''.join(sorted(items))})")
    elif isinstance(obj, (set, frozenset)):
        members = []
        for item in obj:
            part = []
            _canon(item, part, fn)
            members.append("".join(part))
        out.append(f"e{len(members)}({''.join(sorted(members))})")
    else:
        raise TypeError(
            f"shared cache of {fn}: a key part of type {type(obj).__name__} has no encoding"
            " that is the same in every process (None, bool, int, float, str, bytes, enums,"
            " tuples, lists, dicts and sets of them do); pass key_func= returning one"
        )


def key_digest(key: object, fn: str) -> str:
    """The SHA-256 (hex) of key's canonical encoding: the same in every process."""
    out: list[str] = []
    _canon(key, out, fn)
    return hashlib.sha256("".join(out).encode("utf-8", "surrogatepass")).hexdigest()


class _LoopPart:
    """Per event loop: the calls in flight by digest, waiters to wake, the subscriptions."""

    __slots__ = ("flights", "unsubscribe", "wake")

    def __init__(self) -> None:
        self.flights: dict[str, asyncio.Future[Any]] = {}
        self.wake: set[asyncio.Event] = set()
        self.unsubscribe: list[Callable[[], None]] = []


class SharedCache(_core.Component, _native.Outcome):
    """A cache whose entries live in a store, computed once for every process using the same
    store and name (see the module's documentation)."""

    PATTERN: ClassVar[str] = "cache"
    METRICS: ClassVar[tuple[str, ...]] = _native.STORE_METRICS["cache"]

    def __new__(cls, *args: Any, **kwargs: Any) -> SharedCache:
        return super().__new__(cls, _core.PATTERNS["cache"])

    def __init__(
        self,
        *,
        store: object,
        name: str | None,
        ttl: float | None,
        maxsize: int | None,
        key_func: Callable[..., Any] | None,
        local_ttl: float | None,
        lock_ttl: float | None,
        serializer: str,
        secret: str | bytes | None,
        listeners: Iterable[Any] | None,
        event_manager: Any,
        stale_if_error: float | None = None,
    ) -> None:
        from failsafe.cache import Cache
        from failsafe.cache._options import CacheOptions

        checked = check_store(store, name, "cache")
        if stale_if_error is not None:
            raise ValueError("stale_if_error is not available with store= (a shared entry expires)")
        if not isinstance(serializer, str):
            raise TypeError(f"serializer must be a str, not {type(serializer).__name__}")
        if serializer not in SERIALIZERS:
            raise ValueError(f"serializer must be one of {SERIALIZERS}, got {serializer!r}")
        key: bytes | None = None
        if serializer == "pickle":
            if secret is None:
                raise ValueError(
                    "serializer='pickle' needs secret= (values are signed, and never unpickled"
                    " unless the signature checks)"
                )
            if not isinstance(secret, (str, bytes)):
                raise TypeError(f"secret must be str or bytes, not {type(secret).__name__}")
            key = secret.encode() if isinstance(secret, str) else bytes(secret)
            if len(key) < _MIN_SECRET:
                raise ValueError(f"secret must be at least {_MIN_SECRET} bytes")
        elif secret is not None:
            raise ValueError("secret= signs pickled values: it needs serializer='pickle'")
        lock = check_lease(lock_ttl, "lock_ttl", 10.0)
        self._init_component(name, listeners, event_manager)
        options = CacheOptions.check(maxsize=maxsize, ttl=ttl, key_func=key_func)
        self._fallback_cache: Any = Cache._of(options, f"{self._name}_fallback")
        self._local: Any = None
        if local_ttl is not None:
            local = options.with_ttl(local_ttl, "local_ttl")
            self._local = Cache._of(local, f"{self._name}_local")
        self._store: Any = checked
        self.ttl: float | None = None if ttl is None else float(ttl)
        self.local_ttl: float | None = None if local_ttl is None else float(local_ttl)
        self.lock_ttl: float = float(lock)
        self.maxsize = maxsize
        self.serializer = serializer
        self._secret = key
        self._key_func = key_func
        self._ttl_ms = 0 if ttl is None else max(1, round(float(ttl) * 1000))
        self._lock_ms = max(1, round(self.lock_ttl * 1000))
        self._poll = min(0.1, self.lock_ttl / 4)
        from failsafe.stores.redis import Script

        self._get_s, self._set_s = Script(_GET), Script(_SET)
        self._unlock_s, self._inv_s = Script(_UNLOCK), Script(_INVALIDATE)
        self._clear_s = Script(_CLEAR)
        self._base = self._store.key(self._name)
        self._index = f"{self._base}:index"
        self._done_channel = f"{self._base}:done"
        self._inv_channel = f"{self._base}:inv"
        self._parts: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopPart] = (
            weakref.WeakKeyDictionary()
        )
        self._fn: Callable[..., Awaitable[Any]] | None = None
        self._fn_name = "?"
        self._fallback_call: Any = None

    # -- decorator ---------------------------------------------------------------------------

    def __call__(self, fn: Callable[..., Awaitable[Any]]) -> Any:
        _core.check_async(fn, "cache")
        if self._fn is not None:
            raise TypeError(
                f"this cache already guards {self._fn!r}: make one cache(...) per function"
            )
        self._fn = fn
        self._fn_name = getattr(fn, "__qualname__", repr(fn))
        self._fallback_call = self._fallback_cache(fn)
        shared = self._shared

        async def through_store(*args: Any, **kwargs: Any) -> Any:
            return await shared(args, kwargs)

        wrapped: Any = functools.wraps(fn)(through_store)
        if self._local is not None:
            # The local layer's C guard answers a hit with no coroutine; a plain function
            # hands its awaitable on (marked so that it still reads as a coroutine function).
            guard = self._local(wrapped)

            def local_first(*args: Any, **kwargs: Any) -> Any:
                return guard(*args, **kwargs)

            wrapped = inspect.markcoroutinefunction(functools.wraps(fn)(local_first))
        wrapped.invalidate = self.invalidate
        wrapped.clear = self.clear
        wrapped.policy = self
        return wrapped

    # -- keys and values -----------------------------------------------------------------------

    def _digest(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        key: object = (
            self._key_func(*args, **kwargs) if self._key_func is not None else (args, kwargs)
        )
        return key_digest(key, self._fn_name)

    def _keys(self, digest: str) -> tuple[str, str, str]:
        return f"{self._base}:v:{digest}", f"{self._base}:lock:{digest}", self._index

    def _encode(self, value: Any) -> bytes:
        if self._secret is None:
            try:
                text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
            except (TypeError, ValueError) as exc:
                raise TypeError(
                    f"shared cache of {self._fn_name}: its value ({type(value).__name__}) is not"
                    f" JSON-serialisable ({exc}); return JSON data or use serializer='pickle'"
                    " with secret="
                ) from None
            return b"j" + text.encode("utf-8", "surrogatepass")
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        return b"p" + hmac.digest(self._secret, data, "sha256") + data

    def _decode(self, payload: object) -> tuple[bool, Any]:
        """(True, value), or (False, None) for a value this policy must not trust."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8", "surrogatepass")
        if not isinstance(payload, bytes) or not payload:
            return False, None
        if self._secret is None:
            if payload[:1] != b"j":
                return False, None
            try:
                return True, json.loads(payload[1:])
            except ValueError:
                return False, None
        if payload[:1] != b"p" or len(payload) < 1 + _SIG:
            return False, None
        sig, data = payload[1 : 1 + _SIG], payload[1 + _SIG :]
        if not hmac.compare_digest(sig, hmac.digest(self._secret, data, "sha256")):
            return False, None
        return True, pickle.loads(data)  # signed by a holder of the secret

    # -- the call --------------------------------------------------------------------------------

    def _part(self) -> _LoopPart:
        loop = asyncio.get_running_loop()
        part = self._parts.get(loop)
        if part is None:
            part = self._parts[loop] = _LoopPart()
            # The subscriber reconnects by itself after an outage; waiters poll meanwhile.
            store = self._store
            part.unsubscribe.append(
                store._subscribe(self._done_channel, functools.partial(_wake, part))
            )
            part.unsubscribe.append(store._subscribe(self._inv_channel, self._forget_local))
        return part

    async def _shared(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """One call in this loop per digest asks the store; the others share its outcome."""
        digest = self._digest(args, kwargs)
        part = self._part()
        while (flight := part.flights.get(digest)) is not None:
            try:
                value = await asyncio.shield(flight)
            except Exception:
                self._count(SHARED)
                raise
            if value is not _RETRY:
                self._count(SHARED)
                return value
        flight = asyncio.get_running_loop().create_future()
        part.flights[digest] = flight
        try:
            value = await self._fetch(digest, args, kwargs)
        except BaseException as exc:
            del part.flights[digest]
            if isinstance(exc, Exception):
                flight.set_exception(exc)
                flight.exception()  # retrieved here: the waiters (if any) raise it too
            else:  # cancelled: a waiter takes over
                flight.set_result(_RETRY)
            raise
        del part.flights[digest]
        flight.set_result(value)
        return value

    async def _fetch(self, digest: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        store = self._store
        keys = self._keys(digest)
        token = uuid.uuid4().hex
        while True:
            try:
                fut = store._submit(self._get_s, keys[:2], (token, self._lock_ms))
            except StoreUnavailable:
                return await self._fall_back(args, kwargs)
            try:
                reply = await asyncio.shield(fut)
            except StoreUnavailable:
                return await self._fall_back(args, kwargs)
            except BaseException:
                # Cancelled while asking: a lock the reply grants is freed when it arrives.
                fut.add_done_callback(functools.partial(self._unlock_granted, keys[1], token))
                raise
            if reply[0] == 1:
                ok, value = self._decode(reply[1])
                if ok:
                    self._count(HIT)
                    return value
                self._count(REJECTED)  # unsigned, tampered or foreign: drop it, recompute
                with contextlib.suppress(StoreUnavailable):
                    await store._submit(self._inv_s, keys, (self._inv_channel, digest))
                continue
            if reply[0] == 2:
                return await self._lead(keys, token, args, kwargs)
            await self._wait_wake()

    async def _lead(
        self, keys: tuple[str, str, str], token: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        assert self._fn is not None
        self._count(MISS)
        try:
            value = await self._fn(*args, **kwargs)
            payload = self._encode(value)
        except BaseException:
            self._unlock(keys[1], token)  # errors are not stored; a waiter takes over now
            raise
        ttl = self._ttl_ms
        digest = keys[0].rsplit(":", 1)[1]
        try:
            fut = self._store._submit(
                self._set_s, keys, (token, payload, ttl, self._done_channel, digest)
            )
        except StoreUnavailable:
            return value
        fut.add_done_callback(self._stored)
        return value

    def _stored(self, fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is None and fut.result() == 1:
            self._count(SET)

    def _unlock(self, lock_key: str, token: str) -> None:
        try:
            fut = self._store._submit(self._unlock_s, (lock_key,), (token, self._done_channel))
        except StoreUnavailable:
            return  # the lock expires after lock_ttl
        fut.add_done_callback(_consume)

    def _unlock_granted(self, lock_key: str, token: str, fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is None and fut.result()[0] == 2:
            self._unlock(lock_key, token)

    async def _wait_wake(self) -> None:
        part = self._part()
        event = asyncio.Event()
        part.wake.add(event)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await event.wait()
        finally:
            part.wake.discard(event)

    async def _fall_back(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        store: Store = self._store
        store._fell_back()
        self._count(FALLBACK)
        mode = store.on_error
        if mode == "deny":
            raise CacheUnavailable(
                f"shared cache {self._name!r}: the store is unavailable and on_error='deny'"
            )
        if mode == "allow":
            assert self._fn is not None
            self._count(MISS)
            return await self._fn(*args, **kwargs)
        return await self._fallback_call(*args, **kwargs)

    # -- invalidation ----------------------------------------------------------------------------

    def _forget_local(self) -> None:
        if self._local is not None:
            self._local.clear()
        self._fallback_cache.clear()

    def invalidate(self, *args: Any, **kwargs: Any) -> asyncio.Future[bool]:
        """Forgets the entry of these arguments in the store and in every process's local
        layer (in this one at once). Returns a future: ``await`` it to know the store has
        forgotten it (True: an entry was there)."""
        digest = self._digest(args, kwargs)
        if self._local is not None:
            self._local.invalidate(*args, **kwargs)
        self._fallback_cache.invalidate(*args, **kwargs)
        return self._send(self._inv_s, self._keys(digest), (self._inv_channel, digest))

    def clear(self) -> asyncio.Future[bool]:
        """Forgets every entry, in the store and in every process's local layer."""
        self._forget_local()
        return self._send(self._clear_s, (self._index,), (self._inv_channel, self._base))

    def _send(
        self, script: Any, keys: tuple[str, ...], args: tuple[Any, ...]
    ) -> asyncio.Future[bool]:
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        try:
            fut = self._store._submit(script, keys, args)
        except StoreUnavailable:
            done.set_result(False)
            return done

        def settle(f: asyncio.Future[Any]) -> None:
            if not done.done():
                ok = not f.cancelled() and f.exception() is None
                done.set_result(bool(ok and f.result()))

        fut.add_done_callback(settle)
        return done

    # -- introspection ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return 0 if self._local is None else len(self._local)

    def stats(self) -> SharedCacheStats:
        return SharedCacheStats(
            **self._stat_values(),
            ttl=self.ttl,
            local_ttl=self.local_ttl,
            lock_ttl=self.lock_ttl,
            serializer=self.serializer,
            local_size=len(self),
            store=self._store._metrics.name,
        )


def _wake(part: _LoopPart) -> None:
    for event in part.wake:
        event.set()


def _consume(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()  # a failed unlock only means the lock expires by itself


def shared_cache(**kwargs: Any) -> SharedCache:
    return SharedCache(**kwargs)
