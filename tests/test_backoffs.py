"""failsafe.retry.backoffs and failsafe.retry.jitters: exact sequences, caps, jitter bounds,
seeded determinism, a fresh schedule per iteration, and validation of every parameter."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from failsafe.retry import backoffs, jitters
from failsafe.retry.backoffs import const, decorrexp, expo, fibo, interval, linear, softexp
from failsafe.testing import seed

NAN = float("nan")
INF = float("inf")


def take(schedule: Any, n: int) -> list[float]:
    it = iter(schedule)
    return [next(it) for _ in range(n)]


# ------------------------------------------------------------------------------------------
# Exact sequences without jitter


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        (const(0.25), [0.25] * 6),
        (const(0), [0.0] * 3),
        (interval([0.1, 0.2, 0.3]), [0.1, 0.2, 0.3, 0.1, 0.2, 0.3, 0.1]),
        (interval((2,)), [2.0, 2.0, 2.0]),
        (linear(), [1.0, 2.0, 3.0, 4.0, 5.0]),
        (linear(min_delay_secs=1, additive_secs=0.5), [1.0, 1.5, 2.0, 2.5, 3.0]),
        (linear(min_delay_secs=1, additive_secs=2, max_delay_secs=6), [1, 3, 5, 6, 6, 6]),
        (linear(min_delay_secs=0.5, additive_secs=0), [0.5] * 4),
        (expo(), [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]),
        (expo(min_delay_secs=0.5, base=3), [0.5, 1.5, 4.5, 13.5, 40.5]),
        (expo(min_delay_secs=1, base=2, max_delay_secs=5), [1, 2, 4, 5, 5, 5, 5]),
        (expo(min_delay_secs=0, base=2), [0.0] * 5),
        (expo(min_delay_secs=3, base=1), [3.0] * 4),
        (expo(max_delay_secs=INF), [1.0, 2.0, 4.0]),
        (fibo(), [1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0]),
        (fibo(min_delay_secs=2, factor_secs=3), [2.0, 5.0, 7.0, 12.0, 19.0, 31.0]),
        (fibo(min_delay_secs=2, factor_secs=3, max_delay_secs=10), [2, 5, 7, 10, 10, 10]),
        (fibo(min_delay_secs=0, factor_secs=0), [0.0] * 4),
        (decorrexp(0, None), [0.0] * 5),
        (decorrexp(2, 2), [2.0] * 5),
    ],
)
def test_exact_sequence(schedule: backoffs.Backoff, expected: list[float]) -> None:
    assert take(schedule, len(expected)) == [float(x) for x in expected]
    # delays(n) is a fresh sequence too, equal to iterating anew
    assert schedule.delays(len(expected)) == [float(x) for x in expected]


def test_caps_are_sticky_and_never_overflow() -> None:
    # 10**k overflows a double around k = 309; the schedule must stay finite and capped
    big = take(expo(min_delay_secs=1, base=10), 400)
    assert all(math.isfinite(d) for d in big)
    assert big == sorted(big)
    capped = take(expo(min_delay_secs=1, base=10, max_delay_secs=1e6), 400)
    assert capped[:7] == [1, 10, 100, 1e3, 1e4, 1e5, 1e6]
    assert set(capped[6:]) == {1e6}
    fib = take(fibo(max_delay_secs=100), 2000)
    assert all(math.isfinite(d) and d <= 100 for d in fib)
    assert fib[-1] == 100
    lin = take(linear(min_delay_secs=1, additive_secs=1e300), 50)
    assert all(math.isfinite(d) for d in lin)


@settings(max_examples=150, deadline=None)
@given(
    a=st.floats(0, 100),
    b=st.floats(1, 4),
    cap=st.none() | st.floats(100, 10_000),
    n=st.integers(1, 40),
)
def test_expo_matches_formula(a: float, b: float, cap: float | None, n: int) -> None:
    limit = math.inf if cap is None else cap
    expected = [min(a * b**k, limit) for k in range(n)]
    got = take(expo(min_delay_secs=a, base=b, max_delay_secs=cap), n)
    assert got == pytest.approx(expected, rel=1e-12)


@settings(max_examples=150, deadline=None)
@given(
    a=st.floats(0, 100),
    b=st.floats(0, 100),
    cap=st.none() | st.floats(100, 10_000),
    n=st.integers(1, 40),
)
def test_linear_and_fibo_match_formulas(a: float, b: float, cap: float | None, n: int) -> None:
    limit = math.inf if cap is None else cap
    assert take(linear(min_delay_secs=a, additive_secs=b, max_delay_secs=cap), n) == (
        pytest.approx([min(a + b * k, limit) for k in range(n)], rel=1e-12)
    )
    fib: list[float] = []
    prev, cur = b, a
    for _ in range(n):
        fib.append(min(cur, limit))
        prev, cur = cur, cur + prev
    assert take(fibo(min_delay_secs=a, factor_secs=b, max_delay_secs=cap), n) == (
        pytest.approx(fib, rel=1e-12)
    )


# ------------------------------------------------------------------------------------------
# Fresh schedule per iteration


@pytest.mark.parametrize(
    "make",
    [
        lambda: expo(min_delay_secs=0.1),
        lambda: fibo(),
        lambda: linear(),
        lambda: interval([1, 2, 3]),
    ],
)
def test_every_iter_starts_a_fresh_independent_sequence(make: Callable[[], Any]) -> None:
    schedule = make()
    reference = take(make(), 6)
    a, b = iter(schedule), iter(schedule)
    # interleaved: neither disturbs the other
    got_a = [next(a)]
    got_b = [next(b), next(b), next(b)]
    got_a += [next(a) for _ in range(5)]
    got_b += [next(b) for _ in range(3)]
    assert got_a == reference
    assert got_b == reference
    assert take(schedule, 6) == reference  # and a third, later, starts over again


def test_legacy_next_on_the_schedule_walks_one_sequence_and_iter_still_restarts() -> None:
    schedule = expo()
    assert [next(schedule), next(schedule), next(schedule)] == [1.0, 2.0, 4.0]
    assert take(schedule, 3) == [1.0, 2.0, 4.0]
    assert next(schedule) == 8.0


def test_iterators_are_endless_and_one_shot() -> None:
    it = iter(interval([1, 2]))
    assert iter(it) is it
    assert [next(it) for _ in range(1001)][-1] == 1.0


# ------------------------------------------------------------------------------------------
# Jitter


@pytest.mark.parametrize("jitter", [jitters.full, "full"])
def test_full_jitter_stays_within_zero_and_the_delay(jitter: Any) -> None:
    seed(1)
    base = take(expo(min_delay_secs=0.5, max_delay_secs=8), 500)
    seed(1)
    got = take(expo(min_delay_secs=0.5, max_delay_secs=8, jitter=jitter), 500)
    assert all(0 <= g <= d for g, d in zip(got, base, strict=True))
    assert got != base
    ratios = [g / d for g, d in zip(got, base, strict=True)]
    assert min(ratios) < 0.05  # spreads over the whole range
    assert max(ratios) > 0.95


@pytest.mark.parametrize("jitter", [jitters.equal, "equal"])
def test_equal_jitter_keeps_at_least_half(jitter: Any) -> None:
    seed(2)
    base = take(linear(min_delay_secs=1, additive_secs=1, max_delay_secs=10), 500)
    got = take(linear(min_delay_secs=1, additive_secs=1, max_delay_secs=10, jitter=jitter), 500)
    assert all(d / 2 <= g <= d for g, d in zip(got, base, strict=True))
    ratios = [g / d for g, d in zip(got, base, strict=True)]
    assert min(ratios) < 0.55
    assert max(ratios) > 0.95


def test_jitter_is_applied_after_the_cap() -> None:
    seed(3)
    for schedule in (
        expo(min_delay_secs=1, max_delay_secs=4, jitter=jitters.full),
        fibo(min_delay_secs=1, max_delay_secs=4, jitter=jitters.equal),
        linear(min_delay_secs=1, max_delay_secs=4, jitter=jitters.full),
        const(4, jitter=jitters.full),
        interval([4, 4], jitter=jitters.equal),
    ):
        assert all(0 <= d <= 4 for d in take(schedule, 200))


def test_jitter_functions() -> None:
    seed(4)
    full = [jitters.full(10.0) for _ in range(300)]
    equal = [jitters.equal(10.0) for _ in range(300)]
    assert all(0 <= x <= 10 for x in full)
    assert all(5 <= x <= 10 for x in equal)
    assert len(set(full)) > 250  # actually random
    assert jitters.full(0.0) == 0.0
    assert jitters.equal(0.0) == 0.0
    for bad in (-1.0, NAN, INF):
        with pytest.raises(ValueError, match="delay"):
            jitters.full(bad)
        with pytest.raises(ValueError, match="delay"):
            jitters.equal(bad)


@pytest.mark.parametrize(
    "make",
    [
        lambda: expo(min_delay_secs=0.1, jitter=jitters.full),
        lambda: fibo(jitter=jitters.equal),
        lambda: decorrexp(0.1, 30),
        lambda: softexp(median_delay_secs=1),
        lambda: softexp(median_delay_secs=1, max_delay_secs=5),
    ],
)
def test_seeded_jitter_is_deterministic(make: Callable[[], Any]) -> None:
    seed(12345)
    first = take(make(), 30)
    seed(12345)
    again = take(make(), 30)
    seed(12346)
    other = take(make(), 30)
    assert first == again
    assert first != other


def test_jitter_functions_are_seeded_too() -> None:
    seed(9)
    a = [jitters.full(1.0), jitters.equal(1.0)]
    seed(9)
    assert [jitters.full(1.0), jitters.equal(1.0)] == a


def test_custom_jitter_callable() -> None:
    assert take(expo(jitter=lambda d: d / 2), 4) == [0.5, 1.0, 2.0, 4.0]
    assert take(const(3, jitter=lambda d: d - 1), 2) == [2.0, 2.0]
    with pytest.raises(ValueError, match="delay"):
        take(const(1, jitter=lambda d: -d), 1)
    with pytest.raises(ValueError, match="delay"):
        take(const(1, jitter=lambda d: math.inf), 1)
    with pytest.raises(TypeError, match="delay"):
        take(const(1, jitter=lambda d: "1"), 1)


def test_decorrexp_bounds() -> None:
    seed(5)
    lo, hi, base = 0.5, 20.0, 3.0
    for _ in range(20):
        prev = lo
        for d in take(decorrexp(lo, hi, base), 50):
            assert lo <= d <= min(prev * base, hi)
            prev = d
    # without a cap it still stays finite and grows past the first delay
    uncapped = take(decorrexp(1, None), 200)
    assert all(math.isfinite(d) and d >= 1 for d in uncapped)
    assert max(uncapped) > 3


def test_softexp_bounds() -> None:
    seed(6)
    for _ in range(20):
        delays = take(softexp(median_delay_secs=1, max_delay_secs=30), 60)
        assert all(0 <= d <= 30 for d in delays)
        # the cap is sticky: once reached, every later delay is the cap
        if 30 in delays:
            assert set(delays[delays.index(30) :]) == {30}
        assert delays[-1] == 30  # it grows exponentially, so 60 steps reach any cap
    uncapped = take(softexp(median_delay_secs=0.01), 1200)  # 2**t overflows past t = 1024
    assert all(math.isfinite(d) and d >= 0 for d in uncapped)


# ------------------------------------------------------------------------------------------
# Validation: every parameter, wrong type and bad value, naming the parameter


def _bad_numbers(param: str, *, zero_ok: bool = True) -> list[tuple[Any, type[Exception], str]]:
    cases: list[tuple[Any, type[Exception], str]] = [
        (-1, ValueError, param),
        (-0.001, ValueError, param),
        (NAN, ValueError, param),
        ("1", TypeError, param),
        (True, TypeError, param),
        ([1], TypeError, param),
    ]
    if not zero_ok:
        cases.append((0, ValueError, param))
    return cases


def _cases() -> Iterator[Any]:
    def case(factory: Callable[..., Any], kwargs: dict[str, Any], err: type, match: str) -> Any:
        return pytest.param(factory, kwargs, err, match, id=f"{factory.__name__}-{kwargs!r}")

    for value, err, match in [*_bad_numbers("delay_secs"), (INF, ValueError, "delay_secs")]:
        yield case(const, {"delay_secs": value}, err, match)
    yield case(const, {"delay_secs": None}, TypeError, "delay_secs")
    yield case(const, {"delay_secs": 1, "jitter": 5}, TypeError, "jitter")
    for value, err in [
        (1.0, TypeError),
        ("abc", TypeError),
        ({1: 2}, TypeError),
        ([], ValueError),
        ([1, -1], ValueError),
        ([NAN], ValueError),
        ([INF], ValueError),
        (["a"], TypeError),
        ([True], TypeError),
        ([None], TypeError),
    ]:
        yield case(interval, {"delay_secs": value}, err, "delay_secs")
    yield case(interval, {"delay_secs": [1], "jitter": "half"}, TypeError, "jitter")
    growth = {linear: "additive_secs", expo: "base", fibo: "factor_secs"}
    for factory in (linear, expo, fibo):
        for value, err, match in [
            *_bad_numbers("min_delay_secs"),
            (INF, ValueError, "min_delay_secs"),
            (None, TypeError, "min_delay_secs"),
        ]:
            yield case(factory, {"min_delay_secs": value}, err, match)
        param = growth[factory]
        for value, err, match in [*_bad_numbers(param), (INF, ValueError, param)]:
            yield case(factory, {param: value}, err, match)
        for value, err, match in [
            *_bad_numbers("max_delay_secs"),
            (0.5, ValueError, "max_delay_secs"),  # below min_delay_secs (1)
        ]:
            yield case(factory, {"max_delay_secs": value}, err, match)
        yield case(factory, {"jitter": 3.5}, TypeError, "jitter")
    yield case(expo, {"base": 0.5}, ValueError, "base")
    yield case(expo, {"base": 0}, ValueError, "base")
    for value, err, match in [*_bad_numbers("min_delay_secs"), (INF, ValueError, "min")]:
        yield case(decorrexp, {"min_delay_secs": value, "max_delay_secs": 10}, err, match)
    for value, err, match in [
        *_bad_numbers("max_delay_secs"),
        (0.5, ValueError, "max_delay_secs"),
    ]:
        yield case(decorrexp, {"min_delay_secs": 1, "max_delay_secs": value}, err, match)
    for value, err, match in [
        *_bad_numbers("base"),
        (0.99, ValueError, "base"),
        (INF, ValueError, "base"),
    ]:
        yield case(decorrexp, {"min_delay_secs": 1, "max_delay_secs": 9, "base": value}, err, match)
    for param in ("median_delay_secs", "pfactor", "rp_scaling_factor"):
        base_kwargs: dict[str, Any] = {"median_delay_secs": 1}
        for value, err, match in [*_bad_numbers(param, zero_ok=False), (INF, ValueError, param)]:
            yield case(softexp, {**base_kwargs, param: value}, err, match)
    yield case(softexp, {"median_delay_secs": None}, TypeError, "median_delay_secs")
    for value, err, match in _bad_numbers("max_delay_secs"):
        yield case(softexp, {"median_delay_secs": 1, "max_delay_secs": value}, err, match)


@pytest.mark.parametrize(("factory", "kwargs", "err", "match"), list(_cases()))
def test_validation_names_the_parameter(
    factory: Callable[..., Any], kwargs: dict[str, Any], err: type[Exception], match: str
) -> None:
    with pytest.raises(err, match=match):
        factory(**kwargs)


def test_softexp_median_is_required_and_decorrexp_takes_positional_arguments() -> None:
    with pytest.raises(TypeError):
        softexp()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        decorrexp(1)  # type: ignore[call-arg]
    assert take(decorrexp(1, 1, 5), 2) == [1.0, 1.0]


def test_module_exports() -> None:
    assert set(backoffs.__all__) >= {
        "const",
        "interval",
        "linear",
        "expo",
        "fibo",
        "decorrexp",
        "softexp",
    }
    assert set(jitters.__all__) >= {"full", "equal"}
    for name in ("const", "interval", "linear", "expo", "fibo", "decorrexp", "softexp"):
        assert issubclass(getattr(backoffs, name), backoffs.Backoff)
