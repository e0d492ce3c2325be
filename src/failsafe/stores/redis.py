"""``RedisStore``: policies' shared state in Redis (or Valkey), through ``redis.asyncio``.

Each decision is one of our own Lua scripts, run with EVALSHA (EVAL once when the server does
not know it yet, e.g. after a restart) on the server's clock. The decisions that the tasks of one
event loop ask for in the same loop turn travel as one pipeline, bounded by ``op_timeout``.

A ``redis.asyncio`` client belongs to the event loop it first ran on, so the store keeps one
client per loop: the client it was given serves the first loop that uses the store, and other
loops (other threads) get a client made with the same connection settings. Each loop closes the
clients the store made for it with :meth:`RedisStore.aclose`; the client it was given is left to
its owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import threading
import weakref
from collections.abc import Callable
from typing import Any, Final

try:
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import ClusterNode
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import NoScriptError, RedisError
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "failsafe.stores.RedisStore needs redis-py: pip install 'failsafe-py[redis]'"
    ) from exc

from failsafe.stats import RedisStoreStats
from failsafe.stores._base import DECISIONS, ROUND_TRIPS, Store, StoreUnavailable

__all__ = ["RedisStore", "Script"]

Client = aioredis.Redis | aioredis.RedisCluster

# A connection attempt runs in the background, beyond op_timeout (the calls waiting for it fall
# back at op_timeout), so a slow first connection still ends up serving later calls.
_CONNECT_TIMEOUT: Final = 5.0
# Seconds past op_timeout after which a batch's callers are answered whatever the client does.
_BACKSTOP: Final = 0.05
# Connection settings copied when a given client must be reproduced for another event loop.
# Seconds the pub/sub reader waits for a message before it looks for channels to unsubscribe
# (new channels do not wait for it).
_IDLE: Final = 0.5
_CLONED: Final = frozenset(
    {"host", "port", "db", "path", "username", "password", "credential_provider", "client_name"}
)


class Script:
    """One of our Lua scripts and its SHA1 (the scripts are constants: no input becomes one).

    A script with a ``width`` decides many requests in one run: it takes their count as its
    last argument and replies ``width`` values per request, in order. Requests for one script
    with the same keys and arguments in one loop turn (the concurrent calls of one policy)
    then cost one script run, not one each.
    """

    __slots__ = ("sha", "source", "width")

    def __init__(self, source: str, width: int = 0) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self.width = width


type _Op = tuple[Script, tuple[str, ...], tuple[int | float | str, ...], asyncio.Future[Any]]
# One command of a pipeline: a script run serving one or more requests (their futures).
type _Cmd = tuple[Script, tuple[str, ...], tuple[int | float | str, ...], list[asyncio.Future[Any]]]


class _LoopState:
    """The store's client and pending batch for one event loop."""

    __slots__ = ("client", "connecting", "loaded", "owned", "pending", "pubsub", "tasks")

    def __init__(self) -> None:
        self.client: Client | None = None
        self.owned = True  # made by the store (closed by aclose)
        self.connecting: asyncio.Task[Client] | None = None
        self.pending: list[_Op] = []
        self.tasks: set[asyncio.Task[Any]] = set()
        self.pubsub: _Subscriptions | None = None
        self.loaded: set[tuple[str, int]] = set()  # (script sha, cluster slot) run already


def _check_prefix(prefix: object) -> str:
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
    if not prefix or any(c in prefix for c in "{}") or len(prefix) > 200:
        raise ValueError(f"prefix must be 1-200 characters without braces, got {prefix!r}")
    return prefix


class RedisStore(Store):
    """Shared state in Redis: ``RedisStore("redis://host:6379/0", prefix="svc")``.

    ``url_or_client``: a ``redis://``, ``rediss://`` (TLS) or ``unix://`` URL (AUTH and TLS
    settings come from it; a URL of a cluster node is recognised as a cluster), or a
    ``redis.asyncio.Redis`` / ``RedisCluster`` client. ``prefix`` namespaces every key: a
    policy's keys are ``{prefix:name}...``, one cluster slot per policy. ``on_error``:
    ``"local"``, ``"allow"`` or ``"deny"`` (see :class:`failsafe.stores.Store`); ``op_timeout``
    bounds every operation, in seconds. Nothing connects until a policy first asks.
    """

    def __init__(
        self,
        url_or_client: str | Client,
        *,
        prefix: str = "failsafe",
        on_error: str = "local",
        op_timeout: float = 0.05,
    ) -> None:
        self.prefix: str = _check_prefix(prefix)
        self._url: str | None = None
        self._given: Client | None = None
        if isinstance(url_or_client, str):
            if not url_or_client.startswith(("redis://", "rediss://", "unix://")):
                raise ValueError(
                    "url_or_client must be a redis://, rediss:// or unix:// URL, got"
                    f" {url_or_client.split('@')[-1]!r}"
                )
            self._url = url_or_client
        elif isinstance(url_or_client, (aioredis.Redis, aioredis.RedisCluster)):
            self._given = url_or_client
        else:
            raise TypeError(
                "url_or_client must be a Redis URL or a redis.asyncio Redis/RedisCluster,"
                f" not {type(url_or_client).__name__}"
            )
        metric_name = "redis." + re.sub(r"[^A-Za-z0-9_.\-/]", "_", prefix)
        super().__init__(name=metric_name[:63], on_error=on_error, op_timeout=op_timeout)
        self._cluster: bool | None = None  # a URL's server: learned on the first connection
        self._given_loop: weakref.ref[asyncio.AbstractEventLoop] | None = None
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    # -- keys ------------------------------------------------------------------------------------

    def key(self, name: str, *parts: object) -> str:
        """The Redis key of a policy (``{prefix:name}``) or of one of its parts."""
        base = f"{{{self.prefix}:{name}}}"
        return ":".join([base, *(str(p) for p in parts)]) if parts else base

    # -- per-loop clients -----------------------------------------------------------------------

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        st = self._loops.get(loop)
        if st is None:
            with self._lock:
                st = self._loops.get(loop)
                if st is None:
                    st = self._loops[loop] = _LoopState()
        return st

    async def _client(self) -> Client:
        """This loop's client, connected (waits at most op_timeout; the connection goes on)."""
        st = self._state()
        if st.client is not None:
            return st.client
        task = st.connecting
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = st.connecting = asyncio.get_running_loop().create_task(self._connect(st))
        return await asyncio.shield(task)

    async def _connect(self, st: _LoopState) -> Client:
        async with asyncio.timeout(_CONNECT_TIMEOUT):
            client = self._take_given(st)
            if client is None:
                client = await self._new_client()
            else:
                await _warm(client)
            st.client = client
            return client

    def _take_given(self, st: _LoopState) -> Client | None:
        given = self._given
        if given is None:
            return None
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._given_loop is None:
                self._given_loop = weakref.ref(loop)
        if self._given_loop() is loop:
            st.owned = False
            return given
        return _clone(given)

    async def _new_client(self) -> Client:
        assert self._url is not None
        opts: dict[str, Any] = {
            "retry": Retry(NoBackoff(), 1),
            "socket_connect_timeout": _CONNECT_TIMEOUT,
            "socket_timeout": None,
        }
        if not self._cluster:
            client = aioredis.Redis.from_url(self._url, **opts)
            try:
                info = await client.info("cluster")
            except BaseException:
                await client.aclose()
                raise
            self._cluster = bool(info.get("cluster_enabled"))
            if not self._cluster:
                return client
            await client.aclose()
        cluster = aioredis.RedisCluster.from_url(self._url, **opts)
        await _warm(cluster)
        return cluster

    # -- decisions ------------------------------------------------------------------------------

    def _submit(
        self, script: Script, keys: tuple[str, ...], args: tuple[int | float | str, ...]
    ) -> asyncio.Future[Any]:
        """Queues one script run for this loop turn's pipeline; the future gets its reply, or
        StoreUnavailable within op_timeout. Raises StoreUnavailable at once while the breaker
        around the store is open."""
        st = self._state()
        # While a probe's batch is still pending, this turn's requests join it.
        if not (self._probing and st.pending) and not self._available():
            raise StoreUnavailable(f"redis store {self.prefix!r} is down")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if not st.pending:
            loop.call_soon(self._flush, st)
        st.pending.append((script, keys, args, fut))
        return fut

    def _flush(self, st: _LoopState) -> None:
        batch, st.pending = st.pending, []
        if batch:
            self._spawn(st, self._send(batch))

    def _spawn(self, st: _LoopState, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        st.tasks.add(task)
        task.add_done_callback(st.tasks.discard)
        return task

    async def _send(self, ops: list[_Op]) -> None:
        batch: list[_Cmd] = []
        merged: dict[tuple[str, tuple[str, ...], tuple[int | float | str, ...]], _Cmd] = {}
        for script, keys, args, fut in ops:
            if script.width:
                cmd = merged.get((script.sha, keys, args))
                if cmd is None:
                    cmd = merged[script.sha, keys, args] = (script, keys, args, [])
                    batch.append(cmd)
                cmd[3].append(fut)
            else:
                batch.append((script, keys, args, [fut]))
        # The callers wait little more than op_timeout even when the client does not end at
        # its cancellation; normally the timeout below answers them first (and counts it).
        timer = asyncio.get_running_loop().call_later(self.op_timeout + _BACKSTOP, _expire, ops)
        try:
            await self._send_commands(batch, len(ops))
        finally:
            timer.cancel()

    async def _send_commands(self, batch: list[_Cmd], decisions: int) -> None:
        st = self._state()
        try:
            async with asyncio.timeout(self.op_timeout):
                client = await self._client()
                replies = await self._run(st, client, batch)
        except BaseException as exc:
            if not isinstance(exc, Exception):  # cancelled (its loop is closing)
                self._probing = False
                raise
            if st.client is None and st.connecting is not None and not st.connecting.done():
                # Still connecting (a first connection may outlast op_timeout): these calls
                # fall back, the connection goes on, and the store is not counted down.
                self._probing = False
            else:
                self._failed()
            for cmd in batch:
                for fut in cmd[3]:
                    if not fut.done():
                        fut.set_exception(StoreUnavailable(f"redis: {exc!r}"))
            return
        self._succeeded()
        self._count(ROUND_TRIPS)
        self._count(DECISIONS, decisions)
        for (script, _, _, futs), reply in zip(batch, replies, strict=True):
            if isinstance(reply, Exception):
                self._failed()
                for fut in futs:
                    if not fut.done():
                        fut.set_exception(StoreUnavailable(f"redis: {reply!r}"))
                continue
            width = script.width
            for i, fut in enumerate(futs):
                if not fut.done():  # else its caller was cancelled
                    fut.set_result(reply[i * width : i * width + width] if width else reply)

    async def _run(self, st: _LoopState, client: Client, batch: list[_Cmd]) -> list[Any]:
        # EVAL (the source) where this client has not run the script yet, EVALSHA after: a
        # NOSCRIPT reply would be retried after the commands behind it, out of order.
        cluster = isinstance(client, aioredis.RedisCluster)
        loaded = st.loaded
        places = []
        pipe = client.pipeline(transaction=False)
        for script, keys, args, futs in batch:
            count = (len(futs),) if script.width else ()
            place = (script.sha, client.keyslot(keys[0]) if cluster else 0)  # type: ignore[union-attr]
            places.append(place)
            if place in loaded:
                pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args, *count)
            else:
                pipe.execute_command("EVAL", script.source, len(keys), *keys, *args, *count)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        for place, reply in zip(places, replies, strict=True):
            if not isinstance(reply, Exception):
                loaded.add(place)
        missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
        if missing:  # a restarted server (or a moved slot) forgot the scripts
            loaded.clear()
            pipe = client.pipeline(transaction=False)
            for i in missing:
                script, keys, args, futs = batch[i]
                count = (len(futs),) if script.width else ()
                pipe.execute_command("EVAL", script.source, len(keys), *keys, *args, *count)
            for i, reply in zip(missing, await pipe.execute(raise_on_error=False), strict=True):
                replies[i] = reply
        return replies

    async def _eval(
        self, script: Script, keys: tuple[str, ...], args: tuple[int | float | str, ...]
    ) -> Any:
        """One script run, batched; raises StoreUnavailable when the store cannot answer."""
        return await self._submit(script, keys, args)

    def _subscribe(self, channel: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Calls callback (in this loop) whenever a message arrives on channel, for as long
        as the connection holds; returns the function that unsubscribes."""
        st = self._state()
        if st.pubsub is None:
            st.pubsub = _Subscriptions(self, st)
        return st.pubsub.add(channel, callback)

    # -- closing --------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Closes the clients this store made for the calling event loop (the one it was given
        stays open). Another loop's client is left to that loop: closing it from here would
        break the calls it has in flight."""
        loop = asyncio.get_running_loop()
        with self._lock:
            st = self._loops.pop(loop, None)
            for other in [o for o in self._loops if o.is_closed()]:
                del self._loops[other]
        if st is None:
            return
        for task in list(st.tasks):
            task.cancel()
        if st.pubsub is not None:
            await st.pubsub.close()
        client, st.client = st.client, None
        if client is not None and st.owned:
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()

    def stats(self) -> RedisStoreStats:
        return RedisStoreStats(**self._stat_values(), prefix=self.prefix, loops=len(self._loops))


class _Subscriptions:
    """One pub/sub connection per loop, its reader task, and the callbacks per channel. A new
    channel is subscribed at once, also while the reader waits for a message (a SUBSCRIBE is
    only written; its reply arrives through the reader). The reader reconnects after an error
    (waiting retry_interval); callers poll meanwhile."""

    def __init__(self, store: RedisStore, st: _LoopState) -> None:
        self._store = store
        self._st = st
        self._callbacks: dict[str, list[Callable[[], None]]] = {}
        self._changed = asyncio.Event()
        self._pubsub: Any = None  # the connection while the reader waits for messages on it
        self._subscribed: set[str] = set()  # channels subscribed (or being subscribed) on it
        self._task = store._spawn(st, self._read())

    def add(self, channel: str, callback: Callable[[], None]) -> Callable[[], None]:
        self._callbacks.setdefault(channel, []).append(callback)
        pubsub = self._pubsub
        if pubsub is not None and channel not in self._subscribed:
            self._subscribed.add(channel)
            self._store._spawn(self._st, self._subscribe_now(pubsub, channel))
        self._changed.set()

        def remove() -> None:
            callbacks = self._callbacks.get(channel)
            if callbacks and callback in callbacks:
                callbacks.remove(callback)
                if not callbacks:
                    del self._callbacks[channel]
                    self._changed.set()

        return remove

    async def _subscribe_now(self, pubsub: Any, channel: str) -> None:
        try:
            await pubsub.subscribe(channel)
        except (RedisError, OSError, TimeoutError, RuntimeError):
            # The connection broke: the reader fails on it too and subscribes every channel
            # on its next connection.
            if pubsub is self._pubsub:
                self._subscribed.discard(channel)

    async def _read(self) -> None:
        store = self._store
        while True:
            pubsub = None
            try:
                client = await store._client()
                pubsub = client.pubsub()
                self._subscribed = set()
                while True:
                    wanted = set(self._callbacks)
                    new, gone = wanted - self._subscribed, self._subscribed - wanted
                    self._subscribed = wanted
                    if new:
                        await pubsub.subscribe(*new)
                    if gone:
                        await pubsub.unsubscribe(*gone)
                    self._changed.clear()
                    if not self._subscribed:
                        self._pubsub = None
                        await self._changed.wait()
                        continue
                    self._pubsub = pubsub  # from here add() subscribes on it directly
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=_IDLE)
                    if msg is not None and msg.get("type") == "message":
                        channel = msg["channel"]
                        if isinstance(channel, bytes):
                            channel = channel.decode()
                        for cb in tuple(self._callbacks.get(channel, ())):
                            cb()
            except (RedisError, OSError, TimeoutError, AttributeError, NotImplementedError):
                self._pubsub = None
                await asyncio.sleep(store.retry_interval)
            finally:
                self._pubsub = None
                if pubsub is not None:
                    with contextlib.suppress(RedisError, OSError, RuntimeError):
                        await pubsub.aclose()

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def _expire(ops: list[_Op]) -> None:
    for *_, fut in ops:
        if not fut.done():
            fut.set_exception(StoreUnavailable("redis: no reply within op_timeout"))


async def _warm(client: Client) -> None:
    """Opens the connections the first calls need, within the connect timeout, not theirs."""
    if isinstance(client, aioredis.RedisCluster):
        await client.initialize()
        await client.execute_command("PING", target_nodes=aioredis.RedisCluster.PRIMARIES)
    else:
        await client.ping()


def _clone(client: Client) -> Client:
    """A client like ``client`` for another event loop (its connections belong to its loop)."""
    if isinstance(client, aioredis.RedisCluster):
        kwargs = client.nodes_manager.connection_kwargs
        # list() copies the dict in one step: the loop of the given client may be rewriting it.
        seeds = list(client.nodes_manager.startup_nodes.values())
        nodes = [ClusterNode(n.host, n.port) for n in seeds]
        opts = {k: v for k, v in kwargs.items() if k in _CLONED and k not in ("host", "port")}
        return aioredis.RedisCluster(startup_nodes=nodes, retry=Retry(NoBackoff(), 1), **opts)
    pool = client.connection_pool
    conn_kwargs = pool.connection_kwargs
    cloned = {k: v for k, v in conn_kwargs.items() if k in _CLONED or k.startswith("ssl")}
    new_pool = aioredis.ConnectionPool(connection_class=pool.connection_class, **cloned)
    return aioredis.Redis(connection_pool=new_pool, retry=Retry(NoBackoff(), 1))
