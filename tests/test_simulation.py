"""The resilience simulator, and the acceptance scenarios of adaptive load control in it
(tests/sim_scenarios.py): deterministic, seeded, on virtual time."""

from __future__ import annotations

import asyncio
import math

import pytest

import sim_scenarios
from failsafe import testing
from failsafe.bulkhead import bulkhead
from failsafe.simulation import Dependency, DependencyError, Overloaded, ramp, simulate


def test_unloaded_dependency_serves_everything_at_its_latency() -> None:
    report = simulate(None, load=40, duration=20, seed=7)
    s = report.summary()
    assert s["success"] == 1.0
    assert 35 < s["offered"] < 45
    assert 0.04 < s["p50"] < 0.06  # log-normal around 50 ms
    assert s["amplification"] == pytest.approx(1.0, abs=0.05)


def test_same_seed_same_numbers_and_no_clock_left_behind() -> None:
    a = simulate(None, load=ramp(10, 200, 5), duration=10, seed=3)
    b = simulate(None, load=ramp(10, 200, 5), duration=10, seed=3)
    assert a.latencies == b.latencies
    assert testing._clock is None


def test_capacity_bounds_goodput_and_a_bounded_queue_refuses() -> None:
    dep = Dependency(capacity=50, latency=0.02, queue=3)
    report = simulate(None, load=150, duration=20, dependency=dep, seed=1)
    s = report.summary(5)
    assert 45 < s["goodput"] <= 52
    assert s["failed"] > 0.6  # Overloaded


def test_changes_degrade_the_dependency_mid_run() -> None:
    report = simulate(
        None,
        load=60,
        duration=20,
        dependency=Dependency(capacity=100),
        changes=[(10.0, Dependency(capacity=100, latency=0.2))],
        seed=2,
    )
    assert report.summary(0, 10)["p50"] < 0.07
    assert report.summary(12, 20)["p50"] > 0.15


def test_runs_inside_a_test_clock() -> None:
    with testing.FakeClock() as clock:
        start = clock.now()
        simulate(None, load=10, duration=5, seed=1)
        assert clock.now() - start > 4  # the arrivals of 5 s, on its time


def test_failures_and_probes_and_bad_input() -> None:
    b = bulkhead(3)
    report = simulate(
        lambda call: b(call),
        load=50,
        duration=4,
        dependency=Dependency(failure_rate=0.5),
        probes={"running": lambda: b.running},
        seed=5,
    )
    s = report.summary()
    assert s["rejected"] > 0  # bulkhead full
    assert 0.4 < s["failed"] / (s["failed"] + s["success"]) < 0.6
    assert len(report.probes["running"]) == 4
    assert issubclass(Overloaded, DependencyError)
    with pytest.raises(ValueError, match="duration"):
        simulate(None, load=1, duration=0)


def test_a_shedding_dependency_serves_less_the_more_it_receives() -> None:
    dep = Dependency(capacity=60, shed_cost=0.2)
    assert dep.served_share(50) == 1.0
    assert dep.served_share(100) == pytest.approx(0.5)
    assert dep.served_share(300) == 0.0  # refusing alone takes all its work
    assert Dependency(capacity=60).served_share(1000) == 1.0  # not shedding: it queues
    s = simulate(None, load=100, duration=10, dependency=dep, seed=6).summary(2)
    assert 0.4 < s["success"] < 0.6  # half of 100 calls/s served
    assert s["p99"] < 0.5  # shed at once, not queued
    with pytest.raises(ValueError, match="shed_cost"):
        Dependency(shed_cost=1.0)


def test_the_dependency_keeps_serving_what_callers_abandoned() -> None:
    # Callers give up after 10 ms; their calls still take the dependency's workers.
    from failsafe.timeout import timeout

    to = timeout(0.01)
    report = simulate(lambda call: to(call), load=150, duration=10, seed=4)
    s = report.summary(3)
    assert s["timed_out"] > 0.95
    assert not math.isnan(s["amplification"])


def test_cancelled_simulation_tasks_do_not_leak() -> None:
    # Calls still running at the end get `drain` seconds, then are cancelled.
    report = simulate(
        None, load=20, duration=2, dependency=Dependency(latency=5.0, spread=0.01), drain=1.0
    )
    assert report.summary()["success"] == 0.0
    assert not asyncio.all_tasks(asyncio.new_event_loop())


# -- acceptance scenarios ----------------------------------------------------------------------


def test_overload_ramp_adaptive_keeps_goodput_and_latency() -> None:
    reports, base_p99 = sim_scenarios.overload_ramp()
    peak = {name: r.summary(20, 30) for name, r in reports.items()}
    adaptive = peak["concurrency_limit()"]  # the defaults: gradient2
    assert adaptive["goodput"] >= 90  # of a capacity of 100 calls/s
    assert adaptive["p99"] <= 2 * base_p99
    # No limit: the queue grows until every caller times out (collapse).
    assert peak["no limit"]["goodput"] < 10
    # A bulkhead of 50: goodput holds, but 50 calls wait at the dependency (latency waste).
    assert peak["bulkhead(50)"]["p99"] > 4 * base_p99


def test_capacity_halving_converges_within_5_s() -> None:
    report, settle = sim_scenarios.capacity_halving()
    assert settle <= 5.0
    assert report.summary(25, 40)["goodput"] >= 90  # the new capacity is 100 calls/s


def test_retry_storm_throttle_bounds_amplification() -> None:
    reports = sim_scenarios.retry_storm()
    alone = reports["no retry"].summary(5)
    plain = reports["retry"].summary(5)
    throttled = reports["retry + throttle"].summary(5)
    assert 0.4 < alone["failed"] < 0.6  # the dependency fails half the calls offered
    # The retries' load fails every attempt: 4 sent per call offered, nothing served.
    assert plain["amplification"] >= 3.8
    assert plain["goodput"] < 0.1 * alone["goodput"]
    assert throttled["amplification"] <= 1.2
    assert throttled["goodput"] >= 0.9 * alone["goodput"]  # what it can serve, it serves


def test_priorities_shed_low_first() -> None:
    report = sim_scenarios.priorities()
    high = report.summary(5, cls="high")
    low = report.summary(5, cls="low")
    assert high["success"] >= 0.95
    assert low["success"] < 0.5
