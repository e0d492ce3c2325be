"""A resilience simulator: a dependency with a capacity, driven by a load curve on virtual time,
with any failsafe stack in front; what comes out is goodput, latency, rejections and retry
amplification over time (and plots of them).

The dependency is a queue served by ``capacity * latency`` workers (so it completes at most
``capacity`` calls per second), each call holding a worker for a service time drawn from a
log-normal distribution of mean ``latency``; a bounded ``queue`` refuses what does not fit
(:class:`Overloaded`), and ``failure_rate`` of the calls served fail (:class:`DependencyError`).
With ``shed_cost`` the dependency first sheds at once what it cannot serve, refusing being work
too: the more calls it receives (retries included), the fewer it serves. ``changes`` replace
the dependency's parameters mid-run (a degradation). Arrivals are a Poisson process of rate
``load(t)`` calls per second.

Everything runs on an event loop whose clock is a :class:`failsafe.testing.FakeClock`: waits
take no real time, timers (timeouts, ``max_wait``) and the C core's clock agree, and a run with
the same seed gives the same numbers. ``failsafe.testing.simulate`` is this module's
:func:`simulate`.
"""

from __future__ import annotations

import asyncio
import importlib
import math
import random
import selectors
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from failsafe import _native, testing
from failsafe.exceptions import FailsafeError

__all__ = [
    "Dependency",
    "DependencyError",
    "Overloaded",
    "Report",
    "call_class",
    "plot",
    "ramp",
    "simulate",
]

_NS: Final = 1_000_000_000

Call = Callable[[], Awaitable[Any]]
Stack = Callable[[Call], Call]
Load = float | Callable[[float], float]

call_class: ContextVar[str] = ContextVar("failsafe_simulation_call_class", default="")
"""The class of the simulated call being made (see ``classes`` of :func:`simulate`): a stack's
key functions read it, e.g. ``priority=lambda: 1 if call_class.get() == "high" else 0``."""


class DependencyError(Exception):
    """The simulated dependency failed the call."""


class Overloaded(DependencyError):
    """The simulated dependency refused the call: its queue was full."""


@dataclass(frozen=True)
class Dependency:
    """The simulated dependency: ``capacity`` calls/s at ``latency`` seconds (mean service
    time, log-normal with shape ``spread``), a ``queue`` of waiting calls (None: unbounded),
    and ``failure_rate`` of the served calls failing.

    ``shed_cost`` (None: not shedding) models a dependency that fails what exceeds its capacity
    at once (:class:`Overloaded`), refusing a call costing it ``shed_cost`` (in [0, 1)) of
    serving one: receiving ``r`` calls/s over the last second, it serves the share
    ``(capacity / r - shed_cost) / (1 - shed_cost)`` (clamped to [0, 1]) of them, each call
    drawn at random. Failures come from load: retries add load, which fails more calls, so a
    storm of retries can bring what it serves to nothing."""

    capacity: float = 100.0
    latency: float = 0.05
    spread: float = 0.25
    queue: int | None = None
    failure_rate: float = 0.0
    shed_cost: float | None = None

    def __post_init__(self) -> None:
        if self.shed_cost is not None and not 0.0 <= self.shed_cost < 1.0:
            raise ValueError(f"shed_cost must be in [0, 1), got {self.shed_cost!r}")

    def served_share(self, rate: float) -> float:
        """The share of ``rate`` calls/s a shedding dependency serves (1.0 when not shedding)."""
        if self.shed_cost is None or rate <= self.capacity:
            return 1.0
        share = (self.capacity / rate - self.shed_cost) / (1.0 - self.shed_cost)
        return min(1.0, max(0.0, share))

    @property
    def workers(self) -> int:
        return max(1, round(self.capacity * self.latency))


def ramp(
    start: float, end: float, duration: float, *, hold: float = 0.0
) -> Callable[[float], float]:
    """A load curve going from start to end calls/s over duration seconds, then staying at end
    (after ``hold`` seconds at start)."""

    def rate(t: float) -> float:
        if t <= hold:
            return start
        return start + (end - start) * min(1.0, (t - hold) / duration)

    return rate


@dataclass
class Report:
    """Per interval of ``interval`` seconds (the time of its start in ``times``): calls
    offered, calls that succeeded (``goodput``), were refused by a policy (``rejected``),
    failed at the dependency (``failed``) or were given up by a timeout (``timed_out``), calls
    sent to the dependency (attempts, retries included), the p50 and p99 latency of the
    successful calls ending in it (seconds, from arrival to end; NaN when none), and the
    sampled ``probes``; counts are given as rates per second."""

    interval: float
    times: list[float]
    offered: list[float]
    goodput: list[float]
    rejected: list[float]
    failed: list[float]
    timed_out: list[float]
    sent: list[float]
    p50: list[float]
    p99: list[float]
    probes: dict[str, list[float]] = field(default_factory=dict)
    # (arrival, latency, outcome, class) of every call
    latencies: list[tuple[float, float, str, str]] = field(default_factory=list, repr=False)

    @property
    def amplification(self) -> list[float]:
        """Calls sent to the dependency per call offered, per interval."""
        return [s / o if o else math.nan for s, o in zip(self.sent, self.offered, strict=True)]

    def summary(
        self, start: float = 0.0, end: float = math.inf, *, cls: str | None = None
    ) -> dict[str, float]:
        """Totals over the calls that arrived in [start, end) (of class cls only, when given):
        rates per second, the share of each outcome, latency percentiles of the successes, and
        the amplification (of every class)."""
        calls = [c for c in self.latencies if start <= c[0] < end and cls in (None, c[3])]
        span = min(end, self.times[-1] + self.interval if self.times else 0.0) - start
        ok = sorted(c[1] for c in calls if c[2] == "ok")
        n = len(calls) or 1
        first = int(start // self.interval)
        last = int(min(end, len(self.times) * self.interval) // self.interval)
        sent = sum(self.sent[first:last]) * self.interval
        offered = sum(self.offered[first:last]) * self.interval
        return {
            "offered": len(calls) / span if span > 0 else math.nan,
            "goodput": len(ok) / span if span > 0 else math.nan,
            "success": len(ok) / n,
            "rejected": sum(1 for c in calls if c[2] == "rejected") / n,
            "failed": sum(1 for c in calls if c[2] == "failed") / n,
            "timed_out": sum(1 for c in calls if c[2] == "timed_out") / n,
            "p50": _percentile(ok, 50),
            "p99": _percentile(ok, 99),
            "amplification": sent / offered if offered else math.nan,
        }


def _percentile(sorted_values: Sequence[float], p: float) -> float:
    if not sorted_values:
        return math.nan
    i = min(len(sorted_values) - 1, max(0, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[i]


# -- virtual time --------------------------------------------------------------------------


class _VirtualSelector(selectors.BaseSelector):
    """Never waits: a select with a timeout moves the fake clock by it instead (or to the
    next failsafe wait due sooner)."""

    def __init__(self, clock: testing.FakeClock) -> None:
        self._clock = clock
        self._map: dict[Any, selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = selectors.SelectorKey(fileobj, 0, events, data)
        self._map[fileobj] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._map.pop(fileobj)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        step: int | None = None
        if timeout is not None and timeout > 0:
            step = max(1, math.ceil(timeout * _NS))
        due = [d for d in testing._sleepers.values()]
        if due:
            sleeper = max(1, min(due) - _native.now_ns())
            step = sleeper if step is None else min(step, sleeper)
        if step is None and timeout is None:
            raise RuntimeError("simulation stalled: nothing is scheduled and nothing waits")
        if step is not None:
            self._clock.advance_ns(step)
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._map

    def close(self) -> None:
        self._map.clear()


class _VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: testing.FakeClock) -> None:
        super().__init__(_VirtualSelector(clock))
        self._fake = clock

    def time(self) -> float:
        return self._fake.now()


# -- the dependency --------------------------------------------------------------------------


class _Server:
    """The dependency's workers and queue. Work is the server's, not the caller's: a call
    whose caller gave up (cancelled, timed out) still holds its place in the queue and still
    takes a worker for its service time when reached, as a real server would."""

    def __init__(self, dep: Dependency, rng: random.Random, record: Callable[[], None]) -> None:
        self.dep = dep
        self.rng = rng
        self.busy = 0
        self.waiting: deque[asyncio.Future[None]] = deque()
        self.record = record
        self.arrivals: deque[float] = deque()  # times of the calls of the last second

    def _service_time(self) -> float:
        sigma = self.dep.spread
        mu = math.log(self.dep.latency) - sigma * sigma / 2
        return self.rng.lognormvariate(mu, sigma)

    def _start(self, done: asyncio.Future[None]) -> None:
        loop = done.get_loop()
        fail = bool(self.dep.failure_rate) and self.rng.random() < self.dep.failure_rate
        loop.call_later(self._service_time(), self._finish, done, fail)

    def _finish(self, done: asyncio.Future[None], fail: bool) -> None:
        if not done.done():
            if fail:
                done.set_exception(DependencyError("failed"))
            else:
                done.set_result(None)
        if self.busy > self.dep.workers:  # capacity went down: this worker is gone
            self.busy -= 1
        elif self.waiting:
            self._start(self.waiting.popleft())  # the worker takes the next job
        else:
            self.busy -= 1

    def _shed(self, now: float) -> bool:
        """Whether a shedding dependency refuses the call arriving now."""
        self.arrivals.append(now)
        while self.arrivals[0] <= now - 1.0:
            self.arrivals.popleft()
        share = self.dep.served_share(float(len(self.arrivals)))
        return share < 1.0 and self.rng.random() >= share

    async def call(self) -> None:
        self.record()
        loop = asyncio.get_running_loop()
        if self.dep.shed_cost is not None and self._shed(loop.time()):
            raise Overloaded("shed")
        done: asyncio.Future[None] = loop.create_future()
        if self.busy < self.dep.workers and not self.waiting:
            self.busy += 1
            self._start(done)
        elif self.dep.queue is not None and len(self.waiting) >= self.dep.queue:
            raise Overloaded("queue full")
        else:
            self.waiting.append(done)
        # A caller that leaves does not take its job back; the job's outcome is then dropped.
        done.add_done_callback(_consume)
        await asyncio.shield(done)


def _classify(exc: BaseException) -> str:
    """failed (the dependency failed it), timed_out (a timeout policy gave up), or rejected
    (a policy refused it); retry's give-up is classified by what it last saw."""
    from failsafe.timeout import TimeoutError as FsTimeoutError

    last = getattr(exc, "last_exception", None)
    if isinstance(last, BaseException):
        exc = last
    if isinstance(exc, DependencyError):
        return "failed"
    if isinstance(exc, FsTimeoutError):
        return "timed_out"
    return "rejected"


def _consume(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()  # marks a failure nobody awaits any more as seen


# -- the run ---------------------------------------------------------------------------------


def simulate(
    stack: Stack | None = None,
    *,
    load: Load,
    duration: float,
    dependency: Dependency | None = None,
    changes: Iterable[tuple[float, Dependency]] = (),
    probes: Mapping[str, Callable[[], float]] | None = None,
    classes: Mapping[str, float] | None = None,
    interval: float = 1.0,
    drain: float = 30.0,
    seed: int = 0,
) -> Report:
    """Runs ``duration`` seconds of ``load`` (calls/s, or a function of the time) against
    ``dependency`` through ``stack`` (a function wrapping the dependency's call in policies,
    e.g. ``lambda call: concurrency_limit()(call)``; None: no policy), on virtual time.

    ``changes`` are ``(time, Dependency)`` pairs that replace the dependency's parameters at
    that time; ``probes`` are sampled at the start of every interval (e.g. a policy's limit).
    ``classes`` splits the calls into named classes by weight (e.g. ``{"high": 1, "low": 2}``):
    each call's class is in :data:`call_class` while it runs, and in the report.
    Calls still running at the end get ``drain`` more seconds. The seed fixes arrivals,
    service times, failures and the C core's RNG (throttle, jitter).
    """
    if not duration > 0 or not interval > 0:
        raise ValueError("duration and interval must be > 0")
    dep = dependency or Dependency()
    own = testing._clock is None
    clock = testing.FakeClock() if own else testing._clock
    assert clock is not None
    if own:
        clock.install()
    _native.seed(seed)
    loop = _VirtualLoop(clock)
    try:
        return loop.run_until_complete(
            _run(
                stack,
                load,
                duration,
                dep,
                sorted(changes, key=lambda c: c[0]),
                dict(probes or {}),
                dict(classes or {"": 1.0}),
                interval,
                drain,
                seed,
                loop,
            )
        )
    finally:
        loop.close()
        if own:
            clock.uninstall()


async def _run(
    stack: Stack | None,
    load: Load,
    duration: float,
    dep: Dependency,
    changes: list[tuple[float, Dependency]],
    probes: dict[str, Callable[[], float]],
    classes: dict[str, float],
    interval: float,
    drain: float,
    seed: int,
    loop: asyncio.AbstractEventLoop,
) -> Report:
    rng = random.Random(seed)
    n = math.ceil(duration / interval)
    sent = [0] * n
    t_start = loop.time()

    def now() -> float:
        return loop.time() - t_start

    def record_attempt() -> None:
        i = int(now() // interval)
        if i < n:
            sent[i] += 1

    server = _Server(dep, random.Random(seed + 1), record_attempt)

    async def raw() -> None:
        await server.call()

    guarded: Call = stack(raw) if stack is not None else raw
    calls: list[tuple[float, float, str, str]] = []
    ends: list[tuple[float, float, str]] = []  # (end time, latency, outcome)
    names = list(classes)
    weights = [classes[c] for c in names]
    sampled: dict[str, list[float]] = {name: [] for name in probes}
    tasks: set[asyncio.Task[None]] = set()

    async def one(arrival: float, cls: str) -> None:
        call_class.set(cls)
        outcome = "ok"
        try:
            await guarded()
        except (FailsafeError, DependencyError) as exc:
            outcome = _classify(exc)
        end = now()
        calls.append((arrival, end - arrival, outcome, cls))
        ends.append((end, end - arrival, outcome))

    def rate_at(t: float) -> float:
        r = load(t) if callable(load) else load
        return max(0.0, float(r))

    t = 0.0
    next_probe = 0.0
    probed = 0
    pending = list(changes)
    while True:
        r = rate_at(t)
        t += rng.expovariate(r) if r > 0 else interval / 10
        while probes and probed < n and next_probe <= min(t, duration):
            await asyncio.sleep(max(0.0, next_probe - now()))
            for name, probe in probes.items():
                sampled[name].append(float(probe()))
            probed += 1
            next_probe += interval
        if t >= duration:
            break
        await asyncio.sleep(max(0.0, t - now()))
        while pending and pending[0][0] <= t:
            server.dep = replace(pending.pop(0)[1])
        if r > 0:
            cls = names[0] if len(names) == 1 else rng.choices(names, weights)[0]
            task = asyncio.ensure_future(one(t, cls))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    if tasks:
        _, left = await asyncio.wait(tasks, timeout=drain)
        for task in left:
            task.cancel()
        if left:
            await asyncio.wait(left)

    def per_interval(outcome: str | None) -> list[float]:
        counts = [0] * n
        for arrival, _, o, _ in calls:
            if outcome is None or o == outcome:
                counts[min(n - 1, int(arrival // interval))] += 1
        return [c / interval for c in counts]

    by_end: list[list[float]] = [[] for _ in range(n)]
    goodput = [0.0] * n
    for end, latency, outcome in ends:
        i = int(end // interval)
        if outcome == "ok" and i < n:
            by_end[i].append(latency)
            goodput[i] += 1 / interval
    return Report(
        interval=interval,
        times=[i * interval for i in range(n)],
        offered=per_interval(None),
        goodput=goodput,
        rejected=per_interval("rejected"),
        failed=per_interval("failed"),
        timed_out=per_interval("timed_out"),
        sent=[s / interval for s in sent],
        p50=[_percentile(sorted(v), 50) for v in by_end],
        p99=[_percentile(sorted(v), 99) for v in by_end],
        probes=sampled,
        latencies=sorted(calls),
    )


# -- plots -----------------------------------------------------------------------------------


def plot(
    reports: Mapping[str, Report],
    path: str | Path,
    *,
    title: str = "",
    panels: Sequence[str] = ("goodput", "p99", "rejected"),
    capacity: Sequence[tuple[float, float]] | None = None,
) -> Path:
    """Draws one panel per metric (a Report attribute, an amplification, or a probe name),
    one line per report, into a PNG at path (matplotlib, Agg). ``capacity`` draws the
    dependency's capacity over time as (time, calls/s) steps on rate panels."""
    # Imported here: matplotlib is needed for plots only (the bench dependency group has it).
    matplotlib: Any = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")

    labels = {
        "goodput": "goodput (calls/s)",
        "offered": "offered (calls/s)",
        "rejected": "refused by a policy (calls/s)",
        "failed": "failed (calls/s)",
        "timed_out": "timed out (calls/s)",
        "sent": "sent to the dependency (calls/s)",
        "p50": "p50 latency (ms)",
        "p99": "p99 latency (ms)",
        "amplification": "calls sent per call offered",
    }
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.4 * len(panels)), sharex=True)
    axes_list = list(axes) if len(panels) > 1 else [axes]
    for ax, panel in zip(axes_list, panels, strict=True):
        for name, rep in reports.items():
            values = rep.probes[panel] if panel in rep.probes else list(getattr(rep, panel))
            if panel in ("p50", "p99"):
                values = [v * 1000 for v in values]
            ax.plot(rep.times[: len(values)], values, label=name, linewidth=1.6)
        if capacity and panel in ("goodput", "offered", "sent"):
            xs = [c[0] for c in capacity] + [max(r.times[-1] for r in reports.values())]
            ys = [c[1] for c in capacity] + [capacity[-1][1]]
            ax.step(xs, ys, where="post", color="grey", linestyle="--", label="capacity")
        ax.set_ylabel(labels.get(panel, panel), fontsize=8)
        ax.grid(alpha=0.3)
    axes_list[0].legend(fontsize=8, loc="upper left")
    axes_list[-1].set_xlabel("time (s, simulated)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
